import pytest

from ensembles.judge import combine_orders, judge_prompt, parse_verdict


def test_the_prompt_shows_both_answers_in_the_given_order():
    prompt = judge_prompt("What is 2+2?", "4", "five")
    assert prompt.index("4\n[The End of Assistant A") < prompt.index("five\n[The End of Assistant B")
    assert '"[[C]]" for a tie' in prompt


@pytest.mark.parametrize(
    ("text", "verdict"),
    [
        ("[[A]]", "A"),
        ("Assistant B is more accurate. [[B]]", "B"),
        ("[[C]]", "tie"),
        ("At first [[A]], but on reflection [[B]]", "B"),
        (" B. Because it is right", "B"),
        ("Assistant A", "A"),
        ("I cannot decide", None),
        ("", None),
    ],
)
def test_verdicts_are_read_from_brackets_or_a_leading_letter(text, verdict):
    assert parse_verdict(text) == verdict


@pytest.mark.parametrize(
    ("forward", "swapped", "outcome"),
    [
        ("A", "B", "first"),  # first preferred in both positions
        ("B", "A", "second"),
        ("A", "A", "tie"),  # always picks position A: position bias, a tie
        ("tie", "B", "tie"),
        ("A", None, "first"),
        (None, "A", "second"),
        (None, None, None),
    ],
)
def test_both_orders_combine_into_one_outcome(forward, swapped, outcome):
    assert combine_orders(forward, swapped) == outcome
