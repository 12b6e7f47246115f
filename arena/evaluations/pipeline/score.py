"""Score: every answer against its item by the suite's metric, or, on a judge suite, by the run's judge.

A metric scores a batch as soon as it is generated (generate.py calls ``answers`` and ``options``);
the step marks a model scored once all its batches are. A judge suite waits until every model has
answered, then one judging task compares every pair of answers per item in both orders.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from arena.benchmarks.models import SuiteItem
from arena.benchmarks.services import library_item
from arena.evaluations import cache, events
from arena.evaluations.models import TERMINAL, Comparison, EntryState, Generation, Run, RunEntry, Score, State
from arena.evaluations.pipeline.state import RunState, fail_entry, send_on_commit
from arena.registry.backends import backend_for
from arena.registry.models import Entry
from ensembles import stats
from ensembles.backends import BackendError, DecodingParams, TransientBackendError
from ensembles.errors import EnsembleError
from ensembles.judge import OUTCOME_SCORE, combine_orders, judge_prompt, parse_verdict
from ensembles.suites import Suite as LibSuite

JUDGE_PARAMS = DecodingParams(max_new_tokens=24, stop=())


def step(state: RunState) -> RunState:
    """Mark scored each model whose batches are all done; on a judge suite, queue the judging instead."""
    answered = [re for re in state.singles(EntryState.RUNNING) if state.batches.get(re.entry_id, set()) == {State.DONE}]
    if not answered:
        return state
    if not state.judged:
        for re in answered:
            RunEntry.objects.filter(pk=re.pk, state=EntryState.RUNNING).update(state=EntryState.SCORED)
        return state.reread()
    # Judging compares every model's answers: it waits until no model is still generating.
    if len(answered) == len(state.singles(EntryState.RUNNING)) and not state.run.judge_state:
        if Run.objects.filter(pk=state.run.pk, judge_state="").update(judge_state=State.QUEUED):
            send_on_commit("judge_run", state.run.pk)
            return state.reread()
    return state


def answers(
    run: Run, entry: Entry, suite: LibSuite, rows: list[SuiteItem], generations: list[Generation], *, fallback=None
) -> None:
    """Store each generated answer's score (one per row, in order); a score already stored stays."""
    scores = []
    for row, gen in zip(rows, generations, strict=True):
        if suite.manifest.task_type == "judge":
            # Scored later, by the judge comparing this answer with the other entries'.
            prediction, value = suite.extract(gen.text), 0.0
        else:
            prediction, value = suite.score(library_item(row), gen.text)
        scores.append(
            Score(
                run=run,
                entry=entry,
                item=row,
                generation=gen,
                prediction=prediction,
                value=value,
                details={"mean_logprob": gen.mean_logprob, **({"fallback": fallback} if fallback else {})},
                member_calls=1,
                tokens=gen.prompt_tokens + gen.completion_tokens,
                compute_s=gen.latency_s,
                latency_s=gen.latency_s,
            )
        )
    Score.objects.bulk_create(scores, ignore_conflicts=True)


def options(run: Run, entry: Entry, suite: LibSuite, rows: list[SuiteItem], generations: list[Generation]) -> None:
    """Multiple choice by log-likelihood: each item's choice is its most likely option."""
    scores = []
    for row, gen in zip(rows, generations, strict=True):
        letter, value, per_option = suite.score_options(library_item(row), list(gen.token_logprobs))
        scores.append(
            Score(
                run=run,
                entry=entry,
                item=row,
                generation=gen,
                prediction=letter,
                value=value,
                details={
                    "scoring": suite.manifest.scoring,
                    "option_logprobs": per_option,
                    # log of the chosen option's probability among the options: the answer's confidence
                    "mean_logprob": _chosen_logprob(per_option, letter),
                },
                member_calls=1,
                compute_s=gen.latency_s,
                latency_s=gen.latency_s,
            )
        )
    Score.objects.bulk_create(scores, ignore_conflicts=True)


def _chosen_logprob(per_option: dict[str, float], letter: str) -> float:
    values = np.array(list(per_option.values()), dtype=float)
    top = values.max()
    log_norm = top + np.log(np.exp(values - top).sum())
    return float(per_option[letter] - log_norm)


# --- Judging ------------------------------------------------------------------------------


def judge(run_id: int) -> int | None:
    """Compare every pair of entries' answers per item with the run's judge, in both orders.

    Each answer's score on an item is its mean outcome against the others (win 1, tie 0.5);
    the run keeps Bradley-Terry ratings with bootstrap intervals over all comparisons. Judge
    calls go through the generations cache, so judging again costs nothing.
    """
    run = Run.objects.select_related("suite", "judge").filter(pk=run_id).first()
    if run is None or run.state in TERMINAL:
        return None
    if not Run.objects.filter(pk=run_id, judge_state__in=[State.QUEUED, State.RUNNING]).update(
        judge_state=State.RUNNING
    ):
        return None
    contestants = list(RunEntry.objects.filter(run=run, state=EntryState.RUNNING).select_related("entry"))
    if len(contestants) < 2:
        return _judging_failed(run, contestants, "nothing to compare with: every other entry failed")
    if run.judge is None:
        return _judging_failed(run, contestants, "the run's judge model was deleted")
    try:
        usage = _judge_pairs(run, [re.entry for re in contestants])
    except TransientBackendError:
        Run.objects.filter(pk=run_id).update(judge_state=State.QUEUED)
        raise
    except (BackendError, EnsembleError) as exc:
        return _judging_failed(run, contestants, f"judge {run.judge.name} failed: {exc}")
    ratings = _judge_scores(run, [re.entry for re in contestants])
    Run.objects.filter(pk=run_id).update(
        judge_state=State.DONE, results={"judge": {"entry": run.judge.name, **usage}, "ratings": ratings}
    )
    for re in contestants:
        RunEntry.objects.filter(pk=re.pk, state=EntryState.RUNNING).update(
            state=EntryState.SCORED, done_items=Score.objects.filter(run=run, entry=re.entry).count()
        )
    events.publish(run, "judged")
    return run.pk


def _judging_failed(run: Run, contestants: list[RunEntry], reason: str) -> int:
    for re in contestants:
        fail_entry(re, reason)
    Run.objects.filter(pk=run.pk).update(judge_state=State.FAILED)
    return run.pk


def _judge_pairs(run: Run, entries: list[Entry]) -> dict:
    """Ask the judge about every (item, pair) not yet compared; returns the judge's usage."""
    judge_backend = backend_for(run.judge)
    judge_backend.check()
    fingerprint = judge_backend.fingerprint()
    answers: dict[int, dict[int, Score]] = defaultdict(dict)
    for sc in Score.objects.filter(run=run, entry__in=entries).select_related("item"):
        answers[sc.item_id][sc.entry_id] = sc
    done = set(Comparison.objects.filter(run=run).values_list("item_id", "first_id", "second_id"))
    pending = []  # (item, first, second, forward prompt, swapped prompt)
    for item_id, row in answers.items():
        ordered = [e for e in entries if e.pk in row]
        for i, a in enumerate(ordered):
            for b in ordered[i + 1 :]:
                if (item_id, a.pk, b.pk) in done:
                    continue
                question = row[a.pk].item.data["input"]
                ans_a, ans_b = row[a.pk].prediction, row[b.pk].prediction
                pending.append(
                    (item_id, a, b, judge_prompt(question, ans_a, ans_b), judge_prompt(question, ans_b, ans_a))
                )
    prompts = sorted({p for *_, fwd, swp in pending for p in (fwd, swp)})
    read = cache.generations(fingerprint, lambda: judge_backend, prompts, JUDGE_PARAMS)
    verdicts = dict(zip(prompts, read.generations, strict=True))
    rows = []
    for item_id, a, b, fwd, swp in pending:
        g_fwd, g_swp = verdicts[fwd], verdicts[swp]
        v_fwd, v_swp = parse_verdict(g_fwd.text), parse_verdict(g_swp.text)
        rows.append(
            Comparison(
                run=run,
                item_id=item_id,
                first=a,
                second=b,
                forward=v_fwd or "",
                swapped=v_swp or "",
                outcome=combine_orders(v_fwd, v_swp) or "",
                forward_generation=g_fwd,
                swapped_generation=g_swp,
            )
        )
    Comparison.objects.bulk_create(rows, ignore_conflicts=True)
    return {
        "calls": len(read.generations),
        "new_calls": read.new,
        "tokens": sum(g.prompt_tokens + g.completion_tokens for g in read.generations),
        "compute_s": round(sum(g.latency_s for g in read.generations), 3),
    }


def _judge_scores(run: Run, entries: list[Entry]) -> dict:
    """Write each answer's mean outcome into its Score; return Bradley-Terry ratings by entry name."""
    names = {e.pk: e.name for e in entries}
    per_answer: dict[tuple[int, int], list[float]] = defaultdict(list)
    battles: list[stats.Battle] = []
    report_items = set(SuiteItem.objects.filter(suite=run.suite, split=run.report_split).values_list("pk", flat=True))
    unreadable = 0
    for c in Comparison.objects.filter(run=run, first__in=entries, second__in=entries):
        if not c.outcome:
            unreadable += 1
            continue
        first_score = OUTCOME_SCORE[c.outcome]
        per_answer[(c.item_id, c.first_id)].append(first_score)
        per_answer[(c.item_id, c.second_id)].append(1.0 - first_score)
        if c.item_id in report_items:
            battles.append((names[c.first_id], names[c.second_id], first_score))
    updates = []
    for sc in Score.objects.filter(run=run, entry__in=entries):
        outcomes = per_answer.get((sc.item_id, sc.entry_id), [])
        # No readable verdict on this item: neither better nor worse than the others.
        sc.value = float(np.mean(outcomes)) if outcomes else 0.5
        sc.details = {**sc.details, "judged": len(outcomes)}
        sc.details.pop("awaiting_judge", None)
        updates.append(sc)
    Score.objects.bulk_update(updates, ["value", "details"])
    intervals = stats.bradley_terry_intervals(battles, resamples=200, seed=run.pk) if battles else {}
    bounds = stats.rating_rank_bounds(intervals) if intervals else {}
    return {
        "battles": len(battles),
        "unreadable": unreadable,
        "entries": {
            name: {
                "rating": round(iv.mean, 1),
                "low": round(iv.low, 1),
                "high": round(iv.high, 1),
                "rank_upper_bound": bounds[name],
            }
            for name, iv in intervals.items()
        },
    }
