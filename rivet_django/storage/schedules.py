"""Schedules in the Django database: the runtime's :class:`ScheduleStore`, and the Celery dispatcher.

:class:`DjangoScheduleStore` runs on the runtime's :class:`DatabaseExecutor`
threads like :class:`~rivet_django.storage.store.DjangoActorStore`. Actor-made
writes (save, cancel) are fenced by the actor's generation; a run's writes are
conditional on its claim (the ``locked_until`` value the claim wrote).

:func:`dispatch_due` is the body of the Celery task
``rivet_django.tasks.dispatch_due_schedules`` (``SCHEDULER = "celery"``): it
claims due schedules for a short delivery window and sends each to a node over
the channel layer, where :meth:`Scheduler.dispatched
<rivet_django.runtime.schedule.Scheduler.dispatched>` takes the claim over and
runs it. Only ``runactors`` nodes ever host actors; the Celery worker only
decides who runs what, when.
"""

from __future__ import annotations

import builtins
import logging
import zlib
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from django.db import transaction
from django.db.models import Min, Q
from django.utils import timezone

from ..exceptions import TooManySchedules
from ..runtime.schedule import (
    DISPATCH_MESSAGE_TYPE,
    Scheduler,
    SchedulerConfig,
    ScheduleRecord,
    ScheduleStore,
    schedule_channel,
)
from .executor import DatabaseExecutor
from .store import DjangoActorStore

if TYPE_CHECKING:
    from ..runtime.host import ActorRuntime

__all__ = ["DISPATCH_CLAIM_SECONDS", "DjangoScheduleStore", "dispatch_due", "make_scheduler"]

logger = logging.getLogger("rivet_django.schedule")

#: How long the dispatcher's claim waits for the node to take the run over (seconds).
DISPATCH_CLAIM_SECONDS = 10.0
#: Most schedules one dispatch pass sends.
DISPATCH_BATCH = 1000

_FIELDS = (
    "id", "actor_id", "kind", "action", "args", "due_at", "name", "cron", "tz", "interval", "misfire",
    "attempts", "max_attempts", "last_error", "created_at", "last_run_at", "locked_until", "actor__name",
)  # fmt: skip


def _dt(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def _ts(value: datetime | None) -> float | None:
    return None if value is None else value.timestamp()


def _record(row: dict[str, Any]) -> ScheduleRecord:
    return ScheduleRecord(
        id=row["id"],
        actor_id=row["actor_id"],
        kind=row["kind"],
        action=row["action"],
        args=bytes(row["args"]),
        due_at=row["due_at"].timestamp(),
        name=row["name"],
        cron=row["cron"],
        tz=row["tz"],
        interval=row["interval"],
        misfire=row["misfire"],
        attempts=row["attempts"],
        max_attempts=row["max_attempts"],
        last_error=row["last_error"],
        created_at=_ts(row["created_at"]),
        last_run_at=_ts(row["last_run_at"]),
        actor_name=row["actor__name"],
        token=row["locked_until"],
        held_until=_ts(row["locked_until"]),
    )


def _free(now: datetime) -> Q:
    """Rows no run holds (never claimed, released, or the claim expired)."""
    return Q(locked_until__isnull=True) | Q(locked_until__lte=now)


class DjangoScheduleStore(ScheduleStore):
    """Schedules as ``ActorSchedule`` rows, on the runtime's database threads."""

    def __init__(self, executor: DatabaseExecutor) -> None:
        self.executor = executor

    # -- the actor's own calls (fenced) -------------------------------------------

    async def save(self, actor_id: str, generation: int, record: ScheduleRecord, *, limit: int) -> str:
        return await self.executor.run(self._save, actor_id, generation, record, limit)

    @staticmethod
    def _save(actor_id: str, generation: int, record: ScheduleRecord, limit: int) -> str:
        from ..models import ActorSchedule

        fields = {
            "kind": record.kind,
            "action": record.action,
            "args": record.args,
            "due_at": _dt(record.due_at),
            "cron": record.cron,
            "tz": record.tz,
            "interval": record.interval,
            "misfire": record.misfire,
            "attempts": 0,
            "max_attempts": record.max_attempts,
            "last_error": "",
            "locked_until": None,
        }
        with transaction.atomic():
            DjangoActorStore._check_owner(actor_id, generation)
            if record.name is not None:
                existing = (
                    ActorSchedule.objects.filter(actor_id=actor_id, name=record.name)
                    .values_list("pk", flat=True)
                    .first()
                )
                if existing is not None:
                    # Declaring a name again replaces it (a run in flight keeps its old claim and loses it).
                    ActorSchedule.objects.filter(pk=existing).update(**fields)
                    return str(existing)
            count = ActorSchedule.objects.filter(actor_id=actor_id).count()
            if count >= limit:
                raise TooManySchedules(
                    f"Actor {actor_id} already holds {count} schedules (MAX_SCHEDULES_PER_ACTOR is {limit}); "
                    "cancel some first"
                )
            ActorSchedule.objects.create(id=record.id, actor_id=actor_id, name=record.name, **fields)
        return record.id

    async def list(self, actor_id: str) -> builtins.list[ScheduleRecord]:
        return await self.executor.run(self._list, actor_id)

    @staticmethod
    def _list(actor_id: str) -> builtins.list[ScheduleRecord]:
        from ..models import ActorSchedule

        rows = ActorSchedule.objects.filter(actor_id=actor_id).order_by("due_at", "created_at").values(*_FIELDS)
        return [_record(row) for row in rows]

    async def get(self, actor_id: str, schedule_id: str) -> ScheduleRecord | None:
        return await self.executor.run(self._get, actor_id, schedule_id)

    @staticmethod
    def _get(actor_id: str, schedule_id: str) -> ScheduleRecord | None:
        from ..models import ActorSchedule

        row = ActorSchedule.objects.filter(actor_id=actor_id, pk=schedule_id).values(*_FIELDS).first()
        return None if row is None else _record(row)

    async def cancel(self, actor_id: str, generation: int, schedule_id: str) -> bool:
        return await self.executor.run(self._cancel, actor_id, generation, schedule_id)

    @staticmethod
    def _cancel(actor_id: str, generation: int, schedule_id: str) -> bool:
        from ..models import ActorSchedule

        with transaction.atomic():
            DjangoActorStore._check_owner(actor_id, generation)
            deleted, _ = ActorSchedule.objects.filter(actor_id=actor_id, pk=schedule_id).delete()
        return bool(deleted)

    # -- runs ----------------------------------------------------------------------------

    async def claim_due(
        self,
        *,
        now: float,
        node_id: str,
        lock_until: float,
        limit: int,
        ids: Sequence[str] | None = None,
        exclude: Sequence[str] = (),
        want_next: bool = False,
    ) -> tuple[builtins.list[ScheduleRecord], float | None]:
        return await self.executor.run(
            self._claim_due, now, node_id, lock_until, limit, None if ids is None else builtins.list(ids),
            builtins.list(exclude), want_next,
        )  # fmt: skip

    @staticmethod
    def _claim_due(
        now_ts: float,
        node_id: str,
        lock_ts: float,
        limit: int,
        ids: builtins.list[str] | None,
        exclude: builtins.list[str],
        want_next: bool,
    ) -> tuple[builtins.list[ScheduleRecord], float | None]:
        from ..models import ActorSchedule

        now, lock = _dt(now_ts), _dt(lock_ts)
        # Schedules this node may fire: the actor sleeps, lives here, or its lease ran out.
        # (Leases are real time, whatever clock the runtime uses.)
        mine = Q(actor__node__isnull=True) | Q(actor__node=node_id) | Q(actor__lease_expires_at__lt=timezone.now())
        eligible = ActorSchedule.objects.filter(mine, actor__destroyed_at__isnull=True)
        due = eligible.filter(_free(now), due_at__lte=now)
        if ids is not None:
            due = due.filter(pk__in=ids)
        if exclude:
            due = due.exclude(pk__in=exclude)
        candidates = builtins.list(due.order_by("due_at", "created_at").values_list("pk", flat=True)[:limit])
        claimed: builtins.list[str] = []
        # A transaction that starts by writing (SQLite: waits for the write lock instead of failing).
        with transaction.atomic():
            for pk in candidates:
                # Conditional: another process may have claimed it since the select.
                if ActorSchedule.objects.filter(_free(now), pk=pk).update(locked_until=lock):
                    claimed.append(pk)
        records: builtins.list[ScheduleRecord] = []
        if claimed:
            rows = ActorSchedule.objects.filter(pk__in=claimed, locked_until=lock).order_by("due_at", "created_at")
            records = [_record(row) for row in rows.values(*_FIELDS)]
        next_due = None
        if want_next:
            earliest = eligible.filter(due_at__gt=now).aggregate(earliest=Min("due_at"))["earliest"]
            next_due = _ts(earliest)
        return records, next_due

    async def claim_dispatched(
        self, items: Sequence[Sequence[str]], *, lock_until: float, exclude: Sequence[str] = ()
    ) -> builtins.list[ScheduleRecord]:
        return await self.executor.run(self._claim_dispatched, builtins.list(items), lock_until, set(exclude))

    @staticmethod
    def _claim_dispatched(
        items: builtins.list[Sequence[str]], lock_ts: float, exclude: set[str]
    ) -> builtins.list[ScheduleRecord]:
        from ..models import ActorSchedule

        lock = _dt(lock_ts)
        claimed: builtins.list[str] = []
        with transaction.atomic():
            for item in items:
                try:
                    schedule_id, token = str(item[0]), datetime.fromisoformat(str(item[1]))
                except (IndexError, TypeError, ValueError):
                    logger.warning("Ignoring a malformed dispatched schedule: %r", item)
                    continue
                if schedule_id in exclude:
                    continue
                # Only if the dispatcher's claim still stands (it may have expired and moved on).
                if ActorSchedule.objects.filter(pk=schedule_id, locked_until=token).update(locked_until=lock):
                    claimed.append(schedule_id)
        if not claimed:
            return []
        rows = ActorSchedule.objects.filter(pk__in=claimed, locked_until=lock).order_by("due_at", "created_at")
        return [_record(row) for row in rows.values(*_FIELDS)]

    async def finish(
        self,
        record: ScheduleRecord,
        *,
        next_due: float | None,
        attempts: int = 0,
        last_error: str = "",
        ran_at: float | None = None,
        hold_until: float | None = None,
    ) -> bool:
        return await self.executor.run(
            self._finish, record.id, record.token, next_due, attempts, last_error, ran_at, hold_until
        )

    @staticmethod
    def _finish(
        schedule_id: str,
        token: datetime,
        next_due: float | None,
        attempts: int,
        last_error: str,
        ran_at: float | None,
        hold_until: float | None,
    ) -> bool:
        from ..models import ActorSchedule

        held = ActorSchedule.objects.filter(pk=schedule_id, locked_until=token)
        if next_due is None:
            deleted, _ = held.delete()
            return bool(deleted)
        fields: dict[str, Any] = {
            "due_at": _dt(next_due), "attempts": attempts, "last_error": last_error,
            "locked_until": None if hold_until is None else _dt(hold_until),
        }  # fmt: skip
        if ran_at is not None:
            fields["last_run_at"] = _dt(ran_at)
        return bool(held.update(**fields))

    async def release(self, record: ScheduleRecord) -> None:
        await self.executor.run(self._release, record.id, record.token)

    @staticmethod
    def _release(schedule_id: str, token: datetime) -> None:
        from ..models import ActorSchedule

        ActorSchedule.objects.filter(pk=schedule_id, locked_until=token).update(locked_until=None)

    async def renew(self, records: Sequence[ScheduleRecord], *, lock_until: float) -> dict[str, Any]:
        return await self.executor.run(self._renew, [(r.id, r.token) for r in records], lock_until)

    @staticmethod
    def _renew(claims: builtins.list[tuple[str, datetime]], lock_ts: float) -> dict[str, Any]:
        from ..models import ActorSchedule

        lock = _dt(lock_ts)
        renewed: dict[str, Any] = {}
        with transaction.atomic():
            for schedule_id, token in claims:
                # Only while the claim still stands: a cancelled, re-declared or taken-over run stays lost.
                if ActorSchedule.objects.filter(pk=schedule_id, locked_until=token).update(locked_until=lock):
                    renewed[schedule_id] = lock
        return renewed


def make_scheduler(runtime: ActorRuntime, executor: DatabaseExecutor) -> Scheduler:
    """The scheduler of a node, configured from ``RIVET`` (what ``LocalNode`` installs)."""
    from ..conf import rivet_settings

    config = SchedulerConfig.from_settings(rivet_settings)
    layer = None
    if config.mode == "celery":
        from channels.layers import InMemoryChannelLayer, get_channel_layer

        layer = get_channel_layer()
        if isinstance(layer, InMemoryChannelLayer):
            logger.warning(
                "SCHEDULER is 'celery' with InMemoryChannelLayer: a Celery worker in another process cannot "
                "reach this node; use channels_redis.core.RedisChannelLayer"
            )
    return Scheduler(runtime, DjangoScheduleStore(executor), config, layer=layer)


# -- the Celery driver's dispatcher -------------------------------------------------------------


def dispatch_due(*, layer: Any = None, now: datetime | None = None, limit: int = DISPATCH_BATCH) -> int:
    """Claim due schedules and send each to the node that should run it; return how many were sent.

    The owner of an awake actor (its lease is live) gets the actor's schedules; a
    sleeping actor's go to a live node picked by a stable hash of the actor id, so
    one actor's schedules land on one node. Either is only a hint: the receiving
    node runs each through its gateway, which reaches the actor wherever it lives
    by then (it may have woken elsewhere since this pass looked). A node that does not take a run over
    within ``DISPATCH_CLAIM_SECONDS`` (it died) loses the claim, and the next pass
    sends the run again, to a live node.
    """
    from asgiref.sync import async_to_sync

    from ..conf import rivet_settings
    from ..models import ActorSchedule, Node

    if layer is None:
        from channels.layers import get_channel_layer

        layer = get_channel_layer()
    if layer is None:
        logger.error("dispatch_due_schedules needs a channel layer (CHANNEL_LAYERS) to reach the nodes")
        return 0
    now = now or timezone.now()
    alive_since = now - timedelta(seconds=float(rivet_settings.LEASE_SECONDS))
    nodes = sorted(Node.objects.filter(heartbeat_at__gte=alive_since).values_list("pk", flat=True))
    if not nodes:
        logger.debug("No live node to run due schedules; they wait")
        return 0
    lock = now + timedelta(seconds=DISPATCH_CLAIM_SECONDS)
    token = lock.isoformat()
    batches: dict[str, builtins.list[builtins.list[str]]] = {}
    rows = builtins.list(
        ActorSchedule.objects.filter(_free(now), due_at__lte=now, actor__destroyed_at__isnull=True)
        .order_by("due_at", "created_at")
        .values_list("pk", "actor_id", "actor__node", "actor__lease_expires_at")[:limit]
    )
    if not rows:
        return 0
    with transaction.atomic():
        for pk, actor_id, owner, lease_expires_at in rows:
            if not (owner and lease_expires_at is not None and lease_expires_at > now):
                owner = nodes[zlib.crc32(actor_id.encode()) % len(nodes)]
            if ActorSchedule.objects.filter(_free(now), pk=pk).update(locked_until=lock):
                batches.setdefault(owner, []).append([pk, token])
    if not batches:
        return 0
    failed = async_to_sync(_send_batches)(layer, batches)
    if failed:
        # Give those back at once rather than after the claim expires.
        ids = [pk for node_id in failed for pk, _ in batches[node_id]]
        ActorSchedule.objects.filter(pk__in=ids, locked_until=lock).update(locked_until=None)
    return sum(len(items) for node_id, items in batches.items() if node_id not in failed)


async def _send_batches(layer: Any, batches: dict[str, builtins.list[builtins.list[str]]]) -> set[str]:
    failed: set[str] = set()
    for node_id, items in batches.items():
        try:
            await layer.send(schedule_channel(node_id), {"type": DISPATCH_MESSAGE_TYPE, "schedules": items})
        except Exception:
            logger.exception("Sending %d due schedule(s) to node %s failed", len(items), node_id)
            failed.add(node_id)
    return failed
