"""The arena's ModelCaller: strategies' own model calls go through the generation cache.

A fuser's, aggregator's or pipeline step's generation is keyed exactly like a member's
(fingerprint, prompt, decoding params), so combining again, in this run or a later one,
makes no new model call. Self-consistency's samples come through here too, each under its own
temperature, top_p and seed: they are the blend's calls (its cost, its failure), not new batches
of the member, so they need no planning of their own and leave the member's progress alone.
"""

from __future__ import annotations

from collections.abc import Callable

from arena.evaluations import cache
from arena.registry.backends import backend_for
from arena.registry.models import Entry
from arena.teams.models import Team
from ensembles.backends import Backend, BackendError, DecodingParams
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
        read = cache.generations(fingerprint, lambda: backend, prompts, params)
        self.new_calls += read.new
        return [
            CallResult(
                text=gen.text,
                answer=self.extract(gen.text),
                tokens=gen.prompt_tokens + gen.completion_tokens,
                seconds=gen.latency_s,
                logprob=gen.mean_logprob,
                cached=gen.key not in read.computed,
            )
            for gen in read.generations
        ]
