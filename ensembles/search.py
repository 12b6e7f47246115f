"""Blend search: which strategy, over which members, with which parameters, from stored answers only.

Every candidate blend of a bounded space (member subset x strategy x a small grid of its main
parameters) is estimated on the dev split alone: a strategy that learns is fitted on k-1 folds
and answers the held-out fold, one that learns nothing answers every dev item as it is, so each
dev item gets exactly one out-of-sample answer per candidate. Cost per item is counted as the
arena counts a blend's: the members the decision consulted (a cascade consults fewer) plus the
strategy's own work. No model is called, and only the items the caller passes (dev) are read.
"""

from __future__ import annotations

import inspect
import itertools
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeGuard

import numpy as np
from threadpoolctl import threadpool_limits

from ensembles import stats
from ensembles.answers import vote_key
from ensembles.errors import EnsembleError, ParamsError
from ensembles.strategies import STRATEGIES, Decision, Embedder, MemberAnswer, Strategy
from ensembles.strategies.embed import embed_checked

COST_METRICS = ("calls", "tokens", "seconds")

# The main parameters tried per strategy. Strategies registered but not named here (a new one,
# such as boosting) are tried with their defaults when those are valid.
PARAM_GRID: dict[str, list[dict[str, Any]]] = {
    "majority_vote": [{}],
    "weighted_vote": [
        {"weights": "dev_accuracy"},
        {"weights": "dev_accuracy", "log_odds": True},
        {"weights": "confidence"},
    ],
    "logprob_pool": [{"pool": "linear"}, {"pool": "log_linear"}],
    "stacking": [{"C": 0.1}, {"C": 1.0}, {"C": 10.0}],
    "mi_selection": [{"k": k} for k in (2, 3, 4)],  # k=1 would be one member alone
    "cascade": [{"max_cost": c} for c in (1.25, 1.5, 2.0, 3.0)],
    "router": [{"method": "knn", "k": 5}, {"method": "logreg"}],
    "bagging": [{"base": "stacking", "n_estimators": 10}],
}

# Registered strategies the search leaves out, and why.
LEFT_OUT = {
    "self_consistency": "votes several samples of one member; over distinct members it is majority_vote",
    "pair_ranker": "runs the encoder on every pair of candidate answers and counts that time as its cost, "
    "which would make the search slow and its cost estimates vary from one search to the next",
}

# Strategies that read their members as ordered from cheapest to dearest.
COST_ORDERED = {"cascade"}

# The reference points: each member alone, answering every item itself (never a registrable blend).
SINGLE = "single"


@dataclass(frozen=True)
class Cost:
    """What one answer (or one blend's decision) cost: model calls, tokens, compute seconds."""

    calls: float = 0.0
    tokens: float = 0.0
    seconds: float = 0.0

    def get(self, metric: str) -> float:
        return float(getattr(self, metric))

    def as_dict(self) -> dict[str, float]:
        return {m: round(self.get(m), 6) for m in COST_METRICS}


@dataclass
class DevItem:
    """One dev item as the search sees it: the members' stored answers and what each cost."""

    key: str  # the item's id, passed back to the scoring function
    answers: list[MemberAnswer]
    costs: dict[str, Cost]  # member -> the cost of its answer to this item
    reference: str  # the expected answer, as learned strategies compare answers with it
    input: str = ""


@dataclass(frozen=True)
class Candidate:
    """One blend to try: a strategy with its parameters over members, in the order it reads them."""

    strategy: str
    members: tuple[str, ...]
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        if self.strategy == SINGLE:
            return f"{self.members[0]} alone (member)"
        shown = ", ".join(f"{k}={v}" for k, v in self.params.items())
        return f"{self.strategy}({shown}) over {' + '.join(self.members)}"

    def as_dict(self) -> dict[str, Any]:
        return {"strategy": self.strategy, "members": list(self.members), "params": dict(self.params)}


@dataclass
class Estimate:
    """A candidate's (or a single member's) cross-validated dev quality and cost per item."""

    candidate: Candidate
    quality: float | None = None
    stderr: float | None = None
    low: float | None = None  # 95% bootstrap interval of the mean over dev items
    high: float | None = None
    cost: Cost = field(default_factory=Cost)
    within_budget: bool = True
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error and self.quality is not None

    def as_dict(self) -> dict[str, Any]:
        return {
            **self.candidate.as_dict(),
            "label": self.candidate.label,
            "quality": _round(self.quality),
            "stderr": _round(self.stderr),
            "low": _round(self.low),
            "high": _round(self.high),
            "cost": self.cost.as_dict(),
            "within_budget": self.within_budget,
            "error": self.error,
        }


@dataclass
class SearchResult:
    """Every candidate's estimate, in enumeration order, and the Pareto set of quality against cost."""

    metric: str
    budget: float | None
    folds: int
    estimates: list[Estimate]
    pareto: list[int]  # indices into estimates, cheapest first
    members: list[Estimate]  # each member alone, for reference
    seconds: float
    left_out: dict[str, str]  # strategy -> why it was not searched
    redundant: dict[str, str] = field(default_factory=dict)  # member -> the member it copies on dev

    @property
    def evaluated(self) -> int:
        return len(self.estimates)

    def best(self) -> Estimate | None:
        """The highest-quality candidate within the budget (on the Pareto set by construction)."""
        return self.estimates[self.pareto[-1]] if self.pareto else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "budget": self.budget,
            "folds": self.folds,
            "evaluated": self.evaluated,
            "seconds": round(self.seconds, 3),
            "pareto": list(self.pareto),
            "candidates": [e.as_dict() for e in self.estimates],
            "members": [e.as_dict() for e in self.members],
            "left_out": dict(self.left_out),
            "redundant": dict(self.redundant),
        }


def _round(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else round(float(x), 6)


def verdict(results: dict[str, Any]) -> dict[str, Any] | None:
    """Whether any candidate within the budget beats the best member alone on dev by more than its standard error.

    Reads ``SearchResult.as_dict()`` (what the arena stores), so searches stored earlier get one too.
    Returns None when there is no member or no estimated candidate to compare.
    """
    members = [m for m in results.get("members", []) if m.get("quality") is not None]
    candidates = [
        c
        for c in results.get("candidates", [])
        if c.get("quality") is not None
        and not c.get("error")
        and c.get("within_budget")
        and not one_member_only(c["strategy"], c["params"])  # a search stored before these were left out
    ]
    if not members or not candidates:
        return None
    best_member = max(members, key=lambda m: (m["quality"], -m["cost"][results.get("metric", "calls")]))
    # The strongest claim to beat it is the highest estimate less one standard error.
    claim = max(candidates, key=lambda c: (c["quality"] - (c["stderr"] or 0.0), c["quality"]))
    beats = claim["quality"] - (claim["stderr"] or 0.0) > best_member["quality"]
    best = claim if beats else max(candidates, key=lambda c: c["quality"])
    member = best_member["members"][0]
    numbers = f"{best['quality']:.2f} ± {(best['stderr'] or 0.0):.2f} vs {best_member['quality']:.2f}"
    if beats:
        text = f"{best['label']} beats {member} alone on dev by more than its standard error ({numbers})."
    else:
        text = (
            f"No blend beats {member} alone on dev by more than its standard error "
            f"(the best blend, {best['label']}: {numbers})."
        )
    return {"beats": beats, "member": member, "member_quality": best_member["quality"], "candidate": best, "text": text}


# --- The space ------------------------------------------------------------------------------


class EmbedderStrategy(Protocol):
    """A strategy class whose constructor also takes the sentence encoder it reads inputs with."""

    def __call__(self, params: dict[str, Any] | None = None, *, embedder: Embedder | None = None) -> Strategy: ...


def takes_embedder(cls: type[Strategy]) -> TypeGuard[EmbedderStrategy]:
    """Whether a strategy reads the inputs through a sentence encoder (router, pair_ranker, bagging)."""
    return "embedder" in inspect.signature(cls.__init__).parameters


def default_space(*, embedder: bool = True, option_scores: bool = True) -> tuple[dict[str, list[dict]], dict[str, str]]:
    """The strategies and parameter grids to search, and the registered strategies left out with why.

    ``embedder``: whether an encoder is at hand for the router; ``option_scores``: whether the
    members' answers carry option log-likelihoods (without them the probability pool is a vote).
    """
    space: dict[str, list[dict]] = {}
    left_out: dict[str, str] = {}
    for name, cls in STRATEGIES.items():
        if name in LEFT_OUT:
            left_out[name] = LEFT_OUT[name]
        elif cls.calls_models:
            left_out[name] = "calls models itself; the search only recombines stored answers"
        elif name == "logprob_pool" and not option_scores:
            left_out[name] = "the answers carry no option log-likelihoods, so it would be majority_vote"
        elif name == "router" and not embedder:
            left_out[name] = "needs a sentence encoder for the inputs, and none was given"
        elif name in PARAM_GRID:
            space[name] = [dict(p) for p in PARAM_GRID[name]] + _calibrated(cls, PARAM_GRID[name])
        else:
            try:
                cls({})
            except ParamsError as exc:
                left_out[name] = f"has no default parameters to try: {exc}"
            else:
                space[name] = [{}]
    return space, left_out


def _calibrated(cls: type[Strategy], grid: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Where a strategy can temperature-scale confidences first, each grid point that allows it, calibrated."""
    if "calibrate" not in cls.Params.model_fields:
        return []
    out = []
    for params in grid:
        try:
            cls({**params, "calibrate": True})
        except ParamsError:
            continue  # e.g. weights by dev accuracy read no confidences
        out.append({**params, "calibrate": True})
    return out


def _applies(cls: type[Strategy], params: dict[str, Any], members: Sequence[str]) -> bool:
    """Whether these params make sense for this many members (and the strategy accepts them)."""
    size = len(members)
    if one_member_only(cls.name, params):
        return False  # whatever it learns, one member answers: that member alone, not a blend
    if cls.name == "mi_selection" and params.get("k", 3) >= size:
        return False  # picking every member is majority_vote over them
    if cls.name == "cascade" and params.get("max_cost", 1.5) > size:
        return False
    try:
        cls(params).check_members(members)
    except EnsembleError:
        return False
    return True


def one_member_only(strategy: str, params: dict[str, Any]) -> bool:
    """Whether these params let the strategy consult only one member for every item, over any subset."""
    if strategy == "mi_selection":
        return params.get("k", 3) <= 1  # picks one member on dev and votes it alone
    if strategy == "boosting":
        return params.get("rounds", 10) <= 1  # one round weights one member
    if strategy == "cascade":
        # Consulting at most one member per item on average means always stopping at the first.
        return params.get("threshold") is None and params.get("max_cost", 1.5) <= 1.0
    return False


def enumerate_candidates(
    members: Sequence[str],
    space: dict[str, list[dict[str, Any]]],
    *,
    max_members: int = 4,
    cost_of: Callable[[str], tuple[float, ...]] | None = None,
    redundant: dict[str, str] | None = None,
) -> list[Candidate]:
    """Every (subset of 2..max_members members) x strategy x params, small subsets first.

    Members keep the given order, except for strategies that read them from cheapest to dearest
    (``cost_of(member)`` sorts them; the given order breaks ties). A subset holding a member and
    the one it copies (``redundant``: member -> the member whose answers it repeats) is skipped.
    """
    if len(set(members)) != len(members):
        raise EnsembleError("a member is named twice")
    position = {m: i for i, m in enumerate(members)}
    redundant = redundant or {}
    out: list[Candidate] = []
    for size in range(2, min(max_members, len(members)) + 1):
        for subset in itertools.combinations(members, size):
            if any(redundant.get(m) in subset for m in subset):
                continue
            for name, grid in space.items():
                cls = STRATEGIES.get(name)
                ordered = subset
                if name in COST_ORDERED and cost_of is not None:
                    ordered = tuple(sorted(subset, key=lambda m: (*cost_of(m), position[m])))
                out.extend(Candidate(name, ordered, dict(p)) for p in grid if _applies(cls, p, ordered))
    return out


def copies(items: Sequence[DevItem], members: Sequence[str]) -> dict[str, str]:
    """Members whose answer is the same as an earlier member's on every dev item: member -> that member.

    Such a pair adds cost and no answer the other does not give, so no candidate holds both
    (mutual-information selection never picks a copy either).
    """
    columns: dict[tuple[str, ...], str] = {}
    out: dict[str, str] = {}
    for m in members:
        column = tuple(
            next((vote_key(a.answer) for a in item.answers if a.member == m), "\x00missing") for item in items
        )
        if column in columns:
            out[m] = columns[column]
        else:
            columns[column] = m
    return out


# --- Estimating -----------------------------------------------------------------------------


class _CachedEmbedder:
    """Each text is encoded once per search, however many candidates and folds read it."""

    def __init__(self, embedder: Embedder) -> None:
        self.embedder = embedder
        self.vectors: dict[str, np.ndarray] = {}

    def __call__(self, texts: list[str]) -> np.ndarray:
        missing = list(dict.fromkeys(t for t in texts if t not in self.vectors))
        if missing:
            for text, vector in zip(missing, embed_checked(self.embedder, missing, "search"), strict=True):
                self.vectors[text] = vector
        if not texts:
            return np.zeros((0, 0))
        return np.stack([self.vectors[t] for t in texts])


def fold_indices(n: int, k: int, seed: int) -> list[np.ndarray]:
    """The held-out indices of each of ``k`` shuffled folds of ``n`` items (seeded)."""
    from sklearn.model_selection import KFold

    return [held for _, held in KFold(n_splits=k, shuffle=True, random_state=seed).split(np.arange(n))]


class _Evaluator:
    def __init__(
        self,
        items: Sequence[DevItem],
        score: Callable[[DevItem, str], float],
        folds: list[np.ndarray],
        embedder: Embedder | None,
        seed: int,
    ) -> None:
        self.items = items
        self.folds = folds
        self.embedder = embedder
        self.seed = seed
        self._score = score
        # Most candidates give the same few answers per item; a code suite's tests run once per answer.
        self._scores: dict[tuple[int, str], float] = {}

    def score(self, i: int, answer: str) -> float:
        key = (i, answer)
        if key not in self._scores:
            self._scores[key] = float(self._score(self.items[i], answer))
        return self._scores[key]

    def build(self, candidate: Candidate) -> Strategy:
        cls = STRATEGIES.get(candidate.strategy)
        if takes_embedder(cls):
            return cls(candidate.params, embedder=self.embedder)
        return cls(candidate.params)

    def answers(self, i: int, members: Sequence[str]) -> list[MemberAnswer]:
        by_member = {a.member: a for a in self.items[i].answers}
        return [by_member[m] for m in members if m in by_member]

    def decisions(self, candidate: Candidate) -> list[Decision]:
        n = len(self.items)
        answers = [self.answers(i, candidate.members) for i in range(n)]
        inputs = [item.input for item in self.items]
        strategy = self.build(candidate)
        if not strategy.needs_fit:
            return [strategy.combine(answers[i], item_input=inputs[i]) for i in range(n)]
        out: dict[int, Decision] = {}
        for held in self.folds:
            train = np.setdiff1d(np.arange(n), held)
            strategy = self.build(candidate)  # a fresh, unfitted one per fold
            strategy.fit(
                [answers[i] for i in train],
                [self.items[i].reference for i in train],
                dev_inputs=[inputs[i] for i in train],
            )
            for i in held:
                out[int(i)] = strategy.combine(answers[i], item_input=inputs[i])
        return [out[i] for i in range(n)]  # the folds partition the items

    def cost(self, i: int, members: Sequence[str], decision: Decision) -> Cost:
        """As the arena costs a blend's item: the members consulted, plus the strategy's own work."""
        costs = self.items[i].costs
        answered = [a.member for a in self.answers(i, members)]
        used = answered if decision.consulted is None else [m for m in decision.consulted if m in costs]
        return Cost(
            calls=decision.member_calls,
            tokens=sum(costs[m].tokens for m in used) + decision.calls.tokens,
            seconds=sum(costs[m].seconds for m in used) + decision.calls.compute_s,
        )

    def summarize(self, candidate: Candidate, values: list[float], costs: list[Cost]) -> Estimate:
        data = np.asarray(values, dtype=np.float64)
        interval = stats.bootstrap_mean(data, seed=self.seed)
        stderr = float(data.std(ddof=1) / math.sqrt(data.size)) if data.size > 1 else 0.0
        return Estimate(
            candidate,
            quality=float(data.mean()),
            stderr=stderr,
            low=interval.low,
            high=interval.high,
            cost=Cost(*(float(np.mean([c.get(m) for c in costs])) for m in COST_METRICS)),
        )

    def estimate(self, candidate: Candidate) -> Estimate:
        try:
            decisions = self.decisions(candidate)
        except (EnsembleError, ValueError) as exc:
            # A fold the strategy cannot learn from (no member right, one class only) rules it out.
            return Estimate(candidate, error=f"{type(exc).__name__}: {exc}"[:300])
        values = [self.score(i, d.answer) for i, d in enumerate(decisions)]
        costs = [self.cost(i, candidate.members, d) for i, d in enumerate(decisions)]
        return self.summarize(candidate, values, costs)

    def member(self, name: str) -> Estimate:
        values, costs = [], []
        for i, item in enumerate(self.items):
            answer = next((a.answer for a in item.answers if a.member == name), "")
            values.append(self.score(i, answer))
            costs.append(item.costs.get(name, Cost()))
        return self.summarize(Candidate(SINGLE, (name,)), values, costs)


def cross_validate(
    items: Sequence[DevItem],
    score: Callable[[DevItem, str], float],
    candidate: Candidate,
    *,
    folds: int = 5,
    seed: int = 0,
    embedder: Embedder | None = None,
) -> Estimate:
    """One blend's dev estimate, made exactly as the search makes each candidate's (same folds for a seed)."""
    if not 2 <= folds <= len(items):
        raise EnsembleError(f"{folds}-fold cross-validation needs at least {max(folds, 2)} dev items; got {len(items)}")
    shared = _CachedEmbedder(embedder) if embedder is not None else None
    with threadpool_limits(limits=1):
        return _Evaluator(items, score, fold_indices(len(items), folds, seed), shared, seed).estimate(candidate)


def search_blends(
    items: Sequence[DevItem],
    score: Callable[[DevItem, str], float],
    *,
    members: Sequence[str],
    metric: str = "calls",
    budget: float | None = None,
    space: dict[str, list[dict[str, Any]]] | None = None,
    max_members: int = 4,
    max_candidates: int = 500,
    folds: int = 5,
    seed: int = 0,
    embedder: Embedder | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> SearchResult:
    """Estimate every candidate blend of ``members`` on the dev ``items`` and return the Pareto set.

    ``score(item, answer)`` is the suite's metric for one answer. ``metric`` is the cost the
    budget and the Pareto set are measured in (per item); a candidate whose estimated cost is
    over ``budget`` stays in the result, marked, but not in the Pareto set. ``space`` maps a
    strategy to the parameter sets to try (``default_space()`` unless given); a space of more
    than ``max_candidates`` candidates is refused before anything is evaluated. ``progress`` is
    called with (evaluated, total) after each candidate.
    """
    started = time.perf_counter()
    if metric not in COST_METRICS:
        raise EnsembleError(f"metric must be one of {', '.join(COST_METRICS)}, not {metric!r}")
    if budget is not None and not (math.isfinite(budget) and budget > 0):
        raise EnsembleError(f"the budget must be a positive number of {metric} per item, not {budget!r}")
    if len(members) < 2:
        raise EnsembleError("a blend needs at least 2 members to search over")
    if not 2 <= folds <= len(items):
        raise EnsembleError(f"{folds}-fold cross-validation needs at least {max(folds, 2)} dev items; got {len(items)}")
    if max_members < 2:
        raise EnsembleError("max_members must be at least 2")
    present = {a.member for item in items for a in item.answers}
    absent = [m for m in members if m not in present]
    if absent:
        raise EnsembleError(f"no dev answers from {', '.join(absent)}")

    left_out: dict[str, str] = {}
    if space is None:
        has_options = any(a.option_logprobs for item in items for a in item.answers)
        space, left_out = default_space(embedder=embedder is not None, option_scores=has_options)
    else:
        for name in space:
            if STRATEGIES.get(name).calls_models:
                raise EnsembleError(f"{name} calls models itself; the search only recombines stored answers")

    mean_cost = {
        m: tuple(float(np.mean([it.costs[m].get(c) if m in it.costs else 0.0 for it in items])) for c in COST_METRICS)
        for m in members
    }
    # Cheapest first on the budget's measure, then on the others.
    order = (COST_METRICS.index(metric), *(i for i in range(len(COST_METRICS)) if COST_METRICS[i] != metric))
    redundant = copies(items, members)
    candidates = enumerate_candidates(
        members,
        space,
        max_members=max_members,
        cost_of=lambda m: tuple(mean_cost[m][i] for i in order),
        redundant=redundant,
    )
    if len(candidates) > max_candidates:
        raise EnsembleError(
            f"the search space holds {len(candidates)} candidates, more than max_candidates={max_candidates}: "
            "choose fewer members, a smaller max_members, or fewer strategies and parameters"
        )
    shared = _CachedEmbedder(embedder) if embedder is not None else None
    if shared is not None and any(takes_embedder(STRATEGIES.get(c.strategy)) for c in candidates):
        shared([item.input for item in items])  # one encoder pass over every dev input, up front
    evaluator = _Evaluator(items, score, fold_indices(len(items), folds, seed), shared, seed)
    estimates: list[Estimate] = []
    # The meta-models fit on a few hundred rows, where BLAS threads only contend (3x slower on 2 busy cores).
    with threadpool_limits(limits=1):
        for candidate in candidates:
            estimate = evaluator.estimate(candidate)
            estimate.within_budget = estimate.ok and (budget is None or estimate.cost.get(metric) <= budget + 1e-9)
            estimates.append(estimate)
            if progress is not None:
                progress(len(estimates), len(candidates))
    eligible = [i for i, e in enumerate(estimates) if e.ok and e.within_budget]
    # Enumeration order (fewer members first) decides between candidates equal on both axes.
    frontier = stats.pareto_frontier(
        [(estimates[i].cost.get(metric), float(estimates[i].quality or 0.0)) for i in eligible]
    )
    return SearchResult(
        metric=metric,
        budget=budget,
        folds=folds,
        estimates=estimates,
        pareto=[eligible[i] for i in frontier],
        members=[evaluator.member(m) for m in members],
        seconds=time.perf_counter() - started,
        left_out=left_out,
        redundant=redundant,
    )
