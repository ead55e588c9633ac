"""``self.schedule``: an actor's durable schedules, and the :class:`Scheduler` that fires them.

A schedule is a stored call of one of the actor's actions: a one-shot
(``after``/``at``), a 5-field cron expression, or a fixed interval (``every``).
It is written at the call, fenced by the actor's generation like a KV write, and
validated first, so bad input raises at the call and stores nothing.

Firing (:class:`Scheduler`, one per runtime)::

    due row --claim--> locked_until set (one process wins) --wake actor--> action runs
        success: one-shot deleted / cron, every moved to their next time
        failure: attempts + 1, retried after backoff; after max_attempts given up

The claim is a conditional update of the row's ``locked_until``, so two nodes
(or a node and the Celery dispatcher) never fire the same run; its value is the
claim's token, and every later write of the run is conditional on it. While
the run is in flight its node renews the claim (a new token) before it runs out,
so a run longer than ``CLAIM_SECONDS`` is never started again elsewhere. The
action runs as an internal call: no connection, ``self.conn`` is ``None``.
Runs are at least once: a crash while a run is in flight runs it again once its
claim expires.

How due schedules are found:

- Every scheduler keeps timers (a heap of due times) for the schedules written
  through its node, so an awake actor's schedule fires within milliseconds.
- ``"embedded"`` driver: each node also looks in the database every
  ``SCHEDULE_POLL_INTERVAL`` for due schedules it may fire (the actor sleeps or
  lives here) and keeps a timer for the earliest future one.
- ``"celery"`` driver: nodes do not poll. A Celery beat entry runs
  :func:`rivet_django.tasks.dispatch_due_schedules` every second, which claims
  due rows and sends each to the node that owns the actor (any live node if it
  sleeps) over the channel layer; that node runs it (:meth:`Scheduler.dispatched`).

Misfires (runs missed while the system was down) follow each schedule's
policy; see :func:`plan_run`. Plain asyncio: no Django imports at module level.
"""

from __future__ import annotations

import abc
import asyncio
import builtins
import contextlib
import dataclasses
import functools
import hashlib
import heapq
import logging
import math
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterError, croniter

from .. import metrics, tracing
from ..exceptions import ActorNotFound, ActorStopping, InvalidSchedule, LostOwnership
from . import serde
from .instance import NotAwake

if TYPE_CHECKING:
    from ..cluster.gateway import Gateway
    from .host import ActorRuntime
    from .instance import ActorInstance

__all__ = [
    "MISFIRE_POLICIES",
    "ActorScheduleAPI",
    "RunPlan",
    "Schedule",
    "ScheduleRecord",
    "ScheduleStore",
    "Scheduler",
    "SchedulerConfig",
    "cron_next",
    "plan_run",
    "schedule_channel",
]

logger = logging.getLogger("rivet_django.schedule")

ScheduleKind = Literal["at", "cron", "every"]

#: What happens to runs missed while the system was down (see :func:`plan_run`).
MISFIRE_POLICIES = ("run_once", "skip", "run_all")

#: How long a claim holds a run (seconds); a crash mid-run retries it after this.
CLAIM_SECONDS = 120.0
#: A claim whose run is still in flight (or queued behind another run of its actor)
#: is renewed once less than this is left of it, so a long run keeps it.
RENEW_BEFORE = CLAIM_SECONDS / 2
#: How long a schedule of an actor class this process does not know waits before it is looked at again.
UNKNOWN_ACTOR_HOLD = 60.0
#: Most runs one scheduler has in flight (and claims in one pass).
BATCH_SIZE = 100
#: Longest name of a cron/every schedule (the model's column).
MAX_NAME_LENGTH = 128
#: Latest due time a schedule can have (the database's datetimes end with year 9999).
MAX_DUE = datetime(9999, 1, 1, tzinfo=UTC).timestamp()
#: ``type`` of the channel-layer messages the Celery dispatcher sends to nodes.
DISPATCH_MESSAGE_TYPE = "rivet.schedule.dispatch"

_NAME_TOKEN_BYTES = 8


# -- data -------------------------------------------------------------------------


@dataclass(frozen=True)
class Schedule:
    """One schedule as ``self.schedule.list()`` / ``get()`` return it; times are epoch seconds."""

    id: str
    kind: str
    action: str
    args: list[Any]
    due_at: float
    name: str | None = None
    cron: str | None = None
    tz: str | None = None
    interval: float | None = None
    misfire: str = "run_once"
    attempts: int = 0
    max_attempts: int = 5
    last_error: str = ""
    created_at: float | None = None
    last_run_at: float | None = None
    #: When a failed run is tried again (``due_at`` stays the time of the run being retried).
    retry_at: float | None = None

    def as_dict(self) -> dict[str, Any]:
        """Plain values (for returning from an action)."""
        return dataclasses.asdict(self)


@dataclass
class ScheduleRecord:
    """A schedule row as storage hands it to the scheduler (arguments still CBOR)."""

    id: str
    actor_id: str
    kind: str
    action: str
    args: bytes
    due_at: float
    name: str | None = None
    cron: str = ""
    tz: str = ""
    interval: float | None = None
    misfire: str = "run_once"
    attempts: int = 0
    max_attempts: int = 5
    last_error: str = ""
    created_at: float | None = None
    last_run_at: float | None = None
    #: Registered name of the actor (to skip schedules of actors this process does not know).
    actor_name: str = ""
    #: The claim holding this run (opaque to the runtime; storage writes it and checks it).
    token: Any = None
    #: ``locked_until`` as epoch seconds: a claim's end, or when a failed run is retried.
    held_until: float | None = None

    def public(self) -> Schedule:
        return Schedule(
            id=self.id,
            kind=self.kind,
            action=self.action,
            args=list(serde.loads(self.args)),
            due_at=self.due_at,
            name=self.name,
            cron=self.cron or None,
            tz=self.tz or None,
            interval=self.interval,
            misfire=self.misfire,
            attempts=self.attempts,
            max_attempts=self.max_attempts,
            last_error=self.last_error,
            created_at=self.created_at,
            last_run_at=self.last_run_at,
            retry_at=self.held_until if self.attempts and self.held_until is not None else None,
        )


@dataclass(frozen=True)
class SchedulerConfig:
    """Scheduler settings (built from ``RIVET``; see docs/reference/settings.md)."""

    mode: Literal["embedded", "celery"] = "embedded"
    poll_interval: float = 1.0
    max_per_actor: int = 1000
    max_attempts: int = 5
    retry_backoff: float = 1.0
    retry_backoff_max: float = 300.0
    misfire_grace: float = 10.0
    run_all_limit: int = 10

    @classmethod
    def from_settings(cls, settings: Any) -> SchedulerConfig:
        mode: Literal["embedded", "celery"] = "celery" if settings.SCHEDULER == "celery" else "embedded"
        return cls(
            mode=mode,
            poll_interval=float(settings.SCHEDULE_POLL_INTERVAL),
            max_per_actor=int(settings.MAX_SCHEDULES_PER_ACTOR),
            max_attempts=int(settings.SCHEDULE_MAX_ATTEMPTS),
            retry_backoff=float(settings.SCHEDULE_RETRY_BACKOFF),
            retry_backoff_max=float(settings.SCHEDULE_RETRY_BACKOFF_MAX),
            misfire_grace=float(settings.SCHEDULE_MISFIRE_GRACE),
            run_all_limit=max(1, int(settings.SCHEDULE_RUN_ALL_LIMIT)),
        )

    @property
    def polls(self) -> bool:
        """Whether nodes look in the database for due schedules themselves."""
        return self.mode == "embedded"

    def backoff(self, attempt: int) -> float:
        """Seconds to wait before retrying after the ``attempt``-th failure (1-based)."""
        return float(min(self.retry_backoff * 2 ** (attempt - 1), self.retry_backoff_max))


def schedule_channel(node_id: str) -> str:
    """The channel-layer channel on which a node receives dispatched schedules (Celery driver)."""
    return "rivet.schedules." + hashlib.sha1(node_id.encode()).hexdigest()[:20]


def new_schedule_id() -> str:
    return secrets.token_hex(_NAME_TOKEN_BYTES)


class ScheduleStore(abc.ABC):
    """Durable storage of schedules; every method is a coroutine safe to await on the loop."""

    @abc.abstractmethod
    async def save(self, actor_id: str, generation: int, record: ScheduleRecord, *, limit: int) -> str:
        """Insert a one-shot, or insert/replace a named schedule by (actor, name); return its id.

        Fenced by ``generation`` (:class:`~rivet_django.exceptions.LostOwnership`);
        :class:`~rivet_django.exceptions.TooManySchedules` if the actor holds ``limit`` already.
        """

    @abc.abstractmethod
    async def list(self, actor_id: str) -> builtins.list[ScheduleRecord]:
        """The actor's schedules, soonest first."""

    @abc.abstractmethod
    async def get(self, actor_id: str, schedule_id: str) -> ScheduleRecord | None: ...

    @abc.abstractmethod
    async def cancel(self, actor_id: str, generation: int, schedule_id: str) -> bool:
        """Delete one of the actor's schedules (fenced); False if it did not exist."""

    @abc.abstractmethod
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
        """Claim due schedules this node may fire (their actor sleeps or lives here).

        Returns the claimed records, soonest first, and (``want_next``) the earliest
        due time after ``now`` among the schedules this node may fire.
        """

    @abc.abstractmethod
    async def claim_dispatched(
        self, items: Sequence[Sequence[str]], *, lock_until: float, exclude: Sequence[str] = ()
    ) -> builtins.list[ScheduleRecord]:
        """Take over runs the dispatcher claimed for this node (``[id, token]`` pairs)."""

    @abc.abstractmethod
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
        """End a claimed run: delete the schedule (``next_due`` None) or move it; False if the claim was lost.

        ``hold_until`` keeps the schedule from being claimed before then (a retry's backoff).
        """

    @abc.abstractmethod
    async def release(self, record: ScheduleRecord) -> None:
        """Give a claimed run back unchanged (it will be fired again, e.g. by the actor's owner)."""

    @abc.abstractmethod
    async def renew(self, records: Sequence[ScheduleRecord], *, lock_until: float) -> dict[str, Any]:
        """Extend claims to ``lock_until``; return the new token of each claim still held, by schedule id."""


# -- time ------------------------------------------------------------------------------


def _zone(tz: str) -> ZoneInfo:
    return ZoneInfo(tz or "UTC")


def cron_next(expr: str, tz: str, after: float) -> float:
    """The first time strictly after ``after`` (epoch seconds) that the cron expression names."""
    zone = _zone(tz)
    start = datetime.fromtimestamp(after, zone)
    result: datetime = croniter(expr, start).get_next(datetime)
    return result.timestamp()


def _cron_prev(expr: str, tz: str, before: float) -> float:
    zone = _zone(tz)
    result: datetime = croniter(expr, datetime.fromtimestamp(before, zone)).get_prev(datetime)
    return result.timestamp()


@dataclass(frozen=True)
class RunPlan:
    """What to do with a claimed schedule now."""

    #: Call the action now.
    run: bool
    #: Due time after this run (or skip); None: delete the schedule (one-shots).
    next_due: float | None
    #: Runs this fire drops or folds into one (for the log).
    missed: int = 0


def plan_run(record: ScheduleRecord, now: float, *, grace: float, run_all_limit: int) -> RunPlan:
    """Apply the misfire policy to a due schedule.

    The *due runs* are the schedule's due time plus every later occurrence up to
    ``now``; a run is *missed* if it starts more than ``grace`` seconds late.

    - ``run_once`` (default): however many runs are due, run once now, then
      continue at the next time after ``now``.
    - ``skip``: run only if the newest due run is not missed; continue at the next
      time after ``now``.
    - ``run_all``: run every due run, oldest first (one per fire: the next due time
      is the following occurrence, which is due at once), but at most
      ``run_all_limit`` of them: older ones are dropped.

    A one-shot has one due run: ``skip`` drops it if missed, the others run it.
    A retry (``attempts > 0``) is never a misfire: it runs.
    """
    if record.attempts:
        grace = math.inf
    if record.kind == "at":
        if record.misfire == "skip" and now - record.due_at > grace:
            return RunPlan(False, None, 1)
        return RunPlan(True, None, 0)
    due = record.due_at
    if record.kind == "every":
        interval = float(record.interval or 0.0)
        if interval <= 0:
            return RunPlan(False, None, 0)
        newest_index = max(0, math.floor((now - due) / interval))
        count = newest_index + 1
        newest = due + newest_index * interval
        next_future = due + count * interval
        if record.misfire == "run_all":
            first = max(0, count - run_all_limit)
            occurrence = due + first * interval
            return RunPlan(True, occurrence + interval, first)
    else:
        next_future = cron_next(record.cron, record.tz, max(now, due))
        newest = max(due, _cron_prev(record.cron, record.tz, next_future))
        if record.misfire == "run_all":
            # The due runs are `due` plus the occurrences in (due, newest]. Walk back
            # from the newest: if run_all_limit of those exist, `due` and anything
            # older than them are dropped.
            recent: builtins.list[float] = []
            occurrence = newest
            while occurrence > due and len(recent) < run_all_limit:
                recent.append(occurrence)
                occurrence = _cron_prev(record.cron, record.tz, occurrence)
            dropped = len(recent) >= run_all_limit
            run_at = recent[-1] if dropped else due
            following = next_future if run_at >= newest else cron_next(record.cron, record.tz, run_at)
            return RunPlan(True, following, 1 if dropped else 0)
        count = 1 if newest == due else 2  # only "one or several" matters below
    if record.misfire == "skip" and now - newest > grace:
        return RunPlan(False, next_future, count)
    return RunPlan(True, next_future, count - 1)


# -- validation ---------------------------------------------------------------------------


def _seconds(value: Any, what: str) -> float:
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    else:
        raise InvalidSchedule(f"The {what} must be a number of seconds or a timedelta, not {type(value).__name__}")
    if not math.isfinite(seconds):
        raise InvalidSchedule(f"The {what} must be a finite number of seconds, not {seconds!r}")
    return seconds


def _when(value: Any) -> float:
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise InvalidSchedule(
                "schedule.at() needs a timezone-aware datetime (e.g. django.utils.timezone.now()) or epoch seconds"
            )
        return value.timestamp()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if not math.isfinite(value) or value < 0:
            raise InvalidSchedule(f"schedule.at() needs epoch seconds >= 0, not {value!r}")
        return float(value)
    raise InvalidSchedule(f"schedule.at() needs a datetime or epoch seconds, not {type(value).__name__}")


def _check_cron(expr: Any) -> str:
    if not isinstance(expr, str) or not expr.strip():
        raise InvalidSchedule(f"A cron expression is a non-empty string, not {expr!r}")
    expr = " ".join(expr.split())
    fields = expr.split(" ")
    if not (len(fields) == 5 or (len(fields) == 1 and expr.startswith("@"))):
        raise InvalidSchedule(
            f"Cron expression {expr!r} has {len(fields)} fields; use the 5-field form "
            "'minute hour day-of-month month day-of-week', e.g. '0 9 * * *'"
        )
    if not croniter.is_valid(expr):
        raise InvalidSchedule(f"Cron expression {expr!r} does not parse")
    return expr


def _check_tz(tz: Any) -> str:
    if tz is None:
        return ""
    if not isinstance(tz, str) or not tz:
        raise InvalidSchedule(f"A time zone is an IANA name such as 'Europe/Paris', not {tz!r}")
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidSchedule(f"Unknown time zone {tz!r}; use an IANA name such as 'Europe/Paris'") from None
    return tz


def _check_name(name: Any) -> str:
    if not isinstance(name, str) or not name or len(name) > MAX_NAME_LENGTH:
        raise InvalidSchedule(f"A schedule name is a string of 1 to {MAX_NAME_LENGTH} characters, not {name!r}")
    return name


# -- self.schedule -------------------------------------------------------------------------


class ActorScheduleAPI:
    """``self.schedule``: every method is awaitable; invalid input raises :class:`InvalidSchedule`.

    ``after``/``at`` add a one-shot and return its id; ``cron``/``every`` declare a
    named recurring schedule (declaring a name again replaces it) and return its
    id. Every adding method takes ``misfire=`` (``"run_once"``, ``"skip"``,
    ``"run_all"``) and ``max_attempts=`` as keyword arguments.
    """

    def __init__(self, instance: ActorInstance) -> None:
        self._instance = instance

    @property
    def _scheduler(self) -> Scheduler:
        scheduler = self._instance.runtime.scheduler
        if scheduler is None:
            raise RuntimeError("This actor runtime has no scheduler")
        return scheduler  # type: ignore[no-any-return]

    async def after(
        self,
        delay: float | timedelta,
        action: str,
        *args: Any,
        misfire: str = "run_once",
        max_attempts: int | None = None,
    ) -> str:
        """Run ``action(*args)`` once, ``delay`` seconds from now."""
        seconds = _seconds(delay, "delay")
        if seconds < 0:
            raise InvalidSchedule(f"The delay must be >= 0 seconds, not {seconds:g}")
        due = self._instance.runtime.clock.time() + seconds
        return await self._add("at", None, due, action, args, misfire, max_attempts)

    async def at(
        self,
        when: datetime | float,
        action: str,
        *args: Any,
        misfire: str = "run_once",
        max_attempts: int | None = None,
    ) -> str:
        """Run ``action(*args)`` once at ``when`` (aware datetime or epoch seconds; a past time runs at once)."""
        return await self._add("at", None, _when(when), action, args, misfire, max_attempts)

    async def cron(
        self,
        name: str,
        expr: str,
        action: str,
        *args: Any,
        tz: str | None = None,
        misfire: str = "run_once",
        max_attempts: int | None = None,
    ) -> str:
        """Run ``action(*args)`` at the times of a 5-field cron expression, in ``tz`` (default UTC)."""
        name = _check_name(name)
        expr = _check_cron(expr)
        zone = _check_tz(tz)
        try:
            due = cron_next(expr, zone, self._instance.runtime.clock.time())
        except (CroniterError, ValueError):
            # Valid fields that no date satisfies, e.g. "0 0 30 2 *".
            raise InvalidSchedule(f"Cron expression {expr!r} never names a time") from None
        return await self._add("cron", name, due, action, args, misfire, max_attempts, cron=expr, tz=zone)

    async def every(
        self,
        name: str,
        interval: float | timedelta,
        action: str,
        *args: Any,
        misfire: str = "run_once",
        max_attempts: int | None = None,
    ) -> str:
        """Run ``action(*args)`` every ``interval`` seconds, the first time one interval from now."""
        name = _check_name(name)
        seconds = _seconds(interval, "interval")
        if seconds <= 0:
            raise InvalidSchedule(f"The interval must be > 0 seconds, not {seconds:g}")
        due = self._instance.runtime.clock.time() + seconds
        return await self._add("every", name, due, action, args, misfire, max_attempts, interval=seconds)

    async def list(self) -> builtins.list[Schedule]:
        """The actor's schedules, soonest first."""
        records = await self._scheduler.store.list(self._instance.actor_id)
        return [record.public() for record in records]

    async def get(self, schedule_id: str) -> Schedule | None:
        """One schedule by id, or None."""
        if not isinstance(schedule_id, str):
            return None
        record = await self._scheduler.store.get(self._instance.actor_id, schedule_id)
        return None if record is None else record.public()

    async def cancel(self, schedule_id: str) -> bool:
        """Delete a schedule; False if the actor has none with that id."""
        if not isinstance(schedule_id, str):
            return False
        inst = self._instance
        return await self._scheduler.store.cancel(inst.actor_id, inst.generation, schedule_id)

    async def _add(
        self,
        kind: ScheduleKind,
        name: str | None,
        due: float,
        action: str,
        args: tuple[Any, ...],
        misfire: str,
        max_attempts: int | None,
        *,
        cron: str = "",
        tz: str = "",
        interval: float | None = None,
    ) -> str:
        inst = self._instance
        scheduler = self._scheduler
        if due >= MAX_DUE:
            raise InvalidSchedule(f"The schedule's first run, {due:g} (epoch seconds), is too far in the future")
        self._check_action(action, args)
        if misfire not in MISFIRE_POLICIES:
            raise InvalidSchedule(f"misfire must be one of {', '.join(MISFIRE_POLICIES)}, not {misfire!r}")
        if max_attempts is None:
            max_attempts = scheduler.config.max_attempts
        if not isinstance(max_attempts, int) or isinstance(max_attempts, bool) or max_attempts < 1:
            raise InvalidSchedule(f"max_attempts must be an integer >= 1, not {max_attempts!r}")
        try:
            encoded = serde.dumps(list(args))
        except serde.ValueNotSerializable:
            path, type_name = serde.find_unserializable(list(args), "args") or ("args", "?")
            raise InvalidSchedule(
                f"Arguments of scheduled action {action!r} are not serializable: {path} holds a value of type {type_name!r}"
            ) from None
        record = ScheduleRecord(
            id=new_schedule_id(),
            actor_id=inst.actor_id,
            kind=kind,
            action=action,
            args=encoded,
            due_at=due,
            name=name,
            cron=cron,
            tz=tz,
            interval=interval,
            misfire=misfire,
            max_attempts=max_attempts,
            actor_name=inst.definition.name,
        )
        schedule_id = await scheduler.store.save(
            inst.actor_id, inst.generation, record, limit=scheduler.config.max_per_actor
        )
        scheduler.notify(due, schedule_id)
        return schedule_id

    def _check_action(self, action: Any, args: tuple[Any, ...]) -> None:
        definition = self._instance.definition
        spec = definition.actions.get(action) if isinstance(action, str) else None
        if spec is None:
            known = ", ".join(sorted(definition.actions)) or "none"
            raise InvalidSchedule(
                f"Cannot schedule {action!r}: actor {definition.name!r} has no such action (actions: {known})"
            )
        method = getattr(self._instance.actor, spec.attr)
        try:
            definition.signature(action, method).bind(*args)
        except TypeError as exc:
            raise InvalidSchedule(f"Arguments do not fit action {action!r}: {exc}") from None


# -- the driver -------------------------------------------------------------------------------


class _ActorGone(Exception):
    """The scheduled actor no longer exists."""


class _NotHere(Exception):
    """The actor cannot run on this node now (owned elsewhere, moving, or the node is stopping)."""


class Scheduler:
    """Fires an actor runtime's due schedules (installed as ``runtime.scheduler``)."""

    def __init__(
        self, runtime: ActorRuntime, store: ScheduleStore, config: SchedulerConfig | None = None, *, layer: Any = None
    ) -> None:
        self.runtime = runtime
        self.store = store
        self.config = config or SchedulerConfig()
        #: Channel layer on which the Celery dispatcher reaches this node (celery driver).
        self.layer = layer
        #: The node's gateway (set by the node): runs reach actors that live elsewhere.
        self.gateway: Gateway | None = None
        self._heap: builtins.list[tuple[float, int, str | None]] = []
        self._seq = 0
        self._wakeup: asyncio.Event | None = None
        self._tasks: builtins.list[asyncio.Task[Any]] = []
        #: Runs in flight, by schedule id (one task may run several of one actor, in order).
        self._inflight: dict[str, asyncio.Task[None]] = {}
        #: Claims this scheduler holds (runs in flight or waiting for their turn), by schedule id.
        self._claims: dict[str, ScheduleRecord] = {}
        #: Held while claims are renewed: a run's last write waits, so it uses the newest token.
        self._claims_lock = asyncio.Lock()
        self._stopping = False
        self._abandoned = False
        self.started = False
        #: Counters for tests and monitoring.
        self.runs = 0
        self.failures = 0

    @property
    def clock(self) -> Any:
        return self.runtime.clock

    # -- lifecycle ------------------------------------------------------------------

    async def start(self) -> None:
        """Start the timer loop (and, with the celery driver, the dispatch listener)."""
        if self.started:
            return
        loop = asyncio.get_running_loop()
        self._wakeup = asyncio.Event()
        self._stopping = False
        self._tasks = [loop.create_task(self._timer_loop(), name="rivet-scheduler")]
        if self.config.mode == "celery":
            if self.layer is None:
                logger.warning(
                    "SCHEDULER is 'celery' but there is no channel layer: dispatched schedules cannot arrive"
                )
            else:
                self._tasks.append(loop.create_task(self._listen(), name="rivet-scheduler-dispatch"))
        self.started = True

    async def stop(self, timeout: float = 10.0) -> None:
        """Stop finding schedules; let runs in flight finish (up to ``timeout``), then cancel them."""
        if not self.started:
            return
        self._stopping = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []
        runs = set(self._inflight.values())
        if runs:
            _done, pending = await asyncio.wait(runs, timeout=timeout)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=2.0)
        self.started = False

    def abandon(self) -> None:
        """Drop everything without writing (the process "crashed")."""
        self._abandoned = True
        self._stopping = True
        for task in [*self._tasks, *set(self._inflight.values())]:
            task.cancel()
        self._tasks = []
        self._claims.clear()
        self.started = False

    # -- timers -------------------------------------------------------------------------

    def notify(self, due_at: float, schedule_id: str | None = None) -> None:
        """A schedule this node knows of is due at ``due_at``: keep a timer for it."""
        self._seq += 1
        heapq.heappush(self._heap, (due_at, self._seq, schedule_id))
        if self._wakeup is not None and self._heap[0][1] == self._seq:
            self._wakeup.set()  # the earliest timer changed

    def _pop_due(self, now: float) -> builtins.list[str]:
        ids: builtins.list[str] = []
        while self._heap and self._heap[0][0] <= now:
            _, _, schedule_id = heapq.heappop(self._heap)
            if schedule_id is not None:
                ids.append(schedule_id)
        return ids

    async def _timer_loop(self) -> None:
        assert self._wakeup is not None
        loop = asyncio.get_running_loop()
        poll_every = max(0.01, self.config.poll_interval)
        next_poll = loop.time()  # the embedded driver looks at once on start
        # Also the longest real-time wait: in-flight claims are looked at each turn.
        poll_every = min(poll_every, RENEW_BEFORE / 4)
        while True:
            self._wakeup.clear()
            if self._claims:
                try:
                    await self.renew_claims()
                except Exception:
                    logger.exception("Renewing the claims of scheduled runs failed")
            if len(self._inflight) >= BATCH_SIZE:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(poll_every):
                        await self._wakeup.wait()  # a run ending frees room
                continue
            now = self.clock.time()
            timer_due = bool(self._heap) and self._heap[0][0] <= now
            polling = self.config.polls and loop.time() >= next_poll
            if timer_due or polling:
                ids = self._pop_due(now)
                if polling:
                    next_poll = loop.time() + poll_every
                try:
                    # Embedded: one query finds everything due (timers only say when).
                    await self._pass(None if self.config.polls else ids)
                except Exception:
                    logger.exception("Looking for due schedules failed")
                continue
            # Short waits, also with a manual clock whose time only moves when told.
            timeout = poll_every
            if self._heap:
                timeout = min(timeout, max(0.0, self._heap[0][0] - now))
            if self.config.polls:
                timeout = min(timeout, max(0.0, next_poll - loop.time()))
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation
            # that lands as the event is set, and the loop would never stop.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._wakeup.wait()

    async def _pass(self, ids: Sequence[str] | None) -> int:
        """Claim what is due (all of it, or the given ids) and start running it."""
        if self._stopping:
            return 0
        if ids is not None and not ids:
            return 0
        capacity = BATCH_SIZE - len(self._inflight)
        if capacity <= 0:
            return 0
        now = self.clock.time()
        records, next_due = await self.store.claim_due(
            now=now,
            node_id=self.runtime.node_id,
            lock_until=now + CLAIM_SECONDS,
            limit=capacity,
            ids=ids,
            exclude=builtins.list(self._inflight),
            want_next=self.config.polls,
        )
        if next_due is not None and (not self._heap or self._heap[0][0] > next_due):
            self.notify(next_due)
        self._spawn(records)
        if len(records) >= capacity and self._wakeup is not None:
            self._wakeup.set()  # more may be waiting
        return len(records)

    # -- celery dispatch -------------------------------------------------------------------

    async def _listen(self) -> None:
        channel = schedule_channel(self.runtime.node_id)
        while True:
            try:
                message = await self.layer.receive(channel)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("Receiving dispatched schedules failed")
                await asyncio.sleep(1.0)
                continue
            try:
                await self.dispatched(message.get("schedules") or [])
            except Exception:
                logger.exception("Running dispatched schedules failed")

    async def dispatched(self, items: Sequence[Sequence[str]]) -> int:
        """Run schedules the Celery dispatcher claimed for this node (``[id, token]`` pairs)."""
        if self._stopping or not items:
            return 0
        now = self.clock.time()
        records = await self.store.claim_dispatched(
            items, lock_until=now + CLAIM_SECONDS, exclude=builtins.list(self._inflight)
        )
        self._spawn(records)
        return len(records)

    # -- firing ----------------------------------------------------------------------------

    async def fire_due(self) -> int:
        """Run everything due now that this node may run, whatever the driver; return how many fired.

        Waits for the runs (and any already in flight), and repeats while runs make
        more due (``run_all`` catch-ups), so tests can advance a manual clock and
        assert right after.
        """
        total = 0
        for _ in range(1000):
            await self._wait_inflight()
            claimed = await self._pass(None)
            if not claimed:
                break
            total += claimed
        await self._wait_inflight()
        return total

    async def _wait_inflight(self) -> None:
        while self._inflight:
            await asyncio.wait(set(self._inflight.values()))

    # -- claims ----------------------------------------------------------------------------

    async def renew_claims(self) -> int:
        """Renew the claims held here that end within ``RENEW_BEFORE``; return how many were renewed.

        The timer loop calls this on each turn, so a run (or the runs queued behind it)
        keeps its claim however long it lasts. A claim found lost (the schedule was
        cancelled, re-declared or taken over) is forgotten; its run's last write fails.
        """
        if not any((r.held_until or 0.0) - self.clock.time() < RENEW_BEFORE for r in self._claims.values()):
            return 0
        async with self._claims_lock:
            now = self.clock.time()
            expiring = [r for r in self._claims.values() if (r.held_until or 0.0) - now < RENEW_BEFORE]
            if not expiring:
                return 0
            lock_until = now + CLAIM_SECONDS
            tokens = await self.store.renew(expiring, lock_until=lock_until)
            for record in expiring:
                if record.id in tokens:
                    record.token, record.held_until = tokens[record.id], lock_until
                elif self._claims.get(record.id) is record:
                    del self._claims[record.id]
                    logger.warning("Schedule %s: the claim of its run in flight was lost", record.id)
        return len(tokens)

    async def _unclaim(self, record: ScheduleRecord) -> None:
        """Stop renewing a claim before its last write (which then carries its final token)."""
        async with self._claims_lock:
            if self._claims.get(record.id) is record:
                del self._claims[record.id]

    async def _store_release(self, record: ScheduleRecord) -> None:
        await self._unclaim(record)
        await self.store.release(record)

    def _spawn(self, records: Iterable[ScheduleRecord]) -> None:
        by_actor: dict[str, builtins.list[ScheduleRecord]] = {}
        for record in records:
            by_actor.setdefault(record.actor_id, []).append(record)
            self._claims[record.id] = record
        loop = asyncio.get_running_loop()
        for actor_id, group in by_actor.items():
            # One actor's runs go one after the other, soonest first.
            task = loop.create_task(self._run_group(group), name=f"rivet-schedule-{actor_id}")
            for record in group:
                self._inflight[record.id] = task
            task.add_done_callback(functools.partial(self._run_done, [r.id for r in group]))

    def _run_done(self, ids: builtins.list[str], task: asyncio.Task[None]) -> None:
        for schedule_id in ids:
            if self._inflight.get(schedule_id) is task:
                del self._inflight[schedule_id]
                # A run that crashed keeps its claim only until it expires (then it is retried).
                self._claims.pop(schedule_id, None)
        if not task.cancelled() and task.exception() is not None:
            logger.error("A scheduled run crashed", exc_info=task.exception())
        if self._wakeup is not None:
            self._wakeup.set()  # capacity freed

    async def _run_group(self, records: builtins.list[ScheduleRecord]) -> None:
        for index, record in enumerate(records):
            try:
                await self._run_one(record)
            except asyncio.CancelledError:
                if not self._abandoned:
                    for rest in records[index:]:
                        with contextlib.suppress(Exception):
                            await self._store_release(rest)
                raise

    async def _run_one(self, record: ScheduleRecord) -> None:
        now = self.clock.time()
        plan = plan_run(record, now, grace=self.config.misfire_grace, run_all_limit=self.config.run_all_limit)
        if not plan.run:
            logger.info(
                "Schedule %s (%s of actor %s) missed its run at %s; skipped (misfire policy %s)",
                record.id,
                record.action,
                record.actor_id,
                _iso(record.due_at),
                record.misfire,
            )
            await self._finish(record, next_due=plan.next_due, attempts=0, last_error=record.last_error)
            return
        if record.actor_name and record.actor_name not in self.runtime.registry:
            logger.warning(
                "Schedule %s is for a %r actor, which is not registered in this process; "
                "left for another process (looked at again in %gs)",
                record.id,
                record.actor_name,
                UNKNOWN_ACTOR_HOLD,
            )
            await self._finish(
                record,
                next_due=record.due_at,
                attempts=record.attempts,
                last_error=record.last_error,
                hold_until=now + UNKNOWN_ACTOR_HOLD,
            )
            return
        if metrics.enabled():
            metrics.schedule_started(now - record.due_at)
        if plan.missed:
            logger.info(
                "Schedule %s (%s of actor %s) was due at %s: catching up (misfire policy %s)",
                record.id,
                record.action,
                record.actor_id,
                _iso(record.due_at),
                record.misfire,
            )
        try:
            await self._call(record)
        except _ActorGone:
            logger.info("Schedule %s dropped: actor %s no longer exists", record.id, record.actor_id)
            await self._finish(record, next_due=None)
            return
        except _NotHere:
            await self._store_release(record)
            return
        except Exception as exc:
            await self._failed(record, exc, plan)
            return
        self.runs += 1
        await self._finish(record, next_due=plan.next_due, ran_at=self.clock.time())

    async def _call(self, record: ScheduleRecord) -> None:
        """Run the action as an internal call (no connection), through the node's gateway:
        where the actor lives, this node or another one (it may have moved since the claim)."""
        args = list(serde.loads(record.args))
        if tracing.enabled():
            attributes = {
                "rivet.actor.id": record.actor_id,
                "rivet.schedule": record.id,
                "rivet.node": self.runtime.node_id,
            }
            with tracing.span(f"schedule {record.action}", **attributes):
                await self._call_routed(record, args)
            return
        await self._call_routed(record, args)

    async def _call_routed(self, record: ScheduleRecord, args: list[Any]) -> None:
        try:
            if self.gateway is not None:
                await self.gateway.run_action(record.actor_id, record.action, args)
            else:
                await self.runtime.run_internal(record.actor_id, record.action, args)
        except ActorNotFound as exc:
            raise _ActorGone() from exc
        except (ActorStopping, NotAwake, LostOwnership) as exc:
            raise _NotHere() from exc

    async def _failed(self, record: ScheduleRecord, exc: BaseException, plan: RunPlan) -> None:
        self.failures += 1
        attempts = record.attempts + 1
        error = f"{getattr(exc, 'remote_type', type(exc).__name__)}: {exc}"[:2000]
        now = self.clock.time()
        detail = not getattr(exc, "public", False)
        if attempts < record.max_attempts:
            delay = self.config.backoff(attempts)
            logger.warning(
                "Scheduled %s of actor %s failed (attempt %d of %d); retrying in %gs: %s",
                record.action,
                record.actor_id,
                attempts,
                record.max_attempts,
                delay,
                error,
                exc_info=detail,
            )
            # due_at stays the run being retried (keeps cron/every in phase); the row is held until then.
            await self._finish(
                record, next_due=record.due_at, attempts=attempts, last_error=error, ran_at=now, hold_until=now + delay
            )
            return
        recurring = record.kind != "at"
        logger.error(
            "Scheduled %s of actor %s failed %d time(s); giving up%s: %s",
            record.action,
            record.actor_id,
            attempts,
            " until its next time" if recurring else "",
            error,
            exc_info=detail,
        )
        next_due = plan.next_due if recurring else None
        await self._finish(record, next_due=next_due, attempts=0, last_error=error, ran_at=now)

    async def _finish(
        self, record: ScheduleRecord, *, next_due: float | None, hold_until: float | None = None, **fields: Any
    ) -> None:
        """End a claimed run (:meth:`ScheduleStore.finish` takes the same arguments) and time its next one."""
        await self._unclaim(record)
        kept = await self.store.finish(record, next_due=next_due, hold_until=hold_until, **fields)
        if kept and next_due is not None:
            self.notify(max(next_due, hold_until or next_due), record.id)


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat()
