"""A pipeline's view: start a run, follow it, gate on regressions, read the board and export, with a real worker."""

from __future__ import annotations

import csv
import io
import json

import pytest

from arena.benchmarks.models import Suite
from arena.evaluations.models import EntryState, Run, Score, State
from arena.registry.models import Entry
from arena_cli.errors import Exit
from tests.factories import RunEntryFactory, RunFactory

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

SIZE = 16  # 8 dev + 8 test items


@pytest.fixture
def checkpoints(settings, tiny_variant, tmp_path):
    root = tmp_path / "models"
    root.mkdir()
    settings.ARENA_MODEL_ROOTS = [root]
    return [tiny_variant(root / f"step-{i}", seed=i) for i in (1, 2, 3)]


def earlier_result(suite: Suite, results: dict[str, float]) -> Run:
    """A finished earlier run in which each entry scored ``value`` on every test item."""
    run = RunFactory(suite=suite)
    items = list(suite.items.filter(split="test"))
    for name, value in results.items():
        entry = Entry.objects.get(team=suite.team, name=name)
        RunEntryFactory(run=run, entry=entry, score=value, ci_low=value, ci_high=value, n=len(items))
        Score.objects.bulk_create(Score(run=run, entry=entry, item=item, prediction="", value=value) for item in items)
    return run


def test_a_run_that_regresses_fails_the_pipeline_naming_the_entry(worker, arena, team, checkpoints, tmp_path):
    assert arena("suites", "builtin", "arithmetic", "--size", str(SIZE)).code == 0
    for name, path in zip(("steady", "slipping"), checkpoints, strict=False):
        assert arena("entries", "register", name, "--kind", "hf", "--path", str(path)).code == 0
    # Before this checkpoint, "slipping" answered every test item right and "steady" none.
    before = earlier_result(Suite.objects.get(team=team), {"steady": 0.0, "slipping": 1.0})

    gated = arena(
        "run", "arithmetic", "steady", "slipping", "--fail-on-regression", "--json", "--poll", "0.3", timeout=300
    )

    assert gated.code == Exit.REGRESSION, gated.stderr
    snapshot = gated.json()
    assert snapshot["state"] == State.DONE
    assert {entry["entry"]: (entry["state"], entry["n"]) for entry in snapshot["entries"]} == {
        "steady": (EntryState.DONE, SIZE // 2),
        "slipping": (EntryState.DONE, SIZE // 2),
    }
    compared = {r["entry"]: r for r in snapshot["regressions"]}
    assert compared["slipping"]["regressed"] is True and compared["steady"]["regressed"] is False
    assert compared["slipping"]["previous_run_id"] == before.pk
    assert compared["slipping"]["method"] == "paired"
    assert compared["slipping"]["delta_high"] < 0
    assert gated.error["code"] == Exit.REGRESSION
    assert gated.error["message"].startswith("slipping regressed on arithmetic:")
    assert "steady" not in gated.error["message"]
    # Progress went to stderr as lines a CI log can show, ending with every entry complete.
    run_id = snapshot["id"]
    assert f"run {run_id} done: slipping 8/8, steady 8/8" in gated.stderr

    # The same finished run for a person: a table, the regression flagged, exit 0 without the gate.
    shown = arena("wait", str(run_id))
    assert shown.code == 0, shown.stderr
    slipping_line = next(line for line in shown.stdout.splitlines() if line.startswith("slipping"))
    assert "regressed" in slipping_line and f"(run {before.pk})" in slipping_line
    assert "slipping regressed on arithmetic" in shown.stderr

    board = arena("leaderboard", "arithmetic", "--csv")
    assert board.code == 0
    rows = list(csv.DictReader(io.StringIO(board.stdout)))
    assert {r["entry"]: r["run_id"] for r in rows} == {"steady": str(run_id), "slipping": str(run_id)}
    assert all(float(r["ci_low"]) <= float(r["score"]) <= float(r["ci_high"]) for r in rows)
    assert arena("leaderboard", "arithmetic", "--json").json()["suite"] == "arithmetic"
    assert "steady" in arena("leaderboard", "arithmetic").stdout

    exported = tmp_path / "run.csv"
    assert arena("export", str(run_id), "--format", "csv", "-o", str(exported)).code == 0
    table = {r["entry"]: r for r in csv.DictReader(exported.open())}
    assert table["slipping"]["regressed"] == "True" and table["slipping"]["previous_run_id"] == str(before.pk)
    assert json.loads(arena("export", str(run_id)).stdout)["regressions"] == snapshot["regressions"]

    # The pipeline's next checkpoint: the finished run lets the entry move on.
    moved = arena("entries", "register", "slipping", "--kind", "hf", "--path", str(checkpoints[2]), "--update")
    assert moved.code == 0 and "updated hf entry slipping" in moved.stderr
