"""Regressions: each finished entry against its previous finished result on the same suite."""

from __future__ import annotations

import pytest

from arena.benchmarks.models import Suite
from arena.evaluations.models import EntryState, Run, RunEntry, State
from arena.evaluations.regressions import regressions_for
from arena.teams.models import Team
from tests.arena.helpers import scored_run
from tests.factories import EntryFactory, RunEntryFactory, SuiteFactory

pytestmark = pytest.mark.django_db

SIZE = 40  # 20 dev + 20 test items


@pytest.fixture
def suite(team):
    return SuiteFactory(team=team, size=SIZE)


def by_entry(run: Run) -> dict[str, dict]:
    return {r["entry"]: r for r in regressions_for(run)}


def test_a_clear_drop_on_the_same_items_is_a_paired_regression(team, suite):
    a = EntryFactory(team=team, name="a")
    before = scored_run(suite, {a: [1.0] * 20})
    after = scored_run(suite, {a: [1.0] * 5 + [0.0] * 15})

    result = by_entry(after)["a"]

    assert result["method"] == "paired"
    assert result["previous_run_id"] == before.pk
    assert (result["previous_score"], result["score"]) == (1.0, 0.25)
    assert result["delta"] == pytest.approx(-0.75)
    assert result["delta_low"] <= result["delta"] <= result["delta_high"] < 0
    assert result["regressed"] is True


def test_a_few_items_swapping_between_right_and_wrong_is_no_regression(team, suite):
    a = EntryFactory(team=team, name="a")
    scored_run(suite, {a: [1.0, 0.0] * 10})
    after = scored_run(suite, {a: [0.0, 1.0, 1.0, 0.0] + [1.0, 0.0] * 7 + [0.0, 0.0]})

    result = by_entry(after)["a"]

    assert result["method"] == "paired"
    assert result["delta_low"] < 0 <= result["delta_high"]
    assert result["regressed"] is False


def test_an_improvement_is_no_regression(team, suite):
    a = EntryFactory(team=team, name="a")
    scored_run(suite, {a: [0.0] * 20})
    result = by_entry(scored_run(suite, {a: [1.0] * 20}))["a"]
    assert result["delta"] == 1.0 and result["regressed"] is False


def test_on_a_new_suite_version_the_current_interval_is_held_against_the_previous_score(team, suite):
    a, b = EntryFactory(team=team, name="a"), EntryFactory(team=team, name="b")
    scored_run(suite, {a: [1.0] * 20, b: [1.0] * 16 + [0.0] * 4})
    newer = SuiteFactory(team=team, size=SIZE, seed=1)
    assert newer.name == suite.name and newer.pk != suite.pk

    after = by_entry(scored_run(newer, {a: [1.0] * 4 + [0.0] * 16, b: [1.0] * 15 + [0.0] * 5}))

    assert after["a"]["method"] == after["b"]["method"] == "unpaired"
    # a: its whole interval lies below the previous 1.0; b: 0.75 with an interval reaching past 0.8.
    assert after["a"]["regressed"] is True
    a_row = RunEntry.objects.get(run__suite=newer, entry=a)
    assert after["a"]["delta_high"] == pytest.approx(a_row.ci_high - 1.0)
    assert after["b"]["delta"] == pytest.approx(-0.05)
    assert after["b"]["delta_low"] < 0 <= after["b"]["delta_high"]
    assert after["b"]["regressed"] is False


def test_the_previous_result_is_the_latest_earlier_finished_one_of_the_same_team_and_suite(team, suite):
    a = EntryFactory(team=team, name="a")
    kept = scored_run(suite, {a: [0.0] * 20})
    scored_run(suite, {a: [0.0] * 20}, state=State.FAILED, entry_state=EntryState.FAILED)  # no score
    scored_run(SuiteFactory(team=team, builtin="logic", size=SIZE), {a: [1.0] * 20})  # another suite
    blue = Team.objects.get(slug="blue")
    blue_suite = SuiteFactory(team=blue, size=SIZE)
    scored_run(blue_suite, {EntryFactory(team=blue, name="a"): [1.0] * 20})  # another team's entry of the same name
    current = scored_run(suite, {a: [0.0] * 20})
    scored_run(suite, {a: [1.0] * 20})  # a later run

    result = by_entry(current)["a"]

    assert result["previous_run_id"] == kept.pk
    assert result["delta"] == 0.0 and result["regressed"] is False


def test_a_first_result_and_an_unfinished_entry_have_nothing_to_compare(team, suite):
    a, b = EntryFactory(team=team, name="a"), EntryFactory(team=team, name="b")
    scored_run(suite, {a: [1.0] * 20})
    run = scored_run(suite, {b: [1.0] * 20})
    RunEntryFactory(run=run, entry=a, state=EntryState.RUNNING, total_items=20)
    assert regressions_for(run) == []


def test_judge_suites_are_not_compared_across_runs(team, suite):
    a = EntryFactory(team=team, name="a")
    Suite.objects.filter(pk=suite.pk).update(task_type="judge")
    suite.refresh_from_db()
    scored_run(suite, {a: [1.0] * 20})
    assert regressions_for(scored_run(suite, {a: [0.0] * 20})) == []


def test_comparing_takes_a_constant_number_of_queries(team, suite, django_assert_max_num_queries):
    entries = [EntryFactory(team=team, name=f"m{i}") for i in range(6)]
    scored_run(suite, {entry: [1.0] * 20 for entry in entries})
    run = Run.objects.select_related("suite").get(pk=scored_run(suite, {entry: [0.0] * 20 for entry in entries}).pk)
    with django_assert_max_num_queries(3):
        results = regressions_for(run)
    assert [r["entry"] for r in results] == [entry.name for entry in entries]
    assert all(r["regressed"] for r in results)


def test_the_run_api_reports_regressions(api, team, suite):
    a = EntryFactory(team=team, name="a")
    scored_run(suite, {a: [1.0] * 20})
    after = scored_run(suite, {a: [0.0] * 20})

    body = api("get", f"/runs/{after.pk}").json()

    [row] = body["regressions"]
    assert row["entry"] == "a" and row["regressed"] is True and row["delta"] == -1.0
