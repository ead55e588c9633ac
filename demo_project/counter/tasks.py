"""A Celery task calling an actor: a worker is not a node, so ``Client.local()`` forwards to one."""

from __future__ import annotations

from celery import shared_task

from rivet_django.client import Client


@shared_task(name="counter.tasks.increment_counter")
def increment_counter(key: str, amount: int = 1) -> int:
    return int(Client.local().counter.get_or_create([key]).increment(amount))
