import pytest

from ensembles.errors import UnknownNameError
from ensembles.suites import BUILTIN_SUITES, dump_suite, get_builtin, load_suite


@pytest.mark.parametrize("name", ["arithmetic", "mc_knowledge"])
def test_builtin_suite_is_identical_for_the_same_seed_and_size(name):
    first, second = (
        get_builtin(name, seed=7, size=40),
        get_builtin(name, seed=7, size=40),
    )
    assert first.content_hash() == second.content_hash()
    assert [item.id for item in first.items] == [item.id for item in second.items]


@pytest.mark.parametrize("name", ["arithmetic", "mc_knowledge"])
def test_builtin_suite_differs_for_another_seed(name):
    assert get_builtin(name, seed=0, size=40).content_hash() != get_builtin(name, seed=1, size=40).content_hash()


@pytest.mark.parametrize("name", ["arithmetic", "mc_knowledge"])
def test_builtin_suite_has_dev_and_test_halves(name):
    suite = get_builtin(name, size=24)
    assert len(suite.split("dev")) == 12
    assert len(suite.split("test")) == 12


@pytest.mark.parametrize("name", ["arithmetic", "mc_knowledge"])
def test_builtin_suite_round_trips_through_files(name):
    suite = get_builtin(name, size=30)
    assert load_suite(*dump_suite(suite)).content_hash() == suite.content_hash()


def test_arithmetic_defaults_to_300_distinct_questions_with_integer_answers():
    suite = get_builtin("arithmetic")
    assert len(suite) == 300
    assert suite.items[0].id == "arith-0001" and suite.items[-1].id == "arith-0300"
    assert len({item.input for item in suite.items}) == 300
    assert all(item.reference.isdigit() for item in suite.items)


def test_arithmetic_answers_are_correct_for_plain_sums_and_differences():
    for item in get_builtin("arithmetic", seed=3).items:
        if item.input.startswith("What is "):
            expression = item.input.removeprefix("What is ").removesuffix("?")
            a, op, b = expression.split()
            assert int(item.reference) == (int(a) + int(b) if op == "+" else int(a) - int(b))


def test_arithmetic_manifest_matches_the_demo_recipe():
    manifest = get_builtin("arithmetic", size=24).manifest
    assert manifest.task_type == "generation"
    assert (manifest.answer_extraction, manifest.metric) == ("number", "exact_match")
    assert len(manifest.few_shot) == 3
    assert manifest.max_new_tokens == 8 and manifest.stop == ["\n"]


def test_arithmetic_scores_a_correct_generation():
    suite = get_builtin("arithmetic", size=24)
    item = suite.items[0]
    assert suite.score(item, f" {item.reference}") == (item.reference, 1.0)


def test_mc_knowledge_items_have_four_distinct_choices_and_spread_gold_letters():
    suite = get_builtin("mc_knowledge")
    assert all(len(set(item.choices)) == 4 for item in suite.items)
    assert {item.gold for item in suite.items} == {0, 1, 2, 3}
    assert suite.manifest.answer_extraction == "letter"


def test_mc_knowledge_gold_choice_is_the_right_answer():
    suite = get_builtin("mc_knowledge", seed=5)
    for item in suite.items:
        gold = item.choices[item.gold]
        if item.input == "What is the capital of France?":
            assert gold == "Paris"
        if item.input == "Which number is the largest?":
            assert int(gold) == max(int(c) for c in item.choices)
        if item.input == "Which number is the smallest?":
            assert int(gold) == min(int(c) for c in item.choices)


def test_unknown_builtin_suite_suggests_closest_name():
    assert BUILTIN_SUITES.names() == ["arithmetic", "mc_knowledge"]
    with pytest.raises(UnknownNameError, match="did you mean 'arithmetic'"):
        get_builtin("arithmetics")
