"""Evaluation suites: a manifest (prompting and scoring recipe) plus items."""

from ensembles.suites.builtin import BUILTIN_SUITES, get_builtin
from ensembles.suites.importers import (
    ColumnMapping,
    import_bigbench,
    import_csv,
    import_human_eval,
    import_lm_eval,
    import_mt_bench,
    load_hf_dataset,
    load_lm_eval_task,
)
from ensembles.suites.model import (
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_ITEMS,
    FewShot,
    Item,
    Suite,
    SuiteManifest,
    dump_suite,
    load_suite,
)

__all__ = [
    "BUILTIN_SUITES",
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_ITEMS",
    "ColumnMapping",
    "FewShot",
    "Item",
    "Suite",
    "SuiteManifest",
    "dump_suite",
    "get_builtin",
    "import_bigbench",
    "import_csv",
    "import_human_eval",
    "import_lm_eval",
    "import_mt_bench",
    "load_hf_dataset",
    "load_lm_eval_task",
    "load_suite",
]
