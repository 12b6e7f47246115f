from django.urls import path

from arena.search import views

urlpatterns = [
    path("t/<slug:team>/runs/<int:run_id>/searches/", views.run_searches, name="run_searches"),
    path("t/<slug:team>/searches/<int:search_id>/", views.search_detail, name="search"),
    path("t/<slug:team>/searches/<int:search_id>/register/", views.register, name="search_register"),
]
