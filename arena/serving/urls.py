from django.urls import path

from arena.serving import completions, views

urlpatterns = [
    path("v1/models", views.models, name="openai_models"),
    # Entry names may hold a slash (org/name), as OpenAI's SDK sends a model id unquoted.
    path("v1/models/<path:model_id>", views.model, name="openai_model"),
    path("v1/chat/completions", views.chat_completions, name="openai_chat"),
    path("v1/completions", completions.completions, name="openai_completions"),
    path("t/<slug:team>/entries/<int:entry_id>/shadow/", views.entry_shadow, name="entry_shadow"),
]
