"""The learned router and the sentence encoder it embeds inputs with."""

import numpy as np
import pytest

from ensembles.errors import EnsembleError
from ensembles.strategies import STRATEGIES, MemberAnswer, MiniLMEmbedder, make_strategy
from tests.ensembles.helpers import trigram_embedder


def ma(member: str, answer: str) -> MemberAnswer:
    return MemberAnswer(member=member, answer=answer)


def dev_where_calc_knows_arithmetic_and_geo_knows_capitals():
    """Twelve items: calc is right on the sums, geo on the capitals, and one item nobody gets."""
    outputs, references, inputs = [], [], []
    for i in range(6):
        outputs.append([ma("geo", "?"), ma("calc", str(2 * i))])
        references.append(str(2 * i))
        inputs.append(f"Compute {i} plus {i}.")
    for i in range(6):
        outputs.append([ma("geo", f"city{i}"), ma("calc", "?")])
        references.append(f"city{i}")
        inputs.append(f"Name the capital city of country number {i}.")
    outputs.append([ma("geo", "no"), ma("calc", "no")])
    references.append("yes")
    inputs.append("Is this unanswerable?")
    return outputs, references, inputs


def fitted_router(params: dict | None = None, embedder=trigram_embedder):
    router = STRATEGIES.get("router")(params, embedder=embedder)
    outputs, references, inputs = dev_where_calc_knows_arithmetic_and_geo_knows_capitals()
    router.fit(outputs, references, dev_inputs=inputs)
    return router


@pytest.mark.parametrize("method", ["knn", "logreg"])
def test_router_sends_each_input_to_the_member_that_was_right_on_similar_dev_inputs(method):
    router = fitted_router({"method": method, "k": 3})
    item = [ma("geo", "Lima"), ma("calc", "42")]

    sums = router.combine(item, item_input="Compute 20 plus 22.")
    assert sums.answer == "42"
    assert sums.details["chosen"] == "calc"
    assert sums.details["scores"]["calc"] > sums.details["scores"]["geo"]
    assert sums.member_calls == 1

    capitals = router.combine(item, item_input="Name the capital city of country number 9.")
    assert capitals.answer == "Lima"
    assert capitals.details["chosen"] == "geo"


def test_router_skips_dev_items_no_member_gets_right():
    router = fitted_router()
    assert router.trained_on == {"calc": 6, "geo": 6}


def test_router_hands_over_to_the_next_best_member_when_the_chosen_one_has_no_answer():
    router = fitted_router({"k": 3})
    decision = router.combine([ma("geo", "Lima")], item_input="Compute 20 plus 22.")
    assert decision.details["chosen"] == "geo"
    assert decision.details["fallback"] is False


def test_router_with_one_best_member_on_dev_always_chooses_it():
    router = STRATEGIES.get("router")(None, embedder=trigram_embedder)
    router.fit([[ma("a", "1"), ma("b", "1")], [ma("a", "2"), ma("b", "0")]], ["1", "2"], dev_inputs=["x", "y"])
    decision = router.combine([ma("a", "5"), ma("b", "6")], item_input="anything")
    assert decision.answer == "5"
    assert decision.details["scores"] == {"a": 1.0}


def test_router_without_an_embedder_says_how_to_give_it_one():
    outputs, references, inputs = dev_where_calc_knows_arithmetic_and_geo_knows_capitals()
    with pytest.raises(EnsembleError, match="built without an embedder; pass embedder=MiniLMEmbedder"):
        make_strategy("router").fit(outputs, references, dev_inputs=inputs)


def test_router_needs_the_dev_inputs_and_the_item_input():
    outputs, references, _ = dev_where_calc_knows_arithmetic_and_geo_knows_capitals()
    router = STRATEGIES.get("router")(None, embedder=trigram_embedder)
    with pytest.raises(EnsembleError, match="pass dev_inputs to fit"):
        router.fit(outputs, references)
    with pytest.raises(EnsembleError, match="pass item_input to combine"):
        fitted_router().combine([ma("calc", "1")])


def test_router_refuses_a_dev_split_no_member_ever_gets_right():
    router = STRATEGIES.get("router")(None, embedder=trigram_embedder)
    with pytest.raises(EnsembleError, match="no member answered any dev item correctly"):
        router.fit([[ma("a", "1")]], ["2"], dev_inputs=["q"])


def test_router_rejects_an_embedder_that_returns_the_wrong_shape():
    router = STRATEGIES.get("router")(None, embedder=lambda texts: np.zeros(len(texts)))
    with pytest.raises(EnsembleError, match="expected one row per text"):
        router.fit([[ma("a", "1")]], ["1"], dev_inputs=["q"])


def test_minilm_embedder_refuses_a_directory_without_safetensors(tmp_path):
    with pytest.raises(EnsembleError, match="expected a directory with model.safetensors"):
        MiniLMEmbedder(tmp_path)(["hello"])


def test_minilm_embedder_loads_nothing_until_first_called(tmp_path):
    embedder = MiniLMEmbedder(tmp_path / "missing")
    assert embedder.model is None


@pytest.mark.slow
def test_minilm_embedder_gives_unit_vectors_that_place_paraphrases_together_and_routes_with_them(minilm_dir):
    embedder = MiniLMEmbedder(minilm_dir)
    vectors = embedder(["What is the capital of France?", "Which city is France's capital?", "Add 17 and 25."])
    assert vectors.shape == (3, 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2]
    assert embedder([]).shape == (0, 384)

    router = fitted_router({"k": 3}, embedder=embedder)
    item = [ma("geo", "Lima"), ma("calc", "42")]
    assert router.combine(item, item_input="What is 20 + 22?").details["chosen"] == "calc"
    assert router.combine(item, item_input="What is the capital of Peru?").details["chosen"] == "geo"
