import json

import pytest

from ensembles.errors import SuiteError
from ensembles.suites import load_suite
from ensembles.suites.model import DEFAULT_MAX_BYTES, DEFAULT_MAX_ITEMS

MANIFEST = """\
name: tiny-gen
version: "1"
task_type: generation
prompt_template: "Question: {input}\\nAnswer:"
answer_extraction: number
metric: exact_match
"""


def items(count: int) -> str:
    return "".join(
        json.dumps({"id": f"g{i}", "input": f"What is {i} + 1?", "reference": str(i + 1), "split": "dev"}) + "\n"
        for i in range(count)
    )


def test_default_limits_are_twenty_mebibytes_and_fifty_thousand_items():
    assert DEFAULT_MAX_BYTES == 20 * 1024 * 1024
    assert DEFAULT_MAX_ITEMS == 50_000


def test_items_up_to_the_limit_are_accepted():
    assert len(load_suite(MANIFEST, items(5), max_items=5)) == 5


def test_one_item_over_the_limit_names_the_file_and_line():
    with pytest.raises(SuiteError) as info:
        load_suite(MANIFEST, items(6), items_file="upload.jsonl", max_items=5)
    assert (info.value.file, info.value.line) == ("upload.jsonl", 6)
    assert "limit of 5 items" in str(info.value)


def test_an_items_file_over_the_byte_limit_is_refused_naming_it():
    text = items(50)
    with pytest.raises(SuiteError) as info:
        load_suite(MANIFEST, text, items_file="big.jsonl", max_bytes=len(text) - 1)
    assert info.value.file == "big.jsonl"
    assert "larger than the limit" in str(info.value)


def test_the_byte_limit_counts_utf8_bytes_not_characters():
    row = json.dumps({"id": "g", "input": "é" * 200, "reference": "1", "split": "dev"}, ensure_ascii=False)
    assert len(row) < 300 < len(row.encode("utf-8"))
    with pytest.raises(SuiteError, match="larger than the limit"):
        load_suite(MANIFEST, row, max_bytes=300)


def test_a_manifest_over_the_byte_limit_is_refused_naming_it():
    with pytest.raises(SuiteError) as info:
        load_suite(MANIFEST + "#" * 1000 + "\n", items(1), manifest_file="suite.yaml", max_bytes=500)
    assert info.value.file == "suite.yaml"


def test_the_default_item_limit_applies_without_arguments():
    with pytest.raises(SuiteError, match="limit of 50,000 items") as info:
        load_suite(MANIFEST, items(DEFAULT_MAX_ITEMS + 1))
    assert info.value.line == DEFAULT_MAX_ITEMS + 1
