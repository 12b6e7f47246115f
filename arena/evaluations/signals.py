"""Signals other apps listen to, so the run flow does not need to know about them."""

from django.dispatch import Signal

# Sent once per run, when it closes (done or failed), with ``run``.
run_finished = Signal()
