from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from arena.api import api
from arena.teams import views as teams

urlpatterns = [
    path("", teams.home, name="home"),
    path("", include("arena.deployment.urls")),
    path("admin/", admin.site.urls),
    path("api/v1/", api.urls),
    path("", include("arena.serving.urls")),
    path("login/", auth_views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("signup/", teams.signup, name="signup"),
    path("teams/new/", teams.new_team, name="new_team"),
    path("invite/<str:token>/", teams.accept_invite, name="accept_invite"),
    path("t/<slug:team>/admin/", teams.team_admin, name="team_admin"),
    path("t/<slug:team>/delete/", teams.delete_team, name="delete_team"),
    path("", include("arena.leaderboard.urls")),
    path("", include("arena.benchmarks.urls")),
    path("", include("arena.evaluations.urls")),
    path("", include("arena.schedules.urls")),
    path("", include("arena.alerts.urls")),
    path("", include("arena.registry.urls")),
    path("", include("arena.search.urls")),
]

# Plain pages, or JSON in the API's and /v1's error shapes; never a traceback or the URL patterns.
handler400 = "arena.core.errors.bad_request"
handler403 = "arena.core.errors.permission_denied"
handler404 = "arena.core.errors.page_not_found"
handler500 = "arena.core.errors.server_error"
