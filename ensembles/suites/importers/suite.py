"""The arena's own format: a manifest (YAML) and items (JSONL), read by ``load_suite``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ensembles.suites.importers.base import FORMATS, FileKey, SuiteFormat, TextFile
from ensembles.suites.model import Suite, load_suite


@FORMATS.register("suite", pretty_name="Arena suite")
class SuiteFiles(SuiteFormat):
    summary = "Suite manifest (YAML) + items (JSONL)"
    files = (
        FileKey("manifest", "suite manifest (YAML)", "suite.yaml"),
        FileKey("items", "items (JSONL)", "items.jsonl"),
    )

    @classmethod
    def parse(
        cls, files: Mapping[str, TextFile], options: Mapping[str, Any], *, max_bytes: int, max_items: int
    ) -> Suite:
        return load_suite(
            files["manifest"].text,
            files["items"].text,
            manifest_file=files["manifest"].name,
            items_file=files["items"].name,
            max_bytes=max_bytes,
            max_items=max_items,
        )
