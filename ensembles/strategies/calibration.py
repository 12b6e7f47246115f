"""Per-member temperature scaling of answer confidences, fitted on dev (Guo et al., 2017).

A member's confidence in its answer is a softmax entry over logits: its options' log-likelihoods
for a scored multiple-choice item, or for free text the two logits [log p, log(1 - p)] with
p = exp(mean token logprob), so that softmax(logits / T) is sigmoid(logit(p) / T). At T = 1 both
give back the confidence the strategies use uncalibrated; T > 1 softens an overconfident member.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax

from ensembles.answers import is_correct, vote_key
from ensembles.strategies.base import MemberAnswer

ECE_BINS = 15
# T from 1/20 to 20: wide enough for any member seen so far, and it keeps a member whose dev answers
# are all right (or all wrong), where the likelihood keeps improving without end, at a finite T.
LOG_T_BOUNDS = (math.log(0.05), math.log(20.0))
# Keeps log(p) and log(1 - p) finite for a confidence of exactly 0 or 1.
_EPS = 1e-6


def answer_logits(ans: MemberAnswer) -> tuple[np.ndarray, int] | None:
    """Logits and the index of the answer among them, or None for an empty answer or one without scores."""
    key = vote_key(ans.answer)
    if not key:
        return None
    options = {opt: lp for opt, lp in (ans.option_logprobs or {}).items() if math.isfinite(lp)}
    keys = [vote_key(opt) for opt in options]
    if key in keys:
        return np.array(list(options.values()), dtype=float), keys.index(key)
    if ans.logprob is None or not math.isfinite(ans.logprob):
        return None
    p = min(max(math.exp(min(ans.logprob, 0.0)), _EPS), 1.0 - _EPS)
    return np.array([math.log(p), math.log1p(-p)]), 0


def scaled_confidence(logits: np.ndarray, index: int, temperature: float) -> float:
    """softmax(logits / T)[index]."""
    return float(np.exp(log_softmax(logits / temperature)[index]))


def _confidences(rows: Sequence[tuple[np.ndarray, int]], temperature: float) -> np.ndarray:
    """All rows' confidences at once: logits padded with -inf, which takes no softmax mass."""
    width = max(len(logits) for logits, _ in rows)
    padded = np.full((len(rows), width), -np.inf)
    for i, (logits, _) in enumerate(rows):
        padded[i, : len(logits)] = logits
    index = np.array([i for _, i in rows])
    return np.exp(log_softmax(padded / temperature, axis=1)[np.arange(len(rows)), index])


def correctness_nll(confidences: np.ndarray, correct: np.ndarray) -> float:
    """Mean negative log-likelihood of the answers being right (1) or wrong (0) under the confidences."""
    p = np.clip(confidences, _EPS, 1.0 - _EPS)
    return float(-np.mean(correct * np.log(p) + (1.0 - correct) * np.log1p(-p)))


def expected_calibration_error(confidences: np.ndarray, correct: np.ndarray, bins: int = ECE_BINS) -> float:
    """ECE over equal-width bins of (lo, hi]: the gap between accuracy and mean confidence per bin,
    weighted by the bin's share of answers (Naeini et al., 2015; Guo et al., 2017)."""
    confidences = np.asarray(confidences, dtype=float)
    if confidences.size == 0:
        return 0.0
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.digitize(confidences, edges[1:-1], right=True)
    gaps = np.bincount(which, weights=np.asarray(correct, dtype=float) - confidences, minlength=bins)
    return float(np.abs(gaps).sum() / confidences.size)


@dataclass
class MemberCalibration:
    """One member's fitted temperature and its reliability on dev before and after scaling."""

    temperature: float = 1.0
    answers: int = 0  # dev answers that carried a confidence
    ece_before: float | None = None
    ece_after: float | None = None

    def as_dict(self) -> dict[str, float | int | None]:
        def r(x: float | None) -> float | None:
            return None if x is None else round(x, 6)

        return {
            "temperature": round(self.temperature, 6),
            "answers": self.answers,
            "ece_before": r(self.ece_before),
            "ece_after": r(self.ece_after),
        }


class Calibrator:
    """Fits one temperature per member on dev by the likelihood of its answers being right."""

    def __init__(self) -> None:
        self.members: dict[str, MemberCalibration] = {}

    def fit(self, dev_outputs: Sequence[Sequence[MemberAnswer]], dev_references: Sequence[str]) -> Calibrator:
        rows: dict[str, list[tuple[np.ndarray, int]]] = {}
        labels: dict[str, list[float]] = {}
        for answers, reference in zip(dev_outputs, dev_references, strict=True):
            for ans in answers:
                rows.setdefault(ans.member, [])
                labels.setdefault(ans.member, [])
                scored = answer_logits(ans)
                if scored is not None:
                    rows[ans.member].append(scored)
                    labels[ans.member].append(float(is_correct(ans.answer, reference)))
        self.members = {}
        for member, member_rows in rows.items():
            if not member_rows:
                # No logprobs on dev (an endpoint without them): nothing to scale, and nothing to measure.
                self.members[member] = MemberCalibration()
                continue
            correct = np.asarray(labels[member])
            result = minimize_scalar(
                lambda log_t, r=member_rows, y=correct: correctness_nll(_confidences(r, math.exp(log_t)), y),
                bounds=LOG_T_BOUNDS,
                method="bounded",
            )
            temperature = math.exp(float(result.x))
            self.members[member] = MemberCalibration(
                temperature=temperature,
                answers=len(member_rows),
                ece_before=expected_calibration_error(_confidences(member_rows, 1.0), correct),
                ece_after=expected_calibration_error(_confidences(member_rows, temperature), correct),
            )
        return self

    def temperature(self, member: str) -> float:
        """The member's fitted temperature; 1 (no change) for a member not seen on dev."""
        found = self.members.get(member)
        return found.temperature if found else 1.0

    def confidence(self, ans: MemberAnswer, default: float) -> float:
        """The answer's calibrated confidence, or ``default`` when it is empty or carries no scores."""
        scored = answer_logits(ans)
        if scored is None:
            return default
        return scaled_confidence(*scored, self.temperature(ans.member))

    def summary(self) -> dict[str, dict[str, float | int | None]]:
        """Per member: temperature, dev answers with a confidence, and ECE before and after scaling."""
        return {member: cal.as_dict() for member, cal in self.members.items()}
