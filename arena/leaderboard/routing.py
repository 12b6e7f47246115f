from django.urls import path

from arena.leaderboard import consumers

websocket_urlpatterns = [
    path("ws/t/<slug:team>/runs/<int:run_id>/", consumers.RunConsumer.as_asgi()),
    path("ws/t/<slug:team>/leaderboard/<slug:suite>/", consumers.BoardConsumer.as_asgi()),
]
