"""Celery tasks of rivet_django (``RIVET["SCHEDULER"] = "celery"``).

Found by ``app.autodiscover_tasks()`` in a project's Celery app; the beat entry
that runs :func:`dispatch_due_schedules` every second comes from
:func:`rivet_django.celery.configure` (or ``rivet_django.celery.BEAT_SCHEDULE``).
"""

from __future__ import annotations

from celery import shared_task

__all__ = ["dispatch_due_schedules"]


@shared_task(name="rivet_django.tasks.dispatch_due_schedules", ignore_result=True)
def dispatch_due_schedules() -> int:
    """Claim due actor schedules and send each to the node that runs it; return how many were sent."""
    from .storage.schedules import dispatch_due

    return dispatch_due()
