from django.urls import path

from arena.deployment import views

urlpatterns = [
    path("healthz", views.healthz, name="healthz"),
    path("ops/", views.ops, name="ops"),
]
