"""The suite format registry: one module per format, lookups by name, and what uploads may be in."""

from __future__ import annotations

import pkgutil
import re
from collections.abc import Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from ensembles.errors import DuplicateNameError, SuiteError, UnknownNameError
from ensembles.suites import importers
from ensembles.suites.importers import (
    FORMATS,
    FileKey,
    SuiteFormat,
    hash_split,
    parse_files,
    upload_format,
    upload_formats,
)
from ensembles.suites.model import Item, Suite, SuiteManifest

README = Path(__file__).resolve().parents[2] / "README.md"


def text_file(name: str, text: str) -> SimpleNamespace:
    return SimpleNamespace(name=name, text=text)


def test_the_registry_lists_every_format_and_each_has_its_own_module():
    assert FORMATS.names() == ["bigbench", "csv", "hf_dataset", "humaneval", "lm_eval", "mt_bench", "suite"]
    modules = {module.name for module in pkgutil.iter_modules(importers.__path__)}
    assert modules - {"base", "common"} == set(FORMATS.names())
    for name, fmt in FORMATS.items():
        assert fmt.name == name and fmt.pretty_name and fmt.summary, name
        assert len(set(fmt.file_keys())) == len(fmt.files), name
    assert all(fmt.reference_url.startswith("https://") for name, fmt in FORMATS.items() if name != "suite")


def test_uploads_take_the_default_format_first_and_never_a_package_reader():
    assert [fmt.name for fmt in upload_formats()] == ["suite", "bigbench", "csv", "lm_eval"]
    assert all(fmt.files for fmt in upload_formats())
    with pytest.raises(SuiteError, match="HumanEval suites are not uploaded.*upload one of suite, bigbench"):
        upload_format("humaneval")


def test_an_unknown_format_is_answered_with_the_closest_name():
    with pytest.raises(UnknownNameError, match="unknown suite format 'bigbnch'; did you mean 'bigbench'"):
        FORMATS.get("bigbnch")
    with pytest.raises(SuiteError, match="did you mean 'lm_eval'"):
        parse_files("lm-eval", {"config": text_file("task.yaml", "task: t\n")})


def test_a_duplicate_format_name_is_refused_and_the_first_stays(monkeypatch):
    monkeypatch.setattr(FORMATS, "_entries", dict(FORMATS._entries))
    first = FORMATS.get("csv")
    with pytest.raises(DuplicateNameError, match="suite format 'csv' is already registered"):

        @FORMATS.register("csv", pretty_name="Another CSV")
        class AnotherCsv(SuiteFormat):
            pass

    assert FORMATS.get("csv") is first


def test_a_missing_file_is_named_by_what_it_holds():
    with pytest.raises(SuiteError, match="a bigbench upload needs BIG-bench task.json"):
        parse_files("bigbench", {})
    with pytest.raises(SuiteError, match=r"a suite upload needs suite manifest \(YAML\) and items \(JSONL\)"):
        parse_files("suite", {})


def test_a_newly_registered_format_is_offered_for_upload_and_parses_its_files(monkeypatch):
    monkeypatch.setattr(FORMATS, "_entries", dict(FORMATS._entries))

    @FORMATS.register("lines", pretty_name="Plain lines", reference_url="https://example.org/lines")
    class Lines(SuiteFormat):
        summary = "one question per line"
        files = (FileKey("lines", "questions (text)", "questions.txt"),)

        @classmethod
        def parse(
            cls, files: Mapping[str, Any], options: Mapping[str, Any], *, max_bytes: int, max_items: int
        ) -> Suite:
            manifest = SuiteManifest(
                name="lines",
                version="1",
                task_type="generation",
                prompt_template="{input}",
                answer_extraction="first_line",
                metric="exact_match",
            )
            lines = files["lines"].text.splitlines()
            items = [Item(id=str(i), input=line, reference="yes", split=hash_split(i)) for i, line in enumerate(lines)]
            return Suite(manifest, items)

    assert "lines" in [fmt.name for fmt in upload_formats()]
    suite = parse_files("lines", {"lines": text_file("q.txt", "Sky blue?\nGrass green?\n")})
    assert [item.input for item in suite.items] == ["Sky blue?", "Grass green?"]


def test_the_readme_documents_every_upload_format():
    documented = set(re.findall(r"^  \| `(\w+)` \|", README.read_text(), flags=re.MULTILINE))
    assert {fmt.name for fmt in upload_formats()} <= documented
