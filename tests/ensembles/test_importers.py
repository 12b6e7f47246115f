import gzip
import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from ensembles.errors import SuiteError
from ensembles.suites import dump_suite, load_suite
from ensembles.suites.importers import (
    ColumnMapping,
    hash_split,
    import_bigbench,
    import_csv,
    import_human_eval,
    import_lm_eval,
    import_mt_bench,
    load_hf_dataset,
    load_lm_eval_task,
    render_template,
    slug,
)


def error_of(call, *args, **kwargs) -> SuiteError:
    with pytest.raises(SuiteError) as info:
        call(*args, **kwargs)
    return info.value


def jsonl(*rows: dict) -> str:
    return "".join(json.dumps(row) + "\n" for row in rows)


# ----------------------------------------------------------------- helpers


def test_hash_split_is_stable_per_index_and_seed_and_follows_the_ratio():
    first = [hash_split(i, seed=3) for i in range(1000)]
    assert first == [hash_split(i, seed=3) for i in range(1000)]
    assert first != [hash_split(i, seed=4) for i in range(1000)]
    assert 0.45 < first.count("dev") / 1000 < 0.55
    assert 0.15 < [hash_split(i, dev_ratio=0.2) for i in range(1000)].count("dev") / 1000 < 0.25
    assert {hash_split(i, dev_ratio=0.0) for i in range(50)} == {"test"}
    assert {hash_split(i, dev_ratio=1.0) for i in range(50)} == {"dev"}


def test_slug_turns_free_text_into_a_valid_suite_name():
    assert slug("Logical Deduction (3 objects)") == "logical_deduction_3_objects"
    assert slug("!!!") == "imported"


# --------------------------------------------------------------- BIG-bench

BIGBENCH_MC = {
    "name": "Tiny Arithmetic",
    "description": "Adds numbers.",
    "examples": [
        {"input": "2 + 2 =", "target_scores": {"3": 0, "4": 1, "5": 0}},
        {"input": "1 + 1 =", "target_scores": {"2": 1, "11": 0}},
        {"input": "3 + 4 =", "target_scores": {"6": 0.0, "7": 1.0}},
    ],
}
BIGBENCH_GEN = {
    "name": "echo",
    "metrics": ["bleu", "exact_str_match"],
    "examples": [{"input": "Say hi", "target": ["hi", "hello"]}, {"input": "Say bye", "target": "bye"}],
}


FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "bigbench"


def bigbench_prompts(task: dict) -> list[str]:
    """Zero-shot prompts by BIG-bench's documented rules for JSON tasks: task_prefix, then
    example_input_prefix (default "\\nQ: ") and the input, the choices (shuffled from sorted order by one
    RandomState(42) in example order) each after choice_prefix (default "\\n  choice: ") unless
    append_choices_to_input is false, then example_output_prefix (default "\\nA: ")."""
    rng = np.random.RandomState(42)
    prompts = []
    for example in task["examples"]:
        text = task.get("example_input_prefix", "\nQ: ") + example["input"]
        if task.get("append_choices_to_input", True):
            prefix = task.get("choice_prefix", "\n  choice: ")
            text += prefix + prefix.join(rng.permutation(sorted(example["target_scores"])))
        prompts.append(task.get("task_prefix", "") + text + task.get("example_output_prefix", "\nA: "))
    return prompts


def test_bigbench_target_scores_become_log_likelihood_multiple_choice_prompted_as_bigbench_prompts():
    suite = import_bigbench(json.dumps(BIGBENCH_MC, indent=2))
    assert (suite.name, suite.manifest.task_type, suite.manifest.description) == (
        "tiny_arithmetic",
        "multiple_choice",
        "Adds numbers.",
    )
    assert suite.by_loglikelihood and suite.manifest.scoring == "loglikelihood"
    assert [(item.choices, item.gold) for item in suite.items] == [
        (["3", "4", "5"], 1),
        (["2", "11"], 0),
        (["6", "7"], 1),
    ]
    prompts = bigbench_prompts(BIGBENCH_MC)
    assert [suite.render_prompt(item) for item in suite.items] == prompts
    # Each option is the continuation of the prompt as it stands, the way BIG-bench scores it.
    assert suite.option_requests(suite.items[0]) == [(prompts[0], "3"), (prompts[0], "4"), (prompts[0], "5")]
    assert suite.score_options(suite.items[0], [-3.0, -1.0, -2.0])[:2] == ("B", 1.0)


def test_a_real_bigbench_task_keeps_its_own_prefixes_and_all_its_options():
    text = (FIXTURES / "checkmate_in_one.json").read_text()
    task = json.loads(text)
    suite = import_bigbench(text, file="checkmate_in_one/task.json")
    assert [suite.render_prompt(item) for item in suite.items] == bigbench_prompts(task)
    assert suite.render_prompt(suite.items[0]).startswith(task["task_prefix"] + task["example_input_prefix"])
    assert [len(item.choices or []) for item in suite.items] == [39, 53]
    assert [item.choices[item.gold] for item in suite.items if item.choices and item.gold is not None] == [
        example["target"] for example in task["examples"]
    ]
    assert suite.manifest.stop == ["#"]
    # Answered by generating a letter, more than ten options cannot be named: a clear refusal.
    error = error_of(import_bigbench, text, file="checkmate_in_one/task.json", scoring="generate")
    assert "39 options" in str(error) and "log-likelihood scoring takes up to 100" in str(error)


def test_bigbench_ties_give_the_chosen_options_target_score_as_credit():
    task = {
        "examples": [
            {"input": "Pick a prime.", "target_scores": {"4": 0, "2": 1, "3": 1}},
            {"input": "Half right?", "target_scores": {"yes": 0.5, "no": 0, "maybe": 1}},
        ]
    }
    suite = import_bigbench(json.dumps(task))
    tie, partial = suite.items
    assert (tie.gold, tie.option_scores) == (1, [0.0, 1.0, 1.0])
    assert suite.score_options(tie, [-1.0, -5.0, -2.0])[:2] == ("A", 0.0)
    assert suite.score_options(tie, [-9.0, -5.0, -2.0])[:2] == ("C", 1.0)
    assert suite.score_options(partial, [-1.0, -5.0, -2.0])[:2] == ("A", 0.5)
    # Generating a letter earns the same credit for the option it names.
    by_letter = import_bigbench(json.dumps(task), scoring="generate")
    assert by_letter.score(by_letter.items[0], "Answer: C") == ("C", 1.0)
    assert by_letter.score(by_letter.items[1], "A") == ("A", 0.5)
    assert by_letter.render_prompt(by_letter.items[1]) == "\nQ: Half right?\nA. yes\nB. no\nC. maybe\nA: "


def test_bigbench_targets_become_generation_items_prompted_and_scored_as_the_task_says():
    suite = import_bigbench(json.dumps(BIGBENCH_GEN), file="echo/task.json")
    assert suite.manifest.task_type == "generation" and suite.manifest.metric == "bleu"
    assert [item.reference for item in suite.items] == ["hi", "bye"]
    assert suite.render_prompt(suite.items[0]) == "\nQ: Say hi\nA: "
    rouge = import_bigbench(json.dumps({**BIGBENCH_GEN, "metrics": ["rouge"]}))
    assert rouge.manifest.metric == "rouge_l"


def test_bigbench_splits_come_from_the_seeded_hash_and_ratio():
    text = json.dumps({"examples": [{"input": f"q{i}", "target": str(i)} for i in range(200)]})
    suite = import_bigbench(text, seed=5, dev_ratio=0.25)
    assert [item.split for item in suite.items] == [hash_split(i, seed=5, dev_ratio=0.25) for i in range(200)]
    assert import_bigbench(text, seed=5, dev_ratio=0.25).content_hash() == suite.content_hash()
    assert import_bigbench(text, seed=6, dev_ratio=0.25).content_hash() != suite.content_hash()
    assert load_suite(*dump_suite(suite)).content_hash() == suite.content_hash()
    mc = import_bigbench(json.dumps(BIGBENCH_MC))
    assert load_suite(*dump_suite(mc)).content_hash() == mc.content_hash()


def test_bigbench_invalid_json_names_the_file_and_line():
    error = error_of(import_bigbench, '{\n  "examples": [\n    {"input": "x",}\n  ]\n}', file="t.json")
    assert (error.file, error.line) == ("t.json", 3)
    assert "invalid JSON" in str(error)


def test_bigbench_example_without_input_names_its_line():
    task = {"examples": [{"input": "a", "target": "b"}, {"target": "c"}]}
    error = error_of(import_bigbench, json.dumps(task, indent=2))
    assert (error.file, error.line) == ("task.json", 7)
    assert "example 1: needs a string 'input'" in str(error)


def test_bigbench_target_scores_outside_zero_to_one_are_refused_with_the_line():
    task = {
        "examples": [
            {"input": "a", "target_scores": {"x": 1, "y": 0}},
            {"input": "b", "target_scores": {"x": 2, "y": 0}},
        ]
    }
    error = error_of(import_bigbench, json.dumps(task, indent=1))
    assert error.line == 10
    assert "must lie in [0, 1]" in str(error)


def test_bigbench_mixing_targets_and_target_scores_is_refused():
    task = {"examples": [{"input": "a", "target": "b"}, {"input": "b", "target_scores": {"x": 1, "y": 0}}]}
    error = error_of(import_bigbench, json.dumps(task))
    assert error.line == 1 and "needs a string 'target'" in str(error)


def test_bigbench_options_are_bounded_and_prefixes_must_be_text():
    options = {str(i): int(i == 0) for i in range(101)}
    error = error_of(import_bigbench, json.dumps({"examples": [{"input": "a", "target_scores": options}]}, indent=2))
    assert error.line == 3 and "has 101 options; at most 100" in str(error)
    bad_prefix = {"example_output_prefix": 3, **BIGBENCH_MC}
    assert "'example_output_prefix' must be a string" in str(error_of(import_bigbench, json.dumps(bad_prefix)))
    assert "unknown scoring" in str(error_of(import_bigbench, json.dumps(BIGBENCH_MC), scoring="vibes"))


def test_bigbench_without_examples_is_refused():
    error = error_of(import_bigbench, json.dumps({"name": "x"}))
    assert (error.line, error.message) == (1, "task has no 'examples' list")


def test_bigbench_respects_the_item_and_byte_limits():
    text = json.dumps({"examples": [{"input": f"q{i}", "target": "a"} for i in range(10)]})
    assert "limit of 9 items" in str(error_of(import_bigbench, text, max_items=9))
    assert "larger than the limit" in str(error_of(import_bigbench, text, max_bytes=100))


# ---------------------------------------------------- lm-evaluation-harness

LM_MC_YAML = """\
task: tiny_qa
output_type: multiple_choice
validation_split: validation
test_split: test
doc_to_text: "Question: {{ question }}\\nAnswer:"
doc_to_target: label
doc_to_choice: "{{ choices.text }}"
description: "A tiny multiple-choice task."
metric_list:
  - metric: acc
"""
LM_MC_DEV = jsonl({"question": "Sky color?", "choices": {"text": ["green", "blue"]}, "label": 1})
LM_MC_TEST = jsonl(
    {"question": "2 + 2?", "choices": {"text": ["4", "5", "6"]}, "label": "4"},
    {"question": "Capital of Spain?", "choices": {"text": ["Rome", "Madrid"]}, "label": 1},
)
LM_GEN_YAML = """\
task: Tiny Echo
output_type: generate_until
test_split: test
doc_to_text: "Repeat: {{ word }}"
doc_to_target: "{{ answers[0] }}"
generation_kwargs:
  until: ["\\n", "."]
  max_gen_toks: 5
metric_list:
  - metric: exact_match
"""


def test_lm_eval_multiple_choice_maps_validation_to_dev_and_test_to_test():
    suite = import_lm_eval(LM_MC_YAML, {"validation": LM_MC_DEV, "test": LM_MC_TEST})
    assert (suite.name, suite.manifest.task_type) == ("tiny_qa", "multiple_choice")
    assert [item.split for item in suite.items] == ["dev", "test", "test"]
    assert [item.gold for item in suite.items] == [1, 0, 1]
    # The harness's trailing "Answer:" cue moves after the listed choices.
    assert suite.render_prompt(suite.items[0]) == "Question: Sky color?\nA. green\nB. blue\nAnswer:"
    assert suite.manifest.description == "A tiny multiple-choice task."


def test_lm_eval_generation_uses_templates_until_and_max_tokens():
    data = jsonl({"word": "apple", "answers": ["apple", "an apple"]}, {"word": "pear", "answers": ["pear"]})
    suite = import_lm_eval(LM_GEN_YAML, {"test": data}, seed=1)
    assert suite.name == "tiny_echo"
    assert suite.manifest.stop == ["\n", "."] and suite.manifest.max_new_tokens == 5
    assert [(item.input, item.reference) for item in suite.items] == [
        ("Repeat: apple", "apple"),
        ("Repeat: pear", "pear"),
    ]
    assert [item.split for item in suite.items] == [hash_split(0, seed=1), hash_split(1, seed=1)]


def test_lm_eval_task_files_load_from_the_yaml_folder(tmp_path):
    (tmp_path / "task.yaml").write_text(
        LM_MC_YAML
        + "dataset_path: json\ndataset_kwargs:\n  data_files:\n    validation: dev.jsonl\n    test: data/test.jsonl\n"
    )
    (tmp_path / "dev.jsonl").write_text(LM_MC_DEV)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "test.jsonl").write_text(
        LM_MC_TEST + '{"question": "x", "choices": {"text": ["a"]}, "label": 3}\n'
    )
    error = error_of(load_lm_eval_task, tmp_path / "task.yaml")
    assert (error.file, error.line) == (str(tmp_path / "data" / "test.jsonl"), 3)
    assert "at least 2 choices" in str(error)
    (tmp_path / "data" / "test.jsonl").write_text(LM_MC_TEST)
    assert len(load_lm_eval_task(tmp_path / "task.yaml")) == 3


def test_lm_eval_data_files_outside_the_task_folder_are_refused(tmp_path):
    (tmp_path / "task.yaml").write_text(LM_GEN_YAML + "dataset_kwargs:\n  data_files:\n    test: ../../etc/passwd\n")
    error = error_of(load_lm_eval_task, tmp_path / "task.yaml")
    assert error.line == 11 and "outside the task's folder" in str(error)


def test_lm_eval_hostile_yaml_tags_are_refused():
    hostile = LM_GEN_YAML + 'process_docs: !!python/object/apply:os.system ["echo pwned"]\n'
    error = error_of(import_lm_eval, hostile, {"test": ""}, yaml_file="evil.yaml")
    assert (error.file, error.line) == ("evil.yaml", 11)
    assert "invalid YAML" in str(error)


def test_lm_eval_function_hooks_are_refused_with_an_explanation():
    error = error_of(import_lm_eval, LM_GEN_YAML + "process_docs: !function utils.process_docs\n", {"test": ""})
    assert error.line == 11 and "'!function' hooks are Python code" in str(error)


def test_lm_eval_unknown_document_field_names_the_data_line():
    data = jsonl({"word": "a", "answers": ["a"]}, {"wrd": "b", "answers": ["b"]})
    error = error_of(import_lm_eval, LM_GEN_YAML, {"test": data}, data_files={"test": "test.jsonl"})
    assert (error.file, error.line) == ("test.jsonl", 2)
    assert "document has no field 'word'" in str(error)


def test_lm_eval_templates_with_filters_or_code_are_refused():
    yaml_text = LM_GEN_YAML.replace("{{ word }}", "{{ word | upper }}")
    error = error_of(import_lm_eval, yaml_text, {"test": jsonl({"word": "a", "answers": ["a"]})})
    assert error.line == 1 and "unsupported template expression" in str(error)
    yaml_text = LM_GEN_YAML.replace("{{ word }}", "{{ word.__class__.__mro__ }}")
    error = error_of(import_lm_eval, yaml_text, {"test": jsonl({"word": "a", "answers": ["a"]})})
    assert "no field 'word.__class__.__mro__'" in str(error)


def test_lm_eval_target_outside_the_choices_names_the_line():
    data = LM_MC_TEST + jsonl({"question": "q", "choices": {"text": ["a", "b"]}, "label": "c"})
    error = error_of(import_lm_eval, LM_MC_YAML, {"validation": LM_MC_DEV, "test": data})
    assert (error.file, error.line) == ("test.jsonl", 3)
    assert "neither a choice index nor one of the choices" in str(error)


def test_lm_eval_bad_json_and_missing_split_data_are_reported():
    error = error_of(import_lm_eval, LM_GEN_YAML, {"test": '{"word": "a", "answers": ["a"]}\n{"word": \n'})
    assert (error.file, error.line) == ("test.jsonl", 2)
    error = error_of(import_lm_eval, LM_MC_YAML, {"test": LM_MC_TEST})
    assert (error.file, error.line) == ("task.yaml", 3)
    assert "no data given for split 'validation'" in str(error)


def test_lm_eval_loglikelihood_tasks_and_includes_are_refused_with_the_key_line():
    error = error_of(import_lm_eval, LM_GEN_YAML.replace("generate_until", "loglikelihood"), {"test": ""})
    assert error.line == 2 and "output_type 'loglikelihood' is not supported" in str(error)
    error = error_of(import_lm_eval, "include: _base.yaml\n" + LM_GEN_YAML, {"test": ""})
    assert error.line == 1 and "'include' is not supported" in str(error)


def test_lm_eval_unsupported_metric_names_its_line():
    error = error_of(import_lm_eval, LM_GEN_YAML.replace("metric: exact_match", "metric: mcc"), {"test": ""})
    assert error.line == 9 and "metric 'mcc' is not supported" in str(error)


def test_render_template_substitutes_fields_and_keeps_a_lone_value_typed():
    doc = {"q": "Why?", "opts": ["a", "b"], "meta": {"n": 3}}
    assert render_template("Q: {{q}} ({{ meta.n }})", doc) == "Q: Why? (3)"
    assert render_template(" {{ opts }} ", doc) == ["a", "b"]
    assert render_template("{{ opts[1] }}", doc) == "b"
    with pytest.raises(ValueError, match="Jinja statements"):
        render_template("{% for x in opts %}{{ x }}{% endfor %}", doc)
    with pytest.raises(ValueError, match="no element"):
        render_template("{{ opts[5] }}", doc)


# ---------------------------------------------------------------------- CSV


def test_csv_generation_rows_become_items_with_hashed_splits():
    text = "question,answer\nWhat is 2+2?,4\nCapital of France?,Paris\n"
    suite = import_csv(text, {"input": "question", "reference": "answer"}, name="Tiny CSV", seed=2)
    assert suite.name == "tiny_csv" and suite.manifest.task_type == "generation"
    assert [(item.id, item.input, item.reference) for item in suite.items] == [
        ("row-00001", "What is 2+2?", "4"),
        ("row-00002", "Capital of France?", "Paris"),
    ]
    assert [item.split for item in suite.items] == [hash_split(0, seed=2), hash_split(1, seed=2)]


def test_csv_multiple_choice_reads_choice_columns_letter_gold_split_and_id():
    text = "id;q;A;B;C;answer;part\nx1;Sky?;red;blue;green;B;validation\nx2;Grass?;green;red;blue;a;test\n"
    columns = ColumnMapping(
        input="q", choices=("A", "B", "C"), gold="answer", gold_kind="letter", split="part", id="id"
    )
    suite = import_csv(text, columns, name="mc", delimiter=";")
    assert [(item.id, item.choices, item.gold, item.split) for item in suite.items] == [
        ("x1", ["red", "blue", "green"], 1, "dev"),
        ("x2", ["green", "red", "blue"], 0, "test"),
    ]
    assert suite.manifest.answer_extraction == "letter"


def test_csv_gold_can_be_the_text_of_the_right_choice():
    text = "q,o1,o2,right\nSky?,red,blue,blue\n"
    columns = {"input": "q", "choices": ["o1", "o2"], "gold": "right", "gold_kind": "text"}
    assert import_csv(text, columns, name="t").items[0].gold == 1


def test_csv_missing_column_names_the_header_line():
    error = error_of(
        import_csv, "question,answer\nq,a\n", {"input": "question", "reference": "gold"}, name="x", file="up.csv"
    )
    assert (error.file, error.line) == ("up.csv", 1)
    assert "header has no column 'gold'" in str(error)


def test_csv_bad_gold_names_the_line_where_the_record_starts():
    text = 'q,o1,o2,gold\n"Multi\nline?",a,b,0\nSky?,red,blue,7\n'
    error = error_of(import_csv, text, {"input": "q", "choices": ["o1", "o2"], "gold": "gold"}, name="x")
    assert error.line == 4 and "gold 7 out of range" in str(error)
    text = "q,o1,o2,gold\nSky?,red,blue,B\n"
    error = error_of(import_csv, text, {"input": "q", "choices": ["o1", "o2"], "gold": "gold"}, name="x")
    assert error.line == 2 and "not a 0-based option number" in str(error)


def test_csv_rows_with_the_wrong_number_of_fields_are_refused():
    error = error_of(import_csv, "q,a\nx,1\ny,2,extra\n", {"input": "q", "reference": "a"}, name="x")
    assert error.line == 3 and "row has 3 fields, the header 2" in str(error)


def test_csv_unknown_split_values_and_duplicate_ids_name_their_lines():
    text = "id,q,a,s\n1,x,1,dev\n2,y,2,train\n"
    error = error_of(import_csv, text, {"input": "q", "reference": "a", "split": "s", "id": "id"}, name="x")
    assert error.line == 3 and "split 'train'" in str(error)
    text = "id,q,a\n1,x,1\n1,y,2\n"
    error = error_of(import_csv, text, {"input": "q", "reference": "a", "id": "id"}, name="x")
    assert error.line == 3 and "duplicate item id '1' (first on line 2)" in str(error)


def test_csv_mapping_must_name_a_reference_or_choices_with_gold():
    error = error_of(import_csv, "q,a\nx,1\n", {"input": "q"}, name="x")
    assert "bad column mapping" in str(error)
    error = error_of(import_csv, "q,a\nx,1\n", {"input": "q", "reference": "a", "colour": "red"}, name="x")
    assert "bad column mapping" in str(error)


def test_csv_item_limit_names_the_first_row_over_it():
    text = "q,a\n" + "".join(f"x{i},{i}\n" for i in range(5))
    error = error_of(import_csv, text, {"input": "q", "reference": "a"}, name="x", max_items=3)
    assert error.line == 5 and "limit of 3 items" in str(error)


# ------------------------------------------------------------ Hugging Face


class FakeDataset(list):
    def __init__(self, rows):
        super().__init__(rows)
        self.column_names = sorted({key for row in rows for key in row})


@pytest.fixture
def fake_datasets(monkeypatch):
    calls = []
    rows = [
        {"question": "Sky?", "choices": ["red", "blue"], "answer": 1},
        {"question": "Grass?", "choices": ["green", "red"], "answer": 0},
    ]

    def load_dataset(path, config=None, split=None):
        calls.append((path, config, split))
        return FakeDataset(rows)

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    return calls, rows


def test_load_hf_dataset_maps_a_list_column_to_choices(fake_datasets):
    calls, _ = fake_datasets
    suite = load_hf_dataset("org/tiny", {"input": "question", "choices": ["choices"], "gold": "answer"}, config="main")
    assert calls == [("org/tiny", "main", "test")]
    assert suite.name == "tiny_main"
    assert [(item.choices, item.gold) for item in suite.items] == [(["red", "blue"], 1), (["green", "red"], 0)]


def test_load_hf_dataset_names_the_row_of_a_bad_value(fake_datasets):
    _, rows = fake_datasets
    rows[1]["answer"] = 5
    error = error_of(load_hf_dataset, "org/tiny", {"input": "question", "choices": ["choices"], "gold": "answer"})
    assert (error.file, error.line) == ("org/tiny:test", 2)
    error = error_of(load_hf_dataset, "org/tiny", {"input": "prompt", "reference": "answer"})
    assert "dataset has no column 'prompt'" in str(error)


# ------------------------------------------------------- HumanEval, MT-Bench


def test_human_eval_from_the_installed_package_has_164_code_items():
    suite = import_human_eval()
    assert (suite.name, suite.manifest.task_type, len(suite)) == ("humaneval", "code", 164)
    item = suite.items[0]
    assert item.id == "HumanEval/0" and item.entry_point == "has_close_elements"
    assert "def check(candidate)" in item.tests
    assert suite.manifest.stop == ["\nclass", "\ndef", "\n#", "\nif", "\nprint"]
    assert {item.split for item in suite.items} == {"dev", "test"}


def test_human_eval_canonical_solutions_pass_and_a_stub_fails():
    suite = import_human_eval()
    for item in suite.items[:5]:
        assert suite.score(item, item.reference)[1] == 1.0, item.id
    assert suite.score(suite.items[0], "    return None\n")[1] == 0.0


@pytest.mark.slow
def test_every_human_eval_canonical_solution_passes_in_the_sandbox():
    suite = import_human_eval()
    failed = [item.id for item in suite.items if suite.score(item, item.reference)[1] != 1.0]
    assert failed == []


def human_eval_row(**overrides) -> dict:
    row = {
        "task_id": "T/0",
        "prompt": "def f():\n",
        "canonical_solution": "    return 1\n",
        "test": "def check(c):\n    assert c() == 1\n",
        "entry_point": "f",
    }
    return {**row, **overrides}


def test_human_eval_file_with_a_missing_field_names_the_line(tmp_path):
    path = tmp_path / "he.jsonl.gz"
    row = human_eval_row()
    del row["test"]
    path.write_bytes(gzip.compress((json.dumps(human_eval_row()) + "\n" + json.dumps(row) + "\n").encode()))
    error = error_of(import_human_eval, path)
    assert (error.file, error.line) == (str(path), 2)
    assert "needs a string 'test'" in str(error)


def test_human_eval_file_with_bad_json_or_a_bad_entry_point_names_the_line(tmp_path):
    path = tmp_path / "he.jsonl"
    path.write_text(json.dumps(human_eval_row()) + "\n{oops\n")
    assert error_of(import_human_eval, path).line == 2
    path.write_text(json.dumps(human_eval_row(entry_point="f(); evil")) + "\n")
    error = error_of(import_human_eval, path)
    assert error.line == 1 and "entry_point" in str(error)


def test_a_gzip_file_that_expands_past_the_byte_limit_is_refused(tmp_path):
    path = tmp_path / "bomb.jsonl.gz"
    path.write_bytes(gzip.compress(b" " * 5_000_000))
    error = error_of(import_human_eval, path, max_bytes=1_000_000)
    assert "uncompressed" in str(error) and error.file == str(path)


def test_mt_bench_from_the_installed_package_has_80_judge_questions_in_8_categories():
    suite = import_mt_bench()
    assert (suite.name, suite.manifest.task_type, suite.manifest.metric, len(suite)) == (
        "mt_bench",
        "judge",
        "judge",
        80,
    )
    categories = {item.id.rsplit("-", 1)[0] for item in suite.items}
    assert len(categories) == 8 and "writing" in categories
    assert all(item.follow_ups and len(item.follow_ups) == 1 for item in suite.items)
    assert 0 < sum(item.reference is not None for item in suite.items) < 80


def test_mt_bench_file_with_bad_turns_names_the_line(tmp_path):
    path = tmp_path / "question.jsonl"
    path.write_text(
        jsonl({"question_id": 1, "category": "x", "turns": ["hi"]}, {"question_id": 2, "category": "x", "turns": []})
    )
    error = error_of(import_mt_bench, path)
    assert (error.file, error.line) == (str(path), 2) and "'turns'" in str(error)
    path.write_text(
        jsonl(
            {"question_id": 1, "category": "x", "turns": ["hi"]},
            {"question_id": 1, "category": "x", "turns": ["again"]},
        )
    )
    error = error_of(import_mt_bench, path)
    assert error.line == 2 and "duplicate item id 'x-1' (first on line 1)" in str(error)


def test_a_missing_file_is_reported_as_a_suite_error(tmp_path):
    error = error_of(import_mt_bench, tmp_path / "nope.jsonl")
    assert error.file == str(tmp_path / "nope.jsonl") and "cannot read file" in str(error)
