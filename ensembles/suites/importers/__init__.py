"""Importers that turn other benchmark formats into Suites, one module per format.

Every importer returns a whole, validated Suite or raises SuiteError naming the file and,
where it can, the line; none of them runs code from the imported files. Each format module
registers itself in ``FORMATS``; importing it here is all a new format needs.
"""

from ensembles.suites.importers import suite  # noqa: F401 - registers the arena's own format
from ensembles.suites.importers.base import (
    DEFAULT_FORMAT,
    FORMATS,
    FileKey,
    SuiteFormat,
    TextFile,
    parse_files,
    upload_format,
    upload_formats,
)
from ensembles.suites.importers.bigbench import import_bigbench
from ensembles.suites.importers.common import DEV_RATIO, hash_split, slug
from ensembles.suites.importers.csv import ColumnMapping, GoldKind, import_csv
from ensembles.suites.importers.hf_dataset import load_hf_dataset
from ensembles.suites.importers.humaneval import HUMAN_EVAL_DATA, HUMAN_EVAL_STOP, import_human_eval
from ensembles.suites.importers.lm_eval import import_lm_eval, load_lm_eval_task, render_template
from ensembles.suites.importers.mt_bench import MT_BENCH_DATA, import_mt_bench

__all__ = [
    "DEFAULT_FORMAT",
    "DEV_RATIO",
    "FORMATS",
    "HUMAN_EVAL_DATA",
    "HUMAN_EVAL_STOP",
    "MT_BENCH_DATA",
    "ColumnMapping",
    "FileKey",
    "GoldKind",
    "SuiteFormat",
    "TextFile",
    "hash_split",
    "import_bigbench",
    "import_csv",
    "import_human_eval",
    "import_lm_eval",
    "import_mt_bench",
    "load_hf_dataset",
    "load_lm_eval_task",
    "parse_files",
    "render_template",
    "slug",
    "upload_format",
    "upload_formats",
]
