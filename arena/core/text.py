"""What text the arena accepts: one rule for every field, page and API alike.

No field holds a control character other than tab and line breaks (a NUL cannot even be stored by
PostgreSQL, and an escape sequence in a name would reach logs and terminals); a name is also
printable on one line, at most 100 characters, and unique within its team (its service checks that).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator
from typing import Any

from django.core.exceptions import ValidationError

NAME_MAX_LENGTH = 100
# Line breaks and tabs are text; every other C0/C1 control character (and DEL) is refused.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
# The same characters written as JSON escapes: a cheap test on a raw body before anything is parsed.
# (C1 characters may also come unescaped, as UTF-8.)
_JSON_CONTROL = re.compile(rb"\\u00(?:0[0-8bcefBCEF]|1[0-9a-fA-F]|7[fF]|[89][0-9a-fA-F])|\\[bf]|\xc2[\x80-\x9f]")


def control_problem(value: str) -> str | None:
    """Why ``value`` is refused ("must not contain NUL characters"), or None when it is fine."""
    match = _CONTROL.search(value)
    if match is None:
        return None
    if match.group() == "\x00":
        return "must not contain NUL characters"
    return f"must not contain control characters (U+{ord(match.group()):04X})"


def name_problem(name: str, *, max_length: int = NAME_MAX_LENGTH) -> str | None:
    """Why a (stripped) name is refused, or None: present, at most ``max_length`` characters, printable."""
    if not name:
        return "a name is required"
    if len(name) > max_length:
        return f"names are at most {max_length} characters"
    if problem := control_problem(name):
        return problem
    if not name.isprintable():
        char = next(c for c in name if not c.isprintable())
        label = " ".join(filter(None, [f"U+{ord(char):04X}", unicodedata.name(char, "")]))
        return f"names are printable on one line; this one holds {label}"
    return None


def check_name(field: str, value: str | None, *, max_length: int = NAME_MAX_LENGTH) -> str:
    """``value`` stripped of surrounding spaces, or ValidationError({field: ...}) by name_problem."""
    name = (value or "").strip()
    if problem := name_problem(name, max_length=max_length):
        raise ValidationError({field: problem})
    return name


def may_hold_control(body: bytes) -> bool:
    """Whether a JSON body may hold an escaped control character (a quick test; some hits are not)."""
    return _JSON_CONTROL.search(body) is not None


def first_control(body: Any, skip: tuple[str, ...] = ()) -> tuple[str, str] | None:
    """(field, problem) of the first string in a parsed JSON body, key or value at any depth, that holds
    a control character; the field is the body's top-level key (or "body"), and ``skip`` keys are not read."""
    if not isinstance(body, dict):
        problem = next(filter(None, map(control_problem, _strings(body))), None)
        return ("body", problem) if problem else None
    for key, value in body.items():
        if key in skip:
            continue
        if problem := next(filter(None, map(control_problem, [key, *_strings(value)])), None):
            return key, problem
    return None


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield str(key)
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)
