"""JSON API for suites: the team's suites, adding a built-in one, uploading one.

Suites are listed within the token's team; an upload imports whole or not at all.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from django.core.exceptions import ValidationError
from django.db.models import Count
from django.http import Http404
from ninja import Field, Router, Schema

from arena.benchmarks import lifecycle
from arena.benchmarks.models import Suite
from arena.benchmarks.services import UploadedText, import_suite, upload_suite
from arena.teams.access import require_role
from arena.teams.models import Role
from ensembles.errors import EnsembleError
from ensembles.suites import get_builtin
from ensembles.suites.importers import DEFAULT_FORMAT, upload_format, upload_formats

router = Router()

# The upload formats the library registers; the schema lists them, so an unknown one is a 422.
_FORMATS = upload_formats()
UploadFormat = Literal[tuple(fmt.name for fmt in _FORMATS)]  # type: ignore[valid-type]


class SuiteOut(Schema):
    id: int
    name: str
    version: str
    content_hash: str
    task_type: str
    items: int
    archived_at: datetime | None = None


class BuiltinSuiteIn(Schema):
    name: str = Field(..., min_length=1, max_length=64)
    seed: int = Field(0, ge=0, le=2**31 - 1)
    size: int | None = Field(None, ge=2, le=10000)


class SuiteUploadIn(Schema):
    format: UploadFormat = Field(
        DEFAULT_FORMAT,
        description="; ".join(f"{fmt.name}: {fmt.summary}, as {', '.join(fmt.file_keys())}" for fmt in _FORMATS),
    )
    files: dict[str, str] = Field(..., description="file role -> file text (see format)")
    filenames: dict[str, str] = Field({}, description="file role -> file name, for error messages")
    name: str | None = Field(
        None,
        max_length=64,
        description=f"suite name ({', '.join(fmt.name for fmt in _FORMATS if 'name' in fmt.options)})",
    )
    seed: int = Field(0, ge=0, le=2**31 - 1, description="seed of the dev/test split where the data has none")
    columns: dict[str, Any] | None = Field(None, description="csv: column mapping (input, reference or choices+gold)")
    metric: str | None = Field(None, max_length=40)
    prompt_template: str | None = Field(None, max_length=10000)
    answer_extraction: str | None = Field(None, max_length=40)
    scoring: Literal["loglikelihood", "loglikelihood_norm", "generate"] | None = Field(
        None,
        description="bigbench: how multiple-choice tasks are answered, by each option's log-likelihood "
        "(the default; _norm per character) or by generating an option letter",
    )


@router.get("/suites", response=list[SuiteOut])
def list_suites(request):
    qs = Suite.objects.filter(team=request.auth.team).annotate(n=Count("items"))
    return [_suite_out(s, items=s.n) for s in qs]


@router.post("/suites/builtin", response={201: SuiteOut})
def add_builtin_suite(request, body: BuiltinSuiteIn):
    """Add one of the project's generated suites (reproducible from its seed) to the team."""
    require_role(request, Role.MEMBER)
    try:
        lib = get_builtin(body.name, seed=body.seed, size=body.size)
    except EnsembleError as exc:
        raise ValidationError({"name" if isinstance(exc, KeyError) else "size": str(exc)}) from None
    return 201, _suite_out(import_suite(request.auth.team, lib))


def _suite_out(s: Suite, items: int | None = None) -> dict:
    return {
        "id": s.pk,
        "name": s.name,
        "version": s.version,
        "content_hash": s.content_hash,
        "task_type": s.task_type,
        "items": s.items.count() if items is None else items,
        "archived_at": s.archived_at,
    }


@router.post("/suites", response={200: SuiteOut, 201: SuiteOut})
def upload(request, body: SuiteUploadIn):
    """Upload a suite; it imports whole or not at all. The same content again answers 200 with the same suite.

    Errors answer 422 with the file and line of the first problem.
    """
    require_role(request, Role.MEMBER)
    fmt = upload_format(body.format)
    roles = fmt.file_keys()
    unknown = sorted(set(body.files) - set(roles))
    if unknown:
        raise ValidationError(
            {"files": f"{body.format} uploads take {', '.join(roles)}; unknown: {', '.join(unknown)}"}
        )
    default_names = {file.key: file.default_name for file in fmt.files}
    files = {
        role: UploadedText(body.filenames.get(role) or default_names[role], text) for role, text in body.files.items()
    }
    options = body.dict(
        include={"name", "seed", "columns", "metric", "prompt_template", "answer_extraction", "scoring"}
    )
    suite, created = upload_suite(request.auth.team, body.format, files, options)
    return (201 if created else 200), _suite_out(suite)


def _suite(request, suite_id: int) -> Suite:
    suite = Suite.objects.filter(team=request.auth.team, pk=suite_id).first()
    if suite is None:
        raise Http404("not found")
    return suite


@router.post("/suites/{suite_id}/archive", response=SuiteOut)
def archive_suite(request, suite_id: int):
    """Take a suite version off the boards and the run pickers; its runs keep their results."""
    require_role(request, Role.MEMBER)
    suite = _suite(request, suite_id)
    lifecycle.archive(suite)
    return _suite_out(suite)


@router.post("/suites/{suite_id}/unarchive", response=SuiteOut)
def unarchive_suite(request, suite_id: int):
    require_role(request, Role.MEMBER)
    suite = _suite(request, suite_id)
    lifecycle.unarchive(suite)
    return _suite_out(suite)


@router.delete("/suites/{suite_id}", response=dict[str, Any])
def delete_suite(request, suite_id: int):
    """Delete a suite version with its items and runs; 409 while a run on it has not finished.
    Answers what went with it."""
    require_role(request, Role.MEMBER)
    return {"deleted": lifecycle.delete(_suite(request, suite_id)).as_dict()}
