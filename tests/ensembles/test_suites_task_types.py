import json

import pytest

from ensembles.errors import SuiteError
from ensembles.suites import Item, Suite, SuiteManifest, dump_suite, load_suite

CODE_MANIFEST = """\
name: tiny-code
version: "1"
task_type: code
prompt_template: "{input}"
answer_extraction: code
metric: code_pass
max_new_tokens: 128
stop: ["\\ndef"]
"""
JUDGE_MANIFEST = """\
name: tiny-judge
version: "1"
task_type: judge
prompt_template: "{input}"
answer_extraction: text
metric: judge
"""
PROMPT = 'def add(a, b):\n    """Return a + b."""\n'
TESTS = "def check(candidate):\n    assert candidate(2, 3) == 5\n"


def jsonl(*rows: dict) -> str:
    return "".join(json.dumps(row) + "\n" for row in rows)


CODE_ITEMS = jsonl(
    {
        "id": "c1",
        "input": PROMPT,
        "reference": "    return a + b\n",
        "tests": TESTS,
        "entry_point": "add",
        "split": "test",
    }
)
JUDGE_ITEMS = jsonl(
    {"id": "j1", "input": "Write a haiku about rain.", "follow_ups": ["Now make it rhyme."], "split": "dev"},
    {"id": "j2", "input": "What is 2 + 2?", "reference": "4", "split": "test"},
)


def test_code_suite_runs_the_prompt_plus_completion_against_the_tests():
    suite = load_suite(CODE_MANIFEST, CODE_ITEMS)
    item = suite.items[0]
    assert suite.render_prompt(item) == PROMPT
    assert suite.program(item, "    return a + b") == PROMPT + "    return a + b"
    assert suite.score(item, "    return a + b\n\n") == ("    return a + b", 1.0)
    assert suite.score(item, "    return a - b\n")[1] == 0.0


def test_code_suite_accepts_a_completion_that_restates_the_whole_function():
    suite = load_suite(CODE_MANIFEST, CODE_ITEMS)
    answer = "Sure:\n```python\ndef add(a, b):\n    return b + a\n```"
    assert suite.score(suite.items[0], answer)[1] == 1.0


def test_code_items_need_tests_and_generation_items_may_not_carry_them():
    error = load_suite_error(CODE_MANIFEST, jsonl({"id": "c1", "input": PROMPT, "reference": "x", "split": "dev"}))
    assert error.line == 1 and "has no 'tests'" in str(error)
    generation = CODE_MANIFEST.replace("task_type: code", "task_type: generation").replace("code_pass", "exact_match")
    error = load_suite_error(generation, CODE_ITEMS)
    assert "has 'tests' or 'entry_point' but the suite is generation" in str(error)


def test_an_entry_point_needs_tests_and_must_be_an_identifier():
    error = load_suite_error(CODE_MANIFEST, jsonl({"id": "c1", "input": "x", "entry_point": "f", "split": "dev"}))
    assert "'entry_point' needs 'tests'" in str(error)
    error = load_suite_error(
        CODE_MANIFEST, jsonl({"id": "c1", "input": "x", "tests": "t", "entry_point": "f(); import os", "split": "dev"})
    )
    assert "entry_point" in str(error)


def test_code_pass_goes_with_code_suites_only():
    error = load_suite_error(CODE_MANIFEST.replace("metric: code_pass", "metric: exact_match"), CODE_ITEMS)
    assert "'code_pass' goes with task_type 'code'" in str(error)


def test_judge_suite_items_need_no_reference_and_keep_follow_up_turns():
    suite = load_suite(JUDGE_MANIFEST, JUDGE_ITEMS)
    assert suite.items[0].reference is None
    assert suite.items[0].follow_ups == ["Now make it rhyme."]
    assert load_suite(*dump_suite(suite)).content_hash() == suite.content_hash()


def test_judge_suites_cannot_be_scored_per_item():
    suite = load_suite(JUDGE_MANIFEST, JUDGE_ITEMS)
    with pytest.raises(SuiteError, match="judge suite"):
        suite.score(suite.items[0], "Rain falls")


def test_the_judge_metric_goes_with_judge_suites_only():
    generation = JUDGE_MANIFEST.replace("task_type: judge", "task_type: generation")
    error = load_suite_error(generation, jsonl({"id": "g", "input": "q", "reference": "r", "split": "dev"}))
    assert (error.file, error.line) is not None and "'judge' goes with task_type 'judge'" in str(error)


def test_follow_up_turns_belong_to_judge_suites_only():
    manifest = SuiteManifest(
        name="g", version="1", task_type="generation", prompt_template="{input}", answer_extraction="text", metric="f1"
    )
    with pytest.raises(SuiteError, match="only judge suites"):
        Suite(manifest, [Item(id="a", input="q", reference="r", follow_ups=["more"], split="dev")])


def test_multiple_choice_items_cannot_carry_tests():
    with pytest.raises(ValueError, match="cannot carry 'tests'"):
        Item(id="a", input="q", choices=["x", "y"], gold=0, tests="assert True", split="dev")


def test_unset_new_item_fields_leave_the_content_hash_as_before():
    manifest = SuiteManifest(
        name="g", version="1", task_type="generation", prompt_template="{input}", answer_extraction="text", metric="f1"
    )
    item = Item(id="a", input="q", reference="r", split="dev")
    with_field = Item(id="a", input="q", reference="r", split="dev", tests=None, follow_ups=None)
    assert Suite(manifest, [item]).content_hash() == Suite(manifest, [with_field]).content_hash()


def load_suite_error(manifest: str, items: str) -> SuiteError:
    with pytest.raises(SuiteError) as info:
        load_suite(manifest, items)
    return info.value


MC_MANIFEST = """\
name: tiny-mc
version: "1"
task_type: multiple_choice
prompt_template: "{input}\\n{choices}\\nAnswer:"
answer_extraction: letter
metric: exact_match
"""
MC_ITEMS = jsonl(
    {"id": "m1", "input": "Sky colour?", "choices": ["blue", "a long wrong answer"], "gold": 0, "split": "test"}
)


def test_multiple_choice_by_log_likelihood_picks_the_likeliest_option_and_can_normalize_by_length():
    raw = load_suite(MC_MANIFEST + "scoring: loglikelihood\n", MC_ITEMS)
    norm = load_suite(MC_MANIFEST + "scoring: loglikelihood_norm\n", MC_ITEMS)
    item = raw.items[0]
    assert raw.by_loglikelihood and norm.by_loglikelihood
    context = raw.render_prompt(item)
    assert raw.option_requests(item) == [(context, " blue"), (context, " a long wrong answer")]
    # The long option is less likely in total but more likely per character.
    logliks = [-5.0, -10.0]
    assert raw.score_options(item, logliks) == ("A", 1.0, {"A": -5.0, "B": -10.0})
    letter, value, per_option = norm.score_options(item, logliks)
    assert (letter, value) == ("B", 0.0)
    assert per_option == {"A": pytest.approx(-5.0 / 5), "B": pytest.approx(-10.0 / 20)}
    with pytest.raises(SuiteError, match="2 options but got 1"):
        raw.score_options(item, [-1.0])


def test_the_scoring_field_leaves_existing_hashes_alone_and_is_only_for_multiple_choice():
    plain = load_suite(MC_MANIFEST, MC_ITEMS)
    explicit = load_suite(MC_MANIFEST + "scoring: generate\n", MC_ITEMS)
    assert not plain.by_loglikelihood
    assert plain.content_hash() == explicit.content_hash()
    assert load_suite(MC_MANIFEST + "scoring: loglikelihood\n", MC_ITEMS).content_hash() != plain.content_hash()
    with pytest.raises(SuiteError, match="scoring 'loglikelihood' is for multiple_choice suites only"):
        load_suite(JUDGE_MANIFEST + "scoring: loglikelihood\n", jsonl({"id": "j", "input": "hi", "split": "test"}))
