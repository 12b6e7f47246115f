from django.urls import path

from arena.evaluations import views

urlpatterns = [
    path("t/<slug:team>/runs/", views.start_run, name="start_run"),
    path("t/<slug:team>/runs/<int:run_id>/", views.run_detail, name="run"),
    path("t/<slug:team>/runs/<int:run_id>/retry/", views.retry_run, name="retry_run"),
    path("t/<slug:team>/runs/<int:run_id>/delete/", views.delete_run, name="delete_run"),
    path("t/<slug:team>/runs/<int:run_id>/items/", views.run_items, name="run_items"),
    path("t/<slug:team>/runs/<int:run_id>/items/<int:item_id>/", views.item_detail, name="item"),
]
