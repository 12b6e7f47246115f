"""PairRanker: a cross-encoder that compares two candidates for the same input, learned on dev."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import Field

from ensembles.answers import is_correct
from ensembles.errors import EnsembleError
from ensembles.strategies.base import STRATEGIES, CallCost, Decision, MemberAnswer, Strategy
from ensembles.strategies.calls import Shown, answered, shown
from ensembles.strategies.common import LearnedStrategy
from ensembles.strategies.embed import Embedder, embed_checked

if TYPE_CHECKING:
    from ensembles.strategies.calls import ModelCaller

# How the pair is written for the encoder; BERT-style tokenizers read [SEP] as their separator token.
# The candidates come first so that a long input, not a candidate, is what the encoder's length limit cuts.
PAIR_FORMAT = "{a} [SEP] {b} [SEP] {input}"

Aggregation = Literal["max_logits", "max_wins", "bubble"]


def default_scorer(answer: str, reference: str) -> float:
    """1 for an answer that matches the reference as votes are compared, else 0."""
    return float(is_correct(answer, reference))


@STRATEGIES.register(
    "pair_ranker",
    pretty_name="Pairwise ranker (PairRanker)",
    reference_url="https://arxiv.org/abs/2306.02561",
)
class PairRanker(LearnedStrategy):
    """Compares candidates two at a time with a cross-encoder and answers with the top one.

    The encoder reads "A [SEP] B [SEP] input" at once (the shipped all-MiniLM-L6-v2 by default,
    kept frozen); a logistic regression over its pooled vector predicts whether A is better than
    B. Training pairs come from dev items where the suite's metric scores one candidate above the
    other, in both orders, as MixInstruct derived its oracle pairs. ``max_logits`` and
    ``max_wins`` compare every ordered pair (N(N-1) comparisons); ``bubble`` makes one pass that
    keeps the better of each duel, both orders asked (2(N-1) comparisons).
    """

    class Params(Strategy.Params):
        aggregation: Aggregation = "max_logits"
        # What the encoder reads of each candidate: the raw generation or the extracted answer.
        candidate: Shown = "text"
        # Inverse regularization strength of the pair classifier.
        C: float = Field(1.0, gt=0.0, le=1e4)
        # Training pairs kept at most (sampled with ``seed``); bounds fit time on large dev splits.
        max_pairs: int = Field(4000, ge=2, le=100_000)
        seed: int = Field(0, ge=0)

    params: Params

    def __init__(self, params: dict[str, Any] | None = None, *, embedder: Embedder | None = None) -> None:
        super().__init__(params)
        self.embedder = embedder
        self.model: Any = None
        self.trained_pairs = 0

    def encode(self, item_input: str, pairs: Sequence[tuple[str, str]]) -> np.ndarray:
        """The encoder's vector of each (A, B) pair read together with the input."""
        return self.embed([PAIR_FORMAT.format(input=item_input, a=a, b=b) for a, b in pairs])

    def embed(self, texts: list[str]) -> np.ndarray:
        """The injected encoder's vectors for ``texts``, checked for shape."""
        if self.embedder is None:
            raise EnsembleError(
                f"{self.name} compares candidates with a sentence encoder and was built without one; "
                "pass embedder=MiniLMEmbedder(path) when constructing it"
            )
        return embed_checked(self.embedder, list(texts), self.name)

    def fit(
        self,
        dev_outputs: Sequence[Sequence[MemberAnswer]],
        dev_references: Sequence[str],
        *,
        dev_inputs: Sequence[str] | None = None,
        scorer: Callable[[str, str], float] | None = None,
    ) -> None:
        """Learn which of two candidates is better from dev items.

        ``scorer(answer, reference)`` is the suite's metric (higher is better); without it a
        candidate scores 1 when it matches the reference and 0 otherwise. Pairs the metric
        scores equally teach nothing and are left out.
        """
        self.check_dev(dev_outputs, dev_references, dev_inputs)
        if dev_inputs is None:
            raise EnsembleError(f"{self.name} reads the dev items' input texts; pass dev_inputs to fit()")
        score = scorer or default_scorer
        duels: list[tuple[str, str, str]] = []  # (input, better, worse)
        for answers, reference, text in zip(dev_outputs, dev_references, dev_inputs, strict=True):
            candidates = answered(answers)
            values = [score(a.answer, reference) for a in candidates]
            for i, a in enumerate(candidates):
                for j in range(i + 1, len(candidates)):
                    if values[i] != values[j]:
                        better, worse = (a, candidates[j]) if values[i] > values[j] else (candidates[j], a)
                        duels.append((text, shown(better, self.params.candidate), shown(worse, self.params.candidate)))
        if not duels:
            raise EnsembleError(
                f"{self.name}: no dev item has one candidate that the metric scores above another, "
                "so there is nothing to learn"
            )
        if 2 * len(duels) > self.params.max_pairs:
            rng = np.random.default_rng(self.params.seed)
            keep = np.sort(rng.choice(len(duels), size=self.params.max_pairs // 2, replace=False))
            duels = [duels[i] for i in keep]
        # Both orders of every duel, so the classifier cannot lean on position.
        texts = [
            PAIR_FORMAT.format(input=text, a=a, b=b)
            for text, better, worse in duels
            for a, b in ((better, worse), (worse, better))
        ]
        labels = [1, 0] * len(duels)
        # Imported here so that listing strategies does not pay for loading scikit-learn.
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        # Standardized: the pooled vectors are unit length, so a difference that matters is small in raw units.
        self.model = make_pipeline(StandardScaler(), LogisticRegression(C=self.params.C, max_iter=2000, random_state=0))
        self.model.fit(self.embed(texts), labels)
        self.trained_pairs = len(labels)
        self.fitted = True

    def logits(self, item_input: str, pairs: Sequence[tuple[str, str]]) -> np.ndarray:
        """The classifier's logit that A beats B, one per (A, B) pair."""
        return np.asarray(self.model.decision_function(self.encode(item_input, pairs)), dtype=np.float64)

    def rank(
        self, answers: Sequence[MemberAnswer], item_input: str, *, top: int = 1
    ) -> tuple[list[MemberAnswer], dict[str, Any]]:
        """Candidates (empty answers left out) best first, and how the ranking was reached.

        With ``bubble``, ``top`` passes fix the first ``top`` places; the rest keep member order.
        """
        self.require_fit()
        candidates = answered(answers)
        texts = [shown(a, self.params.candidate) for a in candidates]
        n = len(candidates)
        if n < 2:
            return candidates, {"comparisons": 0}
        if self.params.aggregation == "bubble":
            return self._bubble(candidates, texts, item_input, top)
        ordered = [(i, j) for i in range(n) for j in range(n) if i != j]
        matrix = np.zeros((n, n))
        logits = self.logits(item_input, [(texts[i], texts[j]) for i, j in ordered])
        for (i, j), logit in zip(ordered, logits, strict=True):
            matrix[i, j] = logit
        margins = matrix - matrix.T  # margins[i, j] > 0: i beats j, both orders counted
        sums = margins.sum(axis=1)
        wins = (margins > 0).sum(axis=1)
        if self.params.aggregation == "max_wins":
            # Most duels won; the summed margins break ties, then member order.
            order = sorted(range(n), key=lambda i: (-int(wins[i]), -sums[i], i))
        else:
            order = sorted(range(n), key=lambda i: (-sums[i], i))
        details = {
            "comparisons": len(ordered),
            "scores": {candidates[i].member: round(float(sums[i]), 6) for i in range(n)},
            "wins": {candidates[i].member: int(wins[i]) for i in range(n)},
        }
        return [candidates[i] for i in order], details

    def _bubble(
        self, candidates: list[MemberAnswer], texts: list[str], item_input: str, top: int
    ) -> tuple[list[MemberAnswer], dict[str, Any]]:
        remaining = list(range(len(candidates)))
        placed: list[int] = []
        duels: list[list[str]] = []
        comparisons = 0
        while remaining and len(placed) < top:
            best = remaining[0]
            for challenger in remaining[1:]:
                forward, backward = self.logits(
                    item_input, [(texts[challenger], texts[best]), (texts[best], texts[challenger])]
                )
                comparisons += 2
                winner = challenger if forward - backward > 0 else best
                duels.append([candidates[winner].member, candidates[challenger if winner == best else best].member])
                best = winner
            placed.append(best)
            remaining.remove(best)
        order = placed + remaining
        return [candidates[i] for i in order], {"comparisons": comparisons, "duels": duels}

    def combine(
        self, answers: list[MemberAnswer], *, item_input: str | None = None, caller: ModelCaller | None = None
    ) -> Decision:
        self.require_fit()
        if item_input is None:
            raise EnsembleError(f"{self.name} compares candidates for the item's input; pass item_input to combine()")
        started = time.perf_counter()
        ranked, info = self.rank(answers, item_input)
        cost = CallCost()
        cost.add_local(time.perf_counter() - started, info["comparisons"])
        details = {"aggregation": self.params.aggregation, "ranking": [a.member for a in ranked], **info}
        return Decision(
            answer=ranked[0].answer.strip() if ranked else "",
            details=details,
            member_calls=len(answers),
            calls=cost,
        )
