from django.urls import path

from arena.leaderboard import views

urlpatterns = [
    path("t/<slug:team>/", views.dashboard, name="dashboard"),
    path("t/<slug:team>/leaderboard/", views.leaderboards, name="leaderboards"),
    path("t/<slug:team>/leaderboard/<slug:suite>/", views.leaderboard, name="leaderboard"),
    path("t/<slug:team>/compare/", views.compare, name="compare"),
    path("t/<slug:team>/entries/<int:entry_id>/", views.entry_detail, name="entry"),
]
