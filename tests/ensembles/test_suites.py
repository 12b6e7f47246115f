import json

import pytest

from ensembles.errors import SuiteError
from ensembles.suites import Item, Suite, SuiteManifest, dump_suite, load_suite

MC_MANIFEST = """\
name: tiny-mc
version: "1"
task_type: multiple_choice
prompt_template: "Q: {input}\\n{choices}\\nA:"
few_shot:
  - input: "Which is a color?"
    choices: [dog, red]
    output: B
answer_extraction: letter
metric: exact_match
"""

GEN_MANIFEST = """\
name: tiny-gen
version: "1"
task_type: generation
prompt_template: "Question: {input}\\nAnswer:"
answer_extraction: number
metric: exact_match
"""


def jsonl(*rows: dict) -> str:
    return "".join(json.dumps(row) + "\n" for row in rows)


MC_ITEMS = jsonl(
    {
        "id": "q1",
        "input": "Capital of France?",
        "choices": ["Rome", "Paris", "Oslo"],
        "gold": 1,
        "split": "dev",
    },
    {"id": "q2", "input": "2 + 2?", "choices": ["4", "5"], "gold": 0, "split": "test"},
)
GEN_ITEMS = jsonl(
    {"id": "g1", "input": "What is 2 + 2?", "reference": "4", "split": "dev"},
    {"id": "g2", "input": "What is 9 - 3?", "reference": "6", "split": "test"},
)


def load_error(manifest: str, items: str) -> SuiteError:
    with pytest.raises(SuiteError) as info:
        load_suite(manifest, items)
    return info.value


def test_load_suite_parses_manifest_and_items():
    suite = load_suite(MC_MANIFEST, MC_ITEMS)
    assert suite.manifest.name == "tiny-mc"
    assert suite.manifest.max_new_tokens == 16 and suite.manifest.stop == ["\n"]
    assert [item.id for item in suite.split("dev")] == ["q1"]
    assert [item.id for item in suite.split("test")] == ["q2"]


def test_multiple_choice_prompt_renders_few_shot_then_lettered_choices():
    suite = load_suite(MC_MANIFEST, MC_ITEMS)
    assert suite.render_prompt(suite.items[0]) == (
        "Q: Which is a color?\nA. dog\nB. red\nA: B\n\nQ: Capital of France?\nA. Rome\nB. Paris\nC. Oslo\nA:"
    )


def test_multiple_choice_reference_is_the_gold_letter_and_scoring_extracts_it():
    suite = load_suite(MC_MANIFEST, MC_ITEMS)
    item = suite.items[0]
    assert suite.reference_answer(item) == "B"
    assert suite.score(item, " B. Paris") == ("B", 1.0)
    assert suite.score(item, " (A)") == ("A", 0.0)
    assert suite.score(item, " no idea") == ("", 0.0)


def test_generation_scoring_extracts_the_number_before_matching():
    suite = load_suite(GEN_MANIFEST, GEN_ITEMS)
    assert suite.render_prompt(suite.items[0]) == "Question: What is 2 + 2?\nAnswer:"
    assert suite.score(suite.items[0], " 4.0 apples") == ("4", 1.0)
    assert suite.score(suite.items[1], " It is 5") == ("5", 0.0)


def test_content_hash_changes_when_an_item_changes():
    suite = load_suite(GEN_MANIFEST, GEN_ITEMS)
    edited = load_suite(GEN_MANIFEST, GEN_ITEMS.replace('"reference": "6"', '"reference": "7"'))
    assert suite.content_hash() == load_suite(GEN_MANIFEST, GEN_ITEMS).content_hash()
    assert suite.content_hash() != edited.content_hash()


def test_content_hash_changes_when_the_manifest_changes():
    suite = load_suite(GEN_MANIFEST, GEN_ITEMS)
    edited = load_suite(GEN_MANIFEST + "max_new_tokens: 4\n", GEN_ITEMS)
    assert suite.content_hash() != edited.content_hash()


def test_dump_suite_round_trips_through_load_suite():
    for suite in (
        load_suite(MC_MANIFEST, MC_ITEMS),
        load_suite(GEN_MANIFEST, GEN_ITEMS),
    ):
        again = load_suite(*dump_suite(suite))
        assert again.content_hash() == suite.content_hash()


def test_bad_json_names_the_items_file_and_line():
    items = GEN_ITEMS + '{"id": "g3", "input": \n'
    error = load_error(GEN_MANIFEST, items)
    assert (error.file, error.line) == ("items.jsonl", 3)
    assert str(error).startswith("items.jsonl:3: invalid JSON")


def test_gold_out_of_range_names_the_line():
    items = MC_ITEMS + jsonl({"id": "q3", "input": "?", "choices": ["x", "y"], "gold": 2, "split": "dev"})
    error = load_error(MC_MANIFEST, items)
    assert error.line == 3
    assert "gold 2 out of range" in str(error)


def test_duplicate_item_id_names_both_lines():
    items = GEN_ITEMS + jsonl({"id": "g1", "input": "again", "reference": "1", "split": "dev"})
    error = load_error(GEN_MANIFEST, items)
    assert error.line == 3
    assert "duplicate item id 'g1' (first on line 1)" in str(error)


def test_missing_field_names_the_field_and_line():
    error = load_error(GEN_MANIFEST, jsonl({"id": "g1", "reference": "4", "split": "dev"}))
    assert error.line == 1
    assert "input" in str(error)


def test_generation_item_without_reference_is_rejected():
    error = load_error(GEN_MANIFEST, jsonl({"id": "g1", "input": "?", "split": "dev"}))
    assert "need 'reference'" in str(error)


def test_unknown_split_is_rejected_with_the_line():
    error = load_error(
        GEN_MANIFEST,
        jsonl({"id": "g1", "input": "?", "reference": "1", "split": "train"}),
    )
    assert error.line == 1
    assert "unknown split 'train'" in str(error)


def test_item_kind_must_match_the_task_type():
    error = load_error(GEN_MANIFEST, MC_ITEMS)
    assert "has choices but the suite is generation" in str(error)


def test_unknown_metric_names_the_manifest_line_and_suggests_a_fix():
    manifest = GEN_MANIFEST.replace("metric: exact_match", "metric: exact_mach")
    error = load_error(manifest, GEN_ITEMS)
    assert (error.file, error.line) == ("suite.yaml", 6)
    assert "did you mean 'exact_match'" in str(error)


def test_python_object_yaml_tags_are_refused():
    manifest = 'name: evil\nversion: "1"\nx: !!python/object/apply:os.system ["echo pwned"]\n'
    error = load_error(manifest, GEN_ITEMS)
    assert error.file == "suite.yaml"
    assert error.line == 3
    assert "invalid YAML" in str(error)


def test_out_of_range_max_new_tokens_is_rejected():
    error = load_error(GEN_MANIFEST + "max_new_tokens: 4096\n", GEN_ITEMS)
    assert error.line == 7
    assert "max_new_tokens" in str(error)


def test_prompt_template_must_use_the_choices_field_for_multiple_choice():
    manifest = MC_MANIFEST.replace("\\n{choices}", "")
    assert "{choices}" in str(load_error(manifest, MC_ITEMS))


def test_suite_constructor_rejects_duplicate_ids():
    manifest = SuiteManifest.model_validate(
        {
            "name": "x",
            "version": "1",
            "task_type": "generation",
            "prompt_template": "{input}",
            "answer_extraction": "text",
            "metric": "f1",
        }
    )
    item = Item(id="a", input="q", reference="r", split="dev")
    with pytest.raises(SuiteError, match="duplicate"):
        Suite(manifest, [item, item])
