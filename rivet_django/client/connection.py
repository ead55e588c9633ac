"""Stateful connections: ``handle.connect()`` gives an :class:`ActorConnection`.

::

    async with client.counter.get_or_create(["c"]).connect() as conn:
        conn.on("count", lambda count: print("count is", count))
        await conn.increment(5)

A connection behaves like the official JS client's ``ActorConn``:

- ``handle.connect()`` returns at once and connects in the background
  (``status``: ``idle`` -> ``connecting`` -> ``connected``).
- Actions are methods (``await conn.increment(5)``, or ``conn.action(name,
  *args)``); a call made before the connection is open waits for it, up to
  the call's timeout.
- ``on``/``once`` listen to events; the first listener of a name subscribes
  to it on the actor, removing the last unsubscribes.
- When the socket drops, calls in flight fail, ``status`` becomes
  ``disconnected`` and the connection reconnects with exponential backoff,
  subscribing again to every event that still has listeners.
- If the actor refuses the connection (a connect hook raised, the actor
  does not exist...), the connection gives up: ``status`` goes back to
  ``idle``, ``on_error`` callbacks get the :class:`ActorError` and every call
  raises it.
- ``dispose()`` closes it (code 1000) for good.

Callbacks may be plain functions or coroutine functions (those run as tasks).
They run on the connection's event loop; an exception in one is logged and
does not affect the others.

The logic here does not depend on how messages travel: a
:class:`~rivet_django.client.transport.Transport` opens a
:class:`~rivet_django.client.channel.ConnectionChannel` per attempt (a
WebSocket over HTTP, or in-process for ``Client.local()``).
:class:`SyncActorConnection` is the blocking form used by ``Client``.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import inspect
import logging
import random
from collections import deque
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, Final, Self

from rivet_django.protocol import (
    ActionRequest,
    ActionResponse,
    ErrorMessage,
    Event,
    Init,
    SubscriptionRequest,
    ToClient,
    ToServer,
)

from .channel import ChannelClosed, ConnectionChannel, parse_close_reason
from .errors import (
    ActorError,
    ConnectionClosedError,
    ConnectionDisposedError,
    ConnectionLostError,
    HttpRequestError,
)
from .loop import LoopThread
from .transport import ActorQuery, Transport

__all__ = [
    "DEFAULT_CALL_TIMEOUT",
    "ActorConnection",
    "ConnectionStatus",
    "SyncActorConnection",
    "Unsubscribe",
]

logger = logging.getLogger("rivet_django.client")

#: How long a call waits, in total, for the connection to open and the answer
#: to arrive. Longer than the server's 60 s action timeout, so that error wins.
DEFAULT_CALL_TIMEOUT: Final = 90.0

#: How long an attempt may take to get the actor's ``Init`` after the socket opened.
DEFAULT_OPEN_TIMEOUT: Final = 30.0

#: Reconnect backoff: the delay doubles from the first to the last value, with jitter.
RECONNECT_DELAY: Final = 0.1
MAX_RECONNECT_DELAY: Final = 5.0

Unsubscribe = Callable[[], None]

# Errors after which reconnecting may succeed: the actor is between two lives
# (the JS client's "lifecycle" signals, plus our lease hand-over).
_TRANSIENT_CODES: Final = frozenset(
    {
        ("actor", "stopping"),
        ("actor", "restarting"),
        ("actor", "starting"),
        ("actor", "stopped"),
        ("actor", "lost_ownership"),
        ("ws", "going_away"),
        ("guard", "service_unavailable"),
        ("guard", "actor_wake_retries_exceeded"),
        ("guard", "actor_stopped_while_waiting"),
        ("guard", "actor_ready_timeout"),
        ("guard", "tunnel_request_aborted"),
        ("guard", "tunnel_message_timeout"),
        ("guard", "tunnel_response_closed"),
        ("guard", "gateway_response_start_timeout"),
    }
)


class ConnectionStatus(enum.StrEnum):
    """Where a connection is; compares equal to the JS client's strings."""

    IDLE = "idle"
    """Not connected and not trying: before the first use, after ``dispose()`` or a refusal."""
    CONNECTING = "connecting"
    """An attempt is under way."""
    CONNECTED = "connected"
    """The actor sent ``Init``; calls and events flow."""
    DISCONNECTED = "disconnected"
    """The connection was lost or an attempt failed; it retries after a backoff."""


class _Default(enum.Enum):
    TOKEN = 0


#: "Use the connection's ``call_timeout``" for :meth:`ActorConnection.action`.
DEFAULT: Final = _Default.TOKEN


class _Listener:
    """One ``on``/``once`` registration (compared by identity)."""

    __slots__ = ("callback", "once")

    def __init__(self, callback: Callable[..., Any], once: bool) -> None:
        self.callback = callback
        self.once = once


class ActorConnection:
    """A stateful connection to one actor: actions, events and automatic reconnects.

    Made by :meth:`ActorHandle.connect() <rivet_django.client.handle.ActorHandle.connect>`.
    Attributes that are not defined here are actions (``await conn.increment(1)``);
    use :meth:`action` for actions whose names clash with these methods. Use it
    from the event loop it runs on (the first one it was used from); other
    threads go through :class:`SyncActorConnection`.
    """

    def __init__(
        self,
        transport: Transport,
        query: ActorQuery,
        params: Any = None,
        *,
        call_timeout: float | None = DEFAULT_CALL_TIMEOUT,
        open_timeout: float | None = DEFAULT_OPEN_TIMEOUT,
        reconnect_delay: float = RECONNECT_DELAY,
        max_reconnect_delay: float = MAX_RECONNECT_DELAY,
    ) -> None:
        self._transport = transport
        self._query = query
        self._params = params
        self._call_timeout = call_timeout
        self._open_timeout = open_timeout
        self._reconnect_delay = reconnect_delay
        self._max_reconnect_delay = max(reconnect_delay, max_reconnect_delay)

        self._status = ConnectionStatus.IDLE
        self._disposed = False
        # Why the connection gave up (a refusal); every later call raises it.
        self._failure: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: asyncio.Task[None] | None = None
        self._channel: ConnectionChannel | None = None
        self._actor_id: str | None = None
        self._connection_id: str | None = None

        self._next_action_id = 0
        self._in_flight: dict[int, asyncio.Future[Any]] = {}
        self._open_waiters: set[asyncio.Future[None]] = set()
        self._outbox: deque[ToServer] = deque()
        self._writer: asyncio.Task[None] | None = None
        self._callback_tasks: set[asyncio.Future[Any]] = set()

        self._listeners: dict[str, list[_Listener]] = {}
        self._open_handlers: list[Callable[[], Any]] = []
        self._close_handlers: list[Callable[[], Any]] = []
        self._error_handlers: list[Callable[[ActorError], Any]] = []
        self._status_handlers: list[Callable[[ConnectionStatus], Any]] = []

        transport.connections.add(self)
        self._start()

    # -- public state -------------------------------------------------------------

    @property
    def status(self) -> ConnectionStatus:
        """``idle``, ``connecting``, ``connected`` or ``disconnected``."""
        return self._status

    @property
    def is_connected(self) -> bool:
        """Whether :attr:`status` is ``connected``."""
        return self._status is ConnectionStatus.CONNECTED

    @property
    def actor_id(self) -> str | None:
        """The actor's id, from the last ``Init`` (None before the first one)."""
        return self._actor_id

    @property
    def connection_id(self) -> str | None:
        """The server's id of the current connection (changes on reconnect)."""
        return self._connection_id

    @property
    def query(self) -> ActorQuery:
        """What this connection points at."""
        return self._query

    @property
    def params(self) -> Any:
        """The connection params sent on every attempt."""
        return self._params

    @property
    def disposed(self) -> bool:
        """Whether :meth:`dispose` was called."""
        return self._disposed

    # -- events -----------------------------------------------------------------

    def on(self, event: str, callback: Callable[..., Any]) -> Unsubscribe:
        """Call ``callback(*args)`` for every ``event``; returns a function that removes it."""
        return self._add_listener(event, callback, once=False)

    def once(self, event: str, callback: Callable[..., Any]) -> Unsubscribe:
        """Call ``callback(*args)`` for the next ``event`` only; returns a function that removes it."""
        return self._add_listener(event, callback, once=True)

    def off(self, event: str, callback: Callable[..., Any] | None = None) -> None:
        """Remove ``callback`` from ``event`` (every listener of ``event`` if None)."""
        for listener in list(self._listeners.get(event, ())):
            if callback is None or listener.callback == callback:
                self._remove_listener(event, listener)

    def on_open(self, callback: Callable[[], Any]) -> Unsubscribe:
        """Call ``callback()`` whenever the connection opens (soon, if it is open already)."""
        self._open_handlers.append(callback)
        if self._status is ConnectionStatus.CONNECTED and self._loop is not None:
            self._loop.call_soon(self._late_open, callback)
        return _remover(self._open_handlers, callback)

    def on_close(self, callback: Callable[[], Any]) -> Unsubscribe:
        """Call ``callback()`` whenever an open connection closes (lost or disposed)."""
        self._close_handlers.append(callback)
        return _remover(self._close_handlers, callback)

    def on_error(self, callback: Callable[[ActorError], Any]) -> Unsubscribe:
        """Call ``callback(error)`` for connection-level :class:`ActorError`\\ s (refusals, close reasons)."""
        self._error_handlers.append(callback)
        return _remover(self._error_handlers, callback)

    def on_status_change(self, callback: Callable[[ConnectionStatus], Any]) -> Unsubscribe:
        """Call ``callback(status)`` on every change of :attr:`status`."""
        self._status_handlers.append(callback)
        return _remover(self._status_handlers, callback)

    # -- calls --------------------------------------------------------------------

    async def action(self, name: str, *args: Any, timeout: float | _Default | None = DEFAULT) -> Any:
        """Call action ``name`` with ``args`` over the connection and return its output.

        Waits for the connection if it is not open yet. ``timeout`` (seconds,
        None for no limit) bounds the whole call; it defaults to the
        connection's ``call_timeout``. Raises :class:`ActorError` for the
        actor's errors, :class:`ConnectionClosedError` if the connection
        ends first and :class:`TimeoutError` when time runs out.
        """
        limit = self._call_timeout if timeout is DEFAULT else timeout
        assert not isinstance(limit, _Default)
        self._start()
        try:
            async with asyncio.timeout(limit) as scope:
                await self._wait_connected()
                loop = asyncio.get_running_loop()
                action_id = self._next_action_id
                self._next_action_id += 1
                future: asyncio.Future[Any] = loop.create_future()
                self._in_flight[action_id] = future
                try:
                    self._send(ActionRequest(action_id, name, list(args)))
                    return await future
                finally:
                    self._in_flight.pop(action_id, None)
        except TimeoutError:
            if scope.expired():
                raise TimeoutError(f"Action {name!r} got no answer within {limit:g}s") from None
            raise

    async def wait_open(self, timeout: float | None = None) -> None:
        """Wait until the connection is open; raises why it cannot be (or :class:`TimeoutError`)."""
        self._start()
        try:
            async with asyncio.timeout(timeout) as scope:
                await self._wait_connected()
        except TimeoutError:
            if scope.expired():
                raise TimeoutError(f"The connection did not open within {timeout:g}s") from None
            raise

    async def dispose(self) -> None:
        """Close the connection (code 1000) and stop reconnecting; pending calls fail. Idempotent."""
        if self._disposed:
            return
        self._disposed = True
        self._transport.connections.discard(self)
        self._set_status(ConnectionStatus.IDLE)
        self._fail_calls(ConnectionDisposedError())
        channel = self._channel
        if channel is not None:
            try:
                await channel.close(1000, "Disposed")
            except Exception as exc:
                logger.debug("Closing a disposed connection failed: %r", exc)
        runner = self._runner
        if runner is not None and not runner.done() and runner is not asyncio.current_task():
            runner.cancel()
            await asyncio.wait({runner})

    def __getattr__(self, name: str) -> Callable[..., Awaitable[Any]]:
        # Only reached for names the class does not define: those are actions.
        if name.startswith("_"):
            raise AttributeError(name)

        async def call(*args: Any) -> Any:
            return await self.action(name, *args)

        call.__name__ = call.__qualname__ = name
        return call

    async def __aenter__(self) -> Self:
        self._start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.dispose()

    def __repr__(self) -> str:
        q = self._query
        target = f"id={q.actor_id!r}" if q.method == "id" else f"key={list(q.key or ())!r}"
        return f"<ActorConnection {q.name} {target} {self._status.value}>"

    # -- lifecycle ------------------------------------------------------------------

    def _start(self) -> None:
        """Start connecting in the background, once there is a running loop."""
        if self._runner is not None or self._disposed or self._failure is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop yet: the first await on the connection starts it
        self._loop = loop
        self._set_status(ConnectionStatus.CONNECTING)
        self._runner = loop.create_task(self._run(), name=f"rivet-connection-{self._query.name}")

    async def _run(self) -> None:
        """Connect, serve, reconnect, until disposed or refused."""
        failures = 0
        try:
            while not self._disposed:
                self._set_status(ConnectionStatus.CONNECTING)
                try:
                    channel, init = await self._open()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    if self._disposed:
                        return
                    if not self._should_retry(exc):
                        self._give_up(exc)
                        return
                    failures += 1
                    logger.info("Connection attempt %d to %r failed, retrying: %s", failures, self, exc)
                    self._set_status(ConnectionStatus.DISCONNECTED)
                    await asyncio.sleep(self._backoff(failures))
                    continue
                closed = await self._serve(channel, init)
                if self._disposed:
                    return
                self._lost(closed)
                failures = 1
                await asyncio.sleep(self._backoff(failures))
        except asyncio.CancelledError:
            if not self._disposed:
                raise
        except Exception as exc:  # pragma: no cover - a bug here must not hang callers
            logger.exception("Connection %r failed", self)
            self._give_up(exc)

    async def _open(self) -> tuple[ConnectionChannel, Init]:
        """One attempt: open a channel and wait for the actor's ``Init`` (bounded by ``open_timeout``)."""
        channel: ConnectionChannel | None = None
        try:
            async with asyncio.timeout(self._open_timeout):
                channel = await self._transport.open_connection(self._query, self._params)
                init = await self._handshake(channel)
        except BaseException:
            if channel is not None:
                await _close_quietly(channel, 1000, "")
            raise
        return channel, init

    async def _handshake(self, channel: ConnectionChannel) -> Init:
        while True:
            try:
                message = await channel.receive()
            except ChannelClosed as closed:
                raise _close_error(closed) from None
            if isinstance(message, Init):
                return message
            if isinstance(message, ErrorMessage) and message.action_id is None:
                # A refusal: the server closes right after (1011 group.code).
                raise ActorError(message.group, message.code, message.message, message.metadata)
            if isinstance(message, Event):
                self._dispatch_event(message)

    async def _serve(self, channel: ConnectionChannel, init: Init) -> ChannelClosed:
        """Be connected on ``channel`` until it closes."""
        self._channel = channel
        self._actor_id = init.actor_id
        self._connection_id = init.connection_id
        # Subscriptions go out before anything a waiting call sends.
        for event in self._listeners:
            self._send(SubscriptionRequest(event, True))
        self._set_status(ConnectionStatus.CONNECTED)
        try:
            while True:
                try:
                    message = await channel.receive()
                except ChannelClosed as closed:
                    return closed
                self._handle(message)
        finally:
            self._channel = None
            self._outbox.clear()
            if self._writer is not None and not self._writer.done():
                self._writer.cancel()
            self._writer = None

    def _lost(self, closed: ChannelClosed) -> None:
        """An open connection closed by itself: fail what is in flight, then reconnect."""
        error = _close_error(closed)
        logger.info("Connection %r closed (code %s, reason %r); reconnecting", self, closed.code, closed.reason)
        self._set_status(ConnectionStatus.DISCONNECTED)
        self._fail_in_flight(error)
        if isinstance(error, ActorError):
            self._dispatch_error(error)

    def _give_up(self, exc: BaseException) -> None:
        """The actor refused (or something unrecoverable happened): stop for good."""
        if isinstance(exc, ActorError):
            error = exc
        else:
            error = ActorError(
                "client",
                "connection_open_failed",
                f"Failed to open connection: {exc}",
                {"error": str(exc)},
            )
            error.__cause__ = exc
        logger.info("Connection %r gave up: %s", self, error)
        self._failure = error
        self._transport.connections.discard(self)
        self._set_status(ConnectionStatus.IDLE)
        self._fail_calls(error)
        self._dispatch_error(error)

    def _should_retry(self, exc: BaseException) -> bool:
        if isinstance(exc, ActorError):
            key = (exc.group, exc.code)
            if key in _TRANSIENT_CODES:
                return True
            if exc.group == "actor" and exc.code == "internal_error" and exc.message == "Actor is stopping":
                return True
            # A key query resolves afresh on every attempt: the actor it found
            # may be gone, and getOrCreate makes a new one.
            return self._query.method == "getOrCreate" and _is_stale_actor(exc.group, exc.code)
        if isinstance(exc, HttpRequestError):
            return exc.status_code is None or exc.status_code >= 500 or exc.status_code in (408, 429)
        return isinstance(exc, ConnectionLostError | TimeoutError | OSError)

    def _backoff(self, failures: int) -> float:
        delay = min(self._max_reconnect_delay, self._reconnect_delay * 2 ** max(0, failures - 1))
        return random.uniform(delay / 2, delay)

    # -- calls and messages -----------------------------------------------------------

    async def _wait_connected(self) -> None:
        if self._disposed:
            raise ConnectionDisposedError()
        if self._failure is not None:
            raise _fresh(self._failure)
        if self._status is ConnectionStatus.CONNECTED:
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._open_waiters.add(waiter)
        try:
            await waiter
        finally:
            self._open_waiters.discard(waiter)

    def _send(self, message: ToServer) -> None:
        """Queue ``message`` for the open channel (dropped when there is none)."""
        channel = self._channel
        if channel is None or self._loop is None:
            return
        self._outbox.append(message)
        if self._writer is None or self._writer.done():
            self._writer = self._loop.create_task(self._write(channel))

    async def _write(self, channel: ConnectionChannel) -> None:
        # One writer per channel keeps messages in the order they were made.
        while self._outbox and self._channel is channel:
            message = self._outbox.popleft()
            try:
                await channel.send(message)
            except ChannelClosed:
                return  # the reader sees the close and handles it
            except Exception as exc:
                if isinstance(message, ActionRequest):
                    future = self._in_flight.pop(message.id, None)
                    if future is not None and not future.done():
                        future.set_exception(exc)
                else:
                    logger.warning("Could not send %r: %r", message, exc)

    def _handle(self, message: ToClient) -> None:
        if isinstance(message, ActionResponse):
            future = self._in_flight.pop(message.id, None)
            if future is None:
                logger.debug("Response to action %d that nobody waits for", message.id)
            elif not future.done():
                future.set_result(message.output)
        elif isinstance(message, ErrorMessage):
            error = ActorError(message.group, message.code, message.message, message.metadata)
            if message.action_id is None:
                logger.warning("Connection error on %r: %s", self, error)
                self._dispatch_error(error)
                return
            future = self._in_flight.pop(message.action_id, None)
            if future is not None and not future.done():
                future.set_exception(error)
        elif isinstance(message, Event):
            self._dispatch_event(message)
        elif isinstance(message, Init):
            self._actor_id = message.actor_id
            self._connection_id = message.connection_id

    def _fail_in_flight(self, error: BaseException) -> None:
        in_flight = list(self._in_flight.values())
        self._in_flight.clear()
        for future in in_flight:
            if not future.done():
                future.set_exception(_fresh(error))

    def _fail_calls(self, error: BaseException) -> None:
        """Fail calls in flight and calls waiting for the connection."""
        self._fail_in_flight(error)
        waiters = list(self._open_waiters)
        self._open_waiters.clear()
        for waiter in waiters:
            if not waiter.done():
                waiter.set_exception(_fresh(error))

    # -- listeners and callbacks ----------------------------------------------------------

    def _add_listener(self, event: str, callback: Callable[..., Any], *, once: bool) -> Unsubscribe:
        if not callable(callback):
            raise TypeError(f"callback must be callable, got {callback!r}")
        listener = _Listener(callback, once)
        listeners = self._listeners.get(event)
        if listeners is None:
            listeners = self._listeners[event] = []
            self._send(SubscriptionRequest(event, True))
        listeners.append(listener)
        self._start()

        def unsubscribe() -> None:
            self._remove_listener(event, listener)

        return unsubscribe

    def _remove_listener(self, event: str, listener: _Listener) -> None:
        listeners = self._listeners.get(event)
        if listeners is None:
            return
        for index, item in enumerate(listeners):
            if item is listener:
                del listeners[index]
                break
        else:
            return
        if not listeners:
            del self._listeners[event]
            self._send(SubscriptionRequest(event, False))

    def _dispatch_event(self, event: Event) -> None:
        for listener in list(self._listeners.get(event.name, ())):
            if listener.once:
                # Removed before it runs, so a re-entrant event cannot fire it twice.
                self._remove_listener(event.name, listener)
            self._invoke(listener.callback, *event.args)

    def _dispatch_error(self, error: ActorError) -> None:
        for handler in list(self._error_handlers):
            self._invoke(handler, error)

    def _set_status(self, status: ConnectionStatus) -> None:
        previous = self._status
        if previous is status:
            return
        self._status = status
        for handler in list(self._status_handlers):
            self._invoke(handler, status)
        if status is ConnectionStatus.CONNECTED:
            waiters = list(self._open_waiters)
            self._open_waiters.clear()
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)
            for open_handler in list(self._open_handlers):
                self._invoke(open_handler)
        elif previous is ConnectionStatus.CONNECTED:
            for close_handler in list(self._close_handlers):
                self._invoke(close_handler)

    def _late_open(self, callback: Callable[[], Any]) -> None:
        if self._status is ConnectionStatus.CONNECTED and any(h is callback for h in self._open_handlers):
            self._invoke(callback)

    def _invoke(self, callback: Callable[..., Any], *args: Any) -> None:
        """Run a user callback; a coroutine it returns runs as a task. Errors are logged."""
        try:
            result = callback(*args)
        except Exception:
            logger.exception("Connection callback %r raised", callback)
            return
        if inspect.isawaitable(result):
            task = asyncio.ensure_future(result)
            self._callback_tasks.add(task)
            task.add_done_callback(self._callback_done)

    def _callback_done(self, task: asyncio.Future[Any]) -> None:
        self._callback_tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("Connection callback raised", exc_info=task.exception())


def _remover(handlers: list[Any], callback: Any) -> Unsubscribe:
    def remove() -> None:
        for index, item in enumerate(handlers):
            if item is callback:
                del handlers[index]
                return

    return remove


def _is_stale_actor(group: str, code: str) -> bool:
    """Errors meaning the actor a key resolved to is gone (the JS client's ``isStaleResolvedActorError``)."""
    return group == "actor" and (
        code in ("not_found", "starting", "stopping", "not_configured", "dropped_reply", "destroyed")
        or code.startswith("destroyed_")
    )


def _close_error(closed: ChannelClosed) -> Exception:
    """The error a close means for calls: the ``group.code`` reason, else a lost connection."""
    parsed = parse_close_reason(closed.reason)
    if parsed is not None:
        metadata = {"rayId": parsed.ray_id} if parsed.ray_id else None
        return ActorError(parsed.group, parsed.code, f"Connection closed: {closed.reason}", metadata)
    what = "Connection closed" if closed.code == 1000 else "Connection lost"
    return ConnectionLostError(
        f"{what} (code: {closed.code}, reason: {closed.reason})", code=closed.code, reason=closed.reason
    )


def _fresh(error: BaseException) -> BaseException:
    """A new exception equal to ``error``, so raising it twice does not pile up tracebacks."""
    if isinstance(error, ActorError):
        copy = ActorError(error.group, error.code, error.message, error.metadata, status_code=error.status_code)
        copy.__cause__ = error.__cause__
        return copy
    if isinstance(error, ConnectionLostError):
        return ConnectionLostError(str(error), code=error.code, reason=error.reason)
    if isinstance(error, ConnectionDisposedError):
        return ConnectionDisposedError(str(error))
    if isinstance(error, ConnectionClosedError):
        return ConnectionClosedError(str(error))
    return error


async def _close_quietly(channel: ConnectionChannel, code: int, reason: str) -> None:
    with contextlib.suppress(Exception):
        await channel.close(code, reason)


# -- the blocking form ------------------------------------------------------------


class SyncActorConnection:
    """Blocking :class:`ActorConnection` for :class:`~rivet_django.client.Client`.

    Actions block the calling thread until they are answered. The connection
    lives on the client's private loop thread, and **callbacks run on that
    thread**: keep them short, and do not make blocking calls on the
    connection (or the client) from inside them; registering and removing
    listeners and ``dispose()`` are fine there.
    """

    def __init__(self, connection: ActorConnection, runner: LoopThread, owner: Any = None) -> None:
        self._connection = connection
        self._runner = runner
        self._owner = owner  # the Client: it stays alive (and its loop running) while this does

    @property
    def async_connection(self) -> ActorConnection:
        """The wrapped :class:`ActorConnection` (only usable on the client's loop)."""
        return self._connection

    @property
    def status(self) -> ConnectionStatus:
        """See :attr:`ActorConnection.status`."""
        return self._connection.status

    @property
    def is_connected(self) -> bool:
        """See :attr:`ActorConnection.is_connected`."""
        return self._connection.is_connected

    @property
    def actor_id(self) -> str | None:
        """See :attr:`ActorConnection.actor_id`."""
        return self._connection.actor_id

    @property
    def connection_id(self) -> str | None:
        """See :attr:`ActorConnection.connection_id`."""
        return self._connection.connection_id

    def on(self, event: str, callback: Callable[..., Any]) -> Unsubscribe:
        """See :meth:`ActorConnection.on`."""
        return self._hop_unsubscribe(self._runner.call(self._connection.on, event, callback))

    def once(self, event: str, callback: Callable[..., Any]) -> Unsubscribe:
        """See :meth:`ActorConnection.once`."""
        return self._hop_unsubscribe(self._runner.call(self._connection.once, event, callback))

    def off(self, event: str, callback: Callable[..., Any] | None = None) -> None:
        """See :meth:`ActorConnection.off`."""
        self._runner.call(self._connection.off, event, callback)

    def on_open(self, callback: Callable[[], Any]) -> Unsubscribe:
        """See :meth:`ActorConnection.on_open`."""
        return self._hop_unsubscribe(self._runner.call(self._connection.on_open, callback))

    def on_close(self, callback: Callable[[], Any]) -> Unsubscribe:
        """See :meth:`ActorConnection.on_close`."""
        return self._hop_unsubscribe(self._runner.call(self._connection.on_close, callback))

    def on_error(self, callback: Callable[[ActorError], Any]) -> Unsubscribe:
        """See :meth:`ActorConnection.on_error`."""
        return self._hop_unsubscribe(self._runner.call(self._connection.on_error, callback))

    def on_status_change(self, callback: Callable[[ConnectionStatus], Any]) -> Unsubscribe:
        """See :meth:`ActorConnection.on_status_change`."""
        return self._hop_unsubscribe(self._runner.call(self._connection.on_status_change, callback))

    def action(self, name: str, *args: Any, timeout: float | _Default | None = DEFAULT) -> Any:
        """Blocking :meth:`ActorConnection.action`."""
        return self._runner.run(self._connection.action(name, *args, timeout=timeout))

    def wait_open(self, timeout: float | None = None) -> None:
        """Blocking :meth:`ActorConnection.wait_open`."""
        self._runner.run(self._connection.wait_open(timeout))

    def dispose(self) -> None:
        """Blocking :meth:`ActorConnection.dispose`; from a callback it is started and returns at once."""
        if self._runner.closed:
            return
        if self._runner.in_loop_thread():
            self._runner.loop.create_task(self._connection.dispose())
            return
        self._runner.run(self._connection.dispose())

    def _hop_unsubscribe(self, unsubscribe: Unsubscribe) -> Unsubscribe:
        def remove() -> None:
            if not self._runner.closed:
                self._runner.call(unsubscribe)

        return remove

    def __getattr__(self, name: str) -> Callable[..., Any]:
        if name.startswith("_"):
            raise AttributeError(name)

        def call(*args: Any) -> Any:
            return self.action(name, *args)

        call.__name__ = call.__qualname__ = name
        return call

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.dispose()

    def __repr__(self) -> str:
        return repr(self._connection).replace("<ActorConnection", "<SyncActorConnection", 1)
