"""The Celery app: JSON only, late acks, one task at a time per GPU worker process."""

import os

from celery import Celery
from celery.signals import beat_init, task_postrun, task_prerun, worker_process_init

from arena.core import logs
from arena.deployment import heartbeat

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "arena.settings")

app = Celery("arena")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

# Every process that runs tasks reports itself, its queues and its loaded models (/ops/);
# so does the beat.
worker_process_init.connect(heartbeat.start)
beat_init.connect(heartbeat.start_beat)
task_prerun.connect(heartbeat.on_task_start)
task_postrun.connect(heartbeat.on_task_end)
# Log records of a task carry its run (arena/core/logs.py).
task_prerun.connect(logs.bind_run)
task_postrun.connect(logs.unbind_run)


@worker_process_init.connect
def _limit_torch_threads(**kwargs) -> None:
    # Several worker processes on one CPU each spinning a full thread pool slow every batch
    # down several times over; `manage.py up` says how many threads each process may use.
    threads = os.environ.get("ARENA_TORCH_THREADS")
    if threads:
        import torch

        torch.set_num_threads(int(threads))
