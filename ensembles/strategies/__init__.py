"""Ensemble strategies: combine member answers into one decision."""

# Imported for their side effect: each module registers its built-in strategies.
from ensembles.strategies import (  # noqa: F401
    bagging,
    cascade,
    pool,
    router,
    selection,
    stacking,
    vote,
    weighted,
)
from ensembles.strategies.base import (
    STRATEGIES,
    Decision,
    MemberAnswer,
    Strategy,
    make_strategy,
)
from ensembles.strategies.embed import Embedder, MiniLMEmbedder

__all__ = ["STRATEGIES", "Decision", "Embedder", "MemberAnswer", "MiniLMEmbedder", "Strategy", "make_strategy"]
