"""Answer extractors: turn a model's free-form generation into a comparable answer string."""

from __future__ import annotations

import re
import string
from collections.abc import Callable

from ensembles.registry import Registry

Extractor = Callable[[str], str]

EXTRACTORS: Registry[Extractor] = Registry("answer extractor")

OPTION_LETTERS = "ABCDEFGHIJ"

# A sign only counts when it is not glued to a preceding digit, so "10-3" yields 10 and 3.
_NUMBER_RE = re.compile(
    r"(?:(?<![\d.,])[-+])?"
    r"(?<![\d.])"
    r"(?:\d{1,3}(?:,\d{3})+(?!\d)(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+)"
)
_ANSWER_LETTER_RE = re.compile(r"(?i:answer)\s*(?:is)?\s*[:\-]?\s*\(?([A-J])\b(?![-'])")
_PAREN_LETTER_RE = re.compile(r"\(([A-J])\)")
_PUNCT_LETTER_RE = re.compile(r"\b([A-J])[.):](?!\w)")
_BARE_LETTER_RE = re.compile(r"\b([A-J])\b(?!['-])")
_ARTICLES_RE = re.compile(r"\b(a|an|the)\b")
_PUNCT_TABLE = str.maketrans("", "", string.punctuation)


def normalize_number(raw: str) -> str:
    """Canonical form of a numeric string: no commas or '+', no leading or trailing zeros."""
    text = raw.replace(",", "").lstrip("+")
    negative = text.startswith("-")
    text = text.lstrip("-")
    whole, _, frac = text.partition(".")
    whole = str(int(whole or "0"))
    frac = frac.rstrip("0")
    result = f"{whole}.{frac}" if frac else whole
    if negative and result != "0":
        result = "-" + result
    return result


@EXTRACTORS.register("number", pretty_name="Last number")
def extract_number(text: str) -> str:
    """Return the last number in ``text`` in canonical form ("1,234.50" -> "1234.5"), or ""."""
    matches = _NUMBER_RE.findall(text)
    return normalize_number(matches[-1]) if matches else ""


@EXTRACTORS.register("letter", pretty_name="Option letter")
def extract_letter(text: str) -> str:
    """Return the chosen option letter A-J ("Answer: C", "(B)", "B.", " D"), or ""."""
    for pattern in (_ANSWER_LETTER_RE, _PAREN_LETTER_RE, _PUNCT_LETTER_RE):
        match = pattern.search(text)
        if match:
            return match.group(1).upper()
    candidates = list(_BARE_LETTER_RE.finditer(text))
    # "A" and "I" are also English words ("I think ...", "A dog ..."); prefer other letters.
    for match in candidates:
        following = text[match.end() : match.end() + 2]
        is_word = match.group(1) in "AI" and len(following) == 2 and following[0] == " " and following[1].islower()
        if not is_word:
            return match.group(1)
    return candidates[0].group(1) if candidates else ""


@EXTRACTORS.register("first_line", pretty_name="First line")
def extract_first_line(text: str) -> str:
    """Return the first non-empty line, stripped."""
    for line in text.splitlines():
        if line.strip():
            return line.strip()
    return ""


@EXTRACTORS.register("text", pretty_name="Whole text")
def extract_text(text: str) -> str:
    """Return the whole text, stripped."""
    return text.strip()


def extract(name: str, text: str) -> str:
    """Apply the extractor registered as ``name`` to ``text``."""
    return EXTRACTORS.get(name)(text)


def normalize_text(s: str) -> str:
    """SQuAD normalization: lowercase, drop punctuation and articles, collapse whitespace."""
    s = s.lower().translate(_PUNCT_TABLE)
    s = _ARTICLES_RE.sub(" ", s)
    return " ".join(s.split())


_WORD_RE = re.compile(r"[^\W\d_]+(?:['-][^\W\d_]+)*")
_YES_NO_RE = re.compile(r"\b(yes|no)\b", re.IGNORECASE)
_ISO_DATE_RE = re.compile(r"(?<!\d)(\d{4})[-/](\d{1,2})[-/](\d{1,2})(?!\d)")
_WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_WEEKDAY_RE = re.compile(r"\b(" + "|".join(_WEEKDAYS) + r")\b", re.IGNORECASE)
_FENCED_CODE_RE = re.compile(r"```[ \t]*[\w+-]*[ \t]*\n(.*?)(?:```|\Z)", re.DOTALL)


@EXTRACTORS.register("word", pretty_name="First word")
def extract_word(text: str) -> str:
    """Return the first word made of letters ("Cy is the shortest." -> "Cy"), or ""."""
    match = _WORD_RE.search(text)
    return match.group(0) if match else ""


@EXTRACTORS.register("yes_no", pretty_name="Yes or no")
def extract_yes_no(text: str) -> str:
    """Return "yes" or "no", whichever whole word comes first in ``text``, or ""."""
    match = _YES_NO_RE.search(text)
    return match.group(1).lower() if match else ""


@EXTRACTORS.register("date", pretty_name="Date or weekday")
def extract_date(text: str) -> str:
    """Return the first calendar date as YYYY-MM-DD ("2024/3/5" -> "2024-03-05"), else the first weekday name, else ""."""
    # Date questions are answered either with a date or with a day of the week; a date wins when both appear.
    match = _ISO_DATE_RE.search(text)
    if match:
        year, month, day = match.groups()
        return f"{year}-{int(month):02d}-{int(day):02d}"
    weekday = _WEEKDAY_RE.search(text)
    return weekday.group(1).capitalize() if weekday else ""


@EXTRACTORS.register("code", pretty_name="Code")
def extract_code(text: str) -> str:
    """Return the first fenced code block's body, else the text with trailing whitespace removed."""
    # Leading whitespace is kept: a completion's first line is indented function-body code.
    match = _FENCED_CODE_RE.search(text)
    return (match.group(1) if match else text).rstrip()
