"""Strategies that learn from the dev split: stacking, mi_selection, cascade, bagging; and shared contracts."""

import inspect
import json
import math
import zlib

import numpy as np
import pytest

from ensembles.errors import EnsembleError, ParamsError
from ensembles.strategies import STRATEGIES, MemberAnswer, make_strategy
from ensembles.strategies.selection import mutual_information

LEARNED = ["weighted_vote", "stacking", "mi_selection", "cascade", "router", "bagging", "boosting"]


def ma(member: str, answer: str, p: float | None = None) -> MemberAnswer:
    """A member answer whose confidence exp(mean logprob) is ``p``."""
    return MemberAnswer(member=member, answer=answer, logprob=None if p is None else math.log(p))


def trigram_embedder(texts: list[str]) -> np.ndarray:
    """Deterministic stand-in encoder: character trigrams hashed into 64 buckets."""
    out = np.zeros((len(texts), 64))
    for row, text in enumerate(texts):
        padded = f"  {text.lower()} "
        for i in range(len(padded) - 2):
            out[row, zlib.crc32(padded[i : i + 3].encode()) % 64] += 1.0
    return out


def build(name: str, params: dict | None = None):
    cls = STRATEGIES.get(name)
    if "embedder" in inspect.signature(cls.__init__).parameters:
        return cls(params, embedder=trigram_embedder)
    return make_strategy(name, params)


def dev_where_a_is_right_and_b_and_c_agree_on_wrong_answers():
    """Twelve items: a is right on ten where b and c share a wrong answer; all agree on two."""
    outputs, references = [], []
    for i in range(10):
        outputs.append([ma("a", str(i), 0.6), ma("b", "999", 0.6), ma("c", "999", 0.6)])
        references.append(str(i))
    for i in range(10, 12):
        outputs.append([ma("a", str(i), 0.6), ma("b", str(i), 0.6), ma("c", str(i), 0.6)])
        references.append(str(i))
    return outputs, references


# --- contracts shared by every learned strategy ------------------------------------------------------


@pytest.mark.parametrize("name", LEARNED)
def test_learned_strategies_say_they_need_fit(name):
    assert build(name).needs_fit is True


@pytest.mark.parametrize("name", LEARNED)
def test_learned_strategies_refuse_to_combine_before_fit(name):
    with pytest.raises(EnsembleError, match=rf"{name} learns from the dev split: call fit\(\) before combine"):
        build(name).combine([ma("a", "1")], item_input="What is 1?")


@pytest.mark.parametrize("name", LEARNED)
def test_learned_strategies_refuse_to_fit_without_dev_items(name):
    with pytest.raises(EnsembleError, match=rf"{name} needs a dev split to learn from, and got no dev items"):
        build(name).fit([], [], dev_inputs=[])


@pytest.mark.parametrize("name", LEARNED)
def test_learned_strategies_refuse_dev_items_without_as_many_references(name):
    outputs, references = dev_where_a_is_right_and_b_and_c_agree_on_wrong_answers()
    with pytest.raises(EnsembleError, match="12 dev items but 11 references"):
        build(name).fit(outputs, references[:-1])


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        ("weighted_vote", {"weights": "votes"}, "weights: must be one of 'dev_accuracy' or 'confidence'"),
        ("weighted_vote", {"default_confidence": 2}, r"default_confidence: must be <= 1.0 \(got 2\)"),
        ("self_consistency", {"min_agreement": 1.5}, r"min_agreement: must be <= 1.0 \(got 1.5\)"),
        ("logprob_pool", {"pool": "max"}, "pool: must be one of 'linear' or 'log_linear'"),
        ("stacking", {"C": 0}, r"C: must be > 0.0 \(got 0\)"),
        ("mi_selection", {"k": 0}, r"k: must be >= 1 \(got 0\)"),
        ("mi_selection", {"alpha": -1}, r"alpha: must be >= 0.0 \(got -1\)"),
        ("cascade", {"max_cost": 0.5}, r"max_cost: must be >= 1.0 \(got 0.5\)"),
        ("cascade", {"threshold": 1.5}, r"threshold: must be <= 1.0 \(got 1.5\)"),
        ("router", {"method": "svm"}, "method: must be one of 'knn' or 'logreg'"),
        ("router", {"k": 0}, r"k: must be >= 1 \(got 0\)"),
        ("bagging", {"n_estimators": 0}, r"n_estimators: must be >= 1 \(got 0\)"),
        ("bagging", {"base": "stackin"}, "base: .*did you mean 'stacking'"),
        ("bagging", {"base": "bagging"}, "base: .*bagging cannot bag itself"),
        ("bagging", {"base": "stacking", "base_params": {"C": -1}}, "base_params: .*'stacking': C: must be > 0.0"),
        ("bagging", {"base": "majority_vote"}, "base_params: .*majority_vote with these params learns nothing"),
        (
            "bagging",
            {"base": "weighted_vote", "base_params": {"weights": "confidence"}},
            "base_params: .*learns nothing",
        ),
        ("stacking", {"c": 1.0}, "c: unknown parameter"),
    ],
)
def test_bad_params_give_a_params_error_naming_the_field(name, params, message):
    with pytest.raises(ParamsError, match=f"invalid params for '{name}': {message}"):
        build(name, params)


@pytest.mark.parametrize("name", sorted(STRATEGIES.names()))
def test_every_strategy_describes_itself_with_a_name_and_a_reference(name):
    cls = STRATEGIES.get(name)
    assert cls.pretty_name
    assert cls.reference_url.startswith("https://")


# Strategies that call models are checked with a caller in test_strategies_calling.py.
@pytest.mark.parametrize("name", sorted(n for n in STRATEGIES.names() if not STRATEGIES.get(n).calls_models))
def test_every_strategy_returns_json_serializable_details(name):
    outputs, references = dev_where_a_is_right_and_b_and_c_agree_on_wrong_answers()
    inputs = [f"What is item {i}?" for i in range(len(outputs))]
    strategy = build(name)
    if strategy.needs_fit:
        strategy.fit(outputs, references, dev_inputs=inputs)
    decision = strategy.combine([ma("a", "7", 0.9), ma("b", "3", 0.2), ma("c", "3")], item_input="What is item 7?")
    assert json.loads(json.dumps(decision.details, allow_nan=False)) == decision.details


# --- stacking ----------------------------------------------------------------------------------------


def test_stacking_learns_to_trust_the_member_that_is_right_on_dev():
    stacking = make_strategy("stacking")
    stacking.fit(*dev_where_a_is_right_and_b_and_c_agree_on_wrong_answers())
    decision = stacking.combine([ma("a", "7", 0.6), ma("b", "3", 0.6), ma("c", "3", 0.6)])
    assert decision.answer == "7"
    assert decision.details["model"] == "logistic_regression"
    assert decision.details["supporters"] == ["a"]
    probs = decision.details["probabilities"]
    assert probs["7"] > 0.5 > probs["3"]
    assert decision.member_calls == 3


def test_stacking_learns_that_a_member_is_right_only_when_it_is_confident():
    # b is right exactly when it is confident; otherwise a is.
    outputs, references = [], []
    for i in range(20):
        sure = i % 2 == 0
        outputs.append([ma("a", "x" if sure else str(i), 0.5), ma("b", str(i) if sure else "y", 0.95 if sure else 0.1)])
        references.append(str(i))
    stacking = make_strategy("stacking", {"C": 10.0})
    stacking.fit(outputs, references)
    assert stacking.combine([ma("a", "1", 0.5), ma("b", "2", 0.95)]).answer == "2"
    assert stacking.combine([ma("a", "1", 0.5), ma("b", "2", 0.1)]).answer == "1"


def test_stacking_is_deterministic():
    dev = dev_where_a_is_right_and_b_and_c_agree_on_wrong_answers()
    item = [ma("a", "7", 0.6), ma("b", "3", 0.6), ma("c", "3", 0.6)]
    first, second = make_strategy("stacking"), make_strategy("stacking")
    first.fit(*dev)
    second.fit(*dev)
    assert first.combine(item).details == second.combine(item).details


def test_stacking_ranks_by_vote_share_when_dev_has_no_wrong_candidate():
    outputs = [[ma("a", str(i)), ma("b", str(i))] for i in range(5)]
    stacking = make_strategy("stacking")
    stacking.fit(outputs, [str(i) for i in range(5)])
    decision = stacking.combine([ma("a", "1"), ma("b", "2"), ma("c", "2")])
    assert decision.answer == "2"
    assert decision.details["model"] == "vote_share"
    assert decision.details["unknown_members"] == ["c"]


def test_stacking_returns_an_empty_answer_when_every_member_abstains():
    stacking = make_strategy("stacking")
    stacking.fit(*dev_where_a_is_right_and_b_and_c_agree_on_wrong_answers())
    assert stacking.combine([ma("a", ""), ma("b", " ")]).answer == ""


# --- mi_selection ------------------------------------------------------------------------------------


def dev_with_a_duplicate_and_a_complementary_member():
    """20 four-way items: a is right on 0-13, b on 6-19, and a_copy answers exactly like a."""
    letters = "ABCD"
    references = [letters[i % 4] for i in range(20)]
    outputs = []
    for i, ref in enumerate(references):
        wrong = letters[(i + 1) % 4]
        a = ref if i < 14 else wrong
        b = ref if i >= 6 else letters[(i + 2) % 4]
        outputs.append([ma("a", a), ma("a_copy", a), ma("b", b)])
    return outputs, references


def test_mi_selection_picks_the_complementary_member_over_a_duplicate():
    selection = make_strategy("mi_selection", {"k": 2})
    selection.fit(*dev_with_a_duplicate_and_a_complementary_member())
    decision = selection.combine([ma("a", "A"), ma("a_copy", "A"), ma("b", "B")])
    assert decision.details["chosen"] == ["a", "b"]
    assert len(decision.details["gain"]) == 2
    assert decision.details["gain"][1] > 0
    assert decision.details["skipped"] == ["a_copy"]
    assert decision.member_calls == 2


def test_mi_selection_never_picks_a_duplicate_even_with_budget_left():
    selection = make_strategy("mi_selection", {"k": 3})
    selection.fit(*dev_with_a_duplicate_and_a_complementary_member())
    assert selection.chosen == ["a", "b"]


def test_mi_selection_skips_a_duplicate_listed_before_the_complementary_member():
    outputs, references = dev_with_a_duplicate_and_a_complementary_member()
    # Reordered so the copy comes first: its zero gain must not win a tie against b.
    reordered = [[item[1], item[0], item[2]] for item in outputs]
    selection = make_strategy("mi_selection", {"k": 2, "alpha": 0.0})
    selection.fit(reordered, references)
    assert selection.chosen == ["a_copy", "b"]


def test_mi_selection_votes_only_among_the_members_it_picked():
    selection = make_strategy("mi_selection", {"k": 1})
    selection.fit(*dev_with_a_duplicate_and_a_complementary_member())
    decision = selection.combine([ma("a", "C"), ma("a_copy", "D"), ma("b", "D")])
    assert decision.answer == "C"
    assert decision.details["chosen"] == ["a"]
    assert decision.details["votes"] == {"C": 1}
    assert decision.member_calls == 1


def test_mutual_information_is_the_label_entropy_for_a_perfect_predictor_and_zero_for_a_constant():
    labels = ["A", "B", "C", "D"] * 5
    assert mutual_information(labels, [labels], alpha=0.0) == pytest.approx(2.0)
    assert mutual_information(labels, [["A"] * 20], alpha=0.0) == pytest.approx(0.0)
    # Smoothing pulls a perfect predictor's estimate below the entropy.
    assert mutual_information(labels, [labels], alpha=1.0) < 2.0


# --- cascade -----------------------------------------------------------------------------------------


def dev_where_the_cheap_member_is_right_only_when_confident():
    outputs, references = [], []
    for i in range(10):
        if i % 2 == 0:
            outputs.append([ma("cheap", str(i), 0.9), ma("big", str(i), 0.8)])
        else:
            outputs.append([ma("cheap", "wrong", 0.3), ma("big", str(i), 0.8)])
        references.append(str(i))
    return outputs, references


def test_cascade_learns_a_threshold_that_escalates_only_unsure_answers():
    cascade = make_strategy("cascade", {"max_cost": 1.5})
    cascade.fit(*dev_where_the_cheap_member_is_right_only_when_confident())
    assert 0.3 < cascade.threshold <= 0.9

    sure = cascade.combine([ma("cheap", "7", 0.95), ma("big", "8", 0.8)])
    assert sure.answer == "7"
    assert sure.member_calls == 1
    assert sure.details["consulted"] == ["cheap"]
    assert sure.details["answered_by"] == "cheap"
    assert sure.details["dev"] == {"accuracy": 1.0, "cost": 1.5}

    unsure = cascade.combine([ma("cheap", "7", 0.2), ma("big", "8", 0.8)])
    assert unsure.answer == "8"
    assert unsure.member_calls == 2
    assert unsure.details["consulted"] == ["cheap", "big"]
    assert unsure.details["confidences"] == {"cheap": 0.2, "big": 0.8}


def test_cascade_stays_within_the_budget_even_at_the_cost_of_accuracy():
    cascade = make_strategy("cascade", {"max_cost": 1.0})
    cascade.fit(*dev_where_the_cheap_member_is_right_only_when_confident())
    assert cascade.dev_cost == 1.0
    assert cascade.dev_accuracy == 0.5
    assert cascade.combine([ma("cheap", "7", 0.2), ma("big", "8", 0.8)]).member_calls == 1


def test_cascade_with_a_fixed_threshold_needs_no_dev_split():
    cascade = make_strategy("cascade", {"threshold": 0.5})
    assert cascade.needs_fit is False
    decision = cascade.combine([ma("s", "1", 0.4), ma("m", "2", 0.6), ma("l", "3", 0.99)])
    assert decision.answer == "2"
    assert decision.details["consulted"] == ["s", "m"]
    assert decision.details["threshold"] == 0.5


def test_cascade_escalates_past_members_without_logprobs_or_answers():
    cascade = make_strategy("cascade", {"threshold": 0.1})
    decision = cascade.combine([ma("remote", "1"), ma("blank", "", 0.99), ma("last", "3", 0.01)])
    # Nobody passes, so the last (dearest) member answers.
    assert decision.answer == "3"
    assert decision.member_calls == 3
    assert decision.details["confidences"]["blank"] is None


# --- bagging -----------------------------------------------------------------------------------------


def test_bagging_stacking_still_trusts_the_member_that_is_right_on_dev():
    bagging = make_strategy("bagging", {"base": "stacking", "n_estimators": 5, "seed": 3})
    bagging.fit(*dev_where_a_is_right_and_b_and_c_agree_on_wrong_answers())
    decision = bagging.combine([ma("a", "7", 0.6), ma("b", "3", 0.6), ma("c", "3", 0.6)])
    assert decision.answer == "7"
    assert decision.details["base"] == "stacking"
    assert sum(decision.details["votes"].values()) == 5
    assert len(decision.details["estimator_answers"]) == 5
    assert decision.member_calls == 3


def test_bagging_fits_each_estimator_on_a_different_bootstrap_resample_reproducibly():
    dev = dev_where_the_cheap_member_is_right_only_when_confident()
    params = {"base": "cascade", "base_params": {"max_cost": 1.5}, "n_estimators": 8, "seed": 1}
    first, second = make_strategy("bagging", params), make_strategy("bagging", params)
    first.fit(*dev)
    second.fit(*dev)
    thresholds = [e.threshold for e in first.estimators]
    assert thresholds == [e.threshold for e in second.estimators]
    assert len(set(thresholds)) > 1


def test_bagging_takes_the_majority_of_its_estimators():
    bagging = make_strategy("bagging", {"base": "cascade", "n_estimators": 3})
    bagging.fit(*dev_where_the_cheap_member_is_right_only_when_confident())
    for estimator, threshold in zip(bagging.estimators, [0.9, 0.1, 0.9], strict=True):
        estimator.threshold = threshold
    decision = bagging.combine([ma("cheap", "7", 0.5), ma("big", "8", 0.8)])
    assert decision.details["estimator_answers"] == ["8", "7", "8"]
    assert decision.answer == "8"
    assert decision.details["votes"] == {"8": 2, "7": 1}
    assert decision.member_calls == 2


def test_bagging_a_router_hands_it_the_embedder_and_the_inputs():
    outputs = [[ma("calc", str(i)), ma("geo", "?")] for i in range(6)]
    outputs += [[ma("calc", "?"), ma("geo", f"city{i}")] for i in range(6)]
    references = [str(i) for i in range(6)] + [f"city{i}" for i in range(6)]
    inputs = [f"Compute {i} plus {i}." for i in range(6)] + [f"Name the capital city of country {i}." for i in range(6)]
    bagging = STRATEGIES.get("bagging")(
        {"base": "router", "base_params": {"k": 3}, "n_estimators": 3}, embedder=trigram_embedder
    )
    bagging.fit(outputs, references, dev_inputs=inputs)
    decision = bagging.combine([ma("calc", "42"), ma("geo", "Lima")], item_input="Compute 40 plus 2.")
    assert decision.answer == "42"
    assert decision.member_calls == 1
