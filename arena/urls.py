from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from arena.benchmarks import views as suites
from arena.core.views import healthz, ops
from arena.leaderboard import serving
from arena.leaderboard import views as board
from arena.leaderboard.api import api
from arena.teams import views as teams

urlpatterns = [
    path("", teams.home, name="home"),
    path("healthz", healthz, name="healthz"),
    path("ops/", ops, name="ops"),
    path("admin/", admin.site.urls),
    path("api/v1/", api.urls),
    path("v1/models", serving.models, name="openai_models"),
    path("v1/chat/completions", serving.chat_completions, name="openai_chat"),
    path("login/", auth_views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("signup/", teams.signup, name="signup"),
    path("teams/new/", teams.new_team, name="new_team"),
    path("invite/<str:token>/", teams.accept_invite, name="accept_invite"),
    path("t/<slug:team>/", board.dashboard, name="dashboard"),
    path("t/<slug:team>/admin/", teams.team_admin, name="team_admin"),
    path("t/<slug:team>/entries/", board.register_entry, name="register_entry"),
    path("t/<slug:team>/entries/<int:entry_id>/", board.entry_detail, name="entry"),
    path("t/<slug:team>/suites/", suites.suite_list, name="suites"),
    path("t/<slug:team>/suites/upload/", suites.suite_upload, name="suite_upload"),
    path("t/<slug:team>/suites/<int:suite_id>/", suites.suite_detail, name="suite"),
    path("t/<slug:team>/suites/builtin/", board.add_builtin_suite, name="add_builtin_suite"),
    path("t/<slug:team>/runs/", board.start_run, name="start_run"),
    path("t/<slug:team>/runs/<int:run_id>/", board.run_detail, name="run"),
    path("t/<slug:team>/runs/<int:run_id>/items/", board.run_items, name="run_items"),
    path("t/<slug:team>/runs/<int:run_id>/items/<int:item_id>/", board.item_detail, name="item"),
    path("t/<slug:team>/leaderboard/", board.leaderboards, name="leaderboards"),
    path("t/<slug:team>/leaderboard/<slug:suite>/", board.leaderboard, name="leaderboard"),
    path("t/<slug:team>/compare/", board.compare, name="compare"),
    path("", include("arena.schedules.urls")),
    path("", include("arena.registry.urls")),
    path("", include("arena.search.urls")),
]
