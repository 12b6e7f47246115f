from django.urls import path

from arena.serving import views

urlpatterns = [
    path("v1/models", views.models, name="openai_models"),
    path("v1/chat/completions", views.chat_completions, name="openai_chat"),
]
