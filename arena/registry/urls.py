from django.urls import path

from arena.registry import views

urlpatterns = [
    path("t/<slug:team>/entries/", views.register_entry, name="register_entry"),
    path("t/<slug:team>/entries/<int:entry_id>/materialize/", views.materialize, name="materialize"),
    path(
        "t/<slug:team>/entries/<int:entry_id>/archive/", views.archive_entry, {"archived": True}, name="archive_entry"
    ),
    path(
        "t/<slug:team>/entries/<int:entry_id>/unarchive/",
        views.archive_entry,
        {"archived": False},
        name="unarchive_entry",
    ),
    path("t/<slug:team>/entries/<int:entry_id>/delete/", views.delete_entry, name="delete_entry"),
]
