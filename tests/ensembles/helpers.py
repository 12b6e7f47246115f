"""Deterministic stand-in encoders and the items they make easy, for the strategies that embed text."""

from __future__ import annotations

import random
import re
import zlib

import numpy as np

from ensembles.strategies import MemberAnswer


def trigram_embedder(texts: list[str]) -> np.ndarray:
    """Deterministic stand-in encoder: character trigrams hashed into 64 buckets."""
    out = np.zeros((len(texts), 64))
    for row, text in enumerate(texts):
        padded = f"  {text.lower()} "
        for i in range(len(padded) - 2):
            out[row, zlib.crc32(padded[i : i + 3].encode()) % 64] += 1.0
    return out


def matching_digits(candidate: str, code: str) -> int:
    return sum(x == y for x, y in zip(candidate, code, strict=False))


def digit_match_embedder(texts: list[str]) -> np.ndarray:
    """Deterministic stand-in encoder for "A [SEP] B [SEP] input": how many digits of A and of B
    match, position by position, the code written in the input."""
    rows = []
    for text in texts:
        a, b, question = text.split(" [SEP] ")
        code = re.search(r"\d+", question).group()
        rows.append([matching_digits(a, code), matching_digits(b, code)])
    return np.asarray(rows, dtype=float)


def _answered(member: str, text: str) -> MemberAnswer:
    return MemberAnswer(member=member, answer=text, text=text)


def code_items(count: int, seed: int, members=("a", "b", "c")):
    """Items asking to repeat a four-digit code: one member (a different one each time) repeats it,
    the others give other codes."""
    rng = random.Random(seed)  # noqa: S311 - test data, not a secret
    outputs, references, inputs = [], [], []
    for i in range(count):
        code = str(rng.randrange(1000, 10000))
        right = members[i % len(members)]
        outputs.append([_answered(m, code if m == right else str(rng.randrange(1000, 10000))) for m in members])
        references.append(code)
        inputs.append(f"Repeat the code {code} back.")
    return outputs, references, inputs
