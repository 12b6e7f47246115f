"""Router: learn from dev inputs which single member to ask for each new input."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import Field

from ensembles.answers import is_correct
from ensembles.errors import EnsembleError
from ensembles.strategies.base import STRATEGIES, Decision, MemberAnswer, Strategy
from ensembles.strategies.common import LearnedStrategy, member_order
from ensembles.strategies.embed import Embedder, embed_checked

if TYPE_CHECKING:
    from ensembles.strategies.calls import ModelCaller


@STRATEGIES.register(
    "router",
    pretty_name="Learned router",
    reference_url="https://arxiv.org/abs/2309.15789",
)
class Router(LearnedStrategy):
    """Embeds each input and sends it to one member, learned on dev.

    The training target of a dev item is its best member: the first, in blend order, that
    answers it correctly; items no member gets right are left out. ``knn`` takes the
    majority best member of the k most similar dev inputs (cosine); ``logreg`` fits a
    multinomial logistic regression on the embeddings.
    """

    class Params(Strategy.Params):
        method: Literal["knn", "logreg"] = "knn"
        # Neighbours consulted by knn (capped at the number of usable dev items).
        k: int = Field(5, ge=1, le=100)

    params: Params

    def __init__(self, params: dict[str, Any] | None = None, *, embedder: Embedder | None = None) -> None:
        super().__init__(params)
        self.embedder = embedder
        self.members: list[str] = []
        self.model: Any = None
        # Set instead of a model when every usable dev item had the same best member.
        self.only_member: str | None = None
        self.trained_on: dict[str, int] = {}

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """The injected encoder's vectors for ``texts``, checked for shape."""
        if self.embedder is None:
            raise EnsembleError(
                f"{self.name} chooses a member by embedding the input and was built without an embedder; "
                "pass embedder=MiniLMEmbedder(path) (or another encoder) when constructing it"
            )
        return embed_checked(self.embedder, list(texts), self.name)

    def fit(
        self,
        dev_outputs: Sequence[Sequence[MemberAnswer]],
        dev_references: Sequence[str],
        *,
        dev_inputs: Sequence[str] | None = None,
    ) -> None:
        self.check_dev(dev_outputs, dev_references, dev_inputs)
        if dev_inputs is None:
            raise EnsembleError(f"{self.name} learns from the dev items' input texts; pass dev_inputs to fit()")
        texts: list[str] = []
        labels: list[str] = []
        for answers, reference, text in zip(dev_outputs, dev_references, dev_inputs, strict=True):
            best = next((a.member for a in answers if is_correct(a.answer, reference)), None)
            # An item no member gets right says nothing about whom to ask.
            if best is not None:
                texts.append(text)
                labels.append(best)
        if not labels:
            raise EnsembleError(f"{self.name}: no member answered any dev item correctly, so there is nothing to learn")
        self.members = member_order(dev_outputs)
        self.trained_on = dict(Counter(labels))
        vectors = self.embed(texts)
        if len(self.trained_on) == 1:
            self.only_member, self.model = labels[0], None
        elif self.params.method == "knn":
            # Imported here so that listing strategies does not pay for loading scikit-learn.
            from sklearn.neighbors import KNeighborsClassifier

            self.model = KNeighborsClassifier(
                n_neighbors=min(self.params.k, len(labels)), metric="cosine", algorithm="brute"
            )
            self.model.fit(vectors, labels)
        else:
            from sklearn.linear_model import LogisticRegression

            self.model = LogisticRegression(max_iter=1000, random_state=0)
            self.model.fit(vectors, labels)
        self.fitted = True

    def combine(
        self, answers: list[MemberAnswer], *, item_input: str | None = None, caller: ModelCaller | None = None
    ) -> Decision:
        self.require_fit()
        if item_input is None:
            raise EnsembleError(f"{self.name} chooses a member from the item's input; pass item_input to combine()")
        if self.model is None:
            scores = {str(self.only_member): 1.0}
        else:
            probabilities = self.model.predict_proba(self.embed([item_input]))[0]
            scores = {str(m): float(p) for m, p in zip(self.model.classes_, probabilities, strict=True)}
        present = {a.member: a for a in answers}
        ranked = sorted((m for m in scores if m in present), key=lambda m: (-scores[m], self.members.index(m)))
        # A routed-to member that failed on this item hands over to the next best; with none left,
        # the first member that answered does.
        chosen = present[ranked[0]] if ranked else (answers[0] if answers else None)
        details = {
            "chosen": chosen.member if chosen else None,
            "scores": {m: round(p, 6) for m, p in scores.items()},
            "fallback": not ranked,
        }
        return Decision(
            answer=chosen.answer.strip() if chosen else "",
            details=details,
            member_calls=1 if chosen else 0,
            consulted=[chosen.member] if chosen else [],
        )
