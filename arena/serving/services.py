"""Answering one chat request with an entry, single model or blend.

Generation runs in the web process through the same backends and model pool the workers use, and
every member output goes through the same content-addressed generation cache, so a repeated
request costs no model call.
"""

from __future__ import annotations

from typing import Any

from arena.evaluations import cache
from arena.evaluations.blends import fitted_for_serving
from arena.evaluations.calls import ArenaCaller
from arena.registry.backends import backend_for
from arena.registry.models import Entry
from ensembles.backends import DecodingParams, Prompt, transcript
from ensembles.backends import Generation as LibGeneration
from ensembles.metrics import EXTRACTORS
from ensembles.strategies import STRATEGIES, MemberAnswer


def generate(entry: Entry, prompt: Prompt, params: DecodingParams) -> tuple[LibGeneration, bool]:
    """One member's output, from the generation cache when it has it; (output, was_cached).

    A conversation goes to the backend as turns, for the member's own chat template to render.
    """
    backend = backend_for(entry)
    read = cache.generations(backend.fingerprint(), lambda: backend, [prompt], params)
    gen = read.generations[0]
    # Rows cached before the reason was recorded: a generation as long as the limit ran into it.
    finish = gen.finish_reason or ("length" if gen.completion_tokens >= params.max_new_tokens else "stop")
    out = LibGeneration(
        text=gen.text,
        token_logprobs=gen.token_logprobs,
        prompt_tokens=gen.prompt_tokens,
        completion_tokens=gen.completion_tokens,
        latency_s=gen.latency_s if read.new else 0.0,
        finish_reason=finish,
        tokens=gen.tokens,
        top_logprobs=[[(t, lp) for t, lp in step] for step in gen.top_logprobs],
    )
    return out, not read.new


def prompt_text(prompt: Prompt) -> str:
    """The prompt as a strategy reads it (the item a fuser or judge is shown)."""
    return prompt if isinstance(prompt, str) else transcript(prompt)


def serve_blend(
    blend: Entry, prompt: Prompt, params: DecodingParams, outputs: dict[int, LibGeneration] | None = None
) -> tuple[str, dict[str, Any], LibGeneration]:
    """A blend's reply; a member that is a blend is served first the same way (registration bounds the depth).

    ``outputs`` holds each model's output for this request, so a model reached by two branches of a
    hybrid generates, and counts in the usage, once. The returned generation carries the usage of
    all of them, and the tokens, log-probabilities and finish reason of the member whose text won.
    """
    cls = STRATEGIES.get(blend.strategy)
    strategy = cls(blend.params)
    fitted = None
    if strategy.needs_fit:
        # A learned blend answers as fitted on the dev split of its latest finished run, and reads
        # members' answers the way that suite does.
        fitted = fitted_for_serving(blend)
        strategy = fitted.strategy
    outputs = {} if outputs is None else outputs
    # Otherwise free text has no task-specific extraction here: members vote on their first lines.
    first_line = EXTRACTORS.get(fitted.extraction if fitted else "first_line")
    answers, served, said = [], {}, {}
    for member in blend.ordered_members():
        if member.is_blend:
            text, served[member.name], said[member.name] = serve_blend(member, prompt, params, outputs)
            answers.append(MemberAnswer(member=member.name, answer=first_line(text), text=text))
            continue
        if member.pk not in outputs:
            outputs[member.pk] = generate(member, prompt, params)[0]
        out = said[member.name] = outputs[member.pk]
        answers.append(
            MemberAnswer(member=member.name, answer=first_line(out.text), text=out.text, logprob=out.mean_logprob)
        )
    item = prompt_text(prompt)
    if strategy.calls_models:
        # The fuser, aggregator or pipeline steps are the team's models, called through the generation cache.
        decision = strategy.combine(answers, item_input=item, caller=ArenaCaller(blend.team, params, first_line))
    else:
        decision = strategy.combine(answers, item_input=item)
    # Reply with the full text of the first member whose answer won (a fused answer is its own text).
    winner = next((a for a in answers if a.answer.strip().lower() == decision.answer.strip().lower()), None)
    text = winner.text if winner else decision.answer
    won = said.get(winner.member) if winner else None
    usage = LibGeneration(
        text=text,
        prompt_tokens=sum(o.prompt_tokens for o in outputs.values()),
        completion_tokens=sum(o.completion_tokens for o in outputs.values()),
    )
    if won is not None and won.text == text:
        usage.token_logprobs, usage.tokens, usage.top_logprobs = won.token_logprobs, won.tokens, won.top_logprobs
        usage.finish_reason = won.finish_reason
    how = {"strategy": blend.strategy, "members": [a.member for a in answers], **decision.details}
    if fitted:
        how["fitted_on"] = {"run": fitted.run_id, "suite": fitted.suite, "split": "dev"}
    if served:
        how["inner"] = served  # how each inner blend decided
    return text, how, usage
