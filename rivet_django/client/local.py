"""In-process transport for ``Client.local()`` / ``AsyncClient.local()``.

Calls go straight to this process's actor router (no HTTP, no encoding). When
the caller's event loop is not the runtime's (the sync ``Client`` runs its own
loop thread), each call is handed over to the runtime's loop. A process with no
running node (a script, a WSGI worker) starts one on a background loop thread.

Stateful connections (``handle.connect()``) are held by the runtime like a
WebSocket's, with a sink that turns its events, the answers to calls and its
closes into the protocol messages a WebSocket would carry, so the connection
logic is the same for both transports.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import logging
import os
import socket
import threading
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import httpx

from ..exceptions import INTERNAL_ERROR_GROUP, INTERNAL_ERROR_MESSAGE, ActorNotFound, PublicError
from ..protocol import (
    ActionRequest,
    ActionResponse,
    ErrorMessage,
    Event,
    Init,
    ToClient,
    ToServer,
    cbor_dumps,
    cbor_loads,
)
from .channel import ChannelClosed, ConnectionChannel
from .errors import ActorError
from .transport import ActorQuery, Transport

if TYPE_CHECKING:
    from ..node import LocalNode
    from ..runtime.conn import Conn, OutgoingEvent

__all__ = ["LocalTransport"]

T = TypeVar("T")

logger = logging.getLogger("rivet_django.client")

_background_lock = threading.Lock()


class LocalTransport(Transport):
    """Routes client calls to this project's actor runtime without HTTP."""

    def __init__(self, *, namespace: str | None = None, node: LocalNode | None = None) -> None:
        self._namespace = namespace
        self._fixed_node = node

    @property
    def namespace(self) -> str:
        if self._namespace is None:
            from ..conf import rivet_settings

            return str(rivet_settings.NAMESPACE)
        return self._namespace

    async def _run(self, call: Callable[[LocalNode], Awaitable[T]]) -> T:
        node = self._fixed_node or await _current_node()
        return await self._run_on(node, call)

    async def _run_on(self, node: LocalNode, call: Callable[[LocalNode], Awaitable[T]]) -> T:
        """Run ``call(node)`` on the node's loop (hopping there if needed); errors become ActorError."""
        try:
            loop = asyncio.get_running_loop()
            if node.loop is None or node.loop is loop:
                return await call(node)
            future = asyncio.run_coroutine_threadsafe(_awaitable(call, node), node.loop)
            return await asyncio.wrap_future(future)
        except PublicError as exc:
            raise ActorError(exc.group, exc.code, exc.message, exc.metadata) from exc
        except ActorError:
            raise
        except Exception as exc:
            raise ActorError(INTERNAL_ERROR_GROUP, "internal_error", INTERNAL_ERROR_MESSAGE) from exc

    async def _resolve(self, node: LocalNode, query: ActorQuery) -> str:
        if query.method == "id":
            if not query.actor_id:
                raise ActorError("actor", "invalid_request", "Missing actor id")
            record = await node.router.get_by_id(query.actor_id)
            if record is None or record.name != query.name:
                raise ActorError("actor", "not_found", f"Actor {query.actor_id} not found")
            return record.actor_id
        return await node.router.resolve(
            namespace=self.namespace,
            method=query.method,
            name=query.name,
            key=query.key or (),
            input=query.input if query.has_input else None,
        )

    async def create(self, name: str, key: Sequence[str], input: Any = None, has_input: bool = False) -> str:
        async def call(node: LocalNode) -> str:
            record = await node.router.create(self.namespace, name, list(key), input if has_input else None)
            return record.actor_id

        return await self._run(call)

    async def resolve(self, query: ActorQuery) -> str:
        return await self._run(lambda node: self._resolve(node, query))

    async def call_action(self, query: ActorQuery, name: str, args: list[Any], params: Any = None) -> Any:
        async def call(node: LocalNode) -> Any:
            actor_id = await self._resolve(node, query)
            # Copies both ways, as over the wire: caller and actor never share objects.
            output = await node.router.call_action(actor_id, name, _copy_value(list(args)), params=params)
            return _copy_value(output)

        return await self._run(call)

    async def send_queue(
        self, query: ActorQuery, name: str, body: Any, wait: bool, timeout: float | None, params: Any = None
    ) -> dict[str, Any]:
        async def call(node: LocalNode) -> dict[str, Any]:
            actor_id = await self._resolve(node, query)
            result = await node.runtime.queues.send(
                actor_id, name, _copy_value(body), wait=wait, timeout=timeout, params=params
            )
            return _copy_value(result)  # type: ignore[no-any-return]

        return await self._run(call)

    async def destroy(self, actor_id: str) -> None:
        async def call(node: LocalNode) -> None:
            await node.router.destroy(actor_id)

        await self._run(call)

    async def fetch(
        self,
        query: ActorQuery,
        path: str,
        method: str = "GET",
        headers: Mapping[str, str] | None = None,
        body: bytes | None = None,
        params: Any = None,
    ) -> httpx.Response:
        raise ActorError("feature", "unsupported", "Raw requests through the local client are not supported yet")

    async def open_connection(self, query: ActorQuery, params: Any = None) -> ConnectionChannel:
        """A stateful connection held by this process's runtime, without a socket.

        Connect hooks run as for a WebSocket (a refusal raises its ActorError);
        the runtime's events and the answers to calls arrive as protocol
        messages, starting with ``Init``.
        """
        node = self._fixed_node or await _current_node()
        channel = _LocalChannel(self, node)

        async def call(node: LocalNode) -> Conn:
            actor_id = await self._resolve(node, query)
            try:
                conn = await node.runtime.connect(actor_id, params, sink=channel.sink, transport="local")
            except ActorNotFound:
                if query.method == "id":
                    raise
                # The cached address may point at a destroyed actor: resolve afresh once.
                node.router.forget(self.namespace, query.name, query.key or ())
                actor_id = await self._resolve(node, query)
                conn = await node.runtime.connect(actor_id, params, sink=channel.sink, transport="local")
            channel.conn = conn
            return conn

        try:
            conn = await self._run_on(node, call)
        except asyncio.CancelledError:
            channel.abandon()
            raise
        channel.attach(conn)
        return channel

    async def close(self) -> None:
        """Nothing to release: the node outlives its clients."""


async def _awaitable(call: Callable[[LocalNode], Awaitable[T]], node: LocalNode) -> T:
    return await call(node)


class _LocalSink:
    """The runtime's side of a local connection (a :class:`~rivet_django.runtime.conn.ConnSink`)."""

    __slots__ = ("channel",)

    def __init__(self, channel: _LocalChannel) -> None:
        self.channel = channel

    def send_event(self, event: OutgoingEvent) -> None:
        self.channel.deliver_event(event)

    async def close(self, reason: str | None) -> None:
        self.channel.closed_by_actor(reason)


class _LocalChannel(ConnectionChannel):
    """A connection channel between a caller's loop and the runtime's, in one process.

    Everything the runtime produces (events, answers to calls, closes) is
    posted to the caller's loop thread-safely and in order, as the protocol
    messages a WebSocket would carry. Values are copied through CBOR, as on
    the wire, so the caller never shares objects with the actor.
    """

    def __init__(self, transport: LocalTransport, node: LocalNode) -> None:
        self._transport = transport
        self._node = node
        self._loop = asyncio.get_running_loop()
        self._messages: asyncio.Queue[ToClient | ChannelClosed] = asyncio.Queue()
        self._pending_init: Init | None = None
        self._ended = False
        self._closing = False
        self._closed_by_actor = False
        self._calls: set[concurrent.futures.Future[None] | asyncio.Task[None]] = set()
        self.conn: Conn | None = None
        self.sink = _LocalSink(self)

    # -- caller side -----------------------------------------------------------------

    def attach(self, conn: Conn) -> None:
        """The connection is open: ``Init`` is the first message, before anything posted meanwhile."""
        self.conn = conn
        self._pending_init = Init(conn.actor_id, conn.id)

    def abandon(self) -> None:
        """The caller stopped waiting for the open: close the connection if it opened anyway."""
        self._ended = True

        async def cleanup() -> None:
            conn = self.conn
            if conn is not None:
                await self._node.runtime.disconnect(conn)

        try:
            self._on_node(cleanup())
        except RuntimeError:
            pass

    async def send(self, message: ToServer) -> None:
        conn = self.conn
        if self._ended or conn is None:
            raise ChannelClosed(1006, "")
        if isinstance(message, ActionRequest):
            # Calls run concurrently, like the server runs a connection's actions.
            self._on_node(self._call(conn, message))
            return
        try:
            await self._transport._run_on(
                self._node, lambda node: node.runtime.subscribe(conn, message.event_name, message.subscribe)
            )
        except ActorError as exc:
            # What the server sends for a refused subscription: a connection-level error.
            self._post(ErrorMessage(exc.group, exc.code, exc.message, exc.metadata, None))

    async def receive(self) -> ToClient:
        init = self._pending_init
        if init is not None:
            self._pending_init = None
            return init
        item = await self._messages.get()
        if isinstance(item, ChannelClosed):
            self._messages.put_nowait(item)  # every later receive() ends too
            raise ChannelClosed(item.code, item.reason)
        return item

    async def close(self, code: int = 1000, reason: str = "") -> None:
        if self._closing:
            return
        self._closing = True
        conn = self.conn
        if conn is not None and not self._closed_by_actor:
            try:
                await self._transport._run_on(self._node, lambda node: node.runtime.disconnect(conn))
            except Exception as exc:
                logger.debug("Disconnecting local connection %s failed: %r", conn.id, exc)
        self._end(ChannelClosed(code, reason))

    # -- runtime side (the node's loop) ---------------------------------------------------

    def deliver_event(self, event: OutgoingEvent) -> None:
        if self._ended:
            return
        try:
            args = _copy_value(list(event.args))
        except Exception as exc:
            logger.error("Event %r is not serializable: %s", event.name, exc)
            return
        self._post(Event(event.name, args))

    def closed_by_actor(self, reason: str | None) -> None:
        self._closed_by_actor = True
        # Like the WebSocket consumer: 1011 with a group.code reason, else 1000.
        self._end(ChannelClosed(1011 if reason else 1000, reason or ""))

    async def _call(self, conn: Conn, request: ActionRequest) -> None:
        reply: ToClient
        try:
            output = await self._node.runtime.call_action(conn.actor_id, request.name, list(request.args), conn=conn)
            reply = ActionResponse(request.id, _copy_value(output))
        except PublicError as exc:
            reply = ErrorMessage(exc.group, exc.code, exc.message, exc.metadata, request.id)
        except Exception:
            logger.exception("Action %r on local connection %s failed", request.name, conn.id)
            reply = ErrorMessage(INTERNAL_ERROR_GROUP, "internal_error", INTERNAL_ERROR_MESSAGE, None, request.id)
        self._post(reply)

    # -- plumbing ---------------------------------------------------------------------------

    def _on_node(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run ``coro`` on the node's loop without waiting for it."""
        node_loop = self._node.loop
        future: concurrent.futures.Future[None] | asyncio.Task[None]
        if node_loop is None or node_loop is self._loop:
            future = self._loop.create_task(coro)
        else:
            future = asyncio.run_coroutine_threadsafe(coro, node_loop)
        self._calls.add(future)
        future.add_done_callback(self._calls.discard)

    def _post(self, item: ToClient | ChannelClosed) -> None:
        """Hand ``item`` to the caller's loop; safe from any thread, keeps order."""
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            self._messages.put_nowait(item)
            return
        try:
            self._loop.call_soon_threadsafe(self._messages.put_nowait, item)
        except RuntimeError:
            pass  # the caller's loop is closed: nobody is listening any more

    def _end(self, closed: ChannelClosed) -> None:
        if not self._ended:
            self._ended = True
            self._post(closed)


def _copy_value(value: Any) -> Any:
    """``value`` as a remote client gets it: a CBOR round trip (TypeError if it has no CBOR form)."""
    return cbor_loads(cbor_dumps(value))


async def _current_node() -> LocalNode:
    """This process's running node; started on a background loop thread if there is none."""
    from ..node import get_node

    node = get_node()
    if node is not None and node.runtime.started and node.loop is not None and not node.loop.is_closed():
        return node
    with _background_lock:
        node = get_node()
        if node is not None and node.runtime.started and node.loop is not None and not node.loop.is_closed():
            return node
        return _start_background_node()


def _start_background_node() -> LocalNode:
    from ..node import LocalNode, set_node

    loop = asyncio.new_event_loop()
    ready = threading.Event()
    holder: dict[str, Any] = {}

    def run() -> None:
        asyncio.set_event_loop(loop)
        # Never RIVET["NODE_ID"]: that names a runactors process, and two processes
        # under one id would both pass the lease check for the same actor.
        node = LocalNode(node_id=f"{socket.gethostname()}-client-{os.getpid()}")
        holder["node"] = node

        async def boot() -> None:
            try:
                await node.start()
            except BaseException as exc:  # pragma: no cover - surfaced to the caller below
                holder["error"] = exc
            ready.set()

        loop.run_until_complete(boot())
        if "error" not in holder:
            loop.run_forever()

    threading.Thread(target=run, name="rivet-local-node", daemon=True).start()
    ready.wait(timeout=30)
    if "error" in holder:
        raise holder["error"]
    node = holder["node"]
    set_node(node)

    def stop_at_exit() -> None:
        # Sleep this process's actors (final flush, leases released) before it exits,
        # so a runactors node can take them over at once.
        try:
            asyncio.run_coroutine_threadsafe(node.stop(timeout=10), loop).result(timeout=15)
        except Exception:
            logger.warning("Stopping this process's actors at exit failed", exc_info=True)

    # Before the interpreter shuts thread pools down (concurrent.futures does that in a
    # threading exit hook, ahead of atexit): the final flush runs on the storage threads.
    try:
        threading._register_atexit(stop_at_exit)  # type: ignore[attr-defined]
    except (AttributeError, RuntimeError):
        atexit.register(stop_at_exit)
    return node
