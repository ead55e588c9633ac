"""One awake actor: its user object, state, turns, commit gate and stop sequence.

Lifecycle (a state machine, ARCHITECTURE.md rule 5)::

    STARTING --start()--> AWAKE --stop()--> STOPPING --final flush--> STOPPED

Creation runs ``create_state -> on_create`` (committed before anything else),
then every wake ``create_vars -> on_wake -> run``.

Sleep is on time: each awake actor has an idle check (on the runtime's shared
:class:`~.idle.IdleTimers`), due ``sleep_timeout`` after its last activity.
Activity only moves ``last_activity`` (nothing per call); a check that comes
early re-arms for what is left, and while something blocks sleep (a call, a
connection, a raw socket, ``keep_awake`` work, ``prevent_sleep``, a ``run``
that is not waiting on its queue) it checks again one timeout later. Every
blocker's end counts as activity.

The stop sequence (RivetKit's order), all bounded by ``sleep_grace_period``:
abort signal -> calls in flight finish -> ``run`` returns (bounded by
``run_stop_timeout``) -> ``on_sleep`` / ``on_destroy`` -> ``keep_awake`` /
``wait_until`` work and ``prevent_sleep`` -> connections: on destroy closed
(``on_disconnect``, close 1000), on sleep hibernated (kept open, no
``on_disconnect``; the next instance adopts them, and their calls wake it) ->
raw WebSockets closed (1000 ``actor.stopped``) -> work their handlers started
-> final save together with the release of the lease (or delete everything on
destroy).

Events pass an output gate in ``"commit"`` durability: an event waits for the
next commit submitted after it (not for the end of the action), then goes out
in order, before the reply.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import enum
import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any

from .. import metrics, tracing
from ..exceptions import (
    ActionNotFound,
    ActionTimedOut,
    ActorAborted,
    Forbidden,
    InvalidRequest,
    LostOwnership,
    NoRequestHandler,
    PublicError,
    RivetError,
    StateNotEnabled,
    StateNotSerializable,
)
from . import serde
from .conn import Conn, OutgoingEvent
from .database import ActorDatabase, database_path
from .kv import ActorKV
from .observed import StateObserver
from .queue import enter_handler, leave_handler
from .replica import DatabaseReplica
from .stats import ActorStats
from .store import ClaimedActor, StateWrite

if TYPE_CHECKING:
    from ..definition import Actor, ActorDefinition
    from .host import ActorRuntime

__all__ = ["ActorInstance", "InstanceStatus", "NotAwake"]

logger = logging.getLogger("rivet_django.actor")

_current_conn: contextvars.ContextVar[tuple[ActorInstance, Conn] | None] = contextvars.ContextVar(
    "rivet_current_conn", default=None
)
_current_request: contextvars.ContextVar[Any] = contextvars.ContextVar("rivet_current_request", default=None)

_MISSING: Any = object()


class InstanceStatus(enum.Enum):
    STARTING = "starting"
    AWAKE = "awake"
    STOPPING = "stopping"
    STOPPED = "stopped"


class NotAwake(Exception):
    """The instance stopped (or is stopping) before the call began; wake it again."""


class ActorLogAdapter(logging.LoggerAdapter):  # type: ignore[type-arg]
    """Every record about an actor carries its name, key, id and node: in the message
    (``[counter ['k'] 3f2a… @node]``) and as record attributes for structured logging
    (``rivet_actor``, ``rivet_key``, ``rivet_actor_id``, ``rivet_node``)."""

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        extra = self.extra or {}
        kwargs["extra"] = {**{f"rivet_{k}": v for k, v in extra.items()}, **(kwargs.get("extra") or {})}
        return f"[{extra['actor']} {extra['key']} {extra['actor_id']} @{extra['node']}] {msg}", kwargs


class ActorInstance:
    """Runtime side of one awake actor; the user's :class:`Actor` object reads through it."""

    # Slots and lazily made helpers keep an idle awake actor small (benchmark target:
    # about 2 KB each); events, futures, sets and adapters appear only when used.
    __slots__ = (
        "__weakref__",
        "_abort_event",
        "_aborted",
        "_claimed",
        "_conns",
        "_destroy_requested",
        "_drain_waiter",
        "_idle_slot",
        "_idle_waits",
        "_inflight",
        "_keep_awake",
        "_kv",
        "_log",
        "_observer",
        "_outbox",
        "_pending_commit",
        "_queue",
        "_raw_sockets",
        "_run_task",
        "_schedule",
        "_stop_task",
        "_stopped",
        "_submitted",
        "_throttle_handle",
        "_unsettled",
        "_wait_until",
        "actor",
        "actor_id",
        "db",
        "definition",
        "generation",
        "key",
        "last_activity",
        "leased_at",
        "namespace",
        "options",
        "prevent_sleep",
        "runtime",
        "state",
        "stats",
        "status",
        "vars",
    )

    def __init__(self, runtime: ActorRuntime, definition: ActorDefinition, claimed: ClaimedActor) -> None:
        self.runtime = runtime
        self.definition = definition
        self.options = definition.options
        self.actor_id = claimed.record.actor_id
        self.key: tuple[str, ...] = claimed.record.key
        self.namespace = claimed.record.namespace
        self.generation = claimed.generation
        #: ``self.db`` (actors with ``on_migrate``): open from the start of a wake to the end of its stop.
        self.db: ActorDatabase | None = None
        #: When the claim that woke it was sent (monotonic): its lease runs from no earlier.
        self.leased_at = float("inf")
        #: What this wake did (the inspector's metrics route).
        self.stats = ActorStats()
        self._claimed: ClaimedActor | None = claimed
        self.status = InstanceStatus.STARTING
        self.state: Any = None
        self.vars: Any = None
        #: CBOR of the state as last handed to the committer (None: unknown, write next turn).
        self._submitted: bytes | None = claimed.state
        self._pending_commit: asyncio.Future[None] | None = None
        self._inflight = 0
        self._drain_waiter: asyncio.Future[None] | None = None
        self.last_activity = runtime.clock.monotonic()
        self._abort_event: asyncio.Event | None = None
        self._aborted = False
        self._stopped: asyncio.Future[None] | None = None
        self._conns: dict[str, Conn] | None = None
        self._raw_sockets: set[Any] | None = None
        self.prevent_sleep = False
        self._keep_awake: set[asyncio.Future[Any]] | None = None
        self._wait_until: set[asyncio.Future[Any]] | None = None
        self._stop_task: asyncio.Task[None] | None = None
        self._destroy_requested = False
        self._run_task: asyncio.Task[Any] | None = None
        #: Waits that a wake resumes (queue receives, durable workflow sleeps): a ``run``
        #: blocked in one lets the actor sleep, and sleep's abort signal ends it.
        self._idle_waits = 0
        #: The IdleTimers slot of this actor's next idle check (None: none armed).
        self._idle_slot: float | None = None
        self._throttle_handle: asyncio.TimerHandle | None = None
        #: Events made since the last commit was submitted (output gate, below).
        self._unsettled: list[tuple[Callable[[OutgoingEvent], None], OutgoingEvent]] | None = None
        #: Events waiting for their commit, in order.
        self._outbox: (
            list[tuple[asyncio.Future[None] | None, Callable[[OutgoingEvent], None], OutgoingEvent]] | None
        ) = None
        self._observer: StateObserver | None = None
        self._kv: ActorKV | None = None
        self._log: ActorLogAdapter | None = None
        self._schedule: Any = None
        self._queue: Any = None
        actor = definition.cls.__new__(definition.cls)
        actor._rivet = self
        type(actor).__init__(actor)
        self.actor: Actor = actor

    # -- lazily made parts -------------------------------------------------------

    @property
    def conns(self) -> dict[str, Conn]:
        """Live connections by id."""
        if self._conns is None:
            self._conns = {}
        return self._conns

    @property
    def raw_sockets(self) -> set[Any]:
        """Raw WebSockets (``on_websocket``) open on this actor; they keep it awake."""
        if self._raw_sockets is None:
            self._raw_sockets = set()
        return self._raw_sockets

    @property
    def abort_event(self) -> asyncio.Event:
        """Set when the actor starts stopping."""
        if self._abort_event is None:
            self._abort_event = asyncio.Event()
            if self._aborted:
                self._abort_event.set()
        return self._abort_event

    @property
    def aborted(self) -> bool:
        return self._aborted

    @property
    def stopped(self) -> asyncio.Future[None]:
        """Resolves once the actor has stopped."""
        if self._stopped is None:
            self._stopped = asyncio.get_running_loop().create_future()
            if self.status is InstanceStatus.STOPPED:
                self._stopped.set_result(None)
        return self._stopped

    @property
    def kv(self) -> ActorKV:
        if self._kv is None:
            self._kv = ActorKV(self)
        return self._kv

    @property
    def schedule(self) -> Any:
        """``self.schedule`` of the actor (:class:`~.schedule.ActorScheduleAPI`)."""
        if self._schedule is None:
            from .schedule import ActorScheduleAPI

            self._schedule = ActorScheduleAPI(self)
        return self._schedule

    @property
    def queue(self) -> Any:
        """``self.queue`` of the actor (:class:`~.queue.ActorQueueAPI`)."""
        if self._queue is None:
            from .queue import ActorQueueAPI

            self._queue = ActorQueueAPI(self)
        return self._queue

    @property
    def log(self) -> ActorLogAdapter:
        if self._log is None:
            self._log = ActorLogAdapter(
                logger,
                {
                    "actor": self.definition.name,
                    "key": list(self.key),
                    "actor_id": self.actor_id,
                    "node": self.runtime.node_id,
                },
            )
        return self._log

    def _set_aborted(self) -> None:
        self._aborted = True
        if self._abort_event is not None:
            self._abort_event.set()
        if self._queue is not None:
            self._queue.abort_waits()

    def _mark_stopped(self) -> None:
        self.status = InstanceStatus.STOPPED
        self._set_aborted()
        self._cancel_timers()
        if self._stopped is not None and not self._stopped.done():
            self._stopped.set_result(None)

    # -- start ------------------------------------------------------------------

    async def start(self) -> None:
        """Run creation (first start only) and wake hooks, then mark the actor awake."""
        claimed = self._claimed
        assert claimed is not None
        started = time.perf_counter()
        self.stats.is_new = not claimed.initialized
        if self.definition.hook("on_migrate") is not None:
            # Before create_state on creation, before create_vars on every wake (API.md).
            shared = self.runtime.config.db_backend == "shared"
            self.db = ActorDatabase(
                database_path(self.runtime.config.db_dir, self.actor_id),
                f"{self.definition.name} {self.actor_id}",
                max_bytes=self.runtime.config.db_max_size,
                replica=DatabaseReplica(self.runtime.store, self.actor_id, self.generation) if shared else None,
                stats=self.stats,
            )
            await self.db.open()
            await self._startup_hook("on_migrate", self.db)
        if not claimed.initialized:
            input = serde.loads(claimed.input) if claimed.input is not None else None
            if self.definition.has_state:
                created = await self._startup_hook("create_state", input)
                self.state = self.definition.make_initial_state(self.actor, input) if created is _MISSING else created
            await self._startup_hook("on_create", input)
            data = self._serialize_state() if self.definition.has_state else None
            # The initial state is always committed before the actor serves anything,
            # whatever the durability mode: create_state must never run twice.
            await self.runtime.committer.submit(StateWrite(self.actor_id, self.generation, data, initialized=True))
            self._submitted = data
        elif self.definition.has_state:
            self.state = serde.loads(claimed.state) if claimed.state is not None else None
        self._claimed = None  # its bytes are in self.state now
        if self.definition.hook("on_state_change") is not None and self.definition.has_state:
            self._observer = StateObserver(self._state_changed)
            self.state = self._observer.wrap(self.state)
        created_vars = await self._startup_hook("create_vars", timeout=self.runtime.config.hook_timeout)
        self.vars = self.definition.make_initial_vars() if created_vars is _MISSING else created_vars
        # Connections that stayed open while the actor slept are its connections again.
        for conn in self.runtime.take_hibernated(self.actor_id):
            conn.owner = self
            self.conns[conn.id] = conn
            self.stats.restored_connections += 1
        await self._startup_hook("on_wake")
        await self._persist_changes()
        if self.status is not InstanceStatus.STARTING:
            return  # a hook asked to stop already: the stop sequence takes it from here
        self.status = InstanceStatus.AWAKE
        self.last_activity = self.runtime.clock.monotonic()
        self.stats.startup_seconds = time.perf_counter() - started
        if self.definition.hook("run") is not None:
            self._run_task = asyncio.get_running_loop().create_task(self._run_loop(), name=f"rivet-run-{self.actor_id}")
        self._arm_idle_timer()
        if logger.isEnabledFor(logging.DEBUG):  # the adapter stays uncreated for quiet actors
            self.log.debug("awake (generation %d)", self.generation)

    def give_back_connections(self) -> None:
        """Starting failed: connections adopted from hibernation wait for the next try."""
        if self._conns:
            self.runtime.hibernate(self, list(self._conns.values()))
            self._conns = None

    async def _run_loop(self) -> None:
        scope = enter_handler()  # run() is the handler of the queue messages it receives
        handled = False
        try:
            await self._call_hook("run")
            handled = True
        except asyncio.CancelledError:
            raise
        except ActorAborted:
            handled = True  # a queue wait ended because the actor is stopping: a normal end
        except Exception:
            self.log.exception("run() raised; the actor stays alive")
        finally:
            consumer = leave_handler(scope)
            if consumer is not None:
                await consumer.finish(handled)
            # The run handler kept the actor awake; its end is activity.
            self._touch()
            if self.status is InstanceStatus.AWAKE:
                self.persist_soon()

    def run_running(self) -> bool:
        """Whether the ``run`` handler is running now (not returned, not blocked in an idle wait)."""
        task = self._run_task
        return task is not None and not task.done()

    def run_waiting(self) -> bool:
        """Whether the ``run`` handler waits for something durable (a queue message, a timer)."""
        return self.run_running() and self._idle_waits > 0

    @contextlib.asynccontextmanager
    async def run_stopped(self) -> AsyncIterator[None]:
        """The ``run`` handler is cancelled for the block and started afresh after it
        (the inspector's workflow replay changes its history in between)."""
        task = self._run_task
        if task is not None and not task.done():
            task.cancel()
            await asyncio.wait([task])
        try:
            yield
        finally:
            if self.status is InstanceStatus.AWAKE and self.definition.hook("run") is not None:
                self._run_task = asyncio.get_running_loop().create_task(
                    self._run_loop(), name=f"rivet-run-{self.actor_id}"
                )

    # -- calls --------------------------------------------------------------------

    async def call_action(
        self,
        name: str,
        args: list[Any] | tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
        *,
        conn: Conn | None = None,
    ) -> Any:
        """Run one action and return its output once its state change is durable."""
        if tracing.enabled():
            with tracing.actor_span(f"action {name}", self, **{"rivet.action": name, "rivet.conn": conn and conn.id}):
                return await self._call_action(name, args, kwargs, conn)
        return await self._call_action(name, args, kwargs, conn)

    async def _call_action(
        self, name: str, args: list[Any] | tuple[Any, ...], kwargs: dict[str, Any] | None, conn: Conn | None
    ) -> Any:
        if self.status is not InstanceStatus.AWAKE:
            raise NotAwake()
        counted = metrics.enabled()
        started = time.perf_counter()
        spec = self.definition.actions.get(name)
        if spec is None:
            self.stats.action(False, time.perf_counter() - started)
            if counted:
                metrics.call_finished(self.definition.name, "", "action_not_found", started)
            raise ActionNotFound(f"Action `{name}` was not found.")
        method = getattr(self.actor, spec.attr)
        kwargs = kwargs or {}
        self._check_arguments(name, method, args, kwargs)
        self._begin_turn()
        token = _current_conn.set((self, conn) if conn is not None else None)
        scope = enter_handler()  # queue messages received by the action are acknowledged when it returns
        handled = False
        outcome = "error"
        try:
            try:
                output = await self._invoke(method, spec.is_async, args, kwargs)
                hook = self.definition.hook("on_before_action_response")
                if hook is not None:
                    output = await _maybe_await(hook(self.actor, name, list(args), output))
            except PublicError:
                outcome = "user_error"
                raise
            finally:
                await self._persist_changes()
            handled = True
            outcome = "ok"
            return output
        finally:
            _current_conn.reset(token)
            consumer = leave_handler(scope)
            if consumer is not None:
                await consumer.finish(handled)
            self._end_turn()
            self.stats.action(handled, time.perf_counter() - started)
            if counted:
                metrics.call_finished(self.definition.name, name, outcome, started)

    async def _invoke(self, method: Callable[..., Any], is_async: bool, args: Any, kwargs: dict[str, Any]) -> Any:
        timeout = self.options.action_timeout
        if not is_async:
            # Sync actions run inline on the loop: a turn that cannot interleave (nor be
            # interrupted); an awaitable they return is awaited under the timeout.
            result = method(*args, **kwargs)
            if not inspect.isawaitable(result):
                return result
            call: Awaitable[Any] = result
        else:
            call = method(*args, **kwargs)
        if timeout is None:
            return await call
        try:
            async with asyncio.timeout(timeout) as scope:
                return await call
        except TimeoutError:
            if scope.expired():
                raise ActionTimedOut(
                    f"Action timed out after {timeout:g}s (raise it with Meta.action_timeout)"
                ) from None
            raise

    def _check_arguments(self, name: str, method: Callable[..., Any], args: Any, kwargs: dict[str, Any]) -> None:
        if not kwargs:
            bounds = self.definition.positional_bounds(name, method)
            if bounds is not None and bounds[0] <= len(args) <= bounds[1]:
                return
        try:
            self.definition.signature(name, method).bind(*args, **kwargs)
        except TypeError as exc:
            raise InvalidRequest(f"Invalid arguments for action {name!r}: {exc}") from None

    def _begin_turn(self) -> None:
        self._inflight += 1

    def _end_turn(self) -> None:
        self._inflight -= 1
        self.last_activity = self.runtime.clock.monotonic()
        if self._inflight == 0:
            self._wake_drainer()

    @property
    def inflight(self) -> int:
        return self._inflight

    # -- connections --------------------------------------------------------------

    async def open_conn(self, params: Any = None, *, request: Any = None, conn: Conn | None = None) -> Conn:
        """Run the connect hooks; the connection is listed in ``conns`` only if they pass."""
        conn = conn or Conn(params, request=request)
        conn.params = params
        conn.actor_id = self.actor_id
        if request is not None:
            conn.request = request
        timeout = self.runtime.config.hook_timeout
        req_token = _current_request.set(request)
        try:
            await self._call_hook("on_before_connect", params, timeout=timeout)
            created = await self._call_hook("create_conn_state", params, timeout=timeout)
            conn.state = self.definition.make_initial_conn_state() if created is _MISSING else created
            await self._call_hook("on_connect", conn, timeout=timeout)
        finally:
            _current_request.reset(req_token)
        conn.owner = self
        self.conns[conn.id] = conn
        if conn.transport != "http":
            self.stats.connections_opened += 1
        # State the hooks changed is committed before the connection is usable.
        await self._persist_changes()
        return conn

    @contextlib.asynccontextmanager
    async def short_lived_conn(self, params: Any, request: Any) -> AsyncIterator[Conn]:
        """The connection of one stateless call or raw request: connect hooks before,
        ``on_disconnect`` after (PROTOCOL.md section 6); it keeps the actor awake meanwhile."""
        self._begin_turn()
        try:
            conn = await self.open_conn(params, request=request)
            try:
                yield conn
            finally:
                await self.close_conn(conn)
        finally:
            self._end_turn()

    async def close_conn(self, conn: Conn) -> None:
        """Forget a connection and run ``on_disconnect``."""
        if not self._conns or self._conns.pop(conn.id, None) is None:
            return
        if conn.transport != "http":
            self.stats.connections_closed += 1
        self._begin_turn()  # a disconnect callback in progress keeps the actor awake
        try:
            await self._call_hook("on_disconnect", conn, timeout=self.runtime.config.hook_timeout)
            if self.status is InstanceStatus.AWAKE:
                await self._persist_changes()
        except Exception:
            self.log.exception("on_disconnect raised")
        finally:
            self._end_turn()

    async def run_disconnect_hook(self, conn: Conn) -> None:
        """``on_disconnect`` of a connection that closed while the actor slept (it was hibernated)."""
        self.conns[conn.id] = conn
        await self.close_conn(conn)

    def current_conn(self) -> Conn | None:
        current = _current_conn.get()
        if current is None or current[0] is not self:
            return None
        return current[1]

    def current_request(self) -> Any:
        return _current_request.get()

    async def subscribe(self, conn: Conn, event: str, subscribe: bool = True) -> None:
        """Subscribe a connection to an event (checked by ``can_subscribe`` when it is declared)."""
        if not subscribe:
            conn.subscriptions.discard(event)
            return
        # Undeclared events may be subscribed to and broadcast (RivetKit); a declaration
        # only adds its can_subscribe check.
        spec = self.definition.events.get(event)
        if spec is not None and spec.can_subscribe is not None:
            token = _current_conn.set((self, conn))
            try:
                allowed = await _maybe_await(spec.can_subscribe(self.actor, conn))
            finally:
                _current_conn.reset(token)
            if not allowed:
                raise Forbidden("Forbidden", metadata={"event": event})
        conn.subscriptions.add(event)

    def broadcast(self, event: str, args: tuple[Any, ...]) -> None:
        """Deliver an event to this node's subscribed connections, then publish it for other nodes."""
        self.emit(self._deliver, OutgoingEvent(event, args))

    def _deliver(self, message: OutgoingEvent) -> None:
        for conn in (self._conns or {}).values():
            if message.name in conn.subscriptions and conn.sink is not None:
                conn.sink.send_event(message)
        self.runtime.publish(self.actor_id, message)

    # -- the output gate for events ------------------------------------------------
    #
    # In commit durability an event must not describe a state a crash could still lose.
    # An event made now waits for the next commit submitted after it (which holds every
    # change made before it): usually the commit at the end of its call, so the common
    # "change, broadcast, return" costs no extra serialization. If no commit comes by the
    # end of the loop tick (a long action awaiting something), _settle_events submits one.

    def emit(self, deliver: Callable[[OutgoingEvent], None], event: OutgoingEvent) -> None:
        """``deliver(event)`` once the state changes made before it are durable, in order."""
        if (
            self.options.durability != "commit"
            or not self.definition.has_state
            or self.status is InstanceStatus.STOPPED
        ):
            if self._outbox:
                self._outbox.append((None, deliver, event))  # behind the events still waiting
            else:
                deliver(event)
            return
        unsettled = self._unsettled
        if unsettled is None:
            unsettled = self._unsettled = []
            asyncio.get_running_loop().call_soon(self._settle_events)
        unsettled.append((deliver, event))

    def _gate_unsettled(self, gate: asyncio.Future[None] | None) -> None:
        """The events made so far wait for ``gate``, a commit submitted after them (None: none
        is needed; they go out once the events before them did)."""
        unsettled = self._unsettled
        if not unsettled:
            return
        self._unsettled = None
        outbox = self._outbox
        if outbox is None:
            if gate is None:
                for deliver, event in unsettled:
                    deliver(event)
                return
            outbox = self._outbox = []
        if gate is not None:
            gate.add_done_callback(self._flush_outbox)
        outbox.extend([(gate, deliver, event) for deliver, event in unsettled])
        if gate is None:
            self._flush_outbox()

    def _settle_events(self) -> None:
        """End of the tick in which events were made and no commit was submitted since:
        submit the state they describe (or find that nothing is pending)."""
        if not self._unsettled:
            self._unsettled = None
            return
        if self.status is InstanceStatus.STOPPED:
            self._gate_unsettled(None)
            return
        try:
            data = serde.dumps(self.state)
        except serde.ValueNotSerializable:
            return  # left for the call's end, which reports it (and drops these events)
        if data != self._submitted:
            self._submitted = data
            self._submit(StateWrite(self.actor_id, self.generation, data)).add_done_callback(self._settle_commit_done)
        else:
            self._gate_unsettled(self._open_commit())

    def _settle_commit_done(self, future: asyncio.Future[None]) -> None:
        if not future.cancelled() and future.exception() is not None:
            self._submitted = None  # not durable: the next turn writes it again

    def _flush_outbox(self, _: Any = None) -> None:
        outbox = self._outbox
        while outbox:
            gate, deliver, event = outbox[0]
            if gate is not None and not gate.done():
                return
            del outbox[0]
            if gate is not None and (gate.cancelled() or gate.exception() is not None):
                continue  # the state it describes was not committed: it never happened
            try:
                deliver(event)
            except Exception:
                self.log.exception("delivering event %r failed", event.name)
        self._outbox = None  # drained: an idle actor keeps no list

    # -- raw HTTP and WebSocket ---------------------------------------------------

    async def handle_request(self, request: Any, conn: Conn | None = None) -> Any:
        """Run ``on_request(request)`` as a turn; its state changes are committed like an action's."""
        hook = self.definition.hook("on_request")
        if hook is None:
            raise NoRequestHandler(f"Actor {self.definition.name!r} has no on_request handler")
        if self.status is not InstanceStatus.AWAKE:
            raise NotAwake()
        self._begin_turn()
        token = _current_request.set(request)
        conn_token = _current_conn.set((self, conn) if conn is not None else None)
        try:
            try:
                response = await _maybe_await(hook(self.actor, request))
            finally:
                await self._persist_changes()
        finally:
            _current_conn.reset(conn_token)
            _current_request.reset(token)
            self._end_turn()
        if response is None:
            raise RivetError(f"on_request of actor {self.definition.name!r} returned no response")
        return response

    async def run_websocket(self, ws: Any, request: Any, conn: Conn | None = None) -> None:
        """Run ``on_websocket(ws)``; the socket keeps the actor awake until the handler returns."""
        hook = self.definition.hook("on_websocket")
        self.raw_sockets.add(ws)
        # Each receive first commits what handling the previous message changed.
        ws.before_receive = self._persist_changes
        token = _current_request.set(request)
        conn_token = _current_conn.set((self, conn) if conn is not None else None)
        try:
            if hook is not None:
                await _maybe_await(hook(self.actor, ws))
            else:
                await ws.wait_closed()  # no handler: the socket stays open and silent (RivetKit)
        finally:
            _current_conn.reset(conn_token)
            _current_request.reset(token)
            self.raw_sockets.discard(ws)
            self._touch()
            if self.status is InstanceStatus.AWAKE:
                await self._persist_changes()
            else:
                self._wake_drainer()

    # -- state and the commit gate ---------------------------------------------

    def _state_changed(self) -> Any:
        hook = self.definition.hook("on_state_change")
        assert hook is not None
        return hook(self.actor, self.state)

    def assign_state(self, value: Any) -> None:
        """``self.state = value`` of actor code."""
        observer = self._observer
        if observer is None:
            self.state = value
            return
        observer.before_mutation()
        if value is self.state:
            return
        self.state = observer.wrap(value)
        observer.changed()

    def _serialize_state(self) -> bytes:
        try:
            return serde.dumps(self.state)
        except serde.ValueNotSerializable as exc:
            # Put the last good state back so the actor keeps serving consistent data.
            bad_type = exc.type_name
            restored = serde.loads(self._submitted) if self._submitted is not None else None
            self.state = restored if self._observer is None else self._observer.wrap(restored)
            raise StateNotSerializable(
                f"State of actor {self.definition.name!r} {list(self.key)} ({self.actor_id}) is not serializable: "
                f"{exc.path} holds a value of type {bad_type!r}; the last good state was kept"
            ) from None

    async def _persist_changes(self) -> None:
        """Commit gate: hand a changed state to the committer and wait as durability says."""
        if self._observer is not None:
            self._observer.flush_now()  # on_state_change runs before the reply (RivetKit)
        if not self.definition.has_state:
            await self._wait_pending_commit()
            return
        try:
            data = self._serialize_state()
        except StateNotSerializable:
            self._unsettled = None  # they describe a state that will never be committed
            raise
        if data == self._submitted:
            if self._unsettled:
                self._gate_unsettled(self._open_commit())
            await self._wait_pending_commit()
            return
        self._submitted = data
        if self.options.durability == "commit":
            await self._commit(data)
        else:
            self._schedule_throttled_save()

    def persist_soon(self) -> None:
        """Commit state changed outside a turn (background work, raw sockets) in a task."""
        task = asyncio.get_running_loop().create_task(self._persist_quietly())
        task.add_done_callback(lambda t: t.cancelled() or t.exception())

    async def _persist_quietly(self) -> None:
        try:
            await self._persist_changes()
        except Exception:
            self.log.exception("committing state changed outside a call failed")

    def _submit(self, write: StateWrite) -> asyncio.Future[None]:
        """Hand ``write`` to the committer; the events made before it wait for it."""
        future = self.runtime.committer.submit(write)
        self._pending_commit = future
        if self._unsettled:
            self._gate_unsettled(future)
        return future

    def _open_commit(self) -> asyncio.Future[None] | None:
        """The submitted commit not done yet, if any."""
        pending = self._pending_commit
        return pending if pending is not None and not pending.done() else None

    async def _commit(self, data: bytes | None) -> None:
        future = self._submit(StateWrite(self.actor_id, self.generation, data))
        try:
            await asyncio.shield(future)
        except LostOwnership:
            raise
        except Exception:
            # Not durable: make the next turn write it again.
            self._submitted = None
            raise

    async def _wait_pending_commit(self) -> None:
        # A reply must not reveal state that is not durable yet (commit mode).
        pending = self._open_commit()
        if pending is not None and self.options.durability == "commit":
            await asyncio.shield(pending)

    def _schedule_throttled_save(self) -> None:
        if self._throttle_handle is None:
            loop = asyncio.get_running_loop()
            self._throttle_handle = loop.call_later(self.options.state_save_interval, self._throttled_save)

    def _throttled_save(self) -> None:
        self._throttle_handle = None
        if self.status is InstanceStatus.STOPPED:
            return
        self._submit(StateWrite(self.actor_id, self.generation, self._submitted))

    async def replace_state(self, value: Any) -> None:
        """Replace the whole state from outside the actor (the inspector's PATCH): checked to
        be serializable first (nothing changes otherwise), then committed like an action's
        change, with ``on_state_change`` and fencing."""
        if not self.definition.has_state:
            raise StateNotEnabled()
        try:
            serde.dumps(value)
        except serde.ValueNotSerializable as exc:
            raise StateNotSerializable(
                f"The new state is not serializable: {exc.path} holds a {exc.type_name!r}"
            ) from None
        self._begin_turn()
        try:
            self.assign_state(value)
            await self._persist_changes()
        finally:
            self._end_turn()

    async def save_state(self, immediate: bool = True) -> None:
        """Persist the current state now (``immediate``) or at the next throttled save."""
        if not self.definition.has_state:
            return
        data = self._serialize_state()
        self._submitted = data
        if immediate:
            await self._commit(data)
        else:
            self._schedule_throttled_save()

    # -- sleep: the idle timer and what blocks it -------------------------------

    def _touch(self) -> None:
        self.last_activity = self.runtime.clock.monotonic()

    def set_prevent_sleep(self, value: bool) -> None:
        """``self.prevent_sleep = value``; clearing it counts as activity (and lets a stop go on)."""
        if self.prevent_sleep and not value:
            self._touch()
            self._wake_drainer()
        self.prevent_sleep = value

    @contextlib.contextmanager
    def idle_wait(self) -> Iterator[None]:
        """Around a wait that something durable ends (a queue message, a schedule): a ``run``
        loop blocked in it does not keep the actor awake (RivetKit: queue waits are
        sleep-compatible; the next instance's ``run`` resumes it)."""
        self._idle_waits += 1
        self._touch()
        try:
            yield
        finally:
            self._idle_waits -= 1
            self._touch()

    def sleep_blocked(self) -> bool:
        """Whether something in progress keeps the actor awake whatever its idle time."""
        run = self._run_task
        return bool(
            self.prevent_sleep
            or self._inflight
            or self._conns
            or self._raw_sockets
            or self._keep_awake
            or (self._queue is not None and self._queue.busy)
            or (run is not None and not run.done() and self._idle_waits == 0)
        )

    def is_idle(self, now: float) -> bool:
        """Whether the idle timer may put this actor to sleep now."""
        return (
            self.status is InstanceStatus.AWAKE
            and not self.options.no_sleep
            and not self.sleep_blocked()
            and now - self.last_activity >= self.options.sleep_timeout
        )

    def _arm_idle_timer(self) -> None:
        if self._idle_slot is not None or self.options.no_sleep or self.status is not InstanceStatus.AWAKE:
            return
        delay = self.last_activity + self.options.sleep_timeout - self.runtime.clock.monotonic()
        self._idle_slot = self.runtime.idle_timers.add(self, delay)

    def idle_check(self) -> None:
        """The idle timer is due: sleep, or check again when the actor may be idle."""
        self._idle_slot = None
        if self.status is not InstanceStatus.AWAKE:
            return
        timeout = self.options.sleep_timeout
        if self.sleep_blocked():
            delay = timeout  # the blocker's end moves last_activity: the timer then re-arms for it
        else:
            delay = self.last_activity + timeout - self.runtime.clock.monotonic()
            if delay <= 0:
                self.stop()
                return
        self._idle_slot = self.runtime.idle_timers.add(self, delay)

    def _cancel_timers(self) -> None:
        if self._idle_slot is not None:
            self.runtime.idle_timers.discard(self, self._idle_slot)
            self._idle_slot = None
        if self._throttle_handle is not None:
            self._throttle_handle.cancel()
            self._throttle_handle = None

    # -- background work ----------------------------------------------------------

    def keep_awake(self, aw: Awaitable[Any]) -> asyncio.Future[Any]:
        """Run ``aw`` in the background; the actor stays awake until it finishes."""
        return self._track(aw, blocks_sleep=True)

    def wait_until(self, aw: Awaitable[Any]) -> asyncio.Future[Any]:
        """Run ``aw`` in the background; a stop waits for it (within the grace period), but it
        does not keep the actor awake (RivetKit's ``waitUntil``)."""
        return self._track(aw, blocks_sleep=False)

    def _track(self, aw: Awaitable[Any], *, blocks_sleep: bool) -> asyncio.Future[Any]:
        future = asyncio.ensure_future(aw)
        if blocks_sleep:
            if self._keep_awake is None:
                self._keep_awake = set()
            tracked = self._keep_awake
        else:
            if self._wait_until is None:
                self._wait_until = set()
            tracked = self._wait_until
        tracked.add(future)

        def done(f: asyncio.Future[Any]) -> None:
            tracked.discard(f)
            self._touch()
            if not f.cancelled() and f.exception() is not None:
                what = "keepAwake" if blocks_sleep else "actor wait_until"
                self.log.error("%s promise rejected", what, exc_info=f.exception())
            if self.status is InstanceStatus.AWAKE:
                # Background work's state changes are committed once it ends.
                self.persist_soon()
            else:
                self._wake_drainer()

        future.add_done_callback(done)
        return future

    # -- stopping ----------------------------------------------------------------

    def request_sleep(self) -> None:
        if self.status in (InstanceStatus.AWAKE, InstanceStatus.STARTING):
            self.runtime.schedule_stop(self, destroy=False)

    def request_destroy(self) -> None:
        if self.status is not InstanceStatus.STOPPED:
            self.runtime.schedule_stop(self, destroy=True)

    def stop(self, *, destroy: bool = False) -> asyncio.Task[None]:
        """Start stopping; the returned task ends when the actor is stopped.

        A second call is a no-op, except that a destroy asked for while sleeping
        turns the stop into a destroy.
        """
        if self._stop_task is None:
            # Synchronously, so calls arriving from now on wait for the stop and wake it again.
            self.status = InstanceStatus.STOPPING
            # A fresh context: hooks of the stop must not see the calling action's connection.
            self._stop_task = asyncio.get_running_loop().create_task(
                self._stop(destroy), name=f"rivet-stop-{self.actor_id}", context=contextvars.Context()
            )
        elif destroy:
            self._destroy_requested = True
        return self._stop_task

    async def _stop(self, destroy: bool) -> None:
        loop = asyncio.get_running_loop()
        self._cancel_timers()
        self._set_aborted()
        deadline = loop.time() + self.options.sleep_grace_period
        try:
            await self._wait_until_settled(deadline, "call(s) in flight", lambda: bool(self._inflight))
            await self._wait_for_run(deadline)
            await self._run_stop_hook("on_destroy" if destroy else "on_sleep", deadline)
            await self._wait_until_settled(deadline, "background task(s)", self._has_pending_work, cancel=True)
            if self._destroy_requested and not destroy:
                destroy = True  # asked for while going to sleep
                await self._run_stop_hook("on_destroy", deadline)
                await self._wait_until_settled(deadline, "background task(s)", self._has_pending_work, cancel=True)
            await self._release_connections(destroy)
            await self._wait_until_settled(
                deadline, "handler(s) closing", lambda: self._has_pending_work() or bool(self._raw_sockets), cancel=True
            )
            if destroy:
                await self.runtime.store.destroy(self.actor_id, self.generation)
                self.runtime.queues.actor_destroyed(self.actor_id)  # its waiting senders get an answer
                if self.db is not None:
                    await self.db.delete()
                self.log.info("destroyed")
            else:
                await self._final_flush()
                if logger.isEnabledFor(logging.DEBUG):
                    self.log.debug("asleep")
        except LostOwnership:
            self.log.warning("lost ownership before the final flush; state left to the new owner")
        except Exception:
            self.log.exception("stopping failed")
        finally:
            if self.db is not None:
                # Closed after the final flush: nothing the actor kept can write later.
                with contextlib.suppress(Exception):
                    await self.db.close()
            self._mark_stopped()
            self.runtime.forget(self)

    def _has_pending_work(self) -> bool:
        return bool(self._keep_awake or self._wait_until or self.prevent_sleep or self._inflight)

    def _wake_drainer(self) -> None:
        waiter = self._drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _wait_until_settled(
        self, deadline: float, what: str, pending: Callable[[], bool], *, cancel: bool = False
    ) -> None:
        """Wait (until ``deadline``) for ``pending()`` to turn false; each change of a blocker
        wakes the check. At the deadline, leftover background tasks are cancelled."""
        loop = asyncio.get_running_loop()
        while pending():
            remaining = deadline - loop.time()
            if remaining <= 0:
                self.log.warning("%s still running after the %gs grace period", what, self.options.sleep_grace_period)
                if cancel:
                    for task in [*(self._keep_awake or ()), *(self._wait_until or ())]:
                        task.cancel()
                    self.prevent_sleep = False
                return
            self._drain_waiter = loop.create_future()
            try:
                await asyncio.wait_for(asyncio.shield(self._drain_waiter), timeout=remaining)
            except TimeoutError:
                pass
            finally:
                self._drain_waiter = None

    async def _wait_for_run(self, deadline: float) -> None:
        task = self._run_task
        if task is None or task.done():
            return
        loop = asyncio.get_running_loop()
        timeout = max(0.0, min(deadline - loop.time(), self.options.run_stop_timeout))
        await asyncio.wait([task], timeout=timeout)
        if not task.done():
            self.log.warning("run() did not return within %gs of the abort signal; cancelling it", timeout)
            task.cancel()
            await asyncio.wait([task], timeout=1.0)

    async def _run_stop_hook(self, name: str, deadline: float) -> None:
        remaining = max(0.0, deadline - asyncio.get_running_loop().time())
        try:
            async with asyncio.timeout(remaining):
                await self._call_hook(name)
        except TimeoutError:
            self.log.warning("%s did not finish within the %gs grace period", name, self.options.sleep_grace_period)
        except Exception:
            self.log.exception("%s raised", name)

    async def _release_connections(self, destroy: bool) -> None:
        """On destroy, connections close (``on_disconnect``, then close 1000); on sleep they
        hibernate. Raw WebSockets close with 1000 ``actor.stopped`` either way."""
        for ws in list(self._raw_sockets or ()):
            try:
                await ws.close(1000, "actor.stopped")
            except Exception:
                self.log.exception("closing a raw WebSocket failed")
        conns = [conn for conn in (self._conns or {}).values() if conn.sink is not None]
        if not destroy:
            if conns:
                for conn in conns:
                    self.conns.pop(conn.id, None)
                self.runtime.hibernate(self, conns)
            return
        for conn in conns:
            await self.close_conn(conn)
            try:
                await conn.disconnect(None)
            except Exception:
                self.log.exception("closing connection %s failed", conn.id)

    async def _final_flush(self) -> None:
        if self._observer is not None:
            self._observer.flush_now()
        data: bytes | None = None
        if self.definition.has_state:
            try:
                data = self._serialize_state()
            except StateNotSerializable:
                self.log.exception("state not serializable at sleep; keeping the last good state")
                data = self._submitted
        # Connections hibernating on this node keep its lease (renewed with the awake
        # actors' leases): the actor wakes here again, where they are.
        hold = bool(self.runtime.hibernated.get(self.actor_id))
        await self._submit(StateWrite(self.actor_id, self.generation, data, release=not hold, asleep=hold))

    def abandon(self) -> None:
        """Drop this instance without writing anything (it lost ownership)."""
        self._mark_stopped()
        if self.db is not None:
            self.db.close_soon()
        for task in [
            *(self._keep_awake or ()),
            *(self._wait_until or ()),
            *([self._run_task] if self._run_task else []),
        ]:
            task.cancel()

    # -- helpers ---------------------------------------------------------------

    async def _startup_hook(self, name: str, *args: Any, timeout: float | None = None) -> Any:
        """A hook of the start sequence, timed for the inspector's metrics."""
        started = time.perf_counter()
        try:
            return await self._call_hook(name, *args, timeout=timeout)
        finally:
            self.stats.hook_seconds[name] = time.perf_counter() - started

    async def _call_hook(self, name: str, *args: Any, timeout: float | None = None) -> Any:
        hook = self.definition.hook(name)
        if hook is None:
            return _MISSING
        result = hook(self.actor, *args)
        if inspect.isawaitable(result):
            if timeout is None:
                return await result
            try:
                async with asyncio.timeout(timeout):
                    return await result
            except TimeoutError:
                raise RivetError(
                    f"Hook {name} of actor {self.definition.name!r} timed out after {timeout:g}s"
                ) from None
        return result

    def client(self, namespace: str | None = None) -> Any:
        """An in-process client for the actor's own namespace unless another is named."""
        return self.runtime.client(namespace or self.namespace)


async def _maybe_await(value: Any) -> Any:
    if inspect.isawaitable(value):
        return await value
    return value
