"""How answers are compared: the key under which two answers count as the same one."""

from __future__ import annotations


def vote_key(answer: str) -> str:
    """Key under which answers are counted as equal: case- and whitespace-insensitive.

    Deliberately lighter than SQuAD normalization, which would merge "-5" with "5"
    and erase the option letter "A" as an article.
    """
    return " ".join(answer.casefold().split())


def is_correct(answer: str, reference: str) -> bool:
    """Whether a member's extracted answer matches the dev reference, compared as votes are.

    The arena's references are extracted answers ("12", "B"), so vote_key equality is the
    match; an empty answer is never right.
    """
    key = vote_key(answer)
    return bool(key) and key == vote_key(reference)
