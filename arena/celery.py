"""The Celery app: JSON only, late acks, one task at a time per GPU worker process."""

import os

from celery import Celery
from celery.signals import worker_process_init

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "arena.settings")

app = Celery("arena")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@worker_process_init.connect
def _limit_torch_threads(**kwargs) -> None:
    # Several worker processes on one CPU each spinning a full thread pool slow every batch
    # down several times over; `manage.py up` says how many threads each process may use.
    threads = os.environ.get("ARENA_TORCH_THREADS")
    if threads:
        import torch

        torch.set_num_threads(int(threads))
