from django.urls import path

from arena.benchmarks import views

urlpatterns = [
    path("t/<slug:team>/suites/", views.suite_list, name="suites"),
    path("t/<slug:team>/suites/upload/", views.suite_upload, name="suite_upload"),
    path("t/<slug:team>/suites/<int:suite_id>/", views.suite_detail, name="suite"),
    path("t/<slug:team>/suites/builtin/", views.add_builtin_suite, name="add_builtin_suite"),
    path("t/<slug:team>/suites/<int:suite_id>/archive/", views.archive_suite, {"archived": True}, name="archive_suite"),
    path(
        "t/<slug:team>/suites/<int:suite_id>/unarchive/",
        views.archive_suite,
        {"archived": False},
        name="unarchive_suite",
    ),
    path("t/<slug:team>/suites/<int:suite_id>/delete/", views.delete_suite, name="delete_suite"),
]
