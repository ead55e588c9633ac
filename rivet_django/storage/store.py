"""The Django ORM implementation of :class:`~rivet_django.runtime.store.ActorStore`."""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.utils import timezone

from ..exceptions import ActorElsewhere, DuplicateKey, LostOwnership
from ..runtime.store import ActorRecord, ActorStore, ClaimedActor, StateWrite
from .executor import DatabaseExecutor

__all__ = ["DjangoActorStore", "NodeInfo", "key_hash", "new_actor_id"]


@dataclass(frozen=True)
class NodeInfo:
    """A live node as the ``Node`` table shows it."""

    node_id: str
    #: The node's API endpoint (``http://host:port/api/rivet``); empty for processes
    #: that host actors without serving (a standalone script).
    address: str
    heartbeat_at: datetime | None
    #: Actors it holds a live lease on.
    actors: int


_RECORD_FIELDS = ("id", "namespace", "name", "key", "created_at", "started_at", "slept_at", "destroyed_at")


def key_hash(namespace: str, name: str, key: Sequence[str]) -> str:
    """The unique hash of an actor's address (namespace, name, key)."""
    raw = json.dumps([namespace, name, list(key)], separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(raw.encode()).hexdigest()


def new_actor_id() -> str:
    """A random actor id: 20 lower-case hex characters."""
    return secrets.token_hex(10)


def _ms(value: datetime | None) -> int | None:
    return None if value is None else int(value.timestamp() * 1000)


def _record(row: dict[str, Any]) -> ActorRecord:
    return ActorRecord(
        actor_id=row["id"],
        # Shared by many actors: one string each, not one per awake actor.
        namespace=sys.intern(row["namespace"]),
        name=sys.intern(row["name"]),
        key=tuple(row["key"]),
        created_ms=_ms(row["created_at"]) or 0,
        started_ms=_ms(row["started_at"]),
        slept_ms=_ms(row["slept_at"]),
        destroyed_ms=_ms(row["destroyed_at"]),
    )


def _bytes(value: Any) -> bytes | None:
    return None if value is None else bytes(value)


#: State changes per UPDATE statement of a group commit (see _write_states).
_STATE_CHUNK = 64


def _write_states(cursor: Any, writes: Sequence[StateWrite], stamp: Any) -> set[str]:
    """Store the new state of each actor in ``writes`` (distinct actors) in one UPDATE,
    each conditional on its generation; the ids whose generation moved on (fenced).

    The hot path of a group commit: one statement, not one per actor, because every
    statement costs the storage thread a round trip through the GIL (and a thread switch)
    against a busy event loop. Batches are padded to a power of two by repeating the
    last write, so a handful of statements are prepared and cached, not one per size.
    """
    from ..models import Actor

    table = cursor.db.ops.quote_name(Actor._meta.db_table)
    size = 1 << (len(writes) - 1).bit_length()
    padded = [*writes, *[writes[-1]] * (size - len(writes))]
    arms = " ".join(["WHEN %s THEN %s"] * size)
    sql = (
        f"UPDATE {table} SET state = CASE id {arms} END, last_active_at = %s "
        f"WHERE id IN ({', '.join(['%s'] * size)}) AND generation = CASE id {arms} END"
    )
    params: list[Any] = []
    for w in padded:
        params += (w.actor_id, w.state)
    params.append(stamp)
    params += (w.actor_id for w in padded)
    for w in padded:
        params += (w.actor_id, w.generation)
    cursor.execute(sql, params)
    if cursor.rowcount == len(writes):
        return set()
    # Some lost ownership (rare): find which, by their current generation.
    ids = [w.actor_id for w in writes]
    current = dict(Actor.objects.filter(pk__in=ids).values_list("pk", "generation"))
    return {w.actor_id for w in writes if current.get(w.actor_id) != w.generation}


@dataclass
class _SegmentAppend:
    actor_id: str
    generation: int
    segments: list[tuple[str, int, int, bytes]]
    drop_before: int | None


class _SegmentBatcher:
    """Group commit of actors' database segments (the shared backend of ``self.db``):
    appends that arrive while one transaction is being written go together in the next,
    as the runtime's committer does for state. Each is fenced on its own."""

    def __init__(self, store: DjangoActorStore) -> None:
        self.store = store
        self._pending: list[tuple[_SegmentAppend, asyncio.Future[None]]] = []
        self._task: asyncio.Task[None] | None = None

    async def append(self, item: _SegmentAppend) -> None:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self._pending.append((item, future))
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._drain(), name="rivet-db-segments")
        await future

    async def _drain(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            try:
                fenced = await self.store.executor.run(self.store._db_append_many, [item for item, _ in batch])
            except Exception as exc:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for item, future in batch:
                if not future.done():
                    if item.actor_id in fenced:
                        future.set_exception(LostOwnership())
                    else:
                        future.set_result(None)


class DjangoActorStore(ActorStore):
    """Actor storage in the Django database, run on a :class:`DatabaseExecutor`."""

    def __init__(self, executor: DatabaseExecutor | None = None, *, threads: int = 1) -> None:
        self.executor = executor or DatabaseExecutor(threads)
        self._segment_batcher: _SegmentBatcher | None = None

    # -- lookups ----------------------------------------------------------------

    async def get_by_id(self, actor_id: str) -> ActorRecord | None:
        return await self.executor.run(self._get_by_id, actor_id)

    @staticmethod
    def _get_by_id(actor_id: str) -> ActorRecord | None:
        from ..models import Actor

        row = Actor.objects.filter(pk=actor_id).values(*_RECORD_FIELDS).first()
        return None if row is None else _record(row)

    async def get_by_key(self, namespace: str, name: str, key: Sequence[str]) -> ActorRecord | None:
        return await self.executor.run(self._get_by_key, namespace, name, key)

    @staticmethod
    def _get_by_key(namespace: str, name: str, key: Sequence[str]) -> ActorRecord | None:
        from ..models import Actor

        row = Actor.objects.filter(key_hash=key_hash(namespace, name, key)).values(*_RECORD_FIELDS).first()
        return None if row is None else _record(row)

    async def list_by_name(self, namespace: str, name: str, limit: int = 1000) -> list[ActorRecord]:
        return await self.executor.run(self._list_by_name, namespace, name, limit)

    @staticmethod
    def _list_by_name(namespace: str, name: str, limit: int) -> list[ActorRecord]:
        from ..models import Actor

        rows = (
            Actor.objects.filter(namespace=namespace, name=name, destroyed_at__isnull=True)
            .order_by("created_at")
            .values(*_RECORD_FIELDS)[:limit]
        )
        return [_record(row) for row in rows]

    # -- creation ---------------------------------------------------------------

    async def create(self, namespace: str, name: str, key: Sequence[str], input: bytes | None) -> ActorRecord:
        return await self.executor.run(self._create, namespace, name, key, input)

    @staticmethod
    def _create(namespace: str, name: str, key: Sequence[str], input: bytes | None) -> ActorRecord:
        from ..models import Actor

        now = timezone.now()
        actor = Actor(
            id=new_actor_id(),
            namespace=namespace,
            name=name,
            key=list(key),
            key_hash=key_hash(namespace, name, key),
            input=input,
            inspector_token=secrets.token_urlsafe(24),
            last_active_at=now,
        )
        try:
            with transaction.atomic():
                actor.save(force_insert=True)
        except IntegrityError:
            raise DuplicateKey(f"Actor {name!r} with key {list(key)!r} already exists") from None
        return _record(
            {
                "id": actor.id,
                "namespace": namespace,
                "name": name,
                "key": list(key),
                "created_at": actor.created_at,
                "started_at": None,
                "slept_at": None,
                "destroyed_at": None,
            }
        )

    async def get_or_create(
        self, namespace: str, name: str, key: Sequence[str], input: bytes | None
    ) -> tuple[ActorRecord, bool]:
        return await self.executor.run(self._get_or_create, namespace, name, key, input)

    def _get_or_create(
        self, namespace: str, name: str, key: Sequence[str], input: bytes | None
    ) -> tuple[ActorRecord, bool]:
        # Two tries: a concurrent creator on another node can win between the
        # lookup and the insert; then the second lookup finds its actor.
        for _ in range(2):
            record = self._get_by_key(namespace, name, key)
            if record is not None:
                return record, False
            try:
                return self._create(namespace, name, key, input), True
            except DuplicateKey:
                continue
        raise DuplicateKey(f"Actor {name!r} with key {list(key)!r} is being created concurrently")

    # -- ownership --------------------------------------------------------------

    async def claim(self, actor_id: str, node_id: str, lease_seconds: float) -> ClaimedActor | None:
        return await self.executor.run(self._claim, actor_id, node_id, lease_seconds)

    @staticmethod
    def _claim(actor_id: str, node_id: str, lease_seconds: float) -> ClaimedActor | None:
        from ..models import Actor, ActorStatus

        now = timezone.now()
        with transaction.atomic():
            claimable = Q(node__isnull=True) | Q(node=node_id) | Q(lease_expires_at__lt=now)
            updated = Actor.objects.filter(Q(pk=actor_id), Q(destroyed_at__isnull=True), claimable).update(
                node=node_id,
                lease_expires_at=now + timedelta(seconds=lease_seconds),
                generation=F("generation") + 1,
                status=ActorStatus.AWAKE,
                started_at=now,
                last_active_at=now,
            )
            row = (
                Actor.objects.filter(pk=actor_id)
                .values(*_RECORD_FIELDS, "generation", "initialized", "state", "input", "node")
                .first()
            )
        if row is None or row["destroyed_at"] is not None:
            return None
        if not updated:
            raise ActorElsewhere(actor_id, row["node"])
        row["id"] = actor_id  # the caller's string, kept by the awake actor: not a second copy
        return ClaimedActor(
            record=_record(row),
            generation=row["generation"],
            initialized=row["initialized"],
            state=_bytes(row["state"]),
            input=_bytes(row["input"]),
        )

    async def commit(self, writes: Sequence[StateWrite]) -> set[str]:
        return await self.executor.run(self._commit, writes)

    @staticmethod
    def _commit(writes: Sequence[StateWrite]) -> set[str]:
        from django.db import connection

        from ..models import Actor, ActorStatus

        now = timezone.now()
        fenced: set[str] = set()
        plain: list[StateWrite] = []
        with transaction.atomic():
            for write in writes:
                if write.state is not None and not (write.initialized or write.release or write.asleep or write.extra):
                    plain.append(write)
                    continue
                fields: dict[str, Any] = {"last_active_at": now, **write.extra}
                if write.state is not None:
                    fields["state"] = write.state
                if write.initialized:
                    fields["initialized"] = True
                if write.release:
                    fields.update(status=ActorStatus.SLEEPING, node=None, lease_expires_at=None, slept_at=now)
                elif write.asleep:
                    fields.update(status=ActorStatus.SLEEPING, slept_at=now)
                updated = Actor.objects.filter(pk=write.actor_id, generation=write.generation).update(**fields)
                if not updated:
                    fenced.add(write.actor_id)
            if plain:
                stamp = connection.ops.adapt_datetimefield_value(now)
                with connection.cursor() as cursor:
                    for start in range(0, len(plain), _STATE_CHUNK):
                        fenced |= _write_states(cursor, plain[start : start + _STATE_CHUNK], stamp)
        return fenced

    async def destroy(self, actor_id: str, generation: int | None) -> bool:
        return await self.executor.run(self._destroy, actor_id, generation)

    @staticmethod
    def _destroy(actor_id: str, generation: int | None) -> bool:
        from ..models import Actor, ActorKV, ActorQueueMessage, ActorSchedule, ActorStatus, WorkflowEntry

        now = timezone.now()
        with transaction.atomic():
            query = Actor.objects.filter(pk=actor_id, destroyed_at__isnull=True)
            if generation is not None:
                query = query.filter(generation=generation)
            updated = query.update(
                key_hash=None,
                state=None,
                status=ActorStatus.DESTROYED,
                node=None,
                lease_expires_at=None,
                destroyed_at=now,
                generation=F("generation") + 1,
            )
            if updated:
                # Everything the actor owned goes with it; the row stays as a tombstone.
                for model in (ActorKV, ActorSchedule, ActorQueueMessage, WorkflowEntry):
                    model.objects.filter(actor_id=actor_id).delete()
        return bool(updated)

    async def renew_leases(self, node_id: str, actor_ids: Sequence[str], lease_seconds: float) -> set[str]:
        return await self.executor.run(self._renew_leases, node_id, list(actor_ids), lease_seconds)

    @staticmethod
    def _renew_leases(node_id: str, actor_ids: list[str], lease_seconds: float) -> set[str]:
        from ..models import Actor, Node

        now = timezone.now()
        owned: set[str] = set()
        with transaction.atomic():
            for start in range(0, len(actor_ids), 500):
                chunk = actor_ids[start : start + 500]
                Actor.objects.filter(pk__in=chunk, node=node_id).update(
                    lease_expires_at=now + timedelta(seconds=lease_seconds)
                )
                owned.update(Actor.objects.filter(pk__in=chunk, node=node_id).values_list("pk", flat=True))
            Node.objects.filter(pk=node_id).update(heartbeat_at=now)
        return set(actor_ids) - owned

    async def register_node(self, node_id: str, address: str, version: str) -> None:
        await self.executor.run(self._register_node, node_id, address, version)

    @staticmethod
    def _register_node(node_id: str, address: str, version: str) -> None:
        from ..models import Node

        Node.objects.update_or_create(
            pk=node_id,
            defaults={"address": address, "version": version, "heartbeat_at": timezone.now()},
        )

    async def release_node(self, node_id: str) -> None:
        await self.executor.run(self._release_node, node_id)

    @staticmethod
    def _release_node(node_id: str) -> None:
        from ..models import Actor, ActorStatus, Node

        with transaction.atomic():
            Actor.objects.filter(node=node_id).update(node=None, lease_expires_at=None, status=ActorStatus.SLEEPING)
            Node.objects.filter(pk=node_id).delete()

    # -- the cluster's view --------------------------------------------------------

    async def live_nodes(self, max_age: float) -> list[NodeInfo]:
        """Nodes whose heartbeat is younger than ``max_age`` seconds, with the number of
        actors each holds a live lease on."""
        return await self.executor.run(self._live_nodes, max_age)

    @staticmethod
    def _live_nodes(max_age: float) -> list[NodeInfo]:
        from django.db.models import Count

        from ..models import Actor, Node

        now = timezone.now()
        rows = Node.objects.filter(heartbeat_at__gte=now - timedelta(seconds=max_age)).values_list(
            "id", "address", "heartbeat_at"
        )
        counts = dict(
            Actor.objects.filter(node__isnull=False, lease_expires_at__gte=now)
            .values_list("node")
            .annotate(n=Count("id"))
            .values_list("node", "n")
        )
        return [NodeInfo(node_id, address, heartbeat, counts.get(node_id, 0)) for node_id, address, heartbeat in rows]

    async def owner_of(self, actor_id: str) -> str | None:
        """The node holding a live lease on the actor, if any."""
        return await self.executor.run(self._owner_of, actor_id)

    @staticmethod
    def _owner_of(actor_id: str) -> str | None:
        from ..models import Actor

        return (
            Actor.objects.filter(pk=actor_id, node__isnull=False, lease_expires_at__gte=timezone.now())
            .values_list("node", flat=True)
            .first()
        )

    async def prune_nodes(self, older_than: float) -> int:
        """Delete the rows of nodes silent for ``older_than`` seconds (dead processes)."""
        return await self.executor.run(self._prune_nodes, older_than)

    @staticmethod
    def _prune_nodes(older_than: float) -> int:
        from django.db.models import Q as _Q

        from ..models import Node

        cutoff = timezone.now() - timedelta(seconds=older_than)
        deleted, _ = Node.objects.filter(
            _Q(heartbeat_at__lt=cutoff) | _Q(heartbeat_at__isnull=True, started_at__lt=cutoff)
        ).delete()
        return deleted

    # -- KV ---------------------------------------------------------------------

    @staticmethod
    def _check_owner(actor_id: str, generation: int) -> None:
        from ..models import Actor

        owned = Actor.objects.select_for_update().filter(pk=actor_id, generation=generation).exists()
        if not owned:
            raise LostOwnership()

    async def inspector_token(self, actor_id: str) -> str | None:
        return await self.executor.run(self._inspector_token, actor_id)

    @staticmethod
    def _inspector_token(actor_id: str) -> str | None:
        from ..models import Actor

        token = Actor.objects.filter(pk=actor_id).values_list("inspector_token", flat=True).first()
        return token or None

    # -- actor databases (shared backend) ----------------------------------------

    async def db_latest(self, actor_id: str) -> tuple[int, int] | None:
        return await self.executor.run(self._db_latest, actor_id)

    @staticmethod
    def _db_latest(actor_id: str) -> tuple[int, int] | None:
        from ..models import ActorDatabaseSegment

        row = (
            ActorDatabaseSegment.objects.filter(actor_id=actor_id)
            .order_by("-epoch", "-kind", "-offset")  # "wal" sorts after "base"
            .values_list("kind", "epoch", "end")
            .first()
        )
        if row is None:
            return None
        kind, epoch, end = row
        return int(epoch), int(end) if kind == "wal" else 0

    async def db_load(self, actor_id: str) -> tuple[bytes, list[tuple[int, bytes]]]:
        return await self.executor.run(self._db_load, actor_id)

    @staticmethod
    def _db_load(actor_id: str) -> tuple[bytes, list[tuple[int, bytes]]]:
        from ..models import ActorDatabaseSegment

        with transaction.atomic():
            rows = ActorDatabaseSegment.objects.filter(actor_id=actor_id)
            base_epoch = rows.filter(kind="base").order_by("-epoch").values_list("epoch", flat=True).first()
            if base_epoch is None:
                return b"", []
            base = b"".join(
                bytes(data)
                for data in rows.filter(kind="base", epoch=base_epoch).order_by("offset").values_list("data", flat=True)
            )
            epochs: dict[int, list[bytes]] = {}
            wal = rows.filter(kind="wal", epoch__gte=base_epoch).order_by("epoch", "offset")
            for epoch, data in wal.values_list("epoch", "data"):
                epochs.setdefault(int(epoch), []).append(bytes(data))
        return base, [(epoch, b"".join(parts)) for epoch, parts in sorted(epochs.items())]

    async def db_append(
        self,
        actor_id: str,
        generation: int,
        segments: Sequence[tuple[str, int, int, bytes]],
        *,
        drop_before: int | None,
    ) -> None:
        batcher = self._segment_batcher
        if batcher is None:
            batcher = self._segment_batcher = _SegmentBatcher(self)
        await batcher.append(_SegmentAppend(actor_id, generation, list(segments), drop_before))

    @staticmethod
    def _db_append_many(appends: list[_SegmentAppend]) -> set[str]:
        """Store many actors' segments in one transaction; the actor ids found fenced."""
        from ..models import Actor, ActorDatabaseSegment

        with transaction.atomic():
            ids = {a.actor_id for a in appends}
            # Locks the rows: a claim by another node waits for this transaction.
            current = dict(Actor.objects.select_for_update().filter(pk__in=ids).values_list("pk", "generation"))
            fenced = {a.actor_id for a in appends if current.get(a.actor_id) != a.generation}
            rows: list[Any] = []
            for a in appends:
                if a.actor_id in fenced:
                    continue
                if a.drop_before is not None:
                    ActorDatabaseSegment.objects.filter(actor_id=a.actor_id, epoch__lt=a.drop_before).delete()
                rows.extend(
                    ActorDatabaseSegment(
                        actor_id=a.actor_id, kind=kind, epoch=epoch, offset=offset, end=offset + len(data), data=data
                    )
                    for kind, epoch, offset, data in a.segments
                )
            ActorDatabaseSegment.objects.bulk_create(rows)
        return fenced

    async def db_drop(self, actor_id: str) -> None:
        await self.executor.run(self._db_drop, actor_id)

    @staticmethod
    def _db_drop(actor_id: str) -> None:
        from ..models import ActorDatabaseSegment

        ActorDatabaseSegment.objects.filter(actor_id=actor_id).delete()

    # -- KV ---------------------------------------------------------------------

    async def kv_get_many(self, actor_id: str, keys: Sequence[bytes]) -> list[bytes | None]:
        return await self.executor.run(self._kv_get_many, actor_id, list(keys))

    @staticmethod
    def _kv_get_many(actor_id: str, keys: list[bytes]) -> list[bytes | None]:
        from ..models import ActorKV

        found = {
            bytes(k): bytes(v)
            for k, v in ActorKV.objects.filter(actor_id=actor_id, key__in=keys).values_list("key", "value")
        }
        return [found.get(k) for k in keys]

    async def kv_put_many(self, actor_id: str, generation: int, items: Sequence[tuple[bytes, bytes]]) -> None:
        await self.executor.run(self._kv_put_many, actor_id, generation, list(items))

    def _kv_put_many(self, actor_id: str, generation: int, items: list[tuple[bytes, bytes]]) -> None:
        from ..models import ActorKV

        with transaction.atomic():
            self._check_owner(actor_id, generation)
            entries = [ActorKV(actor_id=actor_id, key=k, value=v) for k, v in dict(items).items()]
            ActorKV.objects.bulk_create(
                entries, update_conflicts=True, unique_fields=["actor", "key"], update_fields=["value"]
            )

    async def kv_delete_many(self, actor_id: str, generation: int, keys: Sequence[bytes]) -> None:
        await self.executor.run(self._kv_delete_many, actor_id, generation, list(keys))

    def _kv_delete_many(self, actor_id: str, generation: int, keys: list[bytes]) -> None:
        from ..models import ActorKV

        with transaction.atomic():
            self._check_owner(actor_id, generation)
            ActorKV.objects.filter(actor_id=actor_id, key__in=keys).delete()

    async def kv_list_range(
        self, actor_id: str, start: bytes, end: bytes | None, limit: int | None = None
    ) -> list[tuple[bytes, bytes]]:
        return await self.executor.run(self._kv_list_range, actor_id, start, end, limit)

    @staticmethod
    def _kv_list_range(actor_id: str, start: bytes, end: bytes | None, limit: int | None) -> list[tuple[bytes, bytes]]:
        from ..models import ActorKV

        query = ActorKV.objects.filter(actor_id=actor_id, key__gte=start)
        if end is not None:
            query = query.filter(key__lt=end)
        rows = query.order_by("key").values_list("key", "value")
        if limit is not None:
            rows = rows[:limit]
        return [(bytes(k), bytes(v)) for k, v in rows]

    async def kv_delete_range(self, actor_id: str, generation: int, start: bytes, end: bytes | None) -> None:
        await self.executor.run(self._kv_delete_range, actor_id, generation, start, end)

    def _kv_delete_range(self, actor_id: str, generation: int, start: bytes, end: bytes | None) -> None:
        from ..models import ActorKV

        with transaction.atomic():
            self._check_owner(actor_id, generation)
            query = ActorKV.objects.filter(actor_id=actor_id, key__gte=start)
            if end is not None:
                query = query.filter(key__lt=end)
            query.delete()

    async def close(self) -> None:
        await self.executor.shutdown()
