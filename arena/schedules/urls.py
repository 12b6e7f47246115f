from django.urls import path

from arena.schedules import views

urlpatterns = [
    path("t/<slug:team>/schedules/", views.schedule_list, name="schedules"),
    path("t/<slug:team>/schedules/<int:schedule_id>/", views.schedule_detail, name="schedule"),
    path("t/<slug:team>/schedules/<int:schedule_id>/delete/", views.schedule_delete, name="schedule_delete"),
    path("t/<slug:team>/schedules/<int:schedule_id>/run/", views.schedule_run, name="schedule_run"),
    path("t/<slug:team>/queue/", views.queue, name="queue"),
]
