"""Thin Celery wrappers: take ids, call a service; transient errors are retried by the policy in arena/core/retry.py."""

from __future__ import annotations

from celery import shared_task

from arena.alerts import services
from arena.core.logs import tags_run
from arena.core.retry import RETRY, retry_policy


@shared_task(**RETRY)
@tags_run(lambda run_id: run_id)
def check_regressions(run_id: int) -> None:
    services.check_regressions(run_id)


# Attempts are counted on the notice (ARENA_NOTICE_ATTEMPTS), across retries and the sweep's resends, so
# the task retries without a limit of its own; a send the channel did not take waits the notice's backoff.
@shared_task(bind=True, **retry_policy(max_retries=None))
def send_notice(self, notice_id: int) -> None:
    try:
        services.send_notice(notice_id)
    except services.NoticeRetry as exc:
        raise self.retry(countdown=exc.countdown) from exc


@shared_task(**RETRY)
def resend_overdue() -> int:
    return services.resend_overdue()
