"""Scoring speed: items per second for each reference-based metric on one CPU core.

Scores 100,000 synthetic item results (short answers from the built-in suites and free-text
sentences, see ``item_results``) with exact_match, f1, bleu, chrf and rouge_l, and, when the
local encoder is present, embedding_similarity on a smaller sample. BLEU and chrF are also
timed through sacrebleu's own ``sentence_score``, and ROUGE-L through the row-by-row dynamic
programme it used before ("before"); every fast score is checked to be identical. Judge and
code metrics are left out: they run a model or a program per item.

    .venv/bin/python bench/score_speed.py [--items 100000] [--embedding-items 2000]
"""

from __future__ import annotations

import argparse
import os
import random
import re
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import sacrebleu

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ensembles.metrics import configure_embedding_model, get_metric  # noqa: E402 - after the path is set
from ensembles.suites import get_builtin  # noqa: E402

DEFAULT_MODEL = REPO / "data" / "test" / "models" / "all-MiniLM-L6-v2"
TARGET_SECONDS = 60.0
FAST_METRICS = ["exact_match", "f1", "bleu", "chrf", "rouge_l"]

_WORDS = (
    "the a model answer question because every small language ensemble vote score item number result "
    "city river capital France Paris Berlin day week month year first second third red blue green large "
    "quickly slowly is was are were has have not only also then than more less three seven twelve"
).split()


def item_results(count: int, seed: int = 0) -> list[tuple[str, str]]:
    """``count`` (prediction, reference) pairs, half short answers and half free text.

    Short answers: references of the built-in suites (1,500 items), predicted right, wrong or
    with extra words. Free text: 2,000 reference sentences of 8-30 words, predicted with words
    dropped, swapped or replaced, so nearly every prediction is distinct.
    """
    rng = random.Random(seed)  # noqa: S311 - benchmark data, not secrets
    short = []
    for name in ("arithmetic", "date_reasoning", "unit_conversion", "logic", "mc_knowledge"):
        suite = get_builtin(name, seed=seed, size=300)
        short.extend(suite.reference_answer(item) for item in suite.items)
    sentences = [" ".join(rng.choices(_WORDS, k=rng.randint(8, 30))) + "." for _ in range(2000)]
    pairs = []
    for _ in range(count):
        if rng.random() < 0.5:
            reference = rng.choice(short)
            roll = rng.random()
            if roll < 0.4:
                prediction = reference
            elif roll < 0.8:
                prediction = rng.choice(short)
            else:
                prediction = f"The answer is {reference}."
        else:
            reference = rng.choice(sentences)
            words = reference.split()
            for _ in range(rng.randint(1, 6)):
                position = rng.randrange(len(words))
                edit = rng.random()
                if edit < 0.4 and len(words) > 2:
                    del words[position]
                elif edit < 0.7:
                    other = rng.randrange(len(words))
                    words[position], words[other] = words[other], words[position]
                else:
                    words[position] = rng.choice(_WORDS)
            prediction = " ".join(words)
        pairs.append((prediction, reference))
    return pairs


def sacrebleu_bleu() -> Callable[[str, str], float]:
    """The metric as it was: one sacrebleu sentence_score call per item."""
    bleu = sacrebleu.BLEU(effective_order=True)

    def score(prediction: str, reference: str) -> float:
        if not prediction.strip() and not reference.strip():
            return 1.0
        return min(1.0, bleu.sentence_score(prediction, [reference]).score / 100.0)

    return score


def sacrebleu_chrf() -> Callable[[str, str], float]:
    chrf = sacrebleu.CHRF()

    def score(prediction: str, reference: str) -> float:
        if not prediction.strip() and not reference.strip():
            return 1.0
        return min(1.0, chrf.sentence_score(prediction, [reference]).score / 100.0)

    return score


def dynamic_programming_rouge_l() -> Callable[[str, str], float]:
    """ROUGE-L as it was: the LCS by a full dynamic programme in Python."""
    word = re.compile(r"\w+")

    def lcs(a: list[str], b: list[str]) -> int:
        previous = [0] * (len(b) + 1)
        for token_a in a:
            current = [0]
            for j, token_b in enumerate(b, start=1):
                current.append(previous[j - 1] + 1 if token_a == token_b else max(previous[j], current[j - 1]))
            previous = current
        return previous[-1]

    def score(prediction: str, reference: str) -> float:
        pred, ref = word.findall(prediction.lower()), word.findall(reference.lower())
        if not pred or not ref:
            return float(pred == ref)
        common = lcs(pred, ref)
        if common == 0:
            return 0.0
        precision, recall = common / len(pred), common / len(ref)
        return 2 * precision * recall / (precision + recall)

    return score


def timed(score: Callable[[str, str], float], pairs: Sequence[tuple[str, str]]) -> tuple[float, list[float]]:
    started = time.perf_counter()
    values = [score(prediction, reference) for prediction, reference in pairs]
    return time.perf_counter() - started, values


def row(label: str, count: int, seconds: float, note: str = "") -> str:
    rate = count / seconds
    return f"| {label:<28} | {count:>7,} | {seconds:>8.2f} | {rate:>10,.0f} | {100_000 / rate:>12.1f} | {note}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--embedding-items", type=int, default=2_000)
    parser.add_argument(
        "--embedding-model", type=Path, default=Path(os.environ.get("ARENA_EMBEDDING_MODEL") or DEFAULT_MODEL)
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    # One core for the process and every thread it starts (torch's included).
    core = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {core})
    pairs = item_results(args.items, seed=args.seed)
    distinct = len(set(pairs))
    print(f"python {sys.version.split()[0]}, sacrebleu {sacrebleu.__version__}, pinned to CPU core {core}")
    print(f"{len(pairs):,} item results ({distinct:,} distinct pairs), seed {args.seed}\n")
    print("| metric                       |   items |  seconds |  items/s   | s per 100k   | note")
    print("|------------------------------|--------:|---------:|-----------:|-------------:|-----")

    total = 0.0
    before = {
        "bleu": ("sacrebleu", sacrebleu_bleu(), "sentence_score per item"),
        "chrf": ("sacrebleu", sacrebleu_chrf(), "sentence_score per item"),
        "rouge_l": ("DP", dynamic_programming_rouge_l(), "row-by-row LCS"),
    }
    for name in FAST_METRICS:
        metric = get_metric(name)
        seconds, values = timed(metric.score, pairs)
        total += seconds
        if name in before:
            label, old_score, how = before[name]
            old_seconds, old_values = timed(old_score, pairs)
            identical = values == old_values
            print(row(f"{name} (before: {label})", len(pairs), old_seconds, how))
            note = f"{old_seconds / seconds:.1f}x faster, scores identical: {identical}"
            print(row(f"{name} (after)", len(pairs), seconds, note))
            if not identical:
                raise SystemExit(f"{name}: the fast path changed scores")
        else:
            print(row(name, len(pairs), seconds))
    verdict = "under" if total * 100_000 / len(pairs) < TARGET_SECONDS else "OVER"
    print(row("all five together", len(pairs), total, f"{verdict} the {TARGET_SECONDS:.0f} s target"))

    if (args.embedding_model / "config.json").is_file():
        import torch

        torch.set_num_threads(1)
        configure_embedding_model(args.embedding_model)
        metric = get_metric("embedding_similarity")
        sample = pairs[: args.embedding_items]
        metric.score_batch(["warm up"], ["the encoder loads outside the timing"])
        started = time.perf_counter()
        metric.score_batch([p for p, _ in sample], [r for _, r in sample])
        seconds = time.perf_counter() - started
        print()
        print("| metric                       |   items |  seconds |  items/s   | s per 100k   | note")
        print("|------------------------------|--------:|---------:|-----------:|-------------:|-----")
        print(row("embedding_similarity", len(sample), seconds, f"{args.embedding_model.name}, batched, 1 thread"))
    else:
        print(f"\nembedding_similarity skipped: no model at {args.embedding_model}")


if __name__ == "__main__":
    main()
