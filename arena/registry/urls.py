from django.urls import path

from arena.registry import views

urlpatterns = [
    path("t/<slug:team>/entries/", views.register_entry, name="register_entry"),
    path("t/<slug:team>/entries/<int:entry_id>/materialize/", views.materialize, name="materialize"),
]
