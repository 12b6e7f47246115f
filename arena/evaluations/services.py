"""How a run flows: plan, generate per (model, batch), combine blends, aggregate.

Every step is idempotent: work is claimed with a conditional update and rows carry unique
constraints, so a redelivered task or a second worker changes nothing.
"""

from __future__ import annotations

import inspect
import json
import logging
import math
import platform
import subprocess
import time
from collections import OrderedDict, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from arena.benchmarks.models import Suite, SuiteItem
from arena.benchmarks.services import library_item, library_suite
from arena.evaluations import events, signals
from arena.evaluations.models import TERMINAL, Comparison, Generation, Run, RunEntry, Score, State, WorkItem
from arena.registry.models import Entry
from arena.registry.services import backend_for, not_built
from arena.teams.models import Team
from ensembles import stats
from ensembles.backends import BackendError, DecodingParams, LoglikelihoodUnsupported, ModelPool, TransientBackendError
from ensembles.backends.base import Generation as LibGeneration
from ensembles.backends.base import digest_json
from ensembles.errors import EnsembleError
from ensembles.metrics import EXTRACTORS, get_metric
from ensembles.strategies import (
    STRATEGIES,
    CachedEmbedder,
    CallCost,
    MemberAnswer,
    MiniLMEmbedder,
    Strategy,
    make_strategy,
)
from ensembles.strategies.vote import vote_key
from ensembles.suites import Suite as LibSuite
from ensembles.suites.model import render_choices

log = logging.getLogger(__name__)

# Models stay loaded in the worker process between batches (see ModelPool).
POOL = ModelPool(max_models=settings.ARENA_MAX_LOADED_MODELS)


class RetryLater(Exception):
    """A transient failure: the task should be retried with backoff."""


# --- Planning -----------------------------------------------------------------------------


def provenance() -> dict:
    def pkg(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "-"

    try:
        rev = subprocess.run(  # noqa: S603 - fixed argv, no shell
            ["git", "rev-parse", "--short", "HEAD"],  # noqa: S607
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(settings.BASE_DIR),
            check=False,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        rev = ""
    return {
        "git_revision": rev or "unknown",
        "python": platform.python_version(),
        "packages": {n: pkg(n) for n in ("django", "celery", "torch", "transformers", "ensemble-arena")},
    }


def create_run(
    team: Team, suite: Suite, entries: Iterable[Entry], *, splits=None, user=None, judge: Entry | None = None
) -> Run:
    """Record a run of ``entries`` (and their blends' members) on ``suite`` and queue its planning.

    A judge suite needs a ``judge``: a single model of the team that compares the entries' answers.
    """
    entries = list(entries)
    if not entries:
        raise ValidationError({"entries": "choose at least one entry"})
    if suite.team_id != team.id or any(e.team_id != team.id for e in entries):
        raise ValidationError({"entries": "entries and suite must belong to the team"})
    if suite.task_type == "judge":
        _check_judged(team, entries, judge)
    elif judge is not None:
        raise ValidationError({"judge": f"only judge suites take a judge; {suite.name} is scored by its metric"})
    manifest_splits = suite.manifest.get("splits", ["test"])
    splits = list(splits or (["test"] if "test" in manifest_splits else manifest_splits[:1]))
    unknown = [s for s in splits if s not in manifest_splits]
    if unknown:
        raise ValidationError({"splits": f"unknown splits {unknown}; the suite has {manifest_splits}"})
    targets = {e.pk: e for e in entries}
    members: dict[int, Entry] = {}
    # Every blend of a hybrid's tree is combined in the run, and every model under it generates.
    blends, walked = [e for e in entries if e.is_blend], set()
    while blends:
        entry = blends.pop()
        if entry.pk in walked:
            continue
        walked.add(entry.pk)
        for member in entry.ordered_members():
            members.setdefault(member.pk, member)
            if member.is_blend:
                blends.append(member)
        if make_strategy(entry.strategy, entry.params).needs_fit and "dev" not in splits:
            splits.append("dev")  # learned strategies fit on dev; the board still reports test
    # A merge whose weights are not built (queued, running or failed) has nothing to run yet.
    unbuilt = not_built([*targets.values(), *members.values()])
    if unbuilt:
        raise ValidationError(
            {"entries": f"merges not built into weights yet cannot run: {'; '.join(unbuilt)}; wait or rebuild them"}
        )
    if judge is not None and (unbuilt_judge := not_built([judge])):
        raise ValidationError({"judge": f"the judge is a merge not built into weights yet: {unbuilt_judge[0]}"})
    total = SuiteItem.objects.filter(suite=suite, split__in=splits).count()
    if total == 0:
        raise ValidationError({"splits": "the suite has no items in these splits"})
    with transaction.atomic():
        run = Run.objects.create(
            team=team, suite=suite, splits=splits, created_by=user, provenance=provenance(), judge=judge
        )
        RunEntry.objects.bulk_create(
            [RunEntry(run=run, entry=e, is_target=True, total_items=total) for e in targets.values()]
            + [
                RunEntry(run=run, entry=m, is_target=False, total_items=total)
                for pk, m in members.items()
                if pk not in targets
            ]
        )
        from arena.evaluations.tasks import plan_run

        transaction.on_commit(lambda: plan_run.delay(run.pk))
    return run


def _check_judged(team: Team, entries: list[Entry], judge: Entry | None) -> None:
    if judge is None:
        raise ValidationError({"judge": "a judge suite needs a judge: choose a model to compare the answers"})
    if judge.team_id != team.id or judge.is_blend:
        raise ValidationError({"judge": "the judge must be one of the team's single models"})
    blends = [e.name for e in entries if e.is_blend]
    if blends:
        raise ValidationError(
            {
                "entries": f"judge suites compare single models' free-text answers; blends cannot take part yet: "
                f"{', '.join(blends)}"
            }
        )
    if len(entries) < 2:
        raise ValidationError({"entries": "a judge suite compares answers: choose at least two entries"})


def plan_run(run_id: int) -> None:
    """Check each model, split its items into batches and queue one task per batch."""
    claimed = Run.objects.filter(pk=run_id, state=State.QUEUED).update(state=State.RUNNING, started_at=timezone.now())
    if not claimed:
        return
    run = Run.objects.select_related("suite").get(pk=run_id)
    items = list(
        SuiteItem.objects.filter(suite=run.suite, split__in=run.splits)
        .order_by("position")
        .values_list("pk", flat=True)
    )
    size = settings.ARENA_BATCH_SIZE
    batches = [items[i : i + size] for i in range(0, len(items), size)]
    queued: list[int] = []
    for re in RunEntry.objects.filter(run=run).select_related("entry").exclude(entry__kind="blend"):
        try:
            backend = backend_for(re.entry)
            backend.check()
            re.fingerprint = backend.fingerprint()
        except (BackendError, EnsembleError, OSError) as exc:
            fail_entry(re, str(exc))
            continue
        with transaction.atomic():
            re.state = State.RUNNING
            re.started_at = timezone.now()
            re.save(update_fields=["fingerprint", "state", "started_at"])
            WorkItem.objects.bulk_create(
                [WorkItem(run=run, entry=re.entry, batch_index=i, item_ids=b) for i, b in enumerate(batches)],
                ignore_conflicts=True,
            )
        queued.extend(WorkItem.objects.filter(run=run, entry=re.entry, state=State.QUEUED).values_list("pk", flat=True))
    _record_called_models(run)
    from arena.evaluations.tasks import generate_batch

    for pk in queued:
        generate_batch.delay(pk)
    events.publish(run, "planned")
    advance_run(run_id)


def _record_called_models(run: Run) -> None:
    """Write into the run's provenance the model each calling blend, and the judge, calls first.

    Routing reads it to send that blend's combine (or the judging) to the GPU shard of that model
    (arena/evaluations/routing.py). A model that cannot be checked is left out: its caller then
    runs on the cpu queue and fails there with the reason.
    """
    known = dict(RunEntry.objects.filter(run=run).exclude(fingerprint="").values_list("entry__name", "fingerprint"))

    def fingerprint(name: str) -> str | None:
        if name not in known:
            entry = Entry.objects.filter(team_id=run.team_id, name=name).exclude(kind="blend").first()
            try:
                backend = backend_for(entry) if entry else None
                if backend is not None:
                    backend.check()
                known[name] = backend.fingerprint() if backend else None
            except (BackendError, EnsembleError, OSError):
                known[name] = None
        return known[name]

    called = {}
    for re in RunEntry.objects.filter(run=run, entry__kind="blend").select_related("entry"):
        try:
            strategy = make_strategy(re.entry.strategy, re.entry.params)
        except EnsembleError:
            continue  # its combine reports the bad strategy
        if not strategy.calls_models:
            continue
        first = next(iter(strategy.called_models([m.name for m in re.entry.ordered_members()])), None)
        if first and fingerprint(first):
            called[re.entry.name] = {"model": first, "fingerprint": fingerprint(first)}
    extra: dict = {"called_models": called} if called else {}
    if run.judge is not None and fingerprint(run.judge.name):
        extra["judge"] = {"model": run.judge.name, "fingerprint": fingerprint(run.judge.name)}
    if extra:
        run.provenance = {**run.provenance, **extra}
        Run.objects.filter(pk=run.pk).update(provenance=run.provenance)


# --- Generation ---------------------------------------------------------------------------


def decoding_for(run: Run) -> DecodingParams:
    m = run.suite.manifest
    return DecodingParams(max_new_tokens=m.get("max_new_tokens", 16), stop=tuple(m.get("stop", ["\n"])))


def generation_key(fingerprint: str, prompt: str, params: DecodingParams) -> str:
    return digest_json({"fingerprint": fingerprint, "prompt": prompt, "params": params.model_dump(mode="json")})


def claim_work_item(pk: int) -> bool:
    """Take a batch for this worker: queued, or running under a claim older than the task limit."""
    now = timezone.now()
    stale = now - timedelta(seconds=settings.CELERY_TASK_TIME_LIMIT)
    claimable = Q(state=State.QUEUED) | Q(state=State.RUNNING, claimed_at__lt=stale)
    return bool(
        WorkItem.objects.filter(claimable, pk=pk, attempts__lt=settings.ARENA_MAX_ATTEMPTS).update(
            state=State.RUNNING, attempts=F("attempts") + 1, claimed_at=now
        )
    )


def generate_batch(work_item_id: int) -> None:
    """Generate and score one batch of one model; safe to run twice."""
    if not claim_work_item(work_item_id):
        _fail_exhausted(work_item_id)
        return
    wi = WorkItem.objects.select_related("run__suite", "entry").get(pk=work_item_id)
    run = wi.run
    re = RunEntry.objects.get(run=run, entry=wi.entry)
    try:
        new_calls = _generate_and_score(wi, re)
    except RetryLater as exc:
        if wi.attempts >= settings.ARENA_MAX_ATTEMPTS:
            _fail_work_item(wi, f"gave up after {wi.attempts} attempts: {exc}")
            return
        WorkItem.objects.filter(pk=wi.pk, state=State.RUNNING).update(state=State.QUEUED, error=str(exc)[:2000])
        raise
    except (BackendError, EnsembleError) as exc:
        _fail_work_item(wi, str(exc))
        return
    except Exception as exc:
        # An unexpected error is a poison item: record it and let the run go on.
        log.exception("batch %s of run %s failed", wi.batch_index, run.pk)
        _fail_work_item(wi, f"internal error: {type(exc).__name__}: {exc}")
        return
    with transaction.atomic():
        WorkItem.objects.filter(pk=wi.pk, state=State.RUNNING).update(state=State.DONE, finished_at=timezone.now())
        done = Score.objects.filter(run=run, entry=wi.entry).count()
        RunEntry.objects.filter(pk=re.pk).update(done_items=done, new_calls=F("new_calls") + new_calls)
    events.publish(run, "progress", entry=wi.entry_id, done=done)
    advance_run(run.pk)


def _generate_and_score(wi: WorkItem, re: RunEntry) -> int:
    run = wi.run
    suite = library_suite(run.suite)
    rows = list(SuiteItem.objects.filter(pk__in=wi.item_ids).order_by("position"))
    note = None
    if suite.by_loglikelihood:
        try:
            return _score_options(wi, re, suite, rows)
        except LoglikelihoodUnsupported as exc:
            # The result says how it was scored: by generation with letter extraction instead.
            note = str(exc)
    params = decoding_for(run)
    prompts = {row.pk: suite.render_prompt(library_item(row)) for row in rows}
    keys = {pk: generation_key(re.fingerprint, p, params) for pk, p in prompts.items()}
    cached = {g.key: g for g in Generation.objects.filter(key__in=keys.values())}
    missing = [pk for pk, k in keys.items() if k not in cached]
    if missing:
        try:
            backend = POOL.get(re.fingerprint, lambda: backend_for(wi.entry))
            outputs = backend.generate([prompts[pk] for pk in missing], params)
        except TransientBackendError as exc:
            raise RetryLater(str(exc)) from exc
        store_generations(
            re.fingerprint, params, [(keys[pk], prompts[pk], out) for pk, out in zip(missing, outputs, strict=True)]
        )
        cached = {g.key: g for g in Generation.objects.filter(key__in=keys.values())}
    scores = []
    for row in rows:
        gen = cached[keys[row.pk]]
        if suite.manifest.task_type == "judge":
            # Scored later, by the judge comparing this answer with the other entries'.
            prediction, value = suite.extract(gen.text), 0.0
        else:
            prediction, value = suite.score(library_item(row), gen.text)
        scores.append(
            Score(
                run=run,
                entry=wi.entry,
                item=row,
                generation=gen,
                prediction=prediction,
                value=value,
                details={"mean_logprob": gen.mean_logprob, **({"fallback": note} if note else {})},
                member_calls=1,
                tokens=gen.prompt_tokens + gen.completion_tokens,
                compute_s=gen.latency_s,
                latency_s=gen.latency_s,
            )
        )
    Score.objects.bulk_create(scores, ignore_conflicts=True)
    return len(missing)


def store_generations(fingerprint: str, params: DecodingParams, outputs: list[tuple[str, str, LibGeneration]]) -> None:
    """Cache (key, prompt, output) triples; a key stored meanwhile by another worker is left as it is."""
    Generation.objects.bulk_create(
        [
            Generation(
                key=key,
                fingerprint=fingerprint,
                prompt=prompt,
                params=params.model_dump(mode="json"),
                text=out.text,
                token_logprobs=out.token_logprobs,
                prompt_tokens=out.prompt_tokens,
                completion_tokens=out.completion_tokens,
                latency_s=out.latency_s,
            )
            for key, prompt, out in outputs
        ],
        ignore_conflicts=True,
    )


def _score_options(wi: WorkItem, re: RunEntry, suite, rows: list[SuiteItem]) -> int:
    """Multiple choice by log-likelihood: score every option's text after the prompt, cached like generations."""
    run = wi.run
    requests = {row.pk: suite.option_requests(library_item(row)) for row in rows}
    keys = {
        pk: digest_json({"fingerprint": re.fingerprint, "loglikelihood": [list(r) for r in reqs]})
        for pk, reqs in requests.items()
    }
    cached = {g.key: g for g in Generation.objects.filter(key__in=keys.values())}
    missing = [pk for pk, k in keys.items() if k not in cached]
    if missing:
        flat = [r for pk in missing for r in requests[pk]]
        started = time.perf_counter()
        try:
            backend = POOL.get(re.fingerprint, lambda: backend_for(wi.entry))
            logliks = backend.loglikelihood(flat)
        except TransientBackendError as exc:
            raise RetryLater(str(exc)) from exc
        share = (time.perf_counter() - started) / len(missing)
        rows_out, at = [], 0
        for pk in missing:
            n = len(requests[pk])
            rows_out.append(
                Generation(
                    key=keys[pk],
                    fingerprint=re.fingerprint,
                    prompt=requests[pk][0][0],
                    params={"kind": "loglikelihood", "continuations": [c for _, c in requests[pk]]},
                    text="",
                    token_logprobs=[round(x, 6) for x in logliks[at : at + n]],  # one per option
                    latency_s=share,
                )
            )
            at += n
        Generation.objects.bulk_create(rows_out, ignore_conflicts=True)
        cached = {g.key: g for g in Generation.objects.filter(key__in=keys.values())}
    scores = []
    for row in rows:
        gen = cached[keys[row.pk]]
        letter, value, per_option = suite.score_options(library_item(row), list(gen.token_logprobs))
        scores.append(
            Score(
                run=run,
                entry=wi.entry,
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
    return len(missing)


def _chosen_logprob(per_option: dict[str, float], letter: str) -> float:
    values = np.array(list(per_option.values()), dtype=float)
    top = values.max()
    log_norm = top + np.log(np.exp(values - top).sum())
    return float(per_option[letter] - log_norm)


def _fail_work_item(wi: WorkItem, reason: str) -> None:
    WorkItem.objects.filter(pk=wi.pk).exclude(state=State.DONE).update(
        state=State.FAILED, error=reason[:2000], finished_at=timezone.now()
    )
    events.publish(wi.run, "error", entry=wi.entry_id, message=reason[:500])
    advance_run(wi.run_id)


def _fail_exhausted(work_item_id: int) -> None:
    """A batch nobody could claim: fail it when it used up its attempts, else leave it be."""
    wi = WorkItem.objects.select_related("run__suite").filter(pk=work_item_id).first()
    if wi is None or wi.state in TERMINAL:
        return
    if wi.attempts >= settings.ARENA_MAX_ATTEMPTS:
        last = f": {wi.error}" if wi.error else ""
        _fail_work_item(wi, f"gave up after {wi.attempts} attempts{last}")


def fail_entry(re: RunEntry, reason: str) -> None:
    RunEntry.objects.filter(pk=re.pk).exclude(state__in=TERMINAL).update(
        state=State.FAILED, error=reason[:2000], finished_at=timezone.now()
    )
    events.publish(re.run, "error", entry=re.entry_id, message=reason[:500])


# --- Advancing ----------------------------------------------------------------------------


def advance_run(run_id: int) -> None:
    """Finish entries whose work is done, start blends whose members are, close the run."""
    run = Run.objects.select_related("suite").get(pk=run_id)
    if run.state in TERMINAL:
        return
    run_entries = list(RunEntry.objects.filter(run=run).select_related("entry"))
    by_entry = {re.entry_id: re for re in run_entries}
    judged = run.suite.task_type == "judge"
    answered = 0  # judge suites: entries whose answers are all in, waiting for the judge
    for re in run_entries:
        if re.entry.is_blend or re.state != State.RUNNING:
            continue
        states = set(WorkItem.objects.filter(run=run, entry=re.entry).values_list("state", flat=True))
        if states and states <= {State.DONE}:
            if judged:
                answered += 1
            else:
                finish_entry(re)
        elif State.FAILED in states and not states & {State.QUEUED, State.RUNNING}:
            errors = WorkItem.objects.filter(run=run, entry=re.entry, state=State.FAILED).values_list(
                "error", flat=True
            )
            fail_entry(re, next(iter(errors), "failed"))
    from arena.evaluations.tasks import combine_blend

    waiting = [re for re in run_entries if re.entry.is_blend and re.state == State.QUEUED]
    # A blend failed here fails the blends above it, which may come earlier in the list: pass again.
    while waiting:
        still, failed_any = [], False
        for re in waiting:
            member_states = {}
            for member_id in re.entry.member_links.values_list("member_id", flat=True):
                member_states[member_id] = RunEntry.objects.filter(pk=by_entry[member_id].pk).values_list(
                    "state", "error"
                )[0]
            failed = [mid for mid, (s, _) in member_states.items() if s == State.FAILED]
            if failed:
                # An inner blend's own reason goes along, so the top of a hybrid says what broke.
                names = ", ".join(
                    f"{by_entry[mid].entry.name} ({member_states[mid][1]})"
                    if by_entry[mid].entry.is_blend
                    else by_entry[mid].entry.name
                    for mid in failed
                )
                fail_entry(re, f"member failed: {names}")
                failed_any = True
            elif all(s == State.DONE for s, _ in member_states.values()):
                if RunEntry.objects.filter(pk=re.pk, state=State.QUEUED).update(
                    state=State.RUNNING, started_at=timezone.now()
                ):
                    transaction.on_commit(lambda pk=re.pk: combine_blend.delay(pk))
                    events.publish(run, "started", entry=re.entry_id)
            else:
                still.append(re)
        waiting = still if failed_any else []
    if judged and answered and _all_answered(run):
        from arena.evaluations.tasks import judge_run

        if Run.objects.filter(pk=run.pk, judge_state="").update(judge_state=State.QUEUED):
            transaction.on_commit(lambda: judge_run.delay(run.pk))
    _close_if_finished(run)


def _all_answered(run: Run) -> bool:
    """Every entry of a judge run has either failed or has all its batches done."""
    for re in RunEntry.objects.filter(run=run, state=State.RUNNING):
        if WorkItem.objects.filter(run=run, entry_id=re.entry_id).exclude(state=State.DONE).exists():
            return False
    return True


def _close_if_finished(run: Run) -> None:
    rows = list(RunEntry.objects.filter(run=run).select_related("entry"))
    if any(re.state not in TERMINAL for re in rows):
        return
    failed = [re for re in rows if re.state == State.FAILED]
    state = State.FAILED if failed else State.DONE
    error = "; ".join(f"{re.entry.name}: {re.error}" for re in failed)
    if Run.objects.filter(pk=run.pk, state=State.RUNNING).update(
        state=state, error=error[:4000], finished_at=timezone.now()
    ):
        events.publish(run, "finished", state=state)
        signals.run_finished.send(sender=Run, run=run)


# --- Blends -------------------------------------------------------------------------------


def combine_blend(run_entry_id: int) -> None:
    """Combine the members' stored answers per item; no member is called again."""
    re = RunEntry.objects.select_related("run__suite", "entry").filter(pk=run_entry_id).first()
    if re is None or re.state != State.RUNNING:
        return
    run, blend = re.run, re.entry
    try:
        _combine(run, blend)
    except (EnsembleError, ValueError) as exc:
        fail_entry(re, str(exc))
    else:
        RunEntry.objects.filter(pk=re.pk).update(done_items=Score.objects.filter(run=run, entry=blend).count())
        finish_entry(RunEntry.objects.get(pk=re.pk))
    advance_run(run.pk)


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
        RunEntry.objects.filter(entry=blend, state=State.DONE, run__state=State.DONE)
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
        from arena.evaluations.calls import ArenaCaller

        caller = ArenaCaller(run.team, decoding_for(run), EXTRACTORS.get(suite.manifest.answer_extraction))
    scores = Score.objects.filter(run=run, entry__in=members).select_related("generation", "item")
    grid: dict[int, dict[int, Score]] = defaultdict(dict)
    items: dict[int, SuiteItem] = {}
    for s in scores:
        grid[s.item_id][s.entry_id] = s
        items[s.item_id] = s.item

    def answers(item_id: int) -> list[MemberAnswer]:
        row = grid[item_id]
        return [member_answer(m, row[m.pk]) for m in members if m.pk in row]

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


# --- Judging ------------------------------------------------------------------------------

JUDGE_PARAMS = DecodingParams(max_new_tokens=24, stop=())


def judge_run(run_id: int) -> None:
    """Compare every pair of entries' answers per item with the run's judge, in both orders.

    Each answer's score on an item is its mean outcome against the others (win 1, tie 0.5);
    the run keeps Bradley-Terry ratings with bootstrap intervals over all comparisons. Judge
    calls are cached like generations, so judging again costs nothing.
    """
    run = Run.objects.select_related("suite", "judge").filter(pk=run_id).first()
    if run is None or run.state in TERMINAL:
        return
    if not Run.objects.filter(pk=run_id, judge_state__in=[State.QUEUED, State.RUNNING]).update(
        judge_state=State.RUNNING
    ):
        return
    contestants = list(RunEntry.objects.filter(run=run, state=State.RUNNING).select_related("entry"))
    if len(contestants) < 2:
        for re in contestants:
            fail_entry(re, "nothing to compare with: every other entry failed")
        Run.objects.filter(pk=run_id).update(judge_state=State.FAILED)
        advance_run(run_id)
        return
    if run.judge is None:
        for re in contestants:
            fail_entry(re, "the run's judge model was deleted")
        Run.objects.filter(pk=run_id).update(judge_state=State.FAILED)
        advance_run(run_id)
        return
    try:
        usage = _judge_pairs(run, [re.entry for re in contestants])
    except TransientBackendError as exc:
        Run.objects.filter(pk=run_id).update(judge_state=State.QUEUED)
        raise RetryLater(str(exc)) from exc
    except (BackendError, EnsembleError) as exc:
        for re in contestants:
            fail_entry(re, f"judge {run.judge.name} failed: {exc}")
        Run.objects.filter(pk=run_id).update(judge_state=State.FAILED)
        advance_run(run_id)
        return
    ratings = _judge_scores(run, [re.entry for re in contestants])
    Run.objects.filter(pk=run_id).update(
        judge_state=State.DONE, results={"judge": {"entry": run.judge.name, **usage}, "ratings": ratings}
    )
    for re in contestants:
        RunEntry.objects.filter(pk=re.pk).update(done_items=Score.objects.filter(run=run, entry=re.entry).count())
        finish_entry(RunEntry.objects.get(pk=re.pk))
    events.publish(run, "judged")
    advance_run(run_id)


def _judge_pairs(run: Run, entries: list[Entry]) -> dict:
    """Ask the judge about every (item, pair) not yet compared; returns the judge's usage."""
    from ensembles.judge import combine_orders, judge_prompt, parse_verdict

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
    keys = {p: generation_key(fingerprint, p, JUDGE_PARAMS) for p in prompts}
    cached = {g.key: g for g in Generation.objects.filter(key__in=keys.values())}
    missing = [p for p in prompts if keys[p] not in cached]
    if missing:
        outputs = POOL.get(fingerprint, lambda: judge_backend).generate(missing, JUDGE_PARAMS)
        store_generations(
            fingerprint, JUDGE_PARAMS, [(keys[p], p, out) for p, out in zip(missing, outputs, strict=True)]
        )
        cached = {g.key: g for g in Generation.objects.filter(key__in=keys.values())}
    rows = []
    for item_id, a, b, fwd, swp in pending:
        g_fwd, g_swp = cached[keys[fwd]], cached[keys[swp]]
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
    used = [cached[keys[p]] for p in prompts]
    return {
        "calls": len(used),
        "new_calls": len(missing),
        "tokens": sum(g.prompt_tokens + g.completion_tokens for g in used),
        "compute_s": round(sum(g.latency_s for g in used), 3),
    }


def _judge_scores(run: Run, entries: list[Entry]) -> dict:
    """Write each answer's mean outcome into its Score; return Bradley-Terry ratings by entry name."""
    from ensembles.judge import OUTCOME_SCORE

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


# --- Aggregation --------------------------------------------------------------------------


def _values(run: Run, entry_id: int) -> dict[int, Score]:
    return {s.item_id: s for s in Score.objects.filter(run=run, entry_id=entry_id, item__split=run.report_split)}


def finish_entry(re: RunEntry) -> None:
    """Aggregate an entry's scores with a bootstrap interval, and a blend's lift over its best member."""
    run = re.run
    scores = _values(run, re.entry_id)
    values = [s.value for s in scores.values()]
    interval = stats.bootstrap_mean(values, seed=run.pk)
    latencies = [s.latency_s for s in scores.values()]
    update = {
        "score": _finite(interval.mean),
        "ci_low": _finite(interval.low),
        "ci_high": _finite(interval.high),
        "n": interval.n,
        "member_calls": sum(s.member_calls for s in scores.values()),
        "tokens": sum(s.tokens for s in scores.values()),
        "compute_s": float(sum(s.compute_s for s in scores.values())),
        "latency_p50": float(np.percentile(latencies, 50)) if latencies else None,
        "latency_p95": float(np.percentile(latencies, 95)) if latencies else None,
        "state": State.DONE,
        "finished_at": timezone.now(),
    }
    if re.entry.is_blend:
        update.update(_lift(run, re.entry, scores))
    if RunEntry.objects.filter(pk=re.pk).exclude(state__in=TERMINAL).update(**update):
        events.publish(run, "result", entry=re.entry_id, score=update["score"])


def _lift(run: Run, blend: Entry, scores: dict[int, Score]) -> dict:
    best, best_score = None, None
    for member_re in RunEntry.objects.filter(run=run, entry__in=blend.ordered_members()):
        if member_re.score is not None and (best_score is None or member_re.score > best_score):
            best, best_score = member_re.entry_id, member_re.score
    if best is None:
        return {}
    member = _values(run, best)
    common = sorted(set(scores) & set(member))
    diff = stats.paired_bootstrap_diff(
        [scores[i].value for i in common], [member[i].value for i in common], seed=run.pk
    )
    blend_values = [scores[i].value for i in common]
    member_values = [member[i].value for i in common]
    binary = all(v in (0.0, 1.0) for v in blend_values + member_values)
    return {
        "best_member_id": best,
        "lift": _finite(diff.mean),
        "lift_low": _finite(diff.low),
        "lift_high": _finite(diff.high),
        # Where each item is simply right or wrong, McNemar's test on the discordant items too.
        "lift_p": _finite(stats.mcnemar([v == 1.0 for v in blend_values], [v == 1.0 for v in member_values]))
        if binary and common
        else None,
    }


def _finite(x: float) -> float | None:
    return None if x is None or np.isnan(x) else float(x)


# --- Recovery -----------------------------------------------------------------------------


def requeue_stale(stale_after_s: float | None = None) -> int:
    """Send again what a dead worker or a lost message left waiting (beat, every few minutes).

    Batches held longer than a task may run (``stale_after_s``, the task time limit unless told):
    their worker died (the broker would redeliver them after its visibility timeout anyway; this
    only makes the recovery quicker). Runs still waiting for planning and blends still waiting for
    their combine after that long: their message was lost, sent while the broker was away. Every
    step claims its row conditionally, so a step sent twice still runs once.
    """
    from arena.evaluations.tasks import combine_blend, generate_batch, judge_run, plan_run

    if stale_after_s is None:
        stale_after_s = settings.CELERY_TASK_TIME_LIMIT
    stale = timezone.now() - timedelta(seconds=stale_after_s)
    # Batches still queued in a run that has made no progress for that long and holds no batch:
    # their messages went with a broker that keeps nothing on disk. A run that is moving, or whose
    # held batch is sent again just below, is left alone, so a queue is not flooded with copies
    # (and a copy of a batch already claimed does nothing). Read before that batch is put back.
    idle = list(
        Run.objects.filter(state=State.RUNNING, started_at__lt=stale)
        .exclude(work_items__claimed_at__gte=stale)
        .exclude(work_items__finished_at__gte=stale)
        .exclude(work_items__state=State.RUNNING)
        .values_list("pk", flat=True)
    )
    n = 0
    for pk in WorkItem.objects.filter(run__state=State.RUNNING, state=State.RUNNING, claimed_at__lt=stale).values_list(
        "pk", flat=True
    ):
        if WorkItem.objects.filter(pk=pk, state=State.RUNNING, claimed_at__lt=stale).update(state=State.QUEUED):
            generate_batch.delay(pk)
            n += 1
    for pk in Run.objects.filter(state=State.QUEUED, created_at__lt=stale).values_list("pk", flat=True):
        plan_run.delay(pk)
        n += 1
    for pk in WorkItem.objects.filter(run__in=idle, state=State.QUEUED).values_list("pk", flat=True):
        generate_batch.delay(pk)
        n += 1
    # A judging queued that long in an idle run: its message was lost the same way (one under way
    # is left to requeue_unfinished, since a second judge_run would judge beside it).
    for pk in Run.objects.filter(pk__in=idle, judge_state=State.QUEUED).values_list("pk", flat=True):
        judge_run.delay(pk)
        n += 1
    blends = RunEntry.objects.filter(
        run__state=State.RUNNING, entry__kind="blend", state=State.RUNNING, started_at__lt=stale
    )
    for pk in blends.values_list("pk", flat=True):
        combine_blend.delay(pk)
        n += 1
    if n:
        log.warning("sent again %d steps whose worker or message was lost", n)
    return n


def requeue_unfinished() -> int:
    """After a restart of every worker, put back work that was queued or held by a dead worker."""
    from arena.evaluations.tasks import combine_blend, generate_batch, judge_run, plan_run

    n = 0
    for run in Run.objects.filter(state=State.QUEUED):
        transaction.on_commit(lambda pk=run.pk: plan_run.delay(pk))
        n += 1
    for wi in WorkItem.objects.filter(run__state=State.RUNNING, state__in=[State.QUEUED, State.RUNNING]):
        WorkItem.objects.filter(pk=wi.pk, state=State.RUNNING).update(state=State.QUEUED)
        transaction.on_commit(lambda pk=wi.pk: generate_batch.delay(pk))
        n += 1
    for re in RunEntry.objects.filter(run__state=State.RUNNING, entry__kind="blend", state=State.RUNNING):
        transaction.on_commit(lambda pk=re.pk: combine_blend.delay(pk))
        n += 1
    for run in Run.objects.filter(state=State.RUNNING, judge_state__in=[State.QUEUED, State.RUNNING]):
        Run.objects.filter(pk=run.pk).update(judge_state=State.QUEUED)
        transaction.on_commit(lambda pk=run.pk: judge_run.delay(pk))
        n += 1
    for run in Run.objects.filter(state=State.RUNNING):
        advance_run(run.pk)
    return n
