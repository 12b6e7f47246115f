"""Blends over stored answers: a blend's strategy, members' answers as the library reads them, and fitting.

The run's combine step, the OpenAI endpoint and blend search build strategies and read members'
answers the same way, here.
"""

from __future__ import annotations

import inspect
import json
import math
from collections import OrderedDict, defaultdict
from dataclasses import dataclass

from django.conf import settings

from arena.benchmarks.models import SuiteItem
from arena.benchmarks.services import library_item, library_suite
from arena.evaluations.models import FINISHED, RunEntry, Score, State
from arena.registry.models import Entry
from ensembles.answers import vote_key
from ensembles.errors import EnsembleError
from ensembles.metrics import get_metric
from ensembles.strategies import STRATEGIES, CachedEmbedder, MemberAnswer, MiniLMEmbedder, Strategy
from ensembles.suites import Suite as LibSuite


def build_strategy(blend: Entry) -> Strategy:
    """The blend's strategy; those that embed inputs or compare candidates get the shipped MiniLM encoder."""
    cls = STRATEGIES.get(blend.strategy)
    if "embedder" in inspect.signature(cls.__init__).parameters:
        return cls(blend.params, embedder=shipped_encoder())
    return cls(blend.params)


def fit_on_dev(strategy: Strategy, suite: LibSuite, dev: list[tuple[list[MemberAnswer], SuiteItem]]) -> None:
    """Fit a learned strategy on dev items' member answers; never sees a test item."""
    if not dev:
        raise EnsembleError(f"{strategy.name} learns from the dev split, and this run has none")
    extra = {}
    if "scorer" in inspect.signature(strategy.fit).parameters and suite.manifest.task_type in (
        "generation",
        "multiple_choice",
    ):
        # Rankers label dev pairs with the suite's own metric (partial credit counts).
        extra["scorer"] = get_metric(suite.manifest.metric).score
    strategy.fit(
        [answers for answers, _ in dev],
        [suite.reference_answer(library_item(item)) for _, item in dev],
        dev_inputs=[item.data["input"] for _, item in dev],
        **extra,
    )


@dataclass(frozen=True)
class Fitted:
    """A learned blend fitted for live requests, and the run whose dev answers it learned from."""

    strategy: Strategy
    run_id: int
    suite: str
    extraction: str


# Fitted blends kept per web process, keyed by (blend, its params, the run fitted on): a new run or a
# changed blend fits again. Small: fitting is cheap next to the members' generations it serves.
_FITTED: OrderedDict[tuple, Fitted] = OrderedDict()
_FITTED_MAX = 32


def fitted_for_serving(blend: Entry) -> Fitted:
    """``blend``'s learned strategy fitted on the dev answers of its latest finished run that has dev items.

    Raises EnsembleError naming what to do when no such run exists.
    """
    done = (
        RunEntry.objects.filter(entry=blend, state=State.DONE, run__state__in=FINISHED)
        .select_related("run__suite")
        .order_by("-run__finished_at", "-run_id")
    )
    run = next((re.run for re in done[:50] if "dev" in re.run.splits), None)
    if run is None:
        raise EnsembleError(
            f"{blend.name} uses {blend.strategy}, which learns from a suite's dev split: run it on a suite "
            "with splits dev and test first, and it is served as fitted there"
        )
    key = (blend.pk, json.dumps(blend.params, sort_keys=True), run.pk)
    if key in _FITTED:
        _FITTED.move_to_end(key)
        return _FITTED[key]
    suite = library_suite(run.suite)
    members = blend.ordered_members()
    scores = Score.objects.filter(run=run, entry__in=members, item__split="dev").select_related("generation", "item")
    grid: dict[int, dict[int, Score]] = defaultdict(dict)
    for s in scores:
        grid[s.item_id][s.entry_id] = s
    dev = [
        ([member_answer(m, row[m.pk]) for m in members if m.pk in row], next(iter(row.values())).item)
        for row in grid.values()
    ]
    strategy = build_strategy(blend)
    fit_on_dev(strategy, suite, dev)
    fitted = Fitted(strategy, run.pk, run.suite.name, suite.manifest.answer_extraction)
    _FITTED[key] = fitted
    while len(_FITTED) > _FITTED_MAX:
        _FITTED.popitem(last=False)
    return fitted


def shipped_encoder() -> CachedEmbedder:
    """The shipped MiniLM encoder, its vectors cached by content in the cache directory.

    An on-disk cache rather than a table: vectors are cheap to recompute and need no migration;
    workers on one machine share the file (compose puts the cache directory on the data volume).
    """
    encoder = MiniLMEmbedder(settings.MODELS_DIR / "all-MiniLM-L6-v2")
    return CachedEmbedder(encoder, settings.CACHE_DIR / "embeddings.sqlite3")


# Where a blend's decision says how sure it was of each answer: probabilities as they are, or votes
# and vote weights as shares of the total (a pool that fell back to voting has votes).
_ANSWER_SHARES = {
    "logprob_pool": ("probabilities", "votes"),
    "stacking": ("probabilities",),
    "majority_vote": ("votes",),
    "self_consistency": ("votes",),
    "weighted_vote": ("weights",),
    "boosting": ("weights",),
}


def member_answer(member: Entry, score: Score) -> MemberAnswer:
    """A member's stored answer; a blend member's confidence is the share its own decision gave each answer."""
    if not member.is_blend:
        return MemberAnswer(
            member=member.name,
            answer=score.prediction,
            text=score.generation.text if score.generation else "",
            logprob=score.details.get("mean_logprob"),
            option_logprobs=score.details.get("option_logprobs"),
            prompt=score.generation.prompt if score.generation else "",
        )
    details = score.details
    key = next((k for k in _ANSWER_SHARES.get(member.strategy, ()) if isinstance(details.get(k), dict)), None)
    found = details[key] if key else {}
    total = 1.0 if key == "probabilities" else sum(v for v in found.values() if v > 0)
    logs = {answer: math.log(v / total) for answer, v in found.items() if v > 0}
    chosen = vote_key(score.prediction)
    return MemberAnswer(
        member=member.name,
        answer=score.prediction,
        text=score.prediction,
        logprob=next((lp for answer, lp in logs.items() if vote_key(answer) == chosen), None),
        option_logprobs=logs or None,
    )


