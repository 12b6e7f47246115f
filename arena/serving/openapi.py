"""/v1 in OpenAPI terms, so the API docs (/api/v1/docs) show it beside /api/v1.

/v1 is plain Django views (it speaks OpenAI's shapes, errors included, not django-ninja's), so its
operations are described here from the same pydantic models that parse its requests, and
arena/api.py merges them into the document it serves. Described only: nothing here routes.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from arena.serving.completions import CompletionRequest
from arena.serving.protocol import ChatRequest

TAG = "OpenAI-compatible (/v1)"
REF = "#/components/schemas/{model}"

ERROR = {
    "type": "object",
    "description": "OpenAI's error shape: the SDK picks its exception class by the status",
    "properties": {
        "error": {
            "type": "object",
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"type": ["string", "null"]},
                "code": {"type": ["string", "null"]},
            },
        }
    },
}
MODEL = {
    "type": "object",
    "properties": {
        "id": {"type": "string", "description": "the entry's name"},
        "object": {"type": "string", "const": "model"},
        "created": {"type": "integer"},
        "owned_by": {"type": "string", "description": "the team's slug"},
    },
}
ANSWER = {
    "type": "object",
    "description": "OpenAI's answer shape, with `arena`: its latency and, for a blend, how it decided",
    "properties": {
        "id": {"type": "string"},
        "object": {"type": "string"},
        "created": {"type": "integer"},
        "model": {"type": "string"},
        "choices": {"type": "array", "items": {"type": "object"}},
        "usage": {"type": "object"},
    },
}


def _json(schema: dict) -> dict:
    return {"application/json": {"schema": schema}}


def _responses(ok: dict, ok_type: str = "application/json") -> dict:
    statuses = {
        "400": "the request cannot be honoured (the parameter is named)",
        "401": "no team API token, or an unknown one",
        "404": "no such model in the token's team",
        "422": "the model could not answer",
        "429": "too many bad tokens from this address",
    }
    return {
        "200": {"description": "OK", "content": {ok_type: {"schema": ok}}},
        **{status: {"description": text, "content": _json(ERROR)} for status, text in statuses.items()},
    }


def _body(model: type[BaseModel], components: dict) -> dict:
    schema = model.model_json_schema(ref_template=REF)
    components.update(schema.pop("$defs", {}))
    components[model.__name__] = schema
    return {"required": True, "content": _json({"$ref": REF.format(model=model.__name__)})}


def document(security: list[dict]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(paths, component schemas) of /v1; ``security`` is the document's bearer-token requirement."""
    components: dict[str, Any] = {}
    common = {"tags": [TAG], "security": security}
    listed = {"type": "object", "properties": {"object": {"type": "string"}, "data": {"type": "array", "items": MODEL}}}
    paths = {
        "/v1/models": {
            "get": {
                **common,
                "operationId": "v1_models",
                "summary": "The team's servable entries, single models and blends",
                "responses": _responses(listed),
            }
        },
        "/v1/models/{model_id}": {
            "get": {
                **common,
                "operationId": "v1_model",
                "summary": "One entry as a model",
                "parameters": [{"name": "model_id", "in": "path", "required": True, "schema": {"type": "string"}}],
                "responses": _responses(MODEL),
            }
        },
        "/v1/chat/completions": {
            "post": {
                **common,
                "operationId": "v1_chat_completions",
                "summary": "Chat with any entry; `stream: true` answers as Server-Sent Events",
                "requestBody": _body(ChatRequest, components),
                "responses": _responses(ANSWER),
            }
        },
        "/v1/completions": {
            "post": {
                **common,
                "operationId": "v1_completions",
                "summary": "Complete a prompt (or token ids) with any entry",
                "requestBody": _body(CompletionRequest, components),
                "responses": _responses(ANSWER),
            }
        },
    }
    return paths, components
