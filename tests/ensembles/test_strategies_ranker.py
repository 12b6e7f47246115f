"""PairRanker: learned on dev with labels from the suite's metric, aggregated three ways."""

import json
import random

import pytest

from ensembles.errors import EnsembleError, ParamsError
from ensembles.strategies import STRATEGIES, MemberAnswer, MiniLMEmbedder, make_strategy
from tests.ensembles.helpers import code_items, digit_match_embedder, matching_digits


def ma(member: str, answer: str) -> MemberAnswer:
    return MemberAnswer(member=member, answer=answer, text=answer)


def ranker(params: dict | None = None, embedder=digit_match_embedder):
    strategy = STRATEGIES.get("pair_ranker")(params, embedder=embedder)
    strategy.fit(*code_items(12, seed=0)[:2], dev_inputs=code_items(12, seed=0)[2])
    return strategy


@pytest.mark.parametrize("aggregation", ["max_logits", "max_wins", "bubble"])
def test_pair_ranker_picks_the_candidate_that_repeats_the_code(aggregation):
    strategy = ranker({"aggregation": aggregation})
    outputs, references, inputs = code_items(20, seed=1)
    answers = [strategy.combine(o, item_input=x).answer for o, x in zip(outputs, inputs, strict=True)]
    assert answers == references


def test_full_matrix_makes_n_times_n_minus_one_comparisons_and_bubble_two_times_n_minus_one():
    outputs, _, inputs = code_items(1, seed=2, members=("a", "b", "c", "d"))
    full = ranker({"aggregation": "max_logits"}).combine(outputs[0], item_input=inputs[0])
    bubble = ranker({"aggregation": "bubble"}).combine(outputs[0], item_input=inputs[0])
    assert full.details["comparisons"] == full.calls.comparisons == 4 * 3
    assert bubble.details["comparisons"] == bubble.calls.comparisons == 2 * 3
    assert full.answer == bubble.answer == outputs[0][0].answer
    assert full.member_calls == bubble.member_calls == 4
    assert full.calls.calls == 0  # the ranker reads stored generations; it calls no model
    assert full.calls.compute_s > 0


def test_max_wins_counts_duels_won_and_max_logits_sums_margins():
    decision = ranker({"aggregation": "max_wins"}).combine(
        [ma("a", "1111"), ma("b", "1234"), ma("c", "1299")], item_input="Repeat the code 1234 back."
    )
    assert decision.details["ranking"] == ["b", "c", "a"]
    assert decision.details["wins"] == {"b": 2, "c": 1, "a": 0}
    scores = decision.details["scores"]
    assert scores["b"] > scores["c"] > scores["a"]
    assert json.loads(json.dumps(decision.details, allow_nan=False)) == decision.details


def test_pair_ranker_trains_on_both_orders_of_every_pair_the_metric_separates():
    strategy = ranker()
    # Twelve items, each with one right and two wrong candidates: two duels per item, two orders each.
    assert strategy.trained_pairs == 12 * 2 * 2


def test_empty_answers_are_not_ranked_and_a_single_candidate_needs_no_comparison():
    decision = ranker().combine([ma("a", ""), ma("b", "4321"), ma("c", " ")], item_input="Repeat the code 1234 back.")
    assert decision.answer == "4321"
    assert decision.details["ranking"] == ["b"]
    assert decision.details["comparisons"] == 0


def test_the_suites_metric_gives_labels_where_exact_match_gives_none():
    """No candidate is ever exactly right, but the closer one scores higher under a partial-credit metric."""
    rng = random.Random(3)  # noqa: S311 - test data, not a secret
    outputs, references, inputs = [], [], []
    for i in range(10):
        code = str(rng.randrange(1000, 10000))
        close = code[:3] + str((int(code[3]) + 1) % 10)
        far = str(rng.randrange(1000, 10000))
        pair = [ma("a", close), ma("b", far)] if i % 2 else [ma("a", far), ma("b", close)]
        outputs.append(pair)
        references.append(code)
        inputs.append(f"Repeat the code {code} back.")

    with pytest.raises(EnsembleError, match="no dev item has one candidate that the metric scores above another"):
        make_strategy("pair_ranker").fit(outputs, references, dev_inputs=inputs)

    strategy = STRATEGIES.get("pair_ranker")(None, embedder=digit_match_embedder)
    strategy.fit(outputs, references, dev_inputs=inputs, scorer=lambda answer, ref: matching_digits(answer, ref) / 4)
    decision = strategy.combine([ma("a", "9090"), ma("b", "5677")], item_input="Repeat the code 5678 back.")
    assert decision.answer == "5677"


def test_pair_ranker_refuses_to_fit_without_dev_items_or_inputs():
    with pytest.raises(EnsembleError, match="pair_ranker needs a dev split to learn from, and got no dev items"):
        make_strategy("pair_ranker").fit([], [], dev_inputs=[])
    outputs, references, _ = code_items(3, seed=0)
    with pytest.raises(EnsembleError, match="pass dev_inputs to fit"):
        make_strategy("pair_ranker").fit(outputs, references)


def test_pair_ranker_refuses_to_combine_before_fit_and_without_an_encoder():
    with pytest.raises(EnsembleError, match=r"pair_ranker learns from the dev split: call fit\(\) before combine"):
        make_strategy("pair_ranker").combine([ma("a", "1")], item_input="x")
    outputs, references, inputs = code_items(3, seed=0)
    with pytest.raises(EnsembleError, match="was built without one; pass embedder=MiniLMEmbedder"):
        make_strategy("pair_ranker").fit(outputs, references, dev_inputs=inputs)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"aggregation": "mean"}, "aggregation: must be one of 'max_logits', 'max_wins' or 'bubble'"),
        ({"C": 0}, r"C: must be > 0.0 \(got 0\)"),
        ({"max_pairs": 1}, r"max_pairs: must be >= 2 \(got 1\)"),
        ({"top_k": 2}, "top_k: unknown parameter"),
    ],
)
def test_bad_pair_ranker_params_name_the_field_and_the_allowed_range(params, message):
    with pytest.raises(ParamsError, match=f"invalid params for 'pair_ranker': {message}"):
        make_strategy("pair_ranker", params)


def test_bagging_pair_rankers_gives_each_estimator_the_encoder():
    bagging = STRATEGIES.get("bagging")({"base": "pair_ranker", "n_estimators": 3}, embedder=digit_match_embedder)
    outputs, references, inputs = code_items(12, seed=0)
    bagging.fit(outputs, references, dev_inputs=inputs)
    decision = bagging.combine([ma("a", "1111"), ma("b", "1234")], item_input="Repeat the code 1234 back.")
    assert decision.answer == "1234"
    assert decision.calls.comparisons == 3 * 2


@pytest.mark.slow
def test_pair_ranker_learns_on_the_minilm_cross_encoding_which_candidate_repeats_the_code(minilm_dir):
    strategy = STRATEGIES.get("pair_ranker")(None, embedder=MiniLMEmbedder(minilm_dir))
    outputs, references, inputs = code_items(60, seed=10)
    strategy.fit(outputs, references, dev_inputs=inputs)
    outputs, references, inputs = code_items(30, seed=11)
    right = sum(
        strategy.combine(o, item_input=x).answer == ref for o, ref, x in zip(outputs, references, inputs, strict=True)
    )
    # Chance is one in three.
    assert right >= 27
