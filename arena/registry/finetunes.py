"""Fine-tuned variants of a team's model, registered as hf entries so they can be merged with their base."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from django.core.exceptions import ValidationError
from django.utils.text import slugify

from arena.benchmarks.models import Suite
from arena.benchmarks.services import library_suite
from arena.registry import services
from arena.registry.backends import backend_for, built_dir
from arena.registry.models import Entry, Kind
from arena.teams.models import Team
from ensembles.backends import BackendError
from ensembles.backends.base import digest_json
from ensembles.errors import EnsembleError
from ensembles.finetune import FinetuneResult, finetune, training_pairs


def finetune_entry(
    team: Team,
    *,
    member: str,
    suite: str,
    name: str,
    steps: int = 300,
    learning_rate: float = 5e-5,
    batch_size: int = 8,
    method: Literal["full", "lora"] = "full",
    seed: int = 0,
    user=None,
) -> tuple[Entry, FinetuneResult]:
    """Fine-tune ``member`` on the dev split of the latest version of ``suite`` and register it as ``name``.

    Learns on dev only, so the variant's test score on the same suite stays an honest one.
    """
    source = Entry.objects.filter(team=team, name=member).first()
    if source is None:
        raise ValidationError({"member": f"{team.name} has no entry named {member!r}"})
    if source.kind not in (Kind.HF, Kind.GGUF, Kind.MERGE):
        raise ValidationError({"member": f"{member!r} is a {source.kind} entry; only local weights can be fine-tuned"})
    row = Suite.objects.filter(team=team, name=suite).order_by("-created_at").first()
    if row is None:
        raise ValidationError({"suite": f"{team.name} has no suite named {suite!r}"})
    name = services._check_name(team, name)  # before training, not after
    try:
        backend: Any = backend_for(source)
        directory = backend.safetensors_dir()
        pairs = training_pairs(library_suite(row), "dev")
    except (BackendError, EnsembleError) as exc:
        raise ValidationError({"member" if isinstance(exc, BackendError) else "suite": str(exc)}) from None
    chat_template = source.config.get("chat_template", "auto")
    settings_used = {"member": member, "suite": f"{row.name} v{row.version}", "steps": steps, "seed": seed}
    target = built_dir(team.pk) / f"finetune-{slugify(name)}-{digest_json(settings_used)[:12]}"
    try:
        result = finetune(
            Path(directory),
            pairs,
            target,
            steps=steps,
            learning_rate=learning_rate,
            batch_size=batch_size,
            method=method,
            chat_template=chat_template,
            stop=(row.manifest.get("stop") or ["\n"])[0],
            seed=seed,
            provenance={"member": member, "member_fingerprint": backend.fingerprint(), "suite": settings_used["suite"]},
        )
    except EnsembleError as exc:
        raise ValidationError({"name": str(exc)}) from None
    description = f"{member} fine-tuned ({method}) on the dev split of {row.name} v{row.version}, {steps} steps"
    entry = services.register_model(
        team,
        name=name,
        kind=Kind.HF,
        config={"path": str(result.path), "chat_template": chat_template},
        user=user,
        description=description,
    )
    return entry, result
