"""The JSON API (django-ninja: pydantic schemas and an OpenAPI document at /api/v1/docs), assembled
from each app's router.

Authenticated by a team API token as a bearer key; every object is looked up within the
token's team, so other teams' ids answer 404.
"""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import DataError
from django.http import Http404
from ninja import NinjaAPI
from ninja.security import HttpBearer

from arena.alerts.api import router as alerts_router
from arena.benchmarks.api import router as benchmarks_router
from arena.core.lifecycle import Refused
from arena.core.middleware import unstorable_reason
from arena.evaluations.api import router as evaluations_router
from arena.leaderboard.api import router as leaderboard_router
from arena.registry.api import router as registry_router
from arena.schedules.api import router as schedules_router
from arena.search.api import router as search_router
from arena.serving import openapi as serving_openapi
from arena.serving.api import router as serving_router
from arena.teams.models import ApiToken
from arena.teams.services import TokenRefused, authenticate_request
from ensembles.errors import SuiteError


class TokenAuth(HttpBearer):
    """`Authorization: Bearer <token>`, read by the same function as /v1 reads it (which also
    counts bad tokens per address: TokenRefused is a 401 or a 429)."""

    def __call__(self, request) -> ApiToken | None:
        return authenticate_request(request)

    def authenticate(self, request, token: str) -> ApiToken | None:
        # Never reached through __call__ above; kept so the scheme reads the same header the same way.
        return authenticate_request(request)


class ArenaAPI(NinjaAPI):
    """The API whose document also describes /v1, the OpenAI-compatible endpoint beside it, so that one
    docs page (/api/v1/docs) covers every operation a team token opens."""

    def get_openapi_schema(self, *, path_prefix=None, path_params=None):
        schema = super().get_openapi_schema(path_prefix=path_prefix, path_params=path_params)
        security = [{name: []} for name in schema["components"].get("securitySchemes", {})]
        paths, components = serving_openapi.document(security)
        schema["paths"].update(paths)
        schema["components"].setdefault("schemas", {}).update(components)
        return schema


api = ArenaAPI(title="Ensemble Arena", version="1", auth=TokenAuth(), urls_namespace="api")
# Entries, blends and merges' materialization.
api.add_router("/", registry_router)
# Suites: listing, built-in ones, uploads.
api.add_router("/", benchmarks_router)
# Runs: starting one, its snapshot.
api.add_router("/", evaluations_router)
# A suite's ranking.
api.add_router("/", leaderboard_router)
# Schedules and the queue.
api.add_router("/", schedules_router)
# The team's regression webhook.
api.add_router("/", alerts_router)
# Blend searches over a finished run.
api.add_router("/", search_router)
# Shadow comparison of served entries.
api.add_router("/", serving_router)


@api.exception_handler(ValidationError)
def validation_error(request, exc: ValidationError):
    detail = exc.message_dict if hasattr(exc, "message_dict") else {"__all__": exc.messages}
    return api.create_response(request, {"detail": detail}, status=422)


@api.exception_handler(TokenRefused)
def token_refused(request, exc: TokenRefused):
    response = api.create_response(request, {"detail": exc.message}, status=exc.status)
    for name, value in exc.headers.items():
        response[name] = value
    return response


@api.exception_handler(Refused)
def refused(request, exc: Refused):
    # An archive or deletion that cannot be done now (in use, unfinished): the message says what to do.
    return api.create_response(request, {"detail": str(exc)}, status=409)


@api.exception_handler(Http404)
def not_found(request, exc):
    return api.create_response(request, {"detail": "not found"}, status=404)


@api.exception_handler(DataError)
def unstorable(request, exc: DataError):
    # A value the database cannot hold (a NUL character, a number out of range) is the client's to fix.
    return api.create_response(request, {"detail": f"a value cannot be stored: {unstorable_reason(exc)}"}, status=422)


@api.exception_handler(SuiteError)
def suite_error(request, exc: SuiteError):
    detail = {"error": str(exc), "message": exc.message, "file": exc.file, "line": exc.line}
    return api.create_response(request, {"detail": detail}, status=422)
