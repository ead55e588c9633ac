"""One awake actor: its user object, state, turns, commit gate and stop sequence.

Lifecycle (a state machine, ARCHITECTURE.md rule 5)::

    STARTING --start()--> AWAKE --stop()--> STOPPING --final flush--> STOPPED

Creation runs ``create_state -> on_create`` (committed before anything else),
then every wake ``create_vars -> on_wake -> run``. Stopping sets the abort
event, lets in-flight calls finish (up to the grace period), runs ``on_sleep``
or ``on_destroy``, then writes the final state together with the release of
the lease, or deletes everything on destroy.
"""

from __future__ import annotations

import asyncio
import contextvars
import enum
import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from ..exceptions import (
    ActionNotFound,
    ActionTimedOut,
    ActorAborted,
    ActorNotFound,
    Forbidden,
    InvalidRequest,
    LostOwnership,
    RivetError,
    StateNotSerializable,
)
from . import serde
from .conn import Conn, OutgoingEvent, TurnEvents, emit, turn_events
from .kv import ActorKV
from .queue import enter_handler, leave_handler
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
    """Prefixes every record with the actor's name, key and id."""

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        extra = self.extra or {}
        return f"[{extra['actor']} {extra['key']} {extra['actor_id']}] {msg}", kwargs


class ActorInstance:
    """Runtime side of one awake actor; the user's :class:`Actor` object reads through it."""

    # Slots and lazily made helpers keep an idle awake actor small (benchmark target:
    # about 2 KB each); events, futures, sets and adapters appear only when used.
    __slots__ = (
        "__weakref__",
        "_abort_event",
        "_claimed",
        "_conns",
        "_drain_waiter",
        "_in_state_change",
        "_inflight",
        "_keep_awake",
        "_kv",
        "_log",
        "_pending_commit",
        "_queue",
        "_raw_sockets",
        "_run_task",
        "_schedule",
        "_stop_task",
        "_stopped",
        "_submitted",
        "_throttle_handle",
        "actor",
        "actor_id",
        "definition",
        "generation",
        "key",
        "last_activity",
        "namespace",
        "options",
        "prevent_sleep",
        "runtime",
        "state",
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
        self._stopped: asyncio.Future[None] | None = None
        self._conns: dict[str, Conn] | None = None
        self._raw_sockets: set[Any] | None = None
        self.prevent_sleep = False
        self._keep_awake: set[asyncio.Future[Any]] | None = None
        self._stop_task: asyncio.Task[None] | None = None
        self._run_task: asyncio.Task[Any] | None = None
        self._throttle_handle: asyncio.TimerHandle | None = None
        self._in_state_change = False
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
            if self.status in (InstanceStatus.STOPPING, InstanceStatus.STOPPED):
                self._abort_event.set()
        return self._abort_event

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
                logger, {"actor": self.definition.name, "key": list(self.key), "actor_id": self.actor_id}
            )
        return self._log

    def _set_aborted(self) -> None:
        if self._abort_event is not None:
            self._abort_event.set()
        if self._queue is not None:
            self._queue.abort_waits()

    def _mark_stopped(self) -> None:
        self.status = InstanceStatus.STOPPED
        self._set_aborted()
        if self._stopped is not None and not self._stopped.done():
            self._stopped.set_result(None)

    # -- start ------------------------------------------------------------------

    async def start(self) -> None:
        """Run creation (first start only) and wake hooks, then mark the actor awake."""
        claimed = self._claimed
        assert claimed is not None
        if not claimed.initialized:
            input = serde.loads(claimed.input) if claimed.input is not None else None
            if self.definition.has_state:
                created = await self._call_hook("create_state", input)
                self.state = self.definition.make_initial_state(self.actor, input) if created is _MISSING else created
            await self._call_hook("on_create", input)
            data = self._serialize_state() if self.definition.has_state else None
            # The initial state is always committed before the actor serves anything,
            # whatever the durability mode: create_state must never run twice.
            await self.runtime.committer.submit(
                StateWrite(self.actor_id, self.generation, data, initialized=True)
            )
            self._submitted = data
        elif self.definition.has_state:
            self.state = serde.loads(claimed.state) if claimed.state is not None else None
        self._claimed = None  # its bytes are in self.state now
        created_vars = await self._call_hook("create_vars", timeout=self.runtime.config.hook_timeout)
        self.vars = self.definition.make_initial_vars() if created_vars is _MISSING else created_vars
        await self._call_hook("on_wake")
        await self._persist_changes()
        self.status = InstanceStatus.AWAKE
        self.last_activity = self.runtime.clock.monotonic()
        if self.definition.hook("run") is not None:
            self._run_task = asyncio.get_running_loop().create_task(self._run_loop(), name=f"rivet-run-{self.actor_id}")
        if logger.isEnabledFor(logging.DEBUG):  # the adapter stays uncreated for quiet actors
            self.log.debug("awake (generation %d)", self.generation)

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
        if self.status is not InstanceStatus.AWAKE:
            raise NotAwake()
        spec = self.definition.actions.get(name)
        if spec is None:
            raise ActionNotFound(f"Action {name!r} not found on actor {self.definition.name!r}")
        method = getattr(self.actor, spec.attr)
        kwargs = kwargs or {}
        self._check_arguments(name, method, args, kwargs)
        self._begin_turn()
        token = _current_conn.set((self, conn) if conn is not None else None)
        scope = enter_handler()  # queue messages received by the action are acknowledged when it returns
        handled = False
        turn = TurnEvents(self.actor_id) if self.options.durability == "commit" else None
        turn_token = turn_events.set(turn)
        try:
            try:
                output = await self._invoke(name, method, spec.is_async, args, kwargs)
                hook = self.definition.hook("on_before_action_response")
                if hook is not None:
                    output = await _maybe_await(hook(self.actor, name, list(args), output))
            finally:
                try:
                    await self._persist_changes()
                except BaseException:
                    if turn is not None:
                        turn.discard()  # the state these events describe was not committed
                    raise
                if turn is not None:
                    turn.flush()
            handled = True
            return output
        finally:
            turn_events.reset(turn_token)
            _current_conn.reset(token)
            consumer = leave_handler(scope)
            if consumer is not None:
                await consumer.finish(handled)
            self._end_turn()

    async def _invoke(
        self, name: str, method: Callable[..., Any], is_async: bool, args: Any, kwargs: dict[str, Any]
    ) -> Any:
        timeout = self.options.action_timeout
        if not is_async:
            # Sync actions run inline on the loop: a turn that cannot interleave.
            result = method(*args, **kwargs)
            if inspect.isawaitable(result):
                result = await result
            return result
        if timeout is None:
            return await method(*args, **kwargs)
        try:
            async with asyncio.timeout(timeout) as scope:
                return await method(*args, **kwargs)
        except TimeoutError:
            if scope.expired():
                raise ActionTimedOut(f"Action {name!r} timed out after {timeout:g}s") from None
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
        if self._inflight == 0 and self._drain_waiter is not None and not self._drain_waiter.done():
            self._drain_waiter.set_result(None)

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
        self.conns[conn.id] = conn
        # State the hooks changed is committed before the connection is usable.
        await self._persist_changes()
        return conn

    async def close_conn(self, conn: Conn) -> None:
        """Forget a connection and run ``on_disconnect``."""
        if not self._conns or self._conns.pop(conn.id, None) is None:
            return
        self.last_activity = self.runtime.clock.monotonic()
        try:
            await self._call_hook("on_disconnect", conn, timeout=self.runtime.config.hook_timeout)
            if self.status is InstanceStatus.AWAKE:
                await self._persist_changes()
        except Exception:
            self.log.exception("on_disconnect raised")

    def current_conn(self) -> Conn | None:
        current = _current_conn.get()
        if current is None or current[0] is not self:
            return None
        return current[1]

    def current_request(self) -> Any:
        return _current_request.get()

    async def subscribe(self, conn: Conn, event: str, subscribe: bool = True) -> None:
        """Subscribe a connection to an event (checked by ``can_subscribe``) or unsubscribe it."""
        if not subscribe:
            conn.subscriptions.discard(event)
            return
        events = self.definition.events
        spec = events.get(event)
        if events and spec is None:
            raise InvalidRequest(
                f"Actor {self.definition.name!r} has no event {event!r} (declared: {', '.join(sorted(events))})"
            )
        if spec is not None and spec.can_subscribe is not None:
            token = _current_conn.set((self, conn))
            try:
                allowed = await _maybe_await(spec.can_subscribe(self.actor, conn))
            finally:
                _current_conn.reset(token)
            if not allowed:
                raise Forbidden(f"Subscription to {event!r} refused")
        conn.subscriptions.add(event)

    def broadcast(self, event: str, args: tuple[Any, ...]) -> None:
        """Deliver an event to this node's subscribed connections, then publish it for other nodes."""
        emit(self.actor_id, self._deliver, OutgoingEvent(event, args))

    def _deliver(self, message: OutgoingEvent) -> None:
        for conn in (self._conns or {}).values():
            if message.name in conn.subscriptions and conn.sink is not None:
                conn.sink.send_event(message)
        self.runtime.publish(self.actor_id, message)

    # -- raw HTTP and WebSocket ---------------------------------------------------

    async def handle_request(self, request: Any) -> Any:
        """Run ``on_request(request)`` as a turn; its state changes are committed like an action's."""
        hook = self.definition.hook("on_request")
        if hook is None:
            raise ActorNotFound(f"Actor {self.definition.name!r} has no on_request handler")
        if self.status is not InstanceStatus.AWAKE:
            raise NotAwake()
        self._begin_turn()
        token = _current_request.set(request)
        try:
            try:
                response = await _maybe_await(hook(self.actor, request))
            finally:
                await self._persist_changes()
        finally:
            _current_request.reset(token)
            self._end_turn()
        if response is None:
            raise RivetError(f"on_request of actor {self.definition.name!r} returned no response")
        return response

    async def run_websocket(self, ws: Any, request: Any) -> None:
        """Run ``on_websocket(ws)``; the socket keeps the actor awake until the handler returns."""
        hook = self.definition.hook("on_websocket")
        if hook is None:
            raise ActorNotFound(f"Actor {self.definition.name!r} has no on_websocket handler")
        self.raw_sockets.add(ws)
        # Each receive first commits what handling the previous message changed.
        ws.before_receive = self._persist_changes
        token = _current_request.set(request)
        try:
            await _maybe_await(hook(self.actor, ws))
        finally:
            _current_request.reset(token)
            self.raw_sockets.discard(ws)
            self.last_activity = self.runtime.clock.monotonic()
            if self.status is InstanceStatus.AWAKE:
                await self._persist_changes()

    # -- state and the commit gate ---------------------------------------------

    def _serialize_state(self) -> bytes:
        try:
            return serde.dumps(self.state)
        except serde.ValueNotSerializable as exc:
            # Put the last good state back so the actor keeps serving consistent data.
            bad_type = exc.type_name
            self.state = serde.loads(self._submitted) if self._submitted is not None else None
            raise StateNotSerializable(
                f"State of actor {self.definition.name!r} {list(self.key)} ({self.actor_id}) is not serializable: "
                f"{exc.path} holds a value of type {bad_type!r}; the last good state was kept"
            ) from None

    async def _persist_changes(self) -> None:
        """Commit gate: hand a changed state to the committer and wait as durability says."""
        if not self.definition.has_state:
            await self._wait_pending_commit()
            return
        data = self._serialize_state()
        if data == self._submitted:
            await self._wait_pending_commit()
            return
        if not self._in_state_change and self.definition.hook("on_state_change") is not None:
            self._in_state_change = True
            try:
                await self._call_hook("on_state_change", self.state)
            finally:
                self._in_state_change = False
            data = self._serialize_state()
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

    async def _commit(self, data: bytes | None) -> None:
        future = self.runtime.committer.submit(StateWrite(self.actor_id, self.generation, data))
        self._pending_commit = future
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
        pending = self._pending_commit
        if pending is not None and not pending.done() and self.options.durability == "commit":
            await asyncio.shield(pending)

    def _schedule_throttled_save(self) -> None:
        if self._throttle_handle is None:
            loop = asyncio.get_running_loop()
            self._throttle_handle = loop.call_later(self.options.state_save_interval, self._throttled_save)

    def _throttled_save(self) -> None:
        self._throttle_handle = None
        if self.status is InstanceStatus.STOPPED:
            return
        future = self.runtime.committer.submit(StateWrite(self.actor_id, self.generation, self._submitted))
        self._pending_commit = future

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

    # -- sleep, destroy ---------------------------------------------------------

    def keep_awake(self, aw: Awaitable[Any]) -> asyncio.Future[Any]:
        """Run ``aw`` in the background; the actor stays awake until it finishes."""
        future = asyncio.ensure_future(aw)
        if self._keep_awake is None:
            self._keep_awake = set()
        self._keep_awake.add(future)

        def done(f: asyncio.Future[Any]) -> None:
            if self._keep_awake is not None:
                self._keep_awake.discard(f)
            self.last_activity = self.runtime.clock.monotonic()
            if self.status is InstanceStatus.AWAKE:
                # Background work's state changes are committed once it ends.
                self.persist_soon()
            if not f.cancelled() and f.exception() is not None:
                self.log.error("background task failed", exc_info=f.exception())

        future.add_done_callback(done)
        return future

    def is_idle(self, now: float) -> bool:
        """Whether the idle timer may put this actor to sleep now."""
        return (
            self.status is InstanceStatus.AWAKE
            and not self.options.no_sleep
            and not self.prevent_sleep
            and self._inflight == 0
            and not self._conns
            and not self._raw_sockets
            and not self._keep_awake
            and (self._queue is None or not self._queue.busy)
            and now - self.last_activity >= self.options.sleep_timeout
        )

    def request_sleep(self) -> None:
        if self.status in (InstanceStatus.AWAKE, InstanceStatus.STARTING):
            self.runtime.schedule_stop(self, destroy=False)

    def request_destroy(self) -> None:
        if self.status is not InstanceStatus.STOPPED:
            self.runtime.schedule_stop(self, destroy=True)

    def stop(self, *, destroy: bool = False) -> asyncio.Task[None]:
        """Start stopping (idempotent); the returned task ends when the actor is stopped."""
        if self._stop_task is None:
            # Synchronously, so calls arriving from now on wait for the stop and wake it again.
            self.status = InstanceStatus.STOPPING
            self._set_aborted()
            self._stop_task = asyncio.get_running_loop().create_task(
                self._stop(destroy), name=f"rivet-stop-{self.actor_id}"
            )
        return self._stop_task

    async def _stop(self, destroy: bool) -> None:
        if self._throttle_handle is not None:
            self._throttle_handle.cancel()
            self._throttle_handle = None
        grace = self.options.sleep_grace_period
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        if self._inflight:
            self._drain_waiter = loop.create_future()
            try:
                await asyncio.wait_for(asyncio.shield(self._drain_waiter), timeout=grace)
            except TimeoutError:
                self.log.warning("%d call(s) still running after the %gs grace period", self._inflight, grace)
        await self._finish_background(deadline)
        try:
            await self._call_hook("on_destroy" if destroy else "on_sleep")
        except Exception:
            self.log.exception("%s raised", "on_destroy" if destroy else "on_sleep")
        for ws in list(self._raw_sockets or ()):
            try:
                await ws.close(1011, "actor.destroyed" if destroy else "actor.stopping")
            except Exception:
                self.log.exception("closing a raw WebSocket failed")
        for conn in list((self._conns or {}).values()):
            await self.close_conn(conn)
            try:
                # A group.code reason the official client parses; it reconnects and wakes us again.
                await conn.disconnect("actor.destroyed" if destroy else "actor.stopping")
            except Exception:
                self.log.exception("closing connection %s failed", conn.id)
        try:
            if destroy:
                await self.runtime.store.destroy(self.actor_id, self.generation)
                self.runtime.queues.actor_destroyed(self.actor_id)  # its waiting senders get an answer
                self.log.info("destroyed")
            else:
                await self._final_flush()
                if logger.isEnabledFor(logging.DEBUG):
                    self.log.debug("asleep")
        except LostOwnership:
            self.log.warning("lost ownership before the final flush; state left to the new owner")
        except Exception:
            self.log.exception("final flush failed")
        finally:
            self._mark_stopped()
            self.runtime.forget(self)

    async def _finish_background(self, deadline: float) -> None:
        loop = asyncio.get_running_loop()
        tasks: list[asyncio.Future[Any]] = list(self._keep_awake or ())
        if self._run_task is not None:
            tasks.append(self._run_task)
        if not tasks:
            return
        remaining = max(0.0, min(deadline - loop.time(), self.options.run_stop_timeout))
        _, pending = await asyncio.wait(tasks, timeout=remaining)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=1.0)

    async def _final_flush(self) -> None:
        data: bytes | None = None
        if self.definition.has_state:
            try:
                data = self._serialize_state()
            except StateNotSerializable:
                self.log.exception("state not serializable at sleep; keeping the last good state")
                data = self._submitted
        await self.runtime.committer.submit(StateWrite(self.actor_id, self.generation, data, release=True))

    def abandon(self) -> None:
        """Drop this instance without writing anything (it lost ownership)."""
        self._mark_stopped()
        if self._throttle_handle is not None:
            self._throttle_handle.cancel()
        for task in list(self._keep_awake or ()) + ([self._run_task] if self._run_task else []):
            task.cancel()

    # -- helpers ---------------------------------------------------------------

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
                raise RivetError(f"Hook {name} of actor {self.definition.name!r} timed out after {timeout:g}s") from None
        return result

    def client(self) -> Any:
        return self.runtime.client()


async def _maybe_await(value: Any) -> Any:
    if inspect.isawaitable(value):
        return await value
    return value
