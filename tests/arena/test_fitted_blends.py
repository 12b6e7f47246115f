"""What learned blends fit on dev, on the run page: boosting's rounds, and calibrated members' reliability."""

from __future__ import annotations

import pytest
from django.template.defaultfilters import floatformat

from arena.benchmarks.services import library_item, library_suite
from arena.evaluations.models import Run, Score, State
from arena.evaluations.services import create_run
from arena.registry.services import register_blend, register_model
from ensembles.strategies import MemberAnswer, make_strategy
from ensembles.strategies.calibration import Calibrator
from ensembles.suites import Suite as LibSuite
from ensembles.suites import get_builtin
from tests.factories import SuiteFactory
from tests.helpers import csrf_client, finished, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

MEMBERS = ("tiny-1", "tiny-2", "tiny-3")


def mc_suite() -> LibSuite:
    """Multiple choice scored by log-likelihood: every member answer carries option log-likelihoods."""
    base = get_builtin("mc_knowledge", size=24)  # 12 dev + 12 test items
    manifest = base.manifest.model_copy(update={"scoring": "loglikelihood", "name": "mc-fitted"})
    return LibSuite(manifest, base.items)


@pytest.fixture
def members(team, owner, tiny_variant, settings, tmp_path):
    root = tmp_path / "models"
    root.mkdir()
    settings.ARENA_MODEL_ROOTS = [root]
    return [
        register_model(
            team,
            name=name,
            kind="hf",
            config={"path": str(tiny_variant(root / name, seed=seed))},
            user=owner,
        )
        for seed, name in enumerate(MEMBERS, start=1)
    ]


def dev_answers(run: Run) -> tuple[list[list[MemberAnswer]], list[str]]:
    """The members' stored dev answers, item by item in blend order, and the dev references."""
    suite = library_suite(run.suite)
    by_item: dict[int, dict[str, Score]] = {}
    items = {}
    for score in Score.objects.filter(run=run, entry__name__in=MEMBERS, item__split="dev").select_related(
        "entry", "item"
    ):
        by_item.setdefault(score.item_id, {})[score.entry.name] = score
        items[score.item_id] = score.item
    outputs, references = [], []
    for item_id, row in by_item.items():
        outputs.append(
            [
                MemberAnswer(
                    member=member,
                    answer=row[member].prediction,
                    logprob=row[member].details.get("mean_logprob"),
                    option_logprobs=row[member].details.get("option_logprobs"),
                )
                for member in MEMBERS
            ]
        )
        references.append(suite.reference_answer(library_item(items[item_id])))
    return outputs, references


def test_the_run_page_shows_boosting_rounds_and_each_calibrated_members_reliability(worker, team, owner, members):
    suite = SuiteFactory(team=team, library=mc_suite())
    boosted = register_blend(team, name="boosted", strategy="boosting", params={"rounds": 5}, members=list(MEMBERS))
    cascade = register_blend(
        team, name="calibrated-cascade", strategy="cascade", params={"calibrate": True}, members=list(MEMBERS)
    )
    vote = register_blend(
        team,
        name="calibrated-vote",
        strategy="weighted_vote",
        params={"weights": "confidence", "calibrate": True},
        members=list(MEMBERS),
    )
    plain = register_blend(team, name="plain-cascade", strategy="cascade", params={}, members=list(MEMBERS))
    started = create_run(team, suite, [*members, boosted, cascade, vote, plain], user=owner)
    # The calibrated confidence vote learns only temperatures, and that alone brings in the dev split.
    assert "dev" in started.splits
    run = wait_for(lambda: finished(started.pk), timeout=360, what="the run")
    assert run.state == State.DONE, run.error

    # What the page shows is what the strategies fit on the dev split alone.
    dev = dev_answers(run)
    assert len(dev[0]) == 12
    expected_boosting = make_strategy("boosting", {"rounds": 5})
    expected_boosting.fit(*dev)
    expected_calibration = Calibrator().fit(*dev).summary()
    assert expected_boosting.rounds_, "these members should beat chance on dev for the page to have rounds"

    page = csrf_client(owner).get(f"/t/{team.slug}/runs/{run.pk}/")
    body = page.content.decode()

    (rounds,) = page.context["boosting_rounds"]
    assert rounds["entry"] == "boosted"
    assert [(r["round"], r["member"], r["error"], r["alpha"]) for r in rounds["rounds"]] == [
        (i, r.member, round(r.error, 6), round(r.alpha, 6)) for i, r in enumerate(expected_boosting.rounds_, start=1)
    ]
    assert f'id="boosting-{boosted.pk}"' in body
    for i, r in enumerate(rounds["rounds"], start=1):
        row = (
            f'<tr><td class="num">{i}</td><td>{r["member"]}</td>'
            f'<td class="num">{floatformat(r["error"], 3)}</td><td class="num">{floatformat(r["alpha"], 3)}</td></tr>'
        )
        assert row in body

    tables = {table["entry"]: table for table in page.context["calibration_tables"]}
    # The uncalibrated cascade has no reliability table.
    assert set(tables) == {"calibrated-cascade", "calibrated-vote"}
    for blend in (cascade, vote):
        shown = {member["member"]: member for member in tables[blend.name]["members"]}
        assert shown == {member: {"member": member, **expected_calibration[member]} for member in MEMBERS}
        assert f'id="calibration-{blend.pk}"' in body
    for member, fitted in expected_calibration.items():
        assert fitted["answers"] == 12
        row = (
            f'<tr><td>{member}</td><td class="num">{floatformat(fitted["temperature"], 3)}</td>'
            f'<td class="num">{floatformat(fitted["ece_before"], 3)}</td>'
            f'<td class="num">{floatformat(fitted["ece_after"], 3)}</td><td class="num">12</td></tr>'
        )
        assert row in body
