"""Workflow history in the Django database (:class:`~rivet_django.models.WorkflowEntry`).

Every write is fenced by the actor's generation (the same check as KV and queue
writes) and is one transaction: the entry, the actor's state as the step left
it, the queue message a ``ctx.queue.next`` consumed, the pruning of a
finished loop iteration's entries and the queue messages given back with a
race's losing branches commit together or not at all.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from ..runtime.queue import StoredMessage
from .executor import DatabaseExecutor
from .store import DjangoActorStore

__all__ = ["DjangoWorkflowStore", "EntryRecord", "EntryRow", "EntryWrite"]


@dataclass
class EntryRecord:
    """One stored history entry."""

    location: str
    kind: str
    status: str
    output: bytes | None
    error: str = ""
    attempts: int = 0


@dataclass
class EntryRow:
    """One stored entry with its row id and times (what the inspector shows)."""

    id: int
    record: EntryRecord
    created_at: datetime
    updated_at: datetime


@dataclass
class EntryWrite:
    """What one workflow write stores, atomically."""

    entry: EntryRecord
    #: CBOR of the actor's state to store with the entry (None: leave it).
    state: bytes | None = None
    #: Delete every entry under these location prefixes (a finished loop iteration).
    prune: Sequence[str] = ()
    #: Delete this queue message (consumed by ``ctx.queue.next``).
    consume_message: int | None = None
    #: Put these consumed messages back in the queue, with their ids (a race's losing branches received them).
    restore_messages: Sequence[StoredMessage] = ()


class DjangoWorkflowStore:
    """Reads and fenced writes of one runtime's workflow history."""

    def __init__(self, executor: DatabaseExecutor) -> None:
        self.executor = executor

    async def load(self, actor_id: str) -> dict[str, EntryRecord]:
        return await self.executor.run(self._load, actor_id)

    @staticmethod
    def _load(actor_id: str) -> dict[str, EntryRecord]:
        from ..models import WorkflowEntry

        rows = WorkflowEntry.objects.filter(actor_id=actor_id).values_list(
            "location", "kind", "status", "output", "error", "attempts"
        )
        return {
            loc: EntryRecord(loc, kind, status, None if out is None else bytes(out), error, attempts)
            for loc, kind, status, out, error, attempts in rows
        }

    async def rows(self, actor_id: str) -> list[EntryRow]:
        """Every entry of the actor's history in the order it was first recorded (row ids only grow)."""
        return await self.executor.run(self._rows, actor_id)

    @staticmethod
    def _rows(actor_id: str) -> list[EntryRow]:
        from ..models import WorkflowEntry

        rows = WorkflowEntry.objects.filter(actor_id=actor_id).order_by("id")
        return [
            EntryRow(
                row.id,
                EntryRecord(
                    row.location,
                    row.kind,
                    row.status,
                    None if row.output is None else bytes(row.output),
                    row.error,
                    row.attempts,
                ),
                row.created_at,
                row.updated_at,
            )
            for row in rows
        ]

    async def delete(self, actor_id: str, generation: int, locations: Sequence[str]) -> None:
        """Delete these entries, in one transaction fenced by the actor's generation (a replay)."""
        await self.executor.run(self._delete, actor_id, generation, list(locations))

    @staticmethod
    def _delete(actor_id: str, generation: int, locations: list[str]) -> None:
        from ..models import WorkflowEntry

        with transaction.atomic():
            DjangoActorStore._check_owner(actor_id, generation)
            WorkflowEntry.objects.filter(actor_id=actor_id, location__in=locations).delete()

    async def write(self, actor_id: str, generation: int, write: EntryWrite) -> None:
        await self.executor.run(self._write, actor_id, generation, write)

    @staticmethod
    def _write(actor_id: str, generation: int, write: EntryWrite) -> None:
        from ..models import Actor, ActorQueueMessage, WorkflowEntry

        entry = write.entry
        with transaction.atomic():
            DjangoActorStore._check_owner(actor_id, generation)
            for prefix in write.prune:
                WorkflowEntry.objects.filter(actor_id=actor_id, location__startswith=prefix).delete()
            WorkflowEntry.objects.update_or_create(
                actor_id=actor_id,
                location=entry.location,
                defaults={
                    "kind": entry.kind,
                    "status": entry.status,
                    "output": entry.output,
                    "error": entry.error,
                    "attempts": entry.attempts,
                },
            )
            if write.state is not None:
                Actor.objects.filter(pk=actor_id, generation=generation).update(state=write.state)
            if write.consume_message is not None:
                ActorQueueMessage.objects.filter(actor_id=actor_id, pk=write.consume_message).delete()
            for message in write.restore_messages:
                # The original id keeps the message's place in the queue (ids only grow, so it is free).
                ActorQueueMessage.objects.create(
                    id=message.id, actor_id=actor_id, name=message.name, body=message.body, attempts=message.attempts
                )
                created = message.created_at if settings.USE_TZ else timezone.make_naive(message.created_at)
                # created_at is auto_now_add: set on create, so restored afterwards.
                ActorQueueMessage.objects.filter(pk=message.id).update(created_at=created)
