"""Ensemble strategies: combine member answers into one decision."""

from ensembles.strategies import vote  # noqa: F401  (registers built-in strategies)
from ensembles.strategies.base import (
    STRATEGIES,
    Decision,
    MemberAnswer,
    Strategy,
    make_strategy,
)

__all__ = ["STRATEGIES", "Decision", "MemberAnswer", "Strategy", "make_strategy"]
