"""Pairwise judging: a model compares two answers to one question, in both orders, ties allowed.

The prompt and the verdict format follow MT-Bench's pairwise judge ("[[A]]", "[[B]]" or "[[C]]"
for a tie). Each pair is judged twice with the answers swapped; a verdict that flips with the
order is position bias, and counts as a tie, as FastChat's pairwise evaluation does.
"""

from __future__ import annotations

import re
from typing import Literal

Verdict = Literal["A", "B", "tie"]
Outcome = Literal["first", "second", "tie"]

REFERENCE_URL = "https://arxiv.org/abs/2306.05685"

JUDGE_TEMPLATE = """\
Please act as an impartial judge and evaluate the quality of the responses provided by two AI \
assistants to the user question displayed below. Choose the assistant that follows the user's \
instructions and answers the user's question better. Consider helpfulness, relevance, accuracy, \
depth and level of detail. Do not let the order of the responses, their length or the assistants' \
names influence you. Output your final verdict strictly in this format: "[[A]]" if assistant A is \
better, "[[B]]" if assistant B is better, and "[[C]]" for a tie.

[User Question]
{question}

[The Start of Assistant A's Answer]
{answer_a}
[The End of Assistant A's Answer]

[The Start of Assistant B's Answer]
{answer_b}
[The End of Assistant B's Answer]

Verdict:"""

_BRACKETED = re.compile(r"\[\[\s*([ABC])\s*\]\]")
_BARE = re.compile(r"^\W*(?:assistant\s+)?([ABC])\b", re.IGNORECASE)


def judge_prompt(question: str, answer_a: str, answer_b: str) -> str:
    """The judge's prompt for one ordered pair."""
    return JUDGE_TEMPLATE.format(question=question.strip(), answer_a=answer_a.strip(), answer_b=answer_b.strip())


def parse_verdict(text: str) -> Verdict | None:
    """The verdict in a judge's output: "[[A]]"/"[[B]]"/"[[C]]", or a bare leading letter; None if absent.

    The last bracketed verdict wins (judges often explain first and conclude last).
    """
    found = _BRACKETED.findall(text)
    letter = found[-1] if found else None
    if letter is None:
        bare = _BARE.match(text.strip())
        letter = bare.group(1).upper() if bare else None
    if letter is None:
        return None
    return "tie" if letter == "C" else letter  # type: ignore[return-value]


def combine_orders(forward: Verdict | None, swapped: Verdict | None) -> Outcome | None:
    """One outcome for (first, second) from the verdict with first shown as A and the one with it as B.

    Agreement decides; a verdict that flips with the order, or a tie in either, is a tie. With one
    verdict unreadable the other decides; with neither readable there is no outcome.
    """
    as_first = {"A": "first", "B": "second", "tie": "tie"}
    as_second = {"A": "second", "B": "first", "tie": "tie"}
    a = as_first[forward] if forward else None
    b = as_second[swapped] if swapped else None
    if a is None and b is None:
        return None
    if a is None or b is None:
        return a or b  # type: ignore[return-value]
    return a if a == b else "tie"  # type: ignore[return-value]


OUTCOME_SCORE = {"first": 1.0, "second": 0.0, "tie": 0.5}
