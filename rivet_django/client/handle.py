"""Accessors and handles: the objects a client hands out to reach actors.

``client.counter`` is an :class:`ActorAccessor`; its ``get``/``get_or_create``/
``create``/``get_for_id`` return an :class:`ActorHandle`, a stateless pointer
(an :class:`~rivet_django.client.transport.ActorQuery` plus connection params)
whose calls each travel through the client's
:class:`~rivet_django.client.transport.Transport`. Any public attribute a handle
does not define is an action: ``await handle.increment(5)``.

The ``Sync*`` classes are the blocking versions used by
:class:`~rivet_django.client.client.Client`: thin wrappers that run the async
methods on the client's private loop.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from typing import Any, Final, TypeVar

import httpx

from .connection import DEFAULT_CALL_TIMEOUT, ActorConnection, SyncActorConnection
from .loop import LoopThread
from .transport import ActorQuery, Transport

__all__ = [
    "ActorAccessor",
    "ActorHandle",
    "QueueSender",
    "SyncActorAccessor",
    "SyncActorHandle",
    "SyncQueueSender",
    "normalize_key",
]

T = TypeVar("T")

KeyLike = str | Sequence[str] | None


def normalize_key(key: KeyLike) -> tuple[str, ...]:
    """A key as a tuple of parts: a str is one part, None is the empty key."""
    if key is None:
        return ()
    if isinstance(key, str):
        return (key,)
    if isinstance(key, bytes | bytearray):
        raise TypeError("actor key parts must be str, not bytes")
    parts = tuple(key)
    for part in parts:
        if not isinstance(part, str):
            raise TypeError(
                f"actor key parts must be str, got {type(part).__name__}: {part!r}"
            )
    return parts


class _Unset(enum.Enum):
    TOKEN = 0


#: "Use the handle's params" for ``connect()``.
UNSET: Final = _Unset.TOKEN


def _body_bytes(body: bytes | str | None) -> bytes | None:
    return body.encode() if isinstance(body, str) else body


class QueueSender:
    """``handle.queue``: sends messages to the actor's durable queues."""

    def __init__(self, handle: ActorHandle) -> None:
        self._handle = handle

    async def send(
        self, name: str, body: Any, wait: bool = False, timeout: float | None = None
    ) -> dict[str, Any]:
        """Send ``body`` to queue ``name``; with ``wait=True`` wait up to ``timeout`` seconds for completion.

        Returns ``{"status": "completed" | "timedOut", "response"?: value}``.
        """
        h = self._handle
        return await h._transport.send_queue(
            h._query, name, body, wait, timeout, h._params
        )


class ActorHandle:
    """A stateless pointer to one actor; every call is its own request.

    Handle methods (``action``, ``resolve``, ``queue``, ``fetch``, ``connect``, ``destroy``)
    shadow actions of the same name: call those with ``handle.action("name", ...)``.
    """

    def __init__(
        self, transport: Transport, query: ActorQuery, params: Any = None
    ) -> None:
        self._transport = transport
        self._query = query
        self._params = params

    @property
    def query(self) -> ActorQuery:
        """What this handle points at."""
        return self._query

    @property
    def params(self) -> Any:
        """The connection params sent with every call."""
        return self._params

    async def action(self, name: str, *args: Any) -> Any:
        """Call action ``name`` with positional ``args`` and return its output."""
        return await self._transport.call_action(
            self._query, name, list(args), self._params
        )

    async def resolve(self) -> str:
        """The actor's id (for ``get_or_create`` handles this creates the actor if needed)."""
        return await self._transport.resolve(self._query)

    @property
    def queue(self) -> QueueSender:
        """The actor's queues: ``await handle.queue.send("jobs", body)``."""
        return QueueSender(self)

    async def fetch(
        self,
        path: str,
        method: str = "GET",
        headers: Mapping[str, str] | None = None,
        body: bytes | str | None = None,
    ) -> httpx.Response:
        """Send a raw HTTP request to the actor's ``on_request``; the response is returned as is."""
        return await self._transport.fetch(
            self._query, path, method, headers, _body_bytes(body), self._params
        )

    async def websocket(self, path: str = "/") -> Any:
        """A raw WebSocket to the actor's ``on_websocket`` (a ``websockets`` client connection).

        ``await ws.send(str | bytes)``, ``await ws.recv()``, ``async for message in ws``,
        ``await ws.close()``; use it as ``async with await handle.websocket("/x") as ws``.
        """
        from websockets.asyncio.client import connect
        from websockets.typing import Subprotocol

        url, protocols = await self._transport.websocket_target(self._query, path, self._params)
        return await connect(url, subprotocols=[Subprotocol(p) for p in protocols], max_size=None)

    def connect(
        self, params: Any = UNSET, *, call_timeout: float | None = DEFAULT_CALL_TIMEOUT
    ) -> ActorConnection:
        """Open a stateful connection to the actor (actions, events, reconnects).

        Returns at once; the connection opens in the background (see
        :class:`~rivet_django.client.connection.ActorConnection`). ``params``
        replaces the handle's connection params; ``call_timeout`` bounds each
        call made through it.
        """
        return ActorConnection(
            self._transport,
            self._query,
            self._params if params is UNSET else params,
            call_timeout=call_timeout,
        )

    async def destroy(self) -> None:
        """Destroy the actor (a key handle resolves it first)."""
        actor_id = (
            self._query.actor_id if self._query.method == "id" else await self.resolve()
        )
        assert actor_id is not None
        await self._transport.destroy(actor_id)

    def __getattr__(self, name: str) -> Callable[..., Awaitable[Any]]:
        # Only reached for names the class does not define: those are actions.
        if name.startswith("_"):
            raise AttributeError(name)

        async def call(*args: Any) -> Any:
            return await self.action(name, *args)

        call.__name__ = call.__qualname__ = name
        return call

    def __repr__(self) -> str:
        q = self._query
        target = (
            f"id={q.actor_id!r}" if q.method == "id" else f"key={list(q.key or ())!r}"
        )
        return f"<ActorHandle {q.name} {q.method} {target}>"


class ActorAccessor:
    """``client.<name>``: builds handles to actors of one registered name."""

    def __init__(self, transport: Transport, name: str) -> None:
        self._transport = transport
        self.name = name

    def get(self, key: KeyLike = None, params: Any = None) -> ActorHandle:
        """A handle to an existing actor; calls raise ``actor.not_found`` if there is none."""
        return self._handle(
            ActorQuery(self.name, key=normalize_key(key), method="get"), params
        )

    def get_or_create(
        self, key: KeyLike = None, create_with_input: Any = None, params: Any = None
    ) -> ActorHandle:
        """A handle that creates the actor (with ``create_with_input``) on first use if needed."""
        query = ActorQuery(
            self.name,
            key=normalize_key(key),
            method="getOrCreate",
            input=create_with_input,
            has_input=create_with_input is not None,
        )
        return self._handle(query, params)

    async def create(
        self, key: KeyLike = None, input: Any = None, params: Any = None
    ) -> ActorHandle:
        """Create the actor now and return a handle to it by id (``actor.duplicate_key`` if taken)."""
        actor_id = await self._transport.create(
            self.name, normalize_key(key), input, input is not None
        )
        return self.get_for_id(actor_id, params)

    def get_for_id(self, actor_id: str, params: Any = None) -> ActorHandle:
        """A handle to the actor with id ``actor_id``."""
        return self._handle(
            ActorQuery(self.name, actor_id=actor_id, method="id"), params
        )

    def _handle(self, query: ActorQuery, params: Any) -> ActorHandle:
        return ActorHandle(self._transport, query, params)

    def __repr__(self) -> str:
        return f"<ActorAccessor {self.name}>"


# -- synchronous wrappers -------------------------------------------------------


class _Blocking:
    """Shared by the sync wrappers: runs a coroutine on the client's loop.

    ``owner`` is the :class:`~rivet_django.client.Client` the wrapper came from: holding
    it keeps the client (whose collection stops the loop) alive as long as the wrapper,
    so ``Client.local().counter.get_or_create(k).increment(1)`` works on a temporary client.
    """

    def __init__(self, runner: LoopThread, owner: Any = None) -> None:
        self._runner = runner
        self._owner = owner

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self._runner.run(coro)


class SyncQueueSender(_Blocking):
    """Blocking ``handle.queue``."""

    def __init__(self, queue: QueueSender, runner: LoopThread, owner: Any = None) -> None:
        super().__init__(runner, owner)
        self._queue = queue

    def send(
        self, name: str, body: Any, wait: bool = False, timeout: float | None = None
    ) -> dict[str, Any]:
        """Blocking :meth:`QueueSender.send`."""
        return self._run(self._queue.send(name, body, wait, timeout))


class SyncActorHandle(_Blocking):
    """Blocking :class:`ActorHandle`: ``handle.increment(5)`` returns the output."""

    def __init__(self, handle: ActorHandle, runner: LoopThread, owner: Any = None) -> None:
        super().__init__(runner, owner)
        self._handle = handle

    @property
    def async_handle(self) -> ActorHandle:
        """The wrapped async handle."""
        return self._handle

    @property
    def query(self) -> ActorQuery:
        """What this handle points at."""
        return self._handle.query

    @property
    def params(self) -> Any:
        """The connection params sent with every call."""
        return self._handle.params

    def action(self, name: str, *args: Any) -> Any:
        """Blocking :meth:`ActorHandle.action`."""
        return self._run(self._handle.action(name, *args))

    def resolve(self) -> str:
        """Blocking :meth:`ActorHandle.resolve`."""
        return self._run(self._handle.resolve())

    @property
    def queue(self) -> SyncQueueSender:
        """Blocking :attr:`ActorHandle.queue`."""
        return SyncQueueSender(self._handle.queue, self._runner, self._owner)

    def fetch(
        self,
        path: str,
        method: str = "GET",
        headers: Mapping[str, str] | None = None,
        body: bytes | str | None = None,
    ) -> httpx.Response:
        """Blocking :meth:`ActorHandle.fetch` (the response body is already read)."""
        return self._run(self._handle.fetch(path, method, headers, body))

    def websocket(self, path: str = "/") -> Any:
        """A blocking raw WebSocket (``websockets.sync`` connection) to the actor's ``on_websocket``."""
        from websockets.sync.client import connect
        from websockets.typing import Subprotocol

        url, protocols = self._run(
            self._handle._transport.websocket_target(self._handle._query, path, self._handle._params)
        )
        return connect(url, subprotocols=[Subprotocol(p) for p in protocols], max_size=None)

    def destroy(self) -> None:
        """Blocking :meth:`ActorHandle.destroy`."""
        self._run(self._handle.destroy())

    def connect(
        self, params: Any = UNSET, *, call_timeout: float | None = DEFAULT_CALL_TIMEOUT
    ) -> SyncActorConnection:
        """A blocking :meth:`ActorHandle.connect`; its callbacks run on the client's loop thread."""
        connection = self._runner.call(lambda: self._handle.connect(params, call_timeout=call_timeout))
        return SyncActorConnection(connection, self._runner, self._owner)

    def __getattr__(self, name: str) -> Callable[..., Any]:
        if name.startswith("_"):
            raise AttributeError(name)

        def call(*args: Any) -> Any:
            return self.action(name, *args)

        call.__name__ = call.__qualname__ = name
        return call

    def __repr__(self) -> str:
        return repr(self._handle).replace("<ActorHandle", "<SyncActorHandle", 1)


class SyncActorAccessor(_Blocking):
    """Blocking :class:`ActorAccessor`."""

    def __init__(self, accessor: ActorAccessor, runner: LoopThread, owner: Any = None) -> None:
        super().__init__(runner, owner)
        self._accessor = accessor
        self.name = accessor.name

    def get(self, key: KeyLike = None, params: Any = None) -> SyncActorHandle:
        """See :meth:`ActorAccessor.get`."""
        return self._wrap(self._accessor.get(key, params))

    def get_or_create(
        self, key: KeyLike = None, create_with_input: Any = None, params: Any = None
    ) -> SyncActorHandle:
        """See :meth:`ActorAccessor.get_or_create`."""
        return self._wrap(self._accessor.get_or_create(key, create_with_input, params))

    def create(
        self, key: KeyLike = None, input: Any = None, params: Any = None
    ) -> SyncActorHandle:
        """Blocking :meth:`ActorAccessor.create`."""
        return self._wrap(self._run(self._accessor.create(key, input, params)))

    def get_for_id(self, actor_id: str, params: Any = None) -> SyncActorHandle:
        """See :meth:`ActorAccessor.get_for_id`."""
        return self._wrap(self._accessor.get_for_id(actor_id, params))

    def _wrap(self, handle: ActorHandle) -> SyncActorHandle:
        return SyncActorHandle(handle, self._runner, self._owner)

    def __repr__(self) -> str:
        return f"<SyncActorAccessor {self.name}>"
