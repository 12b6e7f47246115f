"""The arena's ModelCaller: strategies' own model calls go through the generation cache.

A fuser's, aggregator's or pipeline step's generation is keyed exactly like a member's
(fingerprint, prompt, decoding params), so combining again, in this run or a later one,
makes no new model call. Self-consistency's samples come through here too, each under its own
temperature, top_p and seed: they are the blend's calls (its cost, its failure), not new batches
of the member, so they need no planning of their own and leave the member's progress alone.
"""

from __future__ import annotations

from collections.abc import Callable

from arena.evaluations.models import Generation
from arena.evaluations.services import POOL, RetryLater, generation_key, store_generations
from arena.registry.models import Entry
from arena.registry.services import backend_for
from arena.teams.models import Team
from ensembles.backends import Backend, BackendError, DecodingParams, TransientBackendError
from ensembles.strategies import CallResult, Sampling


class ArenaCaller:
    """Calls a team's model entries by name for one blend's combine, through the generation cache.

    ``new_calls`` counts the generations actually computed, which the run reports as the
    blend's new calls.
    """

    def __init__(self, team: Team, params: DecodingParams, extract: Callable[[str], str]) -> None:
        self.team = team
        self.params = params
        self.extract = extract
        self.new_calls = 0
        self._models: dict[str, tuple[Entry, Backend, str]] = {}

    def _model(self, name: str) -> tuple[Entry, Backend, str]:
        """The entry, a backend and its fingerprint for ``name``, looked up once per combine."""
        if name not in self._models:
            entry = Entry.objects.filter(team=self.team, name=name).first()
            if entry is None or entry.is_blend:
                raise BackendError(
                    f"{name!r} is not a model entry of {self.team.name}; a strategy can only call models"
                )
            backend = backend_for(entry)
            backend.check()
            self._models[name] = (entry, backend, backend.fingerprint())
        return self._models[name]

    def generate(self, member: str, prompts: list[str], sampling: Sampling | None = None) -> list[CallResult]:
        _, backend, fingerprint = self._model(member)
        # A sample's temperature, top_p and seed are part of its key: each seed is its own generation.
        params = self.params if sampling is None else sampling.applied_to(self.params)
        keys = [generation_key(fingerprint, p, params) for p in prompts]
        cached = {g.key: g for g in Generation.objects.filter(key__in=keys)}
        # A prompt asked for twice in one call is generated once.
        missing = {k: p for k, p in zip(keys, prompts, strict=True) if k not in cached}
        if missing:
            try:
                outputs = POOL.get(fingerprint, lambda: backend).generate(list(missing.values()), params)
            except TransientBackendError as exc:
                raise RetryLater(str(exc)) from exc
            # Another worker may have stored the same generation meanwhile; the first one stays.
            store_generations(
                fingerprint,
                params,
                [(key, prompt, out) for (key, prompt), out in zip(missing.items(), outputs, strict=True)],
            )
            self.new_calls += len(missing)
            cached = {g.key: g for g in Generation.objects.filter(key__in=keys)}
        return [
            CallResult(
                text=cached[k].text,
                answer=self.extract(cached[k].text),
                tokens=cached[k].prompt_tokens + cached[k].completion_tokens,
                seconds=cached[k].latency_s,
                logprob=cached[k].mean_logprob,
                cached=k not in missing,
            )
            for k in keys
        ]
