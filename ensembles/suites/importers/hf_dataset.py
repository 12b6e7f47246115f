"""One split of a Hugging Face dataset, read through a column mapping like a CSV table."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ensembles.errors import SuiteError
from ensembles.suites.importers.base import FORMATS, SuiteFormat
from ensembles.suites.importers.common import DEV_RATIO
from ensembles.suites.importers.csv import ColumnMapping, suite_from_rows
from ensembles.suites.model import DEFAULT_MAX_ITEMS, Suite, check_item_count


def load_hf_dataset(
    path: str,
    columns: ColumnMapping | Mapping[str, Any],
    *,
    config: str | None = None,
    split: str = "test",
    name: str | None = None,
    seed: int = 0,
    dev_ratio: float = DEV_RATIO,
    prompt_template: str | None = None,
    answer_extraction: str | None = None,
    metric: str = "exact_match",
    description: str = "",
    max_new_tokens: int | None = None,
    max_items: int = DEFAULT_MAX_ITEMS,
) -> Suite:
    """One split of a Hugging Face dataset, read through ``columns`` like ``import_csv``.

    Needs the ``datasets`` package, imported only here, and network access to the Hub unless the
    dataset is already in the local cache; nothing in the test suite calls it against the Hub.
    Errors name "path:split" and the 1-based row number as the line.
    """
    try:
        mapping = ColumnMapping.of(columns)
    except ValueError as exc:
        raise SuiteError(f"bad column mapping: {exc}", file=f"{path}:{split}") from None
    try:
        import datasets
    except ImportError:
        raise SuiteError("load_hf_dataset needs the 'datasets' package (pip install datasets)") from None
    file = f"{path}:{split}"
    dataset = datasets.load_dataset(path, config, split=split)
    missing = [column for column in mapping.names() if column not in dataset.column_names]
    if missing:
        raise SuiteError(f"dataset has no column {missing[0]!r}; columns are {dataset.column_names}", file=file)
    check_item_count(len(dataset), file, None, max_items)
    return suite_from_rows(
        ((number, dict(row)) for number, row in enumerate(dataset, start=1)),
        mapping,
        file=file,
        name=name or path.rsplit("/", 1)[-1] + (f"_{config}" if config else ""),
        seed=seed,
        dev_ratio=dev_ratio,
        prompt_template=prompt_template,
        answer_extraction=answer_extraction,
        metric=metric,
        description=description,
        max_new_tokens=max_new_tokens,
        max_items=max_items,
    )


@FORMATS.register(
    "hf_dataset", pretty_name="Hugging Face dataset", reference_url="https://huggingface.co/docs/datasets"
)
class HfDataset(SuiteFormat):
    summary = "a dataset on the Hugging Face Hub, read with load_hf_dataset"
    uploads = False
