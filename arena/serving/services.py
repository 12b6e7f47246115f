"""Answering one chat request with an entry, single model or blend.

Generation runs in the web process through the same backends and model pool the workers use, and
every member output goes through the same content-addressed generation cache, so a repeated
request costs no model call.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from arena.evaluations import cache
from arena.evaluations.blends import in_tie_order, serving_combiner
from arena.evaluations.calls import ArenaCaller
from arena.registry.backends import backend_for
from arena.registry.models import Entry
from arena.serving import batching
from ensembles.backends import DecodingParams, Prices, Prompt, transcript
from ensembles.backends import Generation as LibGeneration
from ensembles.strategies import MemberAnswer


def generate(entry: Entry, prompt: Prompt, params: DecodingParams) -> tuple[LibGeneration, bool]:
    """One member's output, from the generation cache when it has it; (output, was_cached).

    A conversation goes to the backend as turns, for the member's own chat template to render.
    """
    backend = backend_for(entry)
    fingerprint = backend.fingerprint()
    if batching.serves_on_worker(backend):
        # Generated on the model's worker, in one batch with the requests that arrive alongside.
        gen, new = batching.generate_on_worker(entry, fingerprint, prompt, params)
    else:
        read = cache.generations(fingerprint, lambda: backend, [prompt], params)
        gen, new = read.generations[0], bool(read.new)
    # Rows cached before the reason was recorded: a generation as long as the limit ran into it.
    finish = gen.finish_reason or ("length" if gen.completion_tokens >= params.max_new_tokens else "stop")
    out = LibGeneration(
        text=gen.text,
        token_logprobs=gen.token_logprobs,
        prompt_tokens=gen.prompt_tokens,
        completion_tokens=gen.completion_tokens,
        latency_s=gen.latency_s if new else 0.0,
        finish_reason=finish,
        tokens=gen.tokens,
        top_logprobs=[[(t, lp) for t, lp in step] for step in gen.top_logprobs],
    )
    return out, not new


def prompt_text(prompt: Prompt) -> str:
    """The prompt as a strategy reads it (the item a fuser or judge is shown)."""
    return prompt if isinstance(prompt, str) else transcript(prompt)


def prices_of(entry: Entry) -> Prices | None:
    """The entry's prices per million tokens, when its config has them (stored validated)."""
    found = entry.config.get("prices") if isinstance(entry.config, dict) else None
    return Prices.model_validate(found) if found else None


@dataclass
class Spent:
    """What an answer cost, counted as the board counts a blend's: model calls, tokens and model seconds.

    ``new_calls`` of the calls were computed for this answer; the others came from the generation cache
    and took no compute now. ``usd`` prices the tokens; None unless every model that answered has prices.
    """

    calls: int = 0
    new_calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    compute_s: float = 0.0
    usd: float | None = 0.0

    @classmethod
    def of(cls, entry: Entry, gen: LibGeneration, cached: bool) -> Spent:
        prices = prices_of(entry)
        return cls(
            calls=1,
            new_calls=0 if cached else 1,
            prompt_tokens=gen.prompt_tokens,
            completion_tokens=gen.completion_tokens,
            compute_s=gen.latency_s,
            usd=prices.cost(gen.prompt_tokens, gen.completion_tokens) if prices else None,
        )

    def add(self, other: Spent) -> None:
        self.calls += other.calls
        self.new_calls += other.new_calls
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.compute_s += other.compute_s
        self.usd = None if self.usd is None or other.usd is None else self.usd + other.usd

    def usage(self) -> dict[str, Any]:
        """OpenAI's ``usage``, with its cost in US dollars where routing gateways (OpenRouter) put it."""
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
            "cost": None if self.usd is None else round(self.usd, 12),
        }

    def measures(self) -> dict[str, Any]:
        """The arena's own cost measures, as its boards count them."""
        return {
            "calls": self.calls,
            "new_calls": self.new_calls,
            "tokens": self.prompt_tokens + self.completion_tokens,
            "compute_s": round(self.compute_s, 4),
            "cost_usd": None if self.usd is None else round(self.usd, 12),
        }


# One request's model outputs by entry id: (the entry, its output, whether it came from the cache).
Outputs = dict[int, tuple[Entry, LibGeneration, bool]]


def serve_blend(
    blend: Entry, prompt: Prompt, params: DecodingParams, outputs: Outputs | None = None
) -> tuple[str, dict[str, Any], LibGeneration, Spent]:
    """A blend's reply, combined as on the board, and what it cost; a member that is a blend is served first the same way
    (registration bounds the depth).

    Members' answers are read with the suite extraction of the blend's latest finished run, ties go by
    the members' dev scores there, and a learned strategy answers as fitted on its dev split
    (arena.evaluations.blends), so on that suite's items /v1 answers what the board stored.
    ``outputs`` holds each model's output for this request, so a model reached by two branches of a
    hybrid generates, and counts in the usage and cost, once. The returned generation carries the usage
    of all of them, and the tokens, log-probabilities and finish reason of the member whose text won.
    The account (``how``) says what each member said and cost, and how the blend decided.
    """
    combiner = serving_combiner(blend)
    strategy = combiner.strategy
    outputs = {} if outputs is None else outputs
    answers, served, said, accounts = [], {}, {}, {}
    for member in blend.ordered_members():
        if member.is_blend:
            text, served[member.name], said[member.name], _ = serve_blend(member, prompt, params, outputs)
            answers.append(MemberAnswer(member=member.name, answer=combiner.extract(text), text=text))
            accounts[member.name] = {"blend": True}
            continue
        if member.pk not in outputs:
            outputs[member.pk] = (member, *generate(member, prompt, params))
        _, out, cached = outputs[member.pk]
        said[member.name] = out
        answers.append(
            MemberAnswer(member=member.name, answer=combiner.extract(out.text), text=out.text, logprob=out.mean_logprob)
        )
        spent = Spent.of(member, out, cached)
        accounts[member.name] = {"cached": cached, "usage": spent.usage(), "compute_s": round(spent.compute_s, 4)}
    item = prompt_text(prompt)
    ordered = in_tie_order(blend.strategy, answers, combiner.weights)
    caller = ArenaCaller(blend.team, params, combiner.extract) if strategy.calls_models else None
    # The fuser, aggregator or pipeline steps are the team's models, called through the generation cache.
    decision = strategy.combine(ordered, item_input=item, caller=caller)
    # Reply with the full text of the first member whose answer won (a fused answer is its own text).
    winner = next((a for a in answers if a.answer.strip().lower() == decision.answer.strip().lower()), None)
    text = winner.text if winner else decision.answer
    won = said.get(winner.member) if winner else None
    # Every model under this blend counts once, wherever in a hybrid's tree it answered.
    total = Spent()
    for entry, out, cached in (outputs[pk] for pk in _models_under(blend)):
        total.add(Spent.of(entry, out, cached))
    if caller is not None and decision.calls.calls:
        # The strategy's own calls (a fuser's) report tokens unsplit into prompt and completion: unpriced.
        total.calls += decision.calls.calls
        total.new_calls += caller.new_calls
        total.compute_s += decision.calls.compute_s
        total.usd = None
    usage = LibGeneration(text=text, prompt_tokens=total.prompt_tokens, completion_tokens=total.completion_tokens)
    if won is not None and won.text == text:
        usage.token_logprobs, usage.tokens, usage.top_logprobs = won.token_logprobs, won.tokens, won.top_logprobs
        usage.finish_reason = won.finish_reason
    how: dict[str, Any] = {
        "strategy": blend.strategy,
        "members": [a.member for a in answers],
        # The decided answer: what the board stores as the blend's prediction.
        "answer": decision.answer,
        "answers": [{"member": a.member, "text": a.text, "answer": a.answer, **accounts[a.member]} for a in answers],
        **decision.details,
        "read_as": combiner.read_as(),
        "cost": {**total.measures(), **({"strategy_calls": decision.calls.calls} if decision.calls.calls else {})},
    }
    if decision.consulted is not None:
        how["consulted"] = decision.consulted  # the members the board counts for this decision's cost
    if strategy.needs_fit:
        how["fitted_on"] = {"run": combiner.run_id, "suite": combiner.suite, "split": "dev"}
    if served:
        how["inner"] = served  # how each inner blend decided
    return text, how, usage, total


def reply(entry: Entry, prompt: Prompt, params: DecodingParams) -> tuple[LibGeneration, dict[str, Any] | None, Spent]:
    """``entry``'s answer, model or blend: its generation, a blend's account of how it decided, and its cost."""
    if entry.is_blend:
        _, how, gen, spent = serve_blend(entry, prompt, params)
        return gen, how, spent
    gen, cached = generate(entry, prompt, params)
    return gen, None, Spent.of(entry, gen, cached)


def _models_under(blend: Entry) -> set[int]:
    """The ids of every model in ``blend``'s tree."""
    found: set[int] = set()
    for member in blend.ordered_members():
        found |= _models_under(member) if member.is_blend else {member.pk}
    return found
