import pytest

from ensembles.metrics import EXTRACTORS, extract, normalize_text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The answer is 42.", "42"),
        ("First 3, then 1,234 apples", "1234"),
        ("It costs $1,234.50 in total", "1234.5"),
        ("x = -7", "-7"),
        ("+5 degrees", "5"),
        ("12.0", "12"),
        ("12.50", "12.5"),
        ("about .5 of it", "0.5"),
        ("10-3=7", "7"),
        ("pages 3-4", "4"),
        ("007", "7"),
        ("-0.0", "0"),
        ("no digits here", ""),
        ("", ""),
    ],
)
def test_number_extractor_takes_the_last_number_in_canonical_form(text, expected):
    assert extract("number", text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (" B", "B"),
        ("(C) Paris", "C"),
        ("D. Berlin", "D"),
        ("Answer: C", "C"),
        ("The answer is (A)", "A"),
        ("I think B is right", "B"),
        ("A dog is a mammal, so C", "C"),
        ("A", "A"),
        ("J", "J"),
        ("K", ""),
        ("paris", ""),
        ("", ""),
    ],
)
def test_letter_extractor_finds_the_chosen_option(text, expected):
    assert extract("letter", text) == expected


def test_first_line_extractor_skips_blank_lines_and_strips():
    assert extract("first_line", "\n\n  Paris is the capital \nBerlin") == "Paris is the capital"
    assert extract("first_line", "   \n") == ""


def test_text_extractor_returns_the_stripped_text():
    assert extract("text", "  two\nlines \n") == "two\nlines"


def test_extractors_registry_lists_all_builtin_extractors():
    assert {"first_line", "letter", "number", "text"} <= set(EXTRACTORS.names())


def test_normalize_text_follows_squad_rules():
    assert normalize_text("  The Quick, brown fox!  ") == "quick brown fox"
    assert normalize_text("An apple a day") == "apple day"
