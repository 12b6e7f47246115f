import datetime as dt

import pytest

from ensembles.errors import UnknownNameError
from ensembles.suites import BUILTIN_SUITES, dump_suite, get_builtin, load_suite

ALL_SUITES = ["arithmetic", "date_reasoning", "logic", "mc_knowledge", "unit_conversion"]
NEW_SUITES = ["date_reasoning", "logic", "unit_conversion"]


@pytest.mark.parametrize("name", ALL_SUITES)
def test_builtin_suite_is_identical_for_the_same_seed_and_size(name):
    first, second = (
        get_builtin(name, seed=7, size=40),
        get_builtin(name, seed=7, size=40),
    )
    assert first.content_hash() == second.content_hash()
    assert [item.id for item in first.items] == [item.id for item in second.items]


@pytest.mark.parametrize("name", ALL_SUITES)
def test_builtin_suite_differs_for_another_seed(name):
    assert get_builtin(name, seed=0, size=40).content_hash() != get_builtin(name, seed=1, size=40).content_hash()


@pytest.mark.parametrize("name", ALL_SUITES)
def test_builtin_suite_has_dev_and_test_halves(name):
    suite = get_builtin(name, size=24)
    assert len(suite.split("dev")) == 12
    assert len(suite.split("test")) == 12


@pytest.mark.parametrize("name", ALL_SUITES)
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
    assert BUILTIN_SUITES.names() == ALL_SUITES
    with pytest.raises(UnknownNameError, match="did you mean 'arithmetic'"):
        get_builtin("arithmetics")


def test_existing_builtin_suites_keep_their_content_hashes():
    # Stored suites are looked up by content hash; a change here would duplicate them.
    assert (
        get_builtin("arithmetic").content_hash() == "decfcb24c3a2e02504c31b5aaeb01ed1be75b66cd345fae5bd4a7ad29060a359"
    )
    assert (
        get_builtin("mc_knowledge").content_hash() == "992d20985537cb98ad1e619f81d399b462a599858e783d3a898f4b271e2ad437"
    )


@pytest.mark.parametrize("name", NEW_SUITES)
def test_new_builtin_suites_default_to_300_distinct_items_split_in_halves(name):
    suite = get_builtin(name)
    assert len(suite) == 300
    assert len({item.input for item in suite.items}) == 300
    assert len(suite.split("dev")) == len(suite.split("test")) == 150
    assert not {shot.input for shot in suite.manifest.few_shot} & {item.input for item in suite.items}


@pytest.mark.parametrize("name", NEW_SUITES)
def test_new_builtin_suites_score_their_own_reference_as_correct(name):
    suite = get_builtin(name, seed=2, size=60)
    for item in suite.items:
        prediction, score = suite.score(item, f" {item.reference}\n")
        assert score == 1.0, (item.input, item.reference, prediction)


@pytest.mark.parametrize("name", NEW_SUITES)
def test_new_builtin_suites_score_a_few_shot_style_wrong_answer_as_wrong(name):
    suite = get_builtin(name, seed=4, size=40)
    wrong = {"date_reasoning": " 1999-01-01", "logic": " maybe", "unit_conversion": " 123456789"}[name]
    assert all(suite.score(item, wrong)[1] == 0.0 for item in suite.items)


def test_date_reasoning_answers_match_the_calendar():
    weekdays = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
    checked = 0
    for item in get_builtin("date_reasoning", seed=1).items:
        words = item.input.rstrip("?.").split()
        if item.input.startswith("What is the date"):
            days, start = int(words[4]), dt.date.fromisoformat(words[7].rstrip("?"))
            sign = 1 if words[6] == "after" else -1
            assert item.reference == (start + dt.timedelta(days=sign * days)).isoformat()
            checked += 1
        elif item.input.startswith("What day comes "):
            offset = 1 if words[3] == "after" else -1
            assert item.reference == weekdays[(weekdays.index(words[4]) + offset) % 7]
            checked += 1
        elif item.input.startswith("What day of the week is"):
            days, direction, start = int(words[6]), words[8], words[9]
            offset = days if direction == "after" else -days
            assert item.reference == weekdays[(weekdays.index(start) + offset) % 7]
            checked += 1
    assert checked > 200


def test_date_reasoning_mixes_weekdays_and_iso_dates_and_crosses_month_ends():
    suite = get_builtin("date_reasoning")
    dates = [item for item in suite.items if item.reference[:1].isdigit()]
    assert 100 < len(dates) < 200
    assert any(item.reference[:7] not in item.input for item in dates)
    assert suite.manifest.answer_extraction == "date"


def test_unit_conversion_answers_are_whole_numbers_that_invert_the_conversion():
    factors = {("centimeters", "meter"): 100, ("seconds", "minute"): 60, ("grams", "kilogram"): 1000}
    for item in get_builtin("unit_conversion", seed=5).items:
        assert item.reference.isdigit()
        for (small, large), factor in factors.items():
            if item.input.startswith(f"How many {small} are in "):
                amount = int(item.input.split()[5])
                if item.input.split()[6].rstrip("?s") == large:
                    assert int(item.reference) == amount * factor


def test_logic_ordering_answers_follow_the_chain_and_negations_are_balanced():
    suite = get_builtin("logic", seed=3)
    answers = [item.reference for item in suite.items]
    assert 0.4 < answers.count("yes") / (answers.count("yes") + answers.count("no")) < 0.6
    for item in suite.items:
        if "Who is the tallest?" in item.input:
            facts = [fact.split() for fact in item.input.split(".")[:-1]]
            losers = {f[4] for f in facts if f[2] == "taller"} | {f[0] for f in facts if f[2] == "shorter"}
            assert item.reference not in losers


def test_logic_suite_is_scored_on_the_first_word():
    suite = get_builtin("logic", size=24)
    item = next(item for item in suite.items if item.reference in ("yes", "no"))
    assert suite.score(item, f" {item.reference.capitalize()}, because it says so.")[1] == 1.0
