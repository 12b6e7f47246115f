"""Blend search on hand-built dev answers: cross-validated quality, costs, the budget and the Pareto set."""

import functools
import math
import zlib

import numpy as np
import pytest

from ensembles.errors import EnsembleError
from ensembles.search import Cost, DevItem, cross_validate, default_space, search_blends, verdict
from ensembles.strategies import STRATEGIES, MemberAnswer

# Per-member cost of one answer: "big" is slow and verbose, "small" cheap.
COSTS = {"big": Cost(1, 120, 3.0), "big_copy": Cost(1, 120, 3.0), "mid": Cost(1, 60, 1.0), "small": Cost(1, 30, 0.5)}


# Most tests need a few strategies of each kind, not the whole default space (bagging alone is half its time).
SMALL = {
    "majority_vote": [{}],
    "weighted_vote": [{"weights": "dev_accuracy"}, {"weights": "confidence"}],
    "stacking": [{"C": 1.0}],
    "mi_selection": [{"k": 1}, {"k": 2}],
    "cascade": [{"max_cost": 1.25}, {"max_cost": 2.0}],
}


def exact(item: DevItem, answer: str) -> float:
    return float(answer.strip() == item.reference)


def trigram_embedder(texts: list[str]) -> np.ndarray:
    """Deterministic stand-in encoder: character trigrams hashed into 64 buckets."""
    out = np.zeros((len(texts), 64))
    for row, text in enumerate(texts):
        padded = f"  {text.lower()} "
        for i in range(len(padded) - 2):
            out[row, zlib.crc32(padded[i : i + 3].encode()) % 64] += 1.0
    return out


def dev_items(n: int = 40, members: tuple[str, ...] = ("big", "mid", "small")) -> list[DevItem]:
    """``big`` is right on 70% of items (confidently), ``mid`` on 50%, ``small`` on 40%, on partly other items;
    ``big_copy``, when asked for, answers exactly as ``big`` does."""
    rng = np.random.default_rng(7)
    right = {"big": rng.random(n) < 0.7, "mid": rng.random(n) < 0.5, "small": rng.random(n) < 0.4}
    right["big_copy"] = right["big"]
    items = []
    for i in range(n):
        reference = str(i)
        answers = []
        for m in members:
            ok = right[m][i]
            wrong = f"{i + 100 + (0 if m.startswith('big') else len(m))}"
            p = 0.9 if (m.startswith("big") and ok) else 0.4
            answers.append(MemberAnswer(m, reference if ok else wrong, logprob=math.log(p)))
        items.append(
            DevItem(
                key=f"q{i}",
                answers=answers,
                costs={m: COSTS[m] for m in members},
                reference=reference,
                input=f"What is item {i}?",
            )
        )
    return items


@functools.cache
def full_search():
    """The default space over three members, costs in seconds (shared: it is the slowest search here)."""
    return search_blends(dev_items(), exact, members=["big", "mid", "small"], metric="seconds")


def dominates(a, b, metric) -> bool:
    return (
        a.cost.get(metric) <= b.cost.get(metric)
        and a.quality >= b.quality
        and (a.cost.get(metric) < b.cost.get(metric) or a.quality > b.quality)
    )


def test_no_other_candidate_beats_a_pareto_candidate_on_both_quality_and_cost():
    result = full_search()
    eligible = [e for e in result.estimates if e.ok and e.within_budget]
    pareto = [result.estimates[i] for i in result.pareto]
    assert len(pareto) >= 2
    for p in pareto:
        assert not any(dominates(e, p, "seconds") for e in eligible), p.candidate.label
    # And every candidate left off the set is beaten or matched by one on it.
    for e in eligible:
        if e not in pareto:
            assert any(p.cost.get("seconds") <= e.cost.get("seconds") and p.quality >= e.quality for p in pareto), (
                e.candidate.label
            )
    costs = [p.cost.get("seconds") for p in pareto]
    assert costs == sorted(costs)
    assert result.best() is pareto[-1]
    assert result.best().quality == max(e.quality for e in eligible)


def test_candidates_over_the_budget_are_kept_marked_but_never_on_the_pareto_set():
    space = {**SMALL, "router": [{"method": "knn"}]}
    result = search_blends(
        dev_items(),
        exact,
        members=["big", "mid", "small"],
        metric="calls",
        budget=1.5,
        space=space,
        embedder=trigram_embedder,
    )
    over = [e for e in result.estimates if e.ok and not e.within_budget]
    assert over, "a vote of three members costs 3 calls per item: over a budget of 1.5"
    assert all(e.cost.calls > 1.5 for e in over)
    assert all(e.cost.calls <= 1.5 + 1e-9 for e in result.estimates if e.within_budget)
    for i in result.pareto:
        assert result.estimates[i].within_budget and result.estimates[i].cost.calls <= 1.5
    # What fits a budget of 1.5 calls consults fewer members on some items: a cascade or a router.
    assert {result.estimates[i].candidate.strategy for i in result.pareto} <= {"cascade", "router", "mi_selection"}


def test_settings_that_can_only_consult_one_member_are_never_candidates():
    space = {**SMALL, "boosting": [{"rounds": 1}, {"rounds": 5}], "cascade": [{"max_cost": 1.0}, {"max_cost": 1.25}]}
    result = search_blends(dev_items(), exact, members=["big", "mid", "small"], metric="calls", space=space)
    tried = {(e.candidate.strategy, tuple(sorted(e.candidate.params.items()))) for e in result.estimates}
    assert ("mi_selection", (("k", 1),)) not in tried
    assert ("boosting", (("rounds", 1),)) not in tried
    assert ("cascade", (("max_cost", 1.0),)) not in tried
    # Their sound neighbours stay, and no candidate consults one and the same member on every item.
    assert {("mi_selection", (("k", 2),)), ("boosting", (("rounds", 5),)), ("cascade", (("max_cost", 1.25),))} <= tried
    assert {"k": 1} not in default_space()[0]["mi_selection"]


def test_each_member_alone_is_reported_as_a_labelled_reference_point_not_a_candidate():
    result = full_search()
    assert [m.candidate.members for m in result.members] == [("big",), ("mid",), ("small",)]
    assert all(m.candidate.label == f"{m.candidate.members[0]} alone (member)" for m in result.members)
    assert all(len(e.candidate.members) >= 2 for e in result.estimates)
    big = result.members[0]
    assert big.quality == np.mean([exact(item, item.answers[0].answer) for item in dev_items()])
    assert big.cost.seconds == COSTS["big"].seconds


def test_the_verdict_says_from_the_numbers_whether_a_blend_beats_the_best_member_beyond_its_standard_error():
    result = search_blends(dev_items(), exact, members=["big", "mid", "small"], metric="calls", space=SMALL).as_dict()
    said = verdict(result)
    best_member = max(result["members"], key=lambda m: m["quality"])
    assert said["member"] == best_member["members"][0] == "big"
    claim = said["candidate"]
    assert said["beats"] == (claim["quality"] - claim["stderr"] > best_member["quality"])
    assert f"{best_member['quality']:.2f}" in said["text"] and f"{claim['quality']:.2f}" in said["text"]
    # A candidate made to beat it by far more than its standard error is named as beating it.
    strong = {**claim, "quality": best_member["quality"] + 0.2, "stderr": 0.05}
    said = verdict({**result, "candidates": [strong]})
    assert said["beats"] and said["text"].startswith(f"{strong['label']} beats big alone on dev")
    # One within its standard error does not.
    close = {**claim, "quality": best_member["quality"] + 0.04, "stderr": 0.05}
    said = verdict({**result, "candidates": [close]})
    assert not said["beats"] and said["text"].startswith("No blend beats big alone on dev")


def test_a_cascade_consults_fewer_members_than_a_vote_and_costs_what_it_consulted():
    result = full_search()
    by_label = {e.candidate.label: e for e in result.estimates}
    vote = by_label["majority_vote() over big + mid + small"]
    assert vote.cost == Cost(3, 210, 4.5)
    cascades = [e for e in result.estimates if e.candidate.strategy == "cascade" and e.ok]
    # Under a budget of 1.25 members per item a cascade mostly stops at its first member.
    tight = [e for e in cascades if e.candidate.params["max_cost"] == 1.25]
    assert tight and all(e.cost.calls < 1.5 for e in tight)
    for e in tight:
        cheapest = min(COSTS[m].seconds for m in e.candidate.members)
        assert cheapest <= e.cost.seconds < sum(COSTS[m].seconds for m in e.candidate.members)
    # Cheapest first: a cascade reads its members in order of cost on the budget's measure.
    assert all(e.candidate.members[0] == "small" for e in cascades if "small" in e.candidate.members)


def test_a_duplicated_member_is_not_preferred():
    members = ["big", "big_copy", "mid", "small"]
    result = search_blends(dev_items(members=tuple(members)), exact, members=members, metric="calls", space=SMALL)
    for i in result.pareto:
        chosen = result.estimates[i].candidate.members
        assert not {"big", "big_copy"} <= set(chosen), result.estimates[i].candidate.label
    assert result.redundant == {"big_copy": "big"}
    assert not any({"big", "big_copy"} <= set(e.candidate.members) for e in result.estimates)
    # The copy alone with another member ties with the original there, and the original, listed first, wins.
    assert not any("big_copy" in result.estimates[i].candidate.members for i in result.pareto)


def test_learned_strategies_are_scored_only_on_folds_they_did_not_fit_on():
    # A member right on every item: stacking in-sample would learn it; every held-out item is still answered once.
    items = dev_items(30)
    result = search_blends(items, exact, members=["big", "mid", "small"], folds=3, space=SMALL)
    stacking = [e for e in result.estimates if e.candidate.strategy == "stacking" and e.ok]
    assert stacking
    for e in stacking:
        assert 0.0 <= e.low <= e.quality <= e.high <= 1.0
        assert e.stderr > 0


def test_the_scoring_function_sees_only_the_items_passed_and_each_answer_once():
    items = dev_items(20)
    asked: list[tuple[str, str]] = []

    def score(item: DevItem, answer: str) -> float:
        asked.append((item.key, answer))
        return exact(item, answer)

    search_blends(items, score, members=["big", "mid", "small"], folds=4, space=SMALL)
    assert {key for key, _ in asked} <= {item.key for item in items}
    assert len(asked) == len(set(asked))


def test_the_same_search_twice_gives_the_same_result():
    def run():
        out = search_blends(
            dev_items(),
            exact,
            members=["big", "mid", "small"],
            metric="tokens",
            seed=3,
            space={**SMALL, "router": [{"method": "knn"}, {"method": "logreg"}]},
            embedder=trigram_embedder,
        ).as_dict()
        out.pop("seconds")
        return out

    first = run()
    assert first == run()
    assert any(c["strategy"] == "router" for c in first["candidates"])


def test_router_is_searched_only_with_an_encoder_and_callers_are_told_why_not():
    result = full_search()
    assert not any(e.candidate.strategy == "router" for e in result.estimates)
    assert "encoder" in result.left_out["router"]
    assert "logprob_pool" in result.left_out  # no option scores on a generation suite


def test_strategies_that_call_models_are_never_in_the_space():
    space, left_out = default_space()
    for name, cls in STRATEGIES.items():
        if cls.calls_models:
            assert name not in space and name in left_out


def test_a_space_larger_than_the_cap_is_refused_before_anything_runs():
    calls = []
    with pytest.raises(EnsembleError, match=r"holds \d+ candidates, more than max_candidates=5"):
        search_blends(
            dev_items(), exact, members=["big", "mid", "small"], max_candidates=5, progress=lambda *a: calls.append(a)
        )
    assert calls == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"metric": "dollars"}, "metric must be one of"),
        ({"budget": 0}, "positive number"),
        ({"budget": float("nan")}, "positive number"),
        ({"members": ["big"]}, "at least 2 members"),
        ({"members": ["big", "nobody"]}, "no dev answers from nobody"),
        ({"folds": 1}, "cross-validation"),
        ({"folds": 41}, "cross-validation"),
    ],
)
def test_bad_search_input_is_refused_with_a_message_naming_it(kwargs, message):
    with pytest.raises(EnsembleError, match=message):
        search_blends(dev_items(), exact, **{"members": ["big", "mid"], **kwargs})


def test_progress_is_reported_after_every_candidate():
    seen = []
    result = search_blends(
        dev_items(), exact, members=["big", "mid"], space=SMALL, progress=lambda done, total: seen.append(done)
    )
    assert seen == list(range(1, result.evaluated + 1))


def test_one_blend_cross_validated_alone_gets_the_estimate_the_search_gave_it():
    result = search_blends(dev_items(), exact, members=["big", "mid", "small"], space=SMALL, seed=5)
    for estimate in result.estimates[:: max(1, result.evaluated // 6)]:
        alone = cross_validate(dev_items(), exact, estimate.candidate, seed=5)
        assert alone.as_dict() == {**estimate.as_dict(), "within_budget": True}
