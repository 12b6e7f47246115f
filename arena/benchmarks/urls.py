from django.urls import path

from arena.benchmarks import views

urlpatterns = [
    path("t/<slug:team>/suites/", views.suite_list, name="suites"),
    path("t/<slug:team>/suites/upload/", views.suite_upload, name="suite_upload"),
    path("t/<slug:team>/suites/<int:suite_id>/", views.suite_detail, name="suite"),
    path("t/<slug:team>/suites/builtin/", views.add_builtin_suite, name="add_builtin_suite"),
]
