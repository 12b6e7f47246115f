"""Self-consistency: k sampled generations of one member, each under its own seed, voted."""

from __future__ import annotations

import pytest

from ensembles.backends import DecodingParams, make_backend
from ensembles.backends.base import BackendOptions
from ensembles.errors import EnsembleError, ParamsError
from ensembles.metrics import EXTRACTORS
from ensembles.strategies import BackendCaller, CallResult, MemberAnswer, Sampling, make_strategy

extract_number = EXTRACTORS.get("number")
PROMPT = "Question: What is 7 + 5?\nAnswer:"


class SampleBook:
    """A ModelCaller whose samples are written by hand: seed -> text; records every request."""

    def __init__(self, by_seed: dict[int, str], seconds: float = 1.0) -> None:
        self.by_seed = by_seed
        self.seconds = seconds
        self.requests: list[tuple[str, str, Sampling | None]] = []

    def generate(self, member: str, prompts: list[str], sampling: Sampling | None = None) -> list[CallResult]:
        out = []
        for prompt in prompts:
            self.requests.append((member, prompt, sampling))
            text = self.by_seed[sampling.seed] if sampling else " greedy"
            out.append(CallResult(text=text, answer=extract_number(text), tokens=10, seconds=self.seconds))
        return out


def member(prompt: str = PROMPT) -> list[MemberAnswer]:
    return [MemberAnswer(member="m", answer="13", text=" 13", prompt=prompt)]


FIVE = {0: " 12", 1: " 12", 2: " 7", 3: " 12", 4: " no idea"}


def test_self_consistency_votes_the_k_samples_and_reports_their_agreement():
    book = SampleBook(FIVE, seconds=2.0)
    decision = make_strategy("self_consistency", {"k": 5}).combine(member(), caller=book)
    assert decision.answer == "12"
    assert decision.details["sample_answers"] == ["12", "12", "7", "12", ""]
    assert decision.details["votes"] == {"12": 3, "7": 1}
    assert decision.details["agreement"] == 0.6
    assert decision.details["samples"] == 5
    assert decision.details["agreed"] is True
    # The greedy answer "13" is not a vote: only the samples count, and only they cost.
    assert decision.consulted == []
    assert decision.member_calls == decision.calls.calls == 5
    assert decision.calls.tokens == 50
    assert decision.calls.compute_s == 10.0
    assert decision.calls.latency_s == 2.0  # side by side: the slowest sample


def test_each_sample_asks_the_members_own_prompt_with_its_own_seed_temperature_and_top_p():
    book = SampleBook({40: " 1", 41: " 2", 42: " 3"})
    params = {"k": 3, "temperature": 0.9, "top_p": 0.8, "seed": 40}
    make_strategy("self_consistency", params).combine(member(), item_input="ignored", caller=book)
    assert book.requests == [("m", PROMPT, Sampling(temperature=0.9, top_p=0.8, seed=s)) for s in (40, 41, 42)]


def test_without_the_members_prompt_the_items_input_is_sampled_and_without_both_it_refuses():
    book = SampleBook(FIVE)
    make_strategy("self_consistency", {"k": 2}).combine(member(prompt=""), item_input="What is 7 + 5?", caller=book)
    assert {prompt for _, prompt, _ in book.requests} == {"What is 7 + 5?"}
    with pytest.raises(EnsembleError, match="pass item_input to combine"):
        make_strategy("self_consistency", {"k": 2}).combine(member(prompt=""), caller=book)


def test_self_consistency_keeps_the_plurality_below_min_agreement_unless_told_to_abstain():
    keep = make_strategy("self_consistency", {"min_agreement": 0.8}).combine(member(), caller=SampleBook(FIVE))
    assert (keep.answer, keep.details["agreed"]) == ("12", False)
    abstain = make_strategy("self_consistency", {"min_agreement": 0.8, "below_agreement": "abstain"})
    assert abstain.combine(member(), caller=SampleBook(FIVE)).answer == ""
    agreeing = dict.fromkeys(range(5), " 12") | {4: " 7"}
    assert abstain.combine(member(), caller=SampleBook(agreeing)).answer == "12"


def test_self_consistency_samples_its_one_member_again_and_refuses_answers_of_two():
    sc = make_strategy("self_consistency")
    assert sc.calls_models and sc.asks_members_again()
    assert (sc.min_members, sc.max_members) == (1, 1)
    assert sc.called_models(["m"]) == ["m"]
    two = [*member(), MemberAnswer(member="n", answer="1")]
    with pytest.raises(EnsembleError, match="samples one member; it was given 2 members' answers"):
        sc.combine(two, caller=SampleBook(FIVE))
    with pytest.raises(EnsembleError, match="self_consistency calls models itself and was given no caller"):
        sc.combine(member())


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"k": 1}, r"k: must be >= 2 \(got 1\)"),
        ({"k": 65}, r"k: must be <= 64 \(got 65\)"),
        ({"temperature": 0}, r"temperature: must be > 0.0 \(got 0\)"),
        ({"temperature": 2.5}, r"temperature: must be <= 2.0 \(got 2.5\)"),
        ({"top_p": 0}, r"top_p: must be > 0.0 \(got 0\)"),
        ({"top_p": 1.5}, r"top_p: must be <= 1.0 \(got 1.5\)"),
        ({"seed": -1}, r"seed: must be >= 0 \(got -1\)"),
    ],
)
def test_bad_self_consistency_params_name_the_field_and_the_allowed_range(params, message):
    with pytest.raises(ParamsError, match=message):
        make_strategy("self_consistency", params)


def test_prefetch_samples_every_item_in_one_call_per_seed_and_combine_then_finds_them_cached(tiny_llama_dir):
    backend = make_backend(
        "hf", {"path": str(tiny_llama_dir)}, options=BackendOptions(model_roots=(tiny_llama_dir.parent,), device="cpu")
    )
    caller = BackendCaller({"tiny": backend}, DecodingParams(max_new_tokens=4, stop=()), extract_number)
    sc = make_strategy("self_consistency", {"k": 4, "temperature": 1.0, "top_p": 1.0})
    items = [
        [MemberAnswer(member="tiny", answer="", prompt=f"Question: What is {i} + {i} ? Answer:")] for i in range(6)
    ]

    sc.prefetch(items, [None] * len(items), caller=caller)
    assert caller.new_calls == 4 * 6
    decisions = [sc.combine(answers, caller=caller) for answers in items]
    assert caller.new_calls == 4 * 6  # every sample was already cached

    texts = [tuple(d.details["sample_answers"]) for d in decisions]
    # At temperature 1 a random model's seeds disagree; the same seeds again agree with themselves.
    assert any(len(set(t)) > 1 for t in texts)
    again = BackendCaller({"tiny": backend}, DecodingParams(max_new_tokens=4, stop=()), extract_number)
    assert [tuple(sc.combine(a, caller=again).details["sample_answers"]) for a in items] == texts
