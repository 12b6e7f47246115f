"""Every entry, single model or blend, served at an OpenAI-compatible endpoint.

`/v1/models`, `/v1/models/{id}` and `/v1/chat/completions` with a team API token as the bearer key,
so a team calls its best blend like one model. The handlers live in chat.py; the shapes in protocol.py.
"""

from __future__ import annotations

from django.http import JsonResponse
from django.views.decorators.csrf import csrf_exempt

from arena.serving import chat
from arena.serving.protocol import allow, model_card, token_required


@allow("GET")
@token_required
def models(request):
    team = request.auth.team
    data = [model_card(e.name, int(e.created_at.timestamp()), team.slug) for e in chat.servable_entries(team)]
    return JsonResponse({"object": "list", "data": data})


@allow("GET")
@token_required
def model(request, model_id: str):
    entry = chat.entry_for(request.auth, model_id)
    return JsonResponse(model_card(entry.name, int(entry.created_at.timestamp()), request.auth.team.slug))


# Bearer-token API: no cookies, so no CSRF to forge.
chat_completions = csrf_exempt(allow("POST")(token_required(chat.chat_completions)))
