"""The Django ORM implementation of :class:`~rivet_django.runtime.queue.QueueStore`.

Messages live in :class:`~rivet_django.models.ActorQueueMessage`, ordered by
their auto-increment id. Every write is fenced by the actor's generation (the
same check as KV writes), so a node that lost an actor can neither add to nor
take from its queue.
"""

from __future__ import annotations

from collections.abc import Sequence

from django.db import transaction
from django.db.models import F

from ..runtime.queue import QueueStore, StoredMessage
from .executor import DatabaseExecutor
from .store import DjangoActorStore

__all__ = ["DjangoQueueStore"]


class DjangoQueueStore(QueueStore):
    """Queue messages in the Django database, run on the runtime's :class:`DatabaseExecutor`."""

    def __init__(self, executor: DatabaseExecutor) -> None:
        self.executor = executor

    async def load(self, actor_id: str) -> list[StoredMessage]:
        return await self.executor.run(self._load, actor_id)

    @staticmethod
    def _load(actor_id: str) -> list[StoredMessage]:
        from ..models import ActorQueueMessage

        rows = (
            ActorQueueMessage.objects.filter(actor_id=actor_id)
            .order_by("id")
            .values_list("id", "name", "body", "created_at", "attempts")
        )
        return [StoredMessage(pk, name, bytes(body), created, attempts) for pk, name, body, created, attempts in rows]

    async def insert(self, actor_id: str, generation: int, name: str, body: bytes, waiting: bool) -> StoredMessage:
        return await self.executor.run(self._insert, actor_id, generation, name, body, waiting)

    @staticmethod
    def _insert(actor_id: str, generation: int, name: str, body: bytes, waiting: bool) -> StoredMessage:
        from ..models import ActorQueueMessage

        with transaction.atomic():
            DjangoActorStore._check_owner(actor_id, generation)
            row = ActorQueueMessage.objects.create(actor_id=actor_id, name=name, body=body, waiting=waiting)
        return StoredMessage(row.pk, name, body, row.created_at, 0)

    async def settle(
        self, actor_id: str, generation: int, *, remove: Sequence[int] = (), delivered: Sequence[int] = ()
    ) -> None:
        await self.executor.run(self._settle, actor_id, generation, list(remove), list(delivered))

    @staticmethod
    def _settle(actor_id: str, generation: int, remove: list[int], delivered: list[int]) -> None:
        from ..models import ActorQueueMessage

        with transaction.atomic():
            DjangoActorStore._check_owner(actor_id, generation)
            if remove:
                ActorQueueMessage.objects.filter(actor_id=actor_id, pk__in=remove).delete()
            if delivered:
                ActorQueueMessage.objects.filter(actor_id=actor_id, pk__in=delivered).update(attempts=F("attempts") + 1)

    async def actors_with_messages(self, limit: int) -> list[tuple[str, str]]:
        return await self.executor.run(self._actors_with_messages, limit)

    @staticmethod
    def _actors_with_messages(limit: int) -> list[tuple[str, str]]:
        from ..models import ActorQueueMessage

        rows = (
            ActorQueueMessage.objects.filter(actor__destroyed_at__isnull=True)
            .order_by("actor_id")
            .values_list("actor_id", "actor__name")
            .distinct()[:limit]
        )
        return [(actor_id, name) for actor_id, name in rows]
