"""Fast exact building blocks for sentence BLEU, chrF and ROUGE-L.

The BLEU and chrF functions reproduce sacrebleu 2.x (13a tokenizer, "exp" smoothing with
effective order; chrF with character 6-grams and beta 2) operation for operation, so their
scores are bit-identical; tests compare them with sacrebleu on thousands of random strings.
They are faster because each reference's n-grams are counted once and cached, the
tokenizer's one-character substitution runs as ``str.translate``, and n-gram matches are
counted over the keys two texts share, in C where possible.
"""

from __future__ import annotations

import math
import re
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

BLEU_MAX_ORDER = 4
CHRF_CHAR_ORDER = 6
CHRF_BETA = 2
# References recur for every member and run, so their n-grams are cached, within a budget of
# characters (counted profiles take ~300 bytes a character for chrF, ~80 for BLEU: ~75 MB each).
# Predictions are cached only when short: short answers repeat, long generations rarely do.
_CHRF_CACHE_CHARS = 256_000
_BLEU_CACHE_CHARS = 1_000_000
_SHORT_PREDICTION_CHARS = 32

# sacrebleu's TokenizerRegexp, in order. The first pattern puts spaces around single characters,
# which str.translate does identically and without a Python call per match.
_SPACED_CHARS = '{|}~[\\]^_` !"#$%&()*+:;<=>?@/'
_SPACE_AROUND = str.maketrans({char: f" {char} " for char in _SPACED_CHARS})
_PERIOD_COMMA_AFTER_NON_DIGIT = re.compile(r"([^0-9])([\.,])")
_PERIOD_COMMA_BEFORE_NON_DIGIT = re.compile(r"([\.,])([^0-9])")
_DASH_AFTER_DIGIT = re.compile(r"([0-9])(-)")


def tokenize_13a(line: str) -> str:
    """sacrebleu's "13a" tokenization (mteval-v13a), same output."""
    line = line.replace("<skipped>", "").replace("-\n", "").replace("\n", " ")
    if "&" in line:
        line = line.replace("&quot;", '"').replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">")
    line = f" {line} ".translate(_SPACE_AROUND)
    # The remaining patterns can only match when their characters are present.
    if "." in line or "," in line:
        line = _PERIOD_COMMA_AFTER_NON_DIGIT.sub(r"\1 \2 ", line)
        line = _PERIOD_COMMA_BEFORE_NON_DIGIT.sub(r" \1 \2", line)
    if "-" in line:
        line = _DASH_AFTER_DIGIT.sub(r"\1 \2 ", line)
    return " ".join(line.split())


@dataclass(frozen=True)
class NgramProfile:
    """N-gram counts of one text by order (index 0 holds unigrams), with totals."""

    counts: tuple[Counter, ...]
    totals: tuple[int, ...]
    # True where every n-gram of that order occurs once, so matching reduces to a set intersection.
    distinct: tuple[bool, ...]
    length: int


def _profile(grams: list[Counter], length: int) -> NgramProfile:
    totals = tuple(sum(counter.values()) for counter in grams)
    distinct = tuple(len(counter) == total for counter, total in zip(grams, totals, strict=True))
    return NgramProfile(tuple(grams), totals, distinct, length)


class _ProfileCache:
    """Least-recently-used profiles of texts, bounded by their total length in characters."""

    def __init__(self, compute: Callable[[str], NgramProfile], budget_chars: int) -> None:
        self._compute = compute
        self._budget = budget_chars
        self._used = 0
        self._profiles: OrderedDict[str, NgramProfile] = OrderedDict()

    def get(self, text: str) -> NgramProfile:
        profile = self._profiles.get(text)
        if profile is not None:
            self._profiles.move_to_end(text)
            return profile
        profile = self._compute(text)
        size = len(text) + 1
        if size <= self._budget // 16:  # one huge text must not flush everything else
            self._profiles[text] = profile
            self._used += size
            while self._used > self._budget:
                evicted, _ = self._profiles.popitem(last=False)
                self._used -= len(evicted) + 1
        return profile

    def pair(self, prediction: str, reference: str) -> tuple[NgramProfile, NgramProfile]:
        """Profiles of a prediction (cached only when short) and a reference (cached)."""
        hyp = self.get(prediction) if len(prediction) <= _SHORT_PREDICTION_CHARS else self._compute(prediction)
        return hyp, self.get(reference)


def word_profile(text: str) -> NgramProfile:
    """Word 1- to 4-grams of ``text`` after sacrebleu's BLEU preprocessing (rstrip, 13a)."""
    tokens = tokenize_13a(text.rstrip()).split()
    grams = [Counter(zip(*(tokens[k:] for k in range(order)), strict=False)) for order in range(1, BLEU_MAX_ORDER + 1)]
    return _profile(grams, len(tokens))


def char_profile(text: str) -> NgramProfile:
    """Character 1- to 6-grams of ``text`` with whitespace removed, as sacrebleu's chrF counts them."""
    chars = "".join(text.split())
    grams = [Counter(chars)]
    grams += [Counter([chars[i : i + n] for i in range(len(chars) - n + 1)]) for n in range(2, CHRF_CHAR_ORDER + 1)]
    return _profile(grams, len(chars))


_WORD_PROFILES = _ProfileCache(word_profile, _BLEU_CACHE_CHARS)
_CHAR_PROFILES = _ProfileCache(char_profile, _CHRF_CACHE_CHARS)


def matches(hyp: NgramProfile, ref: NgramProfile, order: int) -> int:
    """Clipped n-gram matches of one order: the sum over shared n-grams of the smaller count."""
    hyp_counts, ref_counts = hyp.counts[order], ref.counts[order]
    shared = hyp_counts.keys() & ref_counts.keys()
    if hyp.distinct[order] or ref.distinct[order]:
        return len(shared)
    # map/zip/min run in C; a set iterates in the same order both times.
    return sum(map(min, map(hyp_counts.__getitem__, shared), map(ref_counts.__getitem__, shared)))


def sentence_bleu(prediction: str, reference: str) -> float:
    """sacrebleu ``BLEU(effective_order=True).sentence_score(prediction, [reference]).score``."""
    hyp, ref = _WORD_PROFILES.pair(prediction, reference)
    correct = [matches(hyp, ref, order) for order in range(BLEU_MAX_ORDER)]
    return _bleu_from_stats(correct, list(hyp.totals), hyp.length, ref.length)


def _bleu_from_stats(correct: list[int], total: list[int], sys_len: int, ref_len: int) -> float:
    """sacrebleu's BLEU.compute_bleu for smooth_method="exp", effective_order=True, same arithmetic."""
    brevity = 1.0
    if sys_len < ref_len:
        brevity = math.exp(1 - ref_len / sys_len) if sys_len > 0 else 0.0
    if not any(correct):
        return 0.0
    precisions = [0.0] * BLEU_MAX_ORDER
    smooth = 1.0
    effective_order = BLEU_MAX_ORDER
    for n in range(1, BLEU_MAX_ORDER + 1):
        if total[n - 1] == 0:
            break
        effective_order = n
        if correct[n - 1] == 0:
            smooth *= 2
            precisions[n - 1] = 100.0 / (smooth * total[n - 1])
        else:
            precisions[n - 1] = 100.0 * correct[n - 1] / total[n - 1]
    # sacrebleu floors log(0) at -9999999999 rather than failing.
    logs = [math.log(p) if p != 0.0 else -9999999999 for p in precisions[:effective_order]]
    return brevity * math.exp(sum(logs) / effective_order)


def sentence_chrf(prediction: str, reference: str) -> float:
    """sacrebleu ``CHRF().sentence_score(prediction, [reference]).score``."""
    hyp, ref = _CHAR_PROFILES.pair(prediction, reference)
    factor = CHRF_BETA**2
    avg_prec = avg_rec = 0.0
    effective_order = 0
    for order in range(CHRF_CHAR_ORDER):
        n_ref = ref.totals[order]
        # sacrebleu counts no hypothesis n-grams when the reference has none of this order.
        n_hyp = hyp.totals[order] if n_ref else 0
        if n_hyp > 0 and n_ref > 0:
            n_match = matches(hyp, ref, order)
            avg_prec += n_match / n_hyp
            avg_rec += n_match / n_ref
            effective_order += 1
    if effective_order == 0:
        return 0.0
    avg_prec /= effective_order
    avg_rec /= effective_order
    if not avg_prec + avg_rec:
        return 0.0
    score = (1 + factor) * avg_prec * avg_rec
    score /= (factor * avg_prec) + avg_rec
    return 100 * score


def lcs_length(a: list[str], b: list[str]) -> int:
    """Length of the longest common subsequence by the bit-vector method (Crochemore et al. 2001).

    One big-integer step per token of ``a`` instead of a row of ``len(b)`` Python steps.
    """
    if not a or not b:
        return 0
    positions: dict[str, int] = {}
    for j, token in enumerate(b):
        positions[token] = positions.get(token, 0) | (1 << j)
    full = (1 << len(b)) - 1
    row = full
    for token in a:
        hits = row & positions.get(token, 0)
        row = ((row + hits) | (row - hits)) & full
    return len(b) - row.bit_count()
