"""Ensemble strategies: combine member answers into one decision."""

# Imported for their side effect: each module registers its built-in strategies.
from ensembles.strategies import (  # noqa: F401
    bagging,
    boosting,
    cascade,
    consistency,
    fusion,
    pipeline,
    pool,
    ranker,
    router,
    selection,
    stacking,
    vote,
    weighted,
)
from ensembles.strategies.base import (
    STRATEGIES,
    CallCost,
    Decision,
    MemberAnswer,
    Strategy,
    make_strategy,
)
from ensembles.strategies.calls import BackendCaller, CallResult, ModelCaller, Sampling
from ensembles.strategies.embed import CachedEmbedder, Embedder, MiniLMEmbedder

__all__ = [
    "STRATEGIES",
    "BackendCaller",
    "CallCost",
    "CachedEmbedder",
    "CallResult",
    "Decision",
    "Embedder",
    "MemberAnswer",
    "MiniLMEmbedder",
    "ModelCaller",
    "Sampling",
    "Strategy",
    "make_strategy",
]
