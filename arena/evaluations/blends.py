"""Blends over stored answers: a blend's strategy, members' answers as the library reads them, and fitting.

The run's combine step, the OpenAI endpoint and blend search build strategies and read members'
answers the same way, here; the combine step and /v1 also break ties the same way (``in_tie_order``).
"""

from __future__ import annotations

import inspect
import json
import math
from collections import OrderedDict, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

from django.conf import settings
from django.db.models import Avg

from arena.benchmarks.models import SuiteItem
from arena.benchmarks.services import library_item, library_suite
from arena.evaluations.models import FINISHED, RunEntry, Score, State
from arena.registry.models import Entry
from ensembles.answers import vote_key
from ensembles.errors import EnsembleError
from ensembles.metrics import EXTRACTORS, get_metric
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


# Strategies whose only use of member order is to break a tie: there a tie goes to the answer of the
# member with the higher dev score instead (member order only among equals), on the board and at /v1.
TIES_BY_MEMBER_ORDER = frozenset({"majority_vote", "weighted_vote"})


def dev_weights(run_id: int, members: Sequence[Entry]) -> dict[str, float]:
    """Each member's mean score on the run's dev items, by name: the weights that break a tie ({} without dev)."""
    rows = (
        Score.objects.filter(run_id=run_id, entry__in=members, item__split="dev")
        .values_list("entry__name")
        .annotate(mean=Avg("value"))
    )
    return {name: round(float(mean), 6) for name, mean in rows}


def in_tie_order(strategy: str, answers: list[MemberAnswer], weights: dict[str, float]) -> list[MemberAnswer]:
    """``answers`` as ``strategy`` should read them: best dev score first where member order breaks its ties."""
    if strategy not in TIES_BY_MEMBER_ORDER or not weights:
        return answers
    return sorted(answers, key=lambda a: -weights.get(a.member, 0.0))  # stable: member order among equals


@dataclass(frozen=True)
class Combiner:
    """How a blend answers a live request: as it combined on its latest finished run.

    That run's suite's answer extraction, its members' dev weights for ties, and a learned strategy
    fitted on its dev split. A blend that has no finished run reads first lines, ties going by member order.
    """

    strategy: Strategy
    extraction: str
    run_id: int | None = None
    suite: str | None = None
    weights: dict[str, float] = field(default_factory=dict)

    def extract(self, text: str) -> str:
        return EXTRACTORS.get(self.extraction)(text)

    def read_as(self) -> dict:
        """How the answers were read, for the response's account of the decision."""
        return {"run": self.run_id, "suite": self.suite, "extraction": self.extraction, "dev_weights": self.weights}


# Combiners kept per web process, keyed by (blend, its params, the run read): a new run or a changed
# blend fits again. Small: fitting is cheap next to the members' generations it serves.
_COMBINERS: OrderedDict[tuple, Combiner] = OrderedDict()
_COMBINERS_MAX = 32


def serving_combiner(blend: Entry) -> Combiner:
    """``blend`` as its latest finished run combined it; a learned blend's run must have dev items.

    Raises EnsembleError naming what to do when a learned blend has no such run.
    """
    strategy = build_strategy(blend)
    done = (
        RunEntry.objects.filter(entry=blend, state=State.DONE, run__state__in=FINISHED)
        .select_related("run__suite")
        .order_by("-run__finished_at", "-run_id")
    )
    if strategy.needs_fit:
        run = next((re.run for re in done[:50] if "dev" in re.run.splits), None)
    else:
        run = next((re.run for re in done[:1]), None)
    if run is None:
        if strategy.needs_fit:
            raise EnsembleError(
                f"{blend.name} uses {blend.strategy}, which learns from a suite's dev split: run it on a suite "
                "with splits dev and test first, and it is served as fitted there"
            )
        return Combiner(strategy, "first_line")
    key = (blend.pk, json.dumps(blend.params, sort_keys=True), run.pk)
    if key in _COMBINERS:
        _COMBINERS.move_to_end(key)
        return _COMBINERS[key]
    suite = library_suite(run.suite)
    members = blend.ordered_members()
    weights = dev_weights(run.pk, members) if "dev" in run.splits else {}
    if strategy.needs_fit:
        scores = Score.objects.filter(run=run, entry__in=members, item__split="dev").select_related(
            "generation", "item"
        )
        grid: dict[int, dict[int, Score]] = defaultdict(dict)
        for s in scores:
            grid[s.item_id][s.entry_id] = s
        dev = [
            (
                in_tie_order(blend.strategy, [member_answer(m, row[m.pk]) for m in members if m.pk in row], weights),
                next(iter(row.values())).item,
            )
            for row in grid.values()
        ]
        fit_on_dev(strategy, suite, dev)
    combiner = Combiner(strategy, suite.manifest.answer_extraction, run.pk, run.suite.name, weights)
    _COMBINERS[key] = combiner
    while len(_COMBINERS) > _COMBINERS_MAX:
        _COMBINERS.popitem(last=False)
    return combiner


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
