import pytest

from ensembles.metrics import EXTRACTORS, extract


def test_new_extractors_are_registered():
    assert {"word", "yes_no", "date", "code"} <= set(EXTRACTORS.names())


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (" Cy", "Cy"),
        ("Cy is the shortest.", "Cy"),
        ("  \n- Thursday!", "Thursday"),
        ("42. Bob", "Bob"),
        ("O'Neil wins", "O'Neil"),
        ("Zoë.", "Zoë"),
        ("", ""),
        ("123 ...", ""),
    ],
)
def test_word_extractor_takes_the_first_word_of_letters(text, expected):
    assert extract("word", text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (" Yes", "yes"),
        ("no, it is not", "no"),
        ("NO.", "no"),
        ("I think yes; no doubt", "yes"),
        ("nothing to say", ""),
        ("yesterday", ""),
        ("", ""),
    ],
)
def test_yes_no_extractor_takes_the_first_whole_yes_or_no(text, expected):
    assert extract("yes_no", text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (" 2024-04-04", "2024-04-04"),
        ("It is 2024/3/5.", "2024-03-05"),
        ("2024-3-5 or 2024-03-06", "2024-03-05"),
        (" thursday.", "Thursday"),
        ("Monday, 2024-01-01", "2024-01-01"),
        ("on day 20240404", ""),
        ("someday", ""),
    ],
)
def test_date_extractor_prefers_an_iso_date_then_a_weekday(text, expected):
    assert extract("date", text) == expected


def test_code_extractor_keeps_indentation_and_unwraps_fenced_blocks():
    assert extract("code", "    return a + b\n\n\n") == "    return a + b"
    assert extract("code", "Here:\n```python\ndef f():\n    return 1\n```\nDone") == "def f():\n    return 1"
    assert extract("code", "```\nx = 1\n") == "x = 1"
