"""Ensemble strategies: combine member answers into one decision."""

# Imported for their side effect: each module registers its built-in strategies.
from ensembles.strategies import (  # noqa: F401
    bagging,
    cascade,
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
from ensembles.strategies.calls import BackendCaller, CallResult, ModelCaller
from ensembles.strategies.embed import Embedder, MiniLMEmbedder

__all__ = [
    "STRATEGIES",
    "BackendCaller",
    "CallCost",
    "CallResult",
    "Decision",
    "Embedder",
    "MemberAnswer",
    "MiniLMEmbedder",
    "ModelCaller",
    "Strategy",
    "make_strategy",
]
