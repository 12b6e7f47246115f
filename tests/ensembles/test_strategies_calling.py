"""Strategies that call models themselves: GenFuser, mixture of agents, procedural pipeline."""

import json
import re
from collections import Counter
from collections.abc import Callable

import pytest

from ensembles.backends import DecodingParams, make_backend
from ensembles.backends.base import BackendOptions
from ensembles.errors import EnsembleError, ParamsError
from ensembles.metrics import EXTRACTORS
from ensembles.strategies import STRATEGIES, BackendCaller, CallResult, MemberAnswer, make_strategy
from tests.ensembles.helpers import code_items, digit_match_embedder

extract_number = EXTRACTORS.get("number")


# --- deterministic stand-ins for models: plain functions from prompt to text ---------------------------


def solver(prompt: str) -> str:
    """Reads "What is A + B?" and answers the sum: a model that knows arithmetic."""
    a, b = map(int, re.search(r"What is (\d+) \+ (\d+)\?", prompt).groups())
    return f" {a + b}"


def listed(prompt: str) -> list[str]:
    """The numbered lines ("1. 12") a fusing prompt shows."""
    return re.findall(r"^\d+\. (.*)$", prompt, re.MULTILINE)


def majority(prompt: str) -> str:
    """Answers with the most common listed answer (the first of equals): a model that trusts the crowd."""
    return " " + Counter(listed(prompt)).most_common(1)[0][0]


def first_listed(prompt: str) -> str:
    return " " + listed(prompt)[0]


def doubler(prompt: str) -> str:
    number = int(re.search(r"Double (-?\d+)", prompt).group(1))
    return f" {2 * number}"


def add_one(prompt: str) -> str:
    number = int(re.search(r"Add one to (-?\d+)", prompt).group(1))
    return f" {number + 1}"


class ScriptedCaller:
    """A ModelCaller whose models are the functions above; records every call it is asked for."""

    def __init__(self, models: dict[str, Callable[[str], str]], seconds: dict[str, float] | None = None) -> None:
        self.models = models
        self.seconds = seconds or {}
        self.calls: list[tuple[str, str]] = []

    def generate(self, member: str, prompts: list[str]) -> list[CallResult]:
        out = []
        for prompt in prompts:
            self.calls.append((member, prompt))
            text = self.models[member](prompt)
            out.append(
                CallResult(
                    text=text,
                    answer=extract_number(text),
                    tokens=len(prompt.split()) + len(text.split()),
                    seconds=self.seconds.get(member, 1.0),
                )
            )
        return out


def ma(member: str, answer: str) -> MemberAnswer:
    return MemberAnswer(member=member, answer=answer, text=f" {answer}")


QUESTION = "What is 7 + 5?"


# --- GenFuser ---------------------------------------------------------------------------------------------


def test_gen_fuser_shows_the_fuser_every_candidate_and_answers_with_what_it_writes():
    caller = ScriptedCaller({"judge": solver})
    fuser = make_strategy("gen_fuser", {"fuser": "judge"})
    decision = fuser.combine([ma("a", "13"), ma("b", ""), ma("c", "11")], item_input=QUESTION, caller=caller)

    assert decision.answer == "12"  # both candidates were wrong; the fuser wrote the right answer
    assert caller.calls == [("judge", "Question: What is 7 + 5?\nCandidate answers:\n1. 13\n2. 11\nAnswer:")]
    assert decision.details["candidates"] == ["a", "c"]
    assert decision.details["fused_text"] == " 12"
    assert json.loads(json.dumps(decision.details, allow_nan=False)) == decision.details


def test_gen_fuser_counts_its_own_call_in_the_cost():
    caller = ScriptedCaller({"judge": majority}, seconds={"judge": 2.5})
    decision = make_strategy("gen_fuser", {"fuser": "judge"}).combine(
        [ma("a", "12"), ma("b", "13"), ma("c", "12")], item_input=QUESTION, caller=caller
    )
    prompt = caller.calls[0][1]
    assert decision.answer == "12"
    assert decision.member_calls == 3 + 1
    assert decision.calls.calls == 1
    assert decision.calls.tokens == len(prompt.split()) + 1
    assert decision.calls.compute_s == decision.calls.latency_s == 2.5


def test_gen_fuser_with_a_ranker_shows_only_the_top_k_candidates_best_first():
    fuser = STRATEGIES.get("gen_fuser")(
        {"fuser": "judge", "ranker": "pair_ranker", "top_k": 2, "candidate": "text"}, embedder=digit_match_embedder
    )
    assert fuser.needs_fit
    outputs, references, inputs = code_items(12, seed=0, members=("a", "b", "c", "d"))
    fuser.fit(outputs, references, dev_inputs=inputs)
    caller = ScriptedCaller({"judge": first_listed})
    answers = [ma("a", "9999"), ma("b", "1299"), ma("c", "1234"), ma("d", "1239")]
    decision = fuser.combine(answers, item_input="Repeat the code 1234 back.", caller=caller)

    assert listed(caller.calls[0][1]) == ["1234", "1239"]
    assert decision.answer == "1234"
    assert decision.details["ranking"] == ["c", "d", "b", "a"]
    assert decision.details["comparisons"] == decision.calls.comparisons == 4 * 3
    assert decision.member_calls == 4 + 1


def test_gen_fuser_with_a_bubble_ranker_makes_one_pass_per_place_shown():
    fuser = STRATEGIES.get("gen_fuser")(
        {"fuser": "judge", "ranker": "pair_ranker", "aggregation": "bubble", "top_k": 2},
        embedder=digit_match_embedder,
    )
    fuser.fit(*code_items(12, seed=0)[:2], dev_inputs=code_items(12, seed=0)[2])
    caller = ScriptedCaller({"judge": first_listed})
    answers = [ma("a", "9999"), ma("b", "1299"), ma("c", "1234"), ma("d", "1239")]
    decision = fuser.combine(answers, item_input="Repeat the code 1234 back.", caller=caller)
    assert listed(caller.calls[0][1]) == ["1234", "1239"]
    assert decision.details["comparisons"] == 2 * 3 + 2 * 2


def test_gen_fuser_with_a_ranker_refuses_to_combine_before_fit():
    fuser = make_strategy("gen_fuser", {"fuser": "judge", "ranker": "pair_ranker"})
    with pytest.raises(EnsembleError, match=r"gen_fuser learns from the dev split: call fit\(\) before combine"):
        fuser.combine([ma("a", "1")], item_input=QUESTION, caller=ScriptedCaller({}))


# --- mixture of agents ------------------------------------------------------------------------------------


def test_mixture_of_agents_proposers_read_the_previous_layer_and_the_aggregator_the_last():
    caller = ScriptedCaller({"a": first_listed, "b": solver, "c": solver, "agg": majority})
    moa = make_strategy("mixture_of_agents", {"aggregator": "agg", "layers": 2})
    decision = moa.combine([ma("a", "13"), ma("b", "12"), ma("c", "13")], item_input=QUESTION, caller=caller)

    # Layer one (stored) says 13 by majority; in layer two two proposers work the sum out.
    assert decision.answer == "12"
    assert [m for m, _ in caller.calls] == ["a", "b", "c", "agg"]
    layer_two_prompt = caller.calls[0][1]
    assert all(prompt == layer_two_prompt for _, prompt in caller.calls[:3])
    assert listed(layer_two_prompt) == ["13", "12", "13"]
    assert listed(caller.calls[3][1]) == ["13", "12", "12"]
    assert decision.details["layers"] == [{"a": "13", "b": "12", "c": "13"}, {"a": "13", "b": "12", "c": "12"}]
    assert json.loads(json.dumps(decision.details, allow_nan=False)) == decision.details


def test_mixture_of_agents_cost_overlaps_the_proposers_of_a_layer_and_adds_the_layers_up():
    caller = ScriptedCaller({"a": solver, "b": solver, "agg": majority}, seconds={"a": 1.0, "b": 3.0, "agg": 0.5})
    moa = make_strategy("mixture_of_agents", {"aggregator": "agg", "layers": 3})
    decision = moa.combine([ma("a", "1"), ma("b", "2")], item_input=QUESTION, caller=caller)
    assert decision.member_calls == 2 + 2 * 2 + 1
    assert decision.calls.calls == 5
    assert decision.calls.compute_s == pytest.approx(2 * (1.0 + 3.0) + 0.5)
    assert decision.calls.latency_s == pytest.approx(2 * 3.0 + 0.5)


def test_mixture_of_agents_with_one_layer_aggregates_the_stored_answers_and_named_proposers_are_called():
    caller = ScriptedCaller({"agg": majority, "x": solver})
    one = make_strategy("mixture_of_agents", {"aggregator": "agg", "layers": 1})
    assert one.combine([ma("a", "12"), ma("b", "12")], item_input=QUESTION, caller=caller).member_calls == 3
    assert [m for m, _ in caller.calls] == ["agg"]

    named = make_strategy("mixture_of_agents", {"aggregator": "agg", "proposers": ["x"]})
    assert named.called_members() == {"aggregator": "agg", "proposers.0": "x"}
    assert named.combine([ma("a", "3")], item_input=QUESTION, caller=caller).answer == "12"


def test_only_mixture_of_agents_without_named_proposers_asks_its_members_again():
    asks = {
        "layers 2, members propose": ({"aggregator": "agg", "layers": 2}, True),
        "layers 1": ({"aggregator": "agg", "layers": 1}, False),
        "named proposers": ({"aggregator": "agg", "layers": 3, "proposers": ["x"]}, False),
    }
    for case, (params, expected) in asks.items():
        assert make_strategy("mixture_of_agents", params).asks_members_again() is expected, case
    assert not make_strategy("gen_fuser", {"fuser": "f"}).asks_members_again()
    assert not make_strategy("majority_vote").asks_members_again()


# --- pipeline ---------------------------------------------------------------------------------------------


def test_pipeline_fills_each_prompt_with_the_previous_output():
    caller = ScriptedCaller({"d": doubler, "p": add_one}, seconds={"d": 1.0, "p": 2.0})
    pipeline = make_strategy(
        "pipeline",
        {
            "start": "b",
            "steps": [
                {"member": "d", "template": "Double {previous}."},
                {"member": "p", "template": "{input} Add one to {previous}."},
            ],
        },
    )
    decision = pipeline.combine([ma("a", "100"), ma("b", "6")], item_input="Start:", caller=caller)

    assert decision.answer == "13"
    assert caller.calls == [("d", "Double 6."), ("p", "Start: Add one to 12.")]
    assert [link["answer"] for link in decision.details["chain"]] == ["6", "12", "13"]
    assert decision.consulted == ["b"]
    assert decision.member_calls == 1 + 2
    assert decision.calls.latency_s == decision.calls.compute_s == 3.0
    assert json.loads(json.dumps(decision.details, allow_nan=False)) == decision.details


def test_pipeline_starts_from_the_first_member_by_default_and_names_its_called_members():
    pipeline = make_strategy("pipeline", {"steps": [{"member": "d", "template": "Double {previous}."}]})
    decision = pipeline.combine([ma("a", "21"), ma("b", "6")], item_input="", caller=ScriptedCaller({"d": doubler}))
    assert decision.answer == "42"
    assert pipeline.called_members() == {"steps.0.member": "d"}


def test_pipeline_refuses_a_start_that_is_not_a_member():
    pipeline = make_strategy("pipeline", {"start": "z", "steps": [{"member": "d", "template": "{previous}"}]})
    with pytest.raises(ParamsError, match="start: 'z' is not a member of the blend"):
        pipeline.check_members(["a", "b"])
    pipeline.check_members(["a", "z"])


# --- shared contracts -------------------------------------------------------------------------------------

CALLING = {
    "gen_fuser": {"fuser": "m"},
    "mixture_of_agents": {"aggregator": "m"},
    "pipeline": {"steps": [{"member": "m", "template": "{previous}"}]},
}


@pytest.mark.parametrize("name", sorted(CALLING))
def test_strategies_that_call_models_refuse_to_combine_without_a_caller(name):
    strategy = make_strategy(name, CALLING[name])
    assert strategy.calls_models
    with pytest.raises(EnsembleError, match=f"{name} calls models itself and was given no caller; pass caller="):
        strategy.combine([ma("a", "1")], item_input=QUESTION)


@pytest.mark.parametrize("name", sorted(CALLING))
def test_strategies_that_call_models_refuse_to_combine_without_the_input(name):
    with pytest.raises(EnsembleError, match="pass item_input to combine"):
        make_strategy(name, CALLING[name]).combine([ma("a", "1")], caller=ScriptedCaller({"m": solver}))


@pytest.mark.parametrize("name", sorted(CALLING))
def test_a_caller_that_breaks_its_contract_gives_a_clear_error(name):
    class Silent:
        def generate(self, member, prompts):
            return []

    with pytest.raises(EnsembleError, match=r"the caller returned 0 generations of '\w+' for 1 prompts"):
        make_strategy(name, CALLING[name]).combine([ma("a", "1")], item_input=QUESTION, caller=Silent())


def test_strategies_that_use_stored_answers_only_do_not_call_models():
    assert not make_strategy("majority_vote").calls_models
    assert make_strategy("majority_vote").called_members() == {}


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        ("gen_fuser", {}, "fuser: Field required"),
        ("gen_fuser", {"fuser": ""}, "fuser: String should have at least 1 character"),
        ("gen_fuser", {"fuser": "m", "top_k": 0}, r"top_k: must be >= 1 \(got 0\)"),
        ("gen_fuser", {"fuser": "m", "top_k": 17}, r"top_k: must be <= 16 \(got 17\)"),
        ("gen_fuser", {"fuser": "m", "ranker": "llm"}, "ranker: must be one of 'none' or 'pair_ranker'"),
        ("gen_fuser", {"fuser": "m", "template": "{input}"}, r"template: Value error, must contain \{candidates\}"),
        (
            "gen_fuser",
            {"fuser": "m", "template": "{input} {candidates} {answer}"},
            r"template: Value error, unknown fields \{answer\}; allowed: \{candidates\}, \{input\}",
        ),
        ("gen_fuser", {"fuser": "m", "template": "{input} {candidates} {"}, "template: Value error, not a valid"),
        ("mixture_of_agents", {"aggregator": "m", "layers": 5}, r"layers: must be <= 4 \(got 5\)"),
        ("mixture_of_agents", {"aggregator": "m", "proposers": []}, "proposers: List should have at least 1 item"),
        (
            "mixture_of_agents",
            {"aggregator": "m", "proposers": ["x", "x"]},
            "proposers: Value error, a proposer appears",
        ),
        (
            "mixture_of_agents",
            {"aggregator": "m", "aggregator_template": "{previous}"},
            r"aggregator_template: Value error, must contain \{input\}",
        ),
        ("pipeline", {}, "steps: Field required"),
        ("pipeline", {"steps": []}, "steps: List should have at least 1 item"),
        ("pipeline", {"steps": [{"member": "m", "template": "{input}"}]}, r"steps.0.template: .*\{previous\}"),
        ("pipeline", {"steps": [{"member": "m"}]}, "steps.0.template: Field required"),
        ("pipeline", {"steps": [{"member": "m", "template": "{previous}", "x": 1}]}, "steps.0.x: unknown parameter"),
    ],
)
def test_bad_params_of_calling_strategies_name_the_field(name, params, message):
    with pytest.raises(ParamsError, match=f"invalid params for '{name}': {message}"):
        make_strategy(name, params)


def test_bagging_refuses_a_base_that_calls_models():
    with pytest.raises(ParamsError, match="base: Value error, gen_fuser calls models itself"):
        make_strategy("bagging", {"base": "gen_fuser", "base_params": {"fuser": "m", "ranker": "pair_ranker"}})


# --- through a real model ---------------------------------------------------------------------------------


@pytest.fixture
def tiny_caller(tiny_llama_dir):
    backend = make_backend("hf", {"path": str(tiny_llama_dir)}, options=BackendOptions(device="cpu"))
    params = DecodingParams(max_new_tokens=4, stop=("\n",))
    return backend, params, BackendCaller({"tiny": backend}, params, extract_number)


def test_gen_fuser_and_pipeline_run_on_a_real_model_through_a_cached_caller(tiny_caller):
    backend, params, caller = tiny_caller
    answers = [ma("a", "12"), ma("b", "13")]
    fuser = make_strategy("gen_fuser", {"fuser": "tiny"})
    decision = fuser.combine(answers, item_input="What is 7 + 5 ?", caller=caller)

    expected = backend.generate(["Question: What is 7 + 5 ?\nCandidate answers:\n1. 12\n2. 13\nAnswer:"], params)[0]
    assert decision.details["fused_text"] == expected.text
    assert decision.answer == extract_number(expected.text)
    assert decision.calls.calls == 1
    assert decision.calls.tokens == expected.prompt_tokens + expected.completion_tokens > 0
    assert caller.new_calls == 1

    pipeline = make_strategy(
        "pipeline",
        {
            "steps": [
                {"member": "tiny", "template": "Question: What is {previous} + 1 ?\nAnswer:"},
                {"member": "tiny", "template": "Question: {input} {previous}\nAnswer:"},
            ],
            "previous": "text",
        },
    )
    chained = pipeline.combine(answers, item_input="What is", caller=caller)
    first, second = chained.details["chain"][1:]
    assert first["text"] == backend.generate(["Question: What is 12 + 1 ?\nAnswer:"], params)[0].text
    second_prompt = f"Question: What is {' '.join(first['text'].split())}\nAnswer:"
    assert second["text"] == backend.generate([second_prompt], params)[0].text
    assert caller.new_calls == 3

    # Generate once, combine many: the same combines again make no new generation.
    assert fuser.combine(answers, item_input="What is 7 + 5 ?", caller=caller) == decision
    assert pipeline.combine(answers, item_input="What is", caller=caller).details == chained.details
    assert caller.new_calls == 3


def test_backend_caller_names_the_models_it_knows(tiny_caller):
    _, _, caller = tiny_caller
    with pytest.raises(EnsembleError, match="no model named 'other' to call; known: tiny"):
        caller.generate("other", ["x"])
