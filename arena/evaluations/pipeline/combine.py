"""Combine: a blend whose members are all done combines their stored answers per item (a cpu task).

Members are never asked again: their scored answers are read back. A strategy that calls models
itself (a fuser, mixture of agents, a pipeline, self-consistency) calls them through the
generations cache, on the gpu queue of the model it calls first (routing.py).
"""

from __future__ import annotations

from collections import defaultdict

from django.db.models import F
from django.utils import timezone

from arena.benchmarks.models import SuiteItem
from arena.benchmarks.services import library_item, library_suite
from arena.evaluations import events
from arena.evaluations.blends import build_strategy, dev_weights, fit_on_dev, in_tie_order, member_answer
from arena.evaluations.calls import ArenaCaller
from arena.evaluations.models import EntryState, Run, RunEntry, Score
from arena.evaluations.pipeline.generate import decoding_for
from arena.evaluations.pipeline.state import RunState, fail_entry, send_on_commit
from arena.registry.models import Entry
from ensembles.backends import TransientBackendError
from ensembles.errors import EnsembleError
from ensembles.metrics import EXTRACTORS
from ensembles.strategies import CallCost, MemberAnswer
from ensembles.suites.model import render_choices


def step(state: RunState) -> RunState:
    """Start each queued blend whose members are all done; fail one whose member failed."""
    by_entry = {re.entry_id: re for re in state.entries}
    changed = False
    for re in state.blends(EntryState.QUEUED):
        members = [by_entry[pk] for pk in re.entry.member_links.values_list("member_id", flat=True)]
        failed = [m for m in members if m.state == EntryState.FAILED]
        if failed:
            # An inner blend's own reason goes along, so the top of a hybrid says what broke.
            names = ", ".join(f"{m.entry.name} ({m.error})" if m.entry.is_blend else m.entry.name for m in failed)
            changed |= fail_entry(re, f"member failed: {names}")
        elif all(m.state == EntryState.DONE for m in members):
            if RunEntry.objects.filter(pk=re.pk, state=EntryState.QUEUED).update(
                state=EntryState.RUNNING, started_at=timezone.now()
            ):
                send_on_commit("combine_blend", re.pk)
                events.publish(state.run, "started", entry=re.entry_id)
                changed = True
    return state.reread() if changed else state


def blend(run_entry_id: int) -> int | None:
    """Combine one blend's members' stored answers into its scores. The run's id when it stored something."""
    re = RunEntry.objects.select_related("run__suite", "entry").filter(pk=run_entry_id).first()
    if re is None or re.state != EntryState.RUNNING:
        return None
    try:
        _combine(re.run, re.entry)
    except TransientBackendError:
        raise  # a called model is busy: the task retries the whole combine (its calls made so far are cached)
    except (EnsembleError, ValueError) as exc:
        fail_entry(re, str(exc))
    else:
        RunEntry.objects.filter(pk=re.pk, state=EntryState.RUNNING).update(
            state=EntryState.SCORED, done_items=Score.objects.filter(run=re.run, entry=re.entry).count()
        )
    return re.run_id


# Costs through a hybrid's tree: each model generation read at any level counts once (by generation id),
# and so does each blend's own work (a fuser's calls, an encoder's seconds), however many branches reach it.
def _consumed(blend: Entry, used: list[Score], inner: set[int], calls: CallCost) -> dict:
    """What one item's decision read at every level: {"generations": {id: [tokens, compute_s]},
    "own_calls": {blend id: [calls, tokens, compute_s]}}."""
    generations: dict[str, list] = {}
    own: dict[str, list] = {}
    for s in used:
        below = s.details.get("consumed") if s.entry_id in inner else None
        if below:
            generations.update(below["generations"])
            own.update(below["own_calls"])
        elif s.entry_id in inner:
            # Combined before it fed a blend, so it kept no account: counted whole, once.
            own[str(s.entry_id)] = [s.member_calls, s.tokens, s.compute_s]
        else:
            generations[str(s.generation_id or f"score-{s.pk}")] = [s.tokens, s.compute_s]
    if calls.calls or calls.tokens or calls.compute_s:
        own[str(blend.pk)] = [calls.calls, calls.tokens, calls.compute_s]
    return {"generations": generations, "own_calls": own}


def _consumed_totals(consumed: dict) -> tuple[int, int, float]:
    """(member calls, tokens, compute seconds) of what ``_consumed`` recorded."""
    parts = [[1, *cost] for cost in consumed["generations"].values()] + list(consumed["own_calls"].values())
    return sum(p[0] for p in parts), sum(p[1] for p in parts), float(sum(p[2] for p in parts))


def _combine(run: Run, blend: Entry) -> None:
    suite = library_suite(run.suite)
    members = blend.ordered_members()
    strategy = build_strategy(blend)
    caller = None
    if strategy.calls_models:
        caller = ArenaCaller(run.team, decoding_for(run), EXTRACTORS.get(suite.manifest.answer_extraction))
    scores = Score.objects.filter(run=run, entry__in=members).select_related("generation", "item")
    grid: dict[int, dict[int, Score]] = defaultdict(dict)
    items: dict[int, SuiteItem] = {}
    for s in scores:
        grid[s.item_id][s.entry_id] = s
        items[s.item_id] = s.item

    # Where member order breaks ties, the member with the better dev score breaks them, as /v1 does.
    weights = dev_weights(run.pk, members) if "dev" in run.splits else {}

    def answers(item_id: int) -> list[MemberAnswer]:
        row = grid[item_id]
        return in_tie_order(blend.strategy, [member_answer(m, row[m.pk]) for m in members if m.pk in row], weights)

    def question(item: SuiteItem) -> str:
        # A model asked to fuse or refine answers must see the options they refer to.
        if strategy.calls_models and item.data.get("choices"):
            return f"{item.data['input']}\n{render_choices(item.data['choices'])}"
        return item.data["input"]

    if strategy.needs_fit:
        fit_on_dev(strategy, suite, [(answers(i), it) for i, it in items.items() if it.split == "dev"])
    by_name = {m.name: m.pk for m in members}
    inner = {m.pk for m in members if m.is_blend}
    # A blend read by another blend keeps what it consumed, so costs add up through a hybrid's tree.
    keep_consumed = bool(inner) or blend.blend_links.exists()
    if caller is not None:
        # Calls combine() makes item by item, asked for at once so they batch. Self-consistency's samples come
        # this way, not as planned member batches: they are the blend's cost and failure, not the member's.
        strategy.prefetch([answers(i) for i in grid], [question(items[i]) for i in grid], caller=caller)
    out = []
    for item_id, row in grid.items():
        decision = strategy.combine(answers(item_id), item_input=question(items[item_id]), caller=caller)
        prediction, value = suite.score(library_item(items[item_id]), decision.answer)
        used = (
            list(row.values())
            if decision.consulted is None
            else [row[by_name[n]] for n in decision.consulted if by_name.get(n) in row]
        )
        details, member_calls = decision.details, decision.member_calls
        tokens = sum(s.tokens for s in used) + decision.calls.tokens
        compute_s = sum(s.compute_s for s in used) + decision.calls.compute_s
        if keep_consumed:
            consumed = _consumed(blend, used, inner, decision.calls)
            details = {**details, "consumed": consumed}
            if inner:
                member_calls, tokens, compute_s = _consumed_totals(consumed)
        out.append(
            Score(
                run=run,
                entry=blend,
                item=items[item_id],
                prediction=prediction,
                value=value,
                details=details,
                member_calls=member_calls,
                tokens=tokens,
                compute_s=compute_s,
                # Members run side by side, so the blend waits for the slowest it consulted, then
                # for its own calls (a fuser, a pipeline's steps), which come after.
                latency_s=max((s.latency_s for s in used), default=0.0) + decision.calls.latency_s,
            )
        )
    Score.objects.bulk_create(out, ignore_conflicts=True)
    if caller is not None and caller.new_calls:
        RunEntry.objects.filter(run=run, entry=blend).update(new_calls=F("new_calls") + caller.new_calls)
