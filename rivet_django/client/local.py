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

from ..exceptions import INTERNAL_ERROR_GROUP, INTERNAL_ERROR_MESSAGE, PublicError
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
from .transport import ActorQuery, HttpTransport, Transport

if TYPE_CHECKING:
    from ..cluster import Gateway
    from ..cluster.peers import Peer
    from ..gateway import GatewayTarget
    from ..node import LocalNode
    from ..runtime.conn import Conn, OutgoingEvent
    from ..runtime.host import ActorRuntime

__all__ = ["LocalTransport"]

T = TypeVar("T")

logger = logging.getLogger("rivet_django.client")

_background_lock = threading.Lock()


class LocalTransport(Transport):
    """Routes client calls through this process's gateway: to its own runtime without
    HTTP, or to the node that holds the actor."""

    def __init__(self, *, namespace: str | None = None, node: LocalNode | None = None) -> None:
        self._namespace = namespace
        self._fixed_node = node

    @property
    def namespace(self) -> str:
        if self._namespace is None:
            from ..conf import rivet_settings

            return str(rivet_settings.NAMESPACE)
        return self._namespace

    async def _gateway(self) -> Gateway:
        if self._fixed_node is not None:
            return self._fixed_node.gateway
        from ..cluster import current_gateway

        return await current_gateway(host=_current_node, shared=True)

    async def operate(self, call: Callable[[Gateway], Awaitable[T]]) -> T:
        """Run ``call(gateway)`` on this process's gateway (operations the client API does
        not name, e.g. the admin's database browser); errors become ActorError."""
        return await self._run(call)

    async def _run(self, call: Callable[[Gateway], Awaitable[T]]) -> T:
        """Run ``call(gateway)`` on the gateway's loop (hopping there if needed); errors become ActorError."""
        try:
            gateway = await self._gateway()
            loop = asyncio.get_running_loop()
            if gateway.loop is None or gateway.loop is loop:
                return await call(gateway)
            future = asyncio.run_coroutine_threadsafe(_awaitable(call, gateway), gateway.loop)
            return await asyncio.wrap_future(future)
        except PublicError as exc:
            raise ActorError(exc.group, exc.code, exc.message, exc.metadata) from exc
        except ActorError:
            raise
        except Exception as exc:
            raise ActorError(INTERNAL_ERROR_GROUP, "internal_error", INTERNAL_ERROR_MESSAGE) from exc

    def _target(self, query: ActorQuery) -> GatewayTarget:
        from ..gateway import GatewayTarget

        return GatewayTarget(
            query.method,
            self.namespace,
            actor_id=query.actor_id,
            name=query.name,
            key=tuple(query.key or ()),
            input=query.input if query.has_input else None,
        )

    async def _dispatch(
        self,
        gateway: Gateway,
        query: ActorQuery,
        local: Callable[[ActorRuntime, str], Awaitable[T]],
        remote: Callable[[HttpTransport, ActorQuery], Awaitable[T]],
    ) -> T:
        """One operation through the gateway: ``local`` on this process's runtime, or
        ``remote`` over a client transport to the node that holds the actor."""
        if query.method == "id" and gateway.node is not None:
            await self._check_id(gateway.node, query)
        namespace = self.namespace

        async def wire(peer: Peer, actor_id: str | None, hops: int) -> T:
            target = query if actor_id is None else ActorQuery(query.name, actor_id=actor_id, method="id")
            return await remote(peer.transport(hops, namespace), target)

        _, result = await gateway.dispatch(self._target(query), local, wire)
        return result

    async def _check_id(self, node: LocalNode, query: ActorQuery) -> None:
        if not query.actor_id:
            raise ActorError("actor", "invalid_request", "Missing actor id")
        record = await node.router.get_by_id(query.actor_id)
        if record is None or record.name != query.name:
            raise ActorError("actor", "not_found", f"Actor {query.actor_id} not found")

    async def create(self, name: str, key: Sequence[str], input: Any = None, has_input: bool = False) -> str:
        async def call(gateway: Gateway) -> str:
            if gateway.node is None:
                return await gateway.forward_anywhere(
                    lambda peer, _, hops: peer.transport(hops, self.namespace).create(name, key, input, has_input)
                )
            record = await gateway.node.router.create(self.namespace, name, list(key), input if has_input else None)
            return record.actor_id

        return await self._run(call)

    async def resolve(self, query: ActorQuery) -> str:
        async def call(gateway: Gateway) -> str:
            if gateway.node is None:
                return await gateway.forward_anywhere(
                    lambda peer, _, hops: peer.transport(hops, self.namespace).resolve(query)
                )
            if query.method == "id":
                await self._check_id(gateway.node, query)
                assert query.actor_id is not None
                return query.actor_id
            return await self._target(query).resolve(gateway.node.router)

        return await self._run(call)

    async def call_action(self, query: ActorQuery, name: str, args: list[Any], params: Any = None) -> Any:
        async def local(runtime: ActorRuntime, actor_id: str) -> Any:
            # Copies both ways, as over the wire: caller and actor never share objects.
            return _copy_value(await runtime.call_action(actor_id, name, _copy_value(list(args)), params=params))

        async def remote(transport: HttpTransport, target: ActorQuery) -> Any:
            return await transport.call_action(target, name, list(args), params)

        return await self._run(lambda gateway: self._dispatch(gateway, query, local, remote))

    async def send_queue(
        self, query: ActorQuery, name: str, body: Any, wait: bool, timeout: float | None, params: Any = None
    ) -> dict[str, Any]:
        async def local(runtime: ActorRuntime, actor_id: str) -> dict[str, Any]:
            result = await runtime.queues.send(
                actor_id, name, _copy_value(body), wait=wait, timeout=timeout, params=params
            )
            return _copy_value(result)  # type: ignore[no-any-return]

        async def remote(transport: HttpTransport, target: ActorQuery) -> dict[str, Any]:
            return await transport.send_queue(target, name, body, wait, timeout, params)

        return await self._run(lambda gateway: self._dispatch(gateway, query, local, remote))

    async def destroy(self, actor_id: str) -> None:
        async def call(gateway: Gateway) -> None:
            node = gateway.node
            if node is None:
                await gateway.forward_anywhere(
                    lambda peer, _, hops: peer.transport(hops, self.namespace).destroy(actor_id)
                )
                return

            async def local(runtime: ActorRuntime, actor_id: str) -> None:
                await node.router.destroy(actor_id)

            async def remote(peer: Peer, actor_id: str | None, hops: int) -> None:
                assert actor_id is not None
                await peer.transport(hops, self.namespace).destroy(actor_id)

            await gateway.on_actor(actor_id, local, remote)

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
        """A stateful connection: held by this process's runtime without a socket, or a
        WebSocket to the node that holds the actor.

        Connect hooks run as for a WebSocket (a refusal raises its ActorError);
        the runtime's events and the answers to calls arrive as protocol
        messages, starting with ``Init``.
        """
        holder: dict[str, _LocalChannel] = {}
        caller_loop = asyncio.get_running_loop()

        async def local(runtime: ActorRuntime, actor_id: str) -> Conn:
            channel = holder["channel"]
            conn = await runtime.connect(actor_id, params, sink=channel.sink, transport="local")
            channel.conn = conn
            return conn

        async def remote(transport: HttpTransport, target: ActorQuery) -> _RemoteTarget:
            # Opened on the caller's loop (below): a socket belongs to the loop that reads it.
            return _RemoteTarget(transport, target)

        async def call(gateway: Gateway) -> Conn | _RemoteTarget:
            if gateway.node is not None:
                holder["channel"] = _LocalChannel(self, gateway.node, caller_loop)
            return await self._dispatch(gateway, query, local, remote)

        try:
            opened = await self._run(call)
        except asyncio.CancelledError:
            if "channel" in holder:
                holder["channel"].abandon()
            raise
        if isinstance(opened, _RemoteTarget):
            return await opened.open(params)
        channel = holder["channel"]
        channel.attach(opened)
        return channel

    async def close(self) -> None:
        """Nothing to release: the node outlives its clients."""


class _RemoteTarget:
    """Where a connection to an actor on another node is opened."""

    def __init__(self, transport: HttpTransport, query: ActorQuery) -> None:
        self.endpoint = transport.endpoint
        self.namespace = transport.namespace
        self.headers = dict(transport.headers)
        self.query = query

    async def open(self, params: Any) -> ConnectionChannel:
        transport = HttpTransport(self.endpoint, self.namespace, encoding="cbor", headers=self.headers)
        try:
            return await transport.open_connection(self.query, params)
        finally:
            await transport.close()


async def _awaitable(call: Callable[[Gateway], Awaitable[T]], gateway: Gateway) -> T:
    return await call(gateway)


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

    def __init__(self, transport: LocalTransport, node: LocalNode, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._node = node
        self._loop = loop
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
            await self._on_node_loop(self._node.runtime.subscribe(conn, message.event_name, message.subscribe))
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
                await self._on_node_loop(self._node.runtime.disconnect(conn))
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

    async def _on_node_loop(self, coro: Coroutine[Any, Any, Any]) -> Any:
        """Await ``coro`` on the node's loop; errors become ActorError."""
        node_loop = self._node.loop
        try:
            if node_loop is None or node_loop is asyncio.get_running_loop():
                return await coro
            return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, node_loop))
        except PublicError as exc:
            raise ActorError(exc.group, exc.code, exc.message, exc.metadata) from exc

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
    """This process's running node; started on a background loop thread if there is none
    (under ``runserver``: on the server's loop, where its actor API runs too)."""
    from ..node import get_node, server_loop, started_node

    node = get_node()
    if node is not None and node.runtime.started and node.loop is not None and not node.loop.is_closed():
        return node
    loop = server_loop()
    if loop is not None:
        if loop is asyncio.get_running_loop():
            return await started_node()
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(started_node(), loop))
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
