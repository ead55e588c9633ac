"""Wire rivet_django into a project's Celery app (``RIVET["SCHEDULER"] = "celery"``).

In the project's ``celery.py``, next to the usual Django setup::

    from celery import Celery
    from rivet_django.celery import configure

    app = Celery("myproject")
    app.config_from_object("django.conf:settings", namespace="CELERY")
    app.autodiscover_tasks()
    configure(app)

then run ``celery -A myproject worker`` and ``celery -A myproject beat`` beside
the ``runactors`` nodes. Or, with ``CELERY_BEAT_SCHEDULE`` in settings, merge
:data:`BEAT_SCHEDULE` into it yourself. This module creates no Celery app of
its own, so importing it never changes which app is current.
"""

from __future__ import annotations

from typing import Any

__all__ = ["BEAT_SCHEDULE", "DISPATCH_INTERVAL", "configure"]

#: Seconds between two dispatch passes; a sleeping actor's schedule fires at most
#: about this much (plus its wake) after its due time.
DISPATCH_INTERVAL = 1.0

#: The beat entry of the Celery driver. ``expires`` drops passes a busy or stopped
#: worker could not start in time: a backlog of them would only find nothing to do.
BEAT_SCHEDULE: dict[str, dict[str, Any]] = {
    "rivet-dispatch-due-schedules": {
        "task": "rivet_django.tasks.dispatch_due_schedules",
        "schedule": DISPATCH_INTERVAL,
        "options": {"expires": 5 * DISPATCH_INTERVAL},
    }
}


def configure(app: Any) -> Any:
    """Add rivet_django's beat entry (and task module) to a Celery app; return the app."""
    app.conf.beat_schedule = {**BEAT_SCHEDULE, **(app.conf.beat_schedule or {})}
    app.conf.include = [*(app.conf.include or ()), "rivet_django.tasks"]
    return app
