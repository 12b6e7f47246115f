"""Per-item scoring metrics; every score lies in [0, 1]."""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Sequence
from decimal import Decimal, InvalidOperation
from typing import ClassVar

from ensembles.metrics.extract import normalize_text
from ensembles.metrics.ngrams import lcs_length, sentence_bleu, sentence_chrf
from ensembles.registry import Registry


class Metric(ABC):
    """Scores one prediction against one reference."""

    name: ClassVar[str] = ""
    pretty_name: ClassVar[str] = ""
    reference_url: ClassVar[str] = ""
    binary: ClassVar[bool] = False

    @abstractmethod
    def score(self, prediction: str, reference: str) -> float:
        """Return a score in [0, 1]; higher is better."""

    def score_batch(self, predictions: Sequence[str], references: Sequence[str]) -> list[float]:
        """Score aligned lists; metrics with a cheaper batched path (embeddings) override this."""
        if len(predictions) != len(references):
            raise ValueError(f"got {len(predictions)} predictions for {len(references)} references")
        return [
            self.score(prediction, reference) for prediction, reference in zip(predictions, references, strict=True)
        ]


METRICS: Registry[type[Metric]] = Registry("metric")

_NUMERIC_RE = re.compile(r"[-+]?(?:\d+(?:,\d{3})*(?:\.\d*)?|\.\d+)")
_WORD_RE = re.compile(r"\w+")


def get_metric(name: str) -> Metric:
    """Instantiate the metric registered as ``name``."""
    return METRICS.get(name)()


def _as_number(s: str) -> Decimal | None:
    s = s.strip()
    if not _NUMERIC_RE.fullmatch(s):
        return None
    try:
        return Decimal(s.replace(",", ""))
    except InvalidOperation:
        return None


def _tokens(s: str) -> list[str]:
    tokens = normalize_text(s).split()
    # Normalization erases some whole answers (the option letter "A" is an article);
    # fall back to plain lowercase tokens so "" never matches "A".
    return tokens or s.lower().split()


@METRICS.register(
    "exact_match",
    pretty_name="Exact match",
    reference_url="https://rajpurkar.github.io/SQuAD-explorer/",
)
class ExactMatch(Metric):
    """1 if the normalized strings are equal; numbers are compared by value ("-5" != "5")."""

    binary = True

    def score(self, prediction: str, reference: str) -> float:
        pred_num, ref_num = _as_number(prediction), _as_number(reference)
        if pred_num is not None and ref_num is not None:
            return float(pred_num == ref_num)
        return float(_tokens(prediction) == _tokens(reference))


@METRICS.register(
    "f1",
    pretty_name="Token F1",
    reference_url="https://rajpurkar.github.io/SQuAD-explorer/",
)
class TokenF1(Metric):
    """SQuAD bag-of-tokens F1 between normalized prediction and reference."""

    def score(self, prediction: str, reference: str) -> float:
        pred, ref = _tokens(prediction), _tokens(reference)
        if not pred or not ref:
            return float(pred == ref)
        common = sum((Counter(pred) & Counter(ref)).values())
        if common == 0:
            return 0.0
        precision, recall = common / len(pred), common / len(ref)
        return 2 * precision * recall / (precision + recall)


@METRICS.register(
    "bleu",
    pretty_name="Sentence BLEU",
    reference_url="https://github.com/mjpost/sacrebleu",
)
class Bleu(Metric):
    """Smoothed sentence-level BLEU, scaled to [0, 1].

    Bit-identical to ``sacrebleu.BLEU(effective_order=True).sentence_score(prediction, [reference])``
    (see ensembles.metrics.ngrams for why it is several times faster).
    """

    def score(self, prediction: str, reference: str) -> float:
        if not prediction.strip() and not reference.strip():
            return 1.0
        # Floating-point BLEU can land a hair above 100 for identical strings.
        return min(1.0, sentence_bleu(prediction, reference) / 100.0)


@METRICS.register(
    "chrf",
    pretty_name="chrF",
    reference_url="https://github.com/mjpost/sacrebleu",
)
class ChrF(Metric):
    """Sentence-level chrF (character 6-grams, beta 2), scaled to [0, 1].

    Bit-identical to ``sacrebleu.CHRF().sentence_score(prediction, [reference])``.
    """

    def score(self, prediction: str, reference: str) -> float:
        if not prediction.strip() and not reference.strip():
            return 1.0
        return min(1.0, sentence_chrf(prediction, reference) / 100.0)


@METRICS.register(
    "rouge_l",
    pretty_name="ROUGE-L",
    reference_url="https://aclanthology.org/W04-1013/",
)
class RougeL(Metric):
    """ROUGE-L F-measure: longest common token subsequence of prediction and reference."""

    # Implemented here because sacrebleu has no ROUGE; the LCS is the bit-vector method.

    def score(self, prediction: str, reference: str) -> float:
        pred = _WORD_RE.findall(prediction.lower())
        ref = _WORD_RE.findall(reference.lower())
        if not pred or not ref:
            return float(pred == ref)
        lcs = lcs_length(pred, ref)
        if lcs == 0:
            return 0.0
        precision, recall = lcs / len(pred), lcs / len(ref)
        return 2 * precision * recall / (precision + recall)
