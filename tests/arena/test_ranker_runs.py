"""A pair_ranker blend end to end: fitted on dev with the shipped MiniLM, scored, costed, on the board.

The tiny random members never get an arithmetic answer exactly right, so the suite here is scored
by chrF: partial credit separates their answers on dev, which is what the ranker learns from.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing

import pytest
from django.conf import settings as django_settings

from arena.evaluations.models import Run, RunEntry, Score, State
from arena.evaluations.services import create_run
from arena.registry.services import register_blend, register_model
from ensembles.suites import get_builtin
from ensembles.suites.model import Suite
from tests.factories import SuiteFactory
from tests.helpers import WorkerProcess, finished, wait_for

MEMBERS = ("tiny-a", "tiny-b", "tiny-c")
TEST_ITEMS = 12


def chrf_arithmetic() -> Suite:
    base = get_builtin("arithmetic", size=2 * TEST_ITEMS)
    manifest = base.manifest.model_copy(update={"name": "arithmetic-chrf", "metric": "chrf"})
    return Suite(manifest, base.items)


@pytest.fixture
def members(team, owner, tiny_variant, settings, tmp_path):
    root = tmp_path / "models"
    root.mkdir()
    settings.ARENA_MODEL_ROOTS = [root]
    return [
        register_model(team, name=name, kind="hf", config={"path": str(tiny_variant(root / name, seed))})
        for seed, name in enumerate(MEMBERS, start=1)
    ]


@pytest.fixture
def cache_dir(tmp_path):
    return tmp_path / "cache"


@pytest.fixture
def ranker_worker(transactional_db, clean_redis, worker_roots, cache_dir):
    # Its own cache directory, so the encoder cache starts empty and is the test's to inspect.
    worker = WorkerProcess(worker_roots, extra_env={"ARENA_CACHE_DIR": str(cache_dir)}).start()
    yield worker
    worker.stop()


def cached_vectors(cache_dir) -> int:
    with closing(sqlite3.connect(cache_dir / "embeddings.sqlite3")) as db:
        return db.execute("SELECT count(*) FROM vectors").fetchone()[0]


def combine_seconds(run: Run, blend) -> float:
    run_entry = RunEntry.objects.get(run=run, entry=blend)
    return (run_entry.finished_at - run_entry.started_at).total_seconds()


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_pair_ranker_blend_finishes_with_scores_costs_its_comparisons_and_reaches_the_board(
    ranker_worker, team, owner, members, api, cache_dir
):
    if not (django_settings.MODELS_DIR / "all-MiniLM-L6-v2" / "model.safetensors").exists():
        pytest.skip("the shipped all-MiniLM-L6-v2 is not under ARENA_DATA_DIR/models")
    suite = SuiteFactory(team=team, library=chrf_arithmetic())
    blend = register_blend(team, name="ranked", strategy="pair_ranker", params={}, members=list(MEMBERS))
    run = create_run(team, suite, [*members, blend], user=owner)
    assert run.splits == ["test", "dev"]  # the ranker fits on dev; the board reports test
    run = wait_for(lambda: finished(run.pk), timeout=400, what="the run to finish")
    assert run.state == State.DONE, run.error

    ranked = RunEntry.objects.get(run=run, entry=blend)
    assert ranked.state == State.DONE and ranked.n == TEST_ITEMS
    assert ranked.score is not None and ranked.ci_low <= ranked.score <= ranked.ci_high
    assert ranked.best_member_id in {member.pk for member in members} and ranked.lift is not None
    member_scores = Score.objects.filter(run=run, entry__in=members)
    encoder_seconds = 0.0
    for score in Score.objects.filter(run=run, entry=blend, item__split="test"):
        answered = len(score.details["ranking"])
        # Every ordered pair of the candidates that answered: N(N-1) comparisons, recorded per item.
        assert score.details["comparisons"] == answered * (answered - 1)
        generated = sum(member_score.compute_s for member_score in member_scores.filter(item=score.item))
        # The encoder's forward passes are the blend's own compute, beyond its members' generations.
        assert score.compute_s > generated
        encoder_seconds += score.compute_s - generated
    assert sum(member_score.details["comparisons"] for member_score in Score.objects.filter(run=run, entry=blend)) > 0

    board = api("get", f"/leaderboard/{suite.name}").json()
    row = next(r for r in board["rows"] if r["entry"] == "ranked")
    assert row["score"] == pytest.approx(ranked.score)
    assert (row["kind"], row["members"]) == ("pair_ranker", list(MEMBERS))
    assert row["compute_s"] == pytest.approx(ranked.compute_s, abs=1e-3)

    # A second ranker over the same answers reads every pair's vector from the cache.
    encoded = cached_vectors(cache_dir)
    assert encoded > 0
    wins = register_blend(
        team, name="ranked-wins", strategy="pair_ranker", params={"aggregation": "max_wins"}, members=list(MEMBERS)
    )
    again = create_run(team, suite, [wins], user=owner)
    again = wait_for(lambda: finished(again.pk), timeout=400, what="the second run to finish")
    assert again.state == State.DONE, again.error
    assert cached_vectors(cache_dir) == encoded
    assert sum(RunEntry.objects.filter(run=again).values_list("new_calls", flat=True)) == 0
    cached_seconds = sum(
        member_score.compute_s
        - sum(member.compute_s for member in Score.objects.filter(run=again, entry__in=members, item=member_score.item))
        for member_score in Score.objects.filter(run=again, entry=wins, item__split="test")
    )
    print(
        f"\npair_ranker combine: first {combine_seconds(run, blend):.2f} s wall "
        f"({encoder_seconds:.3f} s encoder on test items, {encoded} texts encoded); "
        f"second blend {combine_seconds(again, wins):.2f} s wall ({cached_seconds:.3f} s, 0 texts encoded)"
    )
