from django.urls import path

from arena.alerts import views

urlpatterns = [
    # The webhook form lives on the Schedules page.
    path("t/<slug:team>/schedules/webhook/", views.webhook, name="webhook"),
]
