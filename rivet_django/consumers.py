"""Channels consumers for the actor gateway's WebSocket routes.

Thin adapters from ASGI WebSocket events to runtime calls (STYLE.md):

- :class:`ActorConnectConsumer` serves ``.../connect``, the stateful connection
  of PROTOCOL.md section 8 (Init, actions, subscriptions, events, errors).
- :class:`RawWebSocketConsumer` serves ``.../websocket/{path}`` by handing a
  :class:`RawWebSocket` to the actor's ``on_websocket``.

Both find their actor through :mod:`rivet_django.gateway` exactly like HTTP
requests do, so routing is by actor, not by transport.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl, unquote

from django.http import QueryDict

from . import protocol, tracing
from .cluster import current_gateway
from .cluster.peers import HOPS_HEADER, Peer, Relay, forwarded_route
from .conf import rivet_settings
from .exceptions import (
    INTERNAL_ERROR_GROUP,
    INTERNAL_ERROR_MESSAGE,
    ActorNotFound,
    Forbidden,
    IncomingTooLong,
    OutgoingTooLong,
    PublicError,
    RivetError,
)
from .gateway import GatewayTarget, parse_conn_params, parse_gateway_target, strip_rvt_params
from .origins import origin_allowed
from .runtime.conn import Conn, OutgoingEvent
from .users import CallerMixin, parse_cookies

__all__ = ["ActorConnectConsumer", "ConnectRequest", "RawWebSocket", "RawWebSocketConsumer"]

logger = logging.getLogger("rivet_django.consumers")

#: BARE version of server frames: Init, ActionResponse and Event are the same in
#: v2..v4 and the Init goes out before the client's version is known, so the
#: oldest layout every 2.x client decodes is the safe choice.
SERVER_FRAME_VERSION = 2

#: Frames queued for a client that does not read them before it is dropped.
MAX_QUEUED_FRAMES = 100_000

CLOSE_ERROR = 1011


class ConnectRequest(CallerMixin):
    """``self.request`` in connect hooks of a WebSocket: path, query, headers and cookies
    of the upgrade; ``session``, ``user`` and ``await auser()`` from its session cookie."""

    def __init__(self, scope: dict[str, Any], path: str | None = None) -> None:
        self.scope = scope
        self.method = "GET"
        self.path = path if path is not None else scope.get("path", "")
        raw_query = scope.get("query_string", b"").decode("latin-1")
        self.query_string = strip_rvt_params(parse_qsl(raw_query, keep_blank_values=True))
        self.GET = QueryDict(self.query_string)
        self.headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        self.COOKIES = parse_cookies(self.headers.get("cookie"))
        self.client = scope.get("client")

    def __repr__(self) -> str:
        return f"<ConnectRequest {self.path}>"


def _subprotocol_values(scope: dict[str, Any]) -> dict[str, str]:
    values: dict[str, str] = {}
    for proto in scope.get("subprotocols", []) or []:
        name, _, value = proto.partition(".")
        values.setdefault(name, value)
    return values


def _target(scope: dict[str, Any], subprotocols: dict[str, str]) -> GatewayTarget:
    query = parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
    segment = scope.get("url_route", {}).get("kwargs", {}).get("target")
    headers = {}
    if segment is None:
        # Header form over WebSocket: subprotocols rivet_target.actor + rivet_actor.{id}.
        headers = {
            "x-rivet-target": subprotocols.get("rivet_target", ""),
            "x-rivet-actor": subprotocols.get("rivet_actor", ""),
        }
    return parse_gateway_target(segment, query, headers, rivet_settings.NAMESPACE)


def _relay_to(scope: dict[str, Any]) -> Callable[[Peer, str | None, int], Awaitable[Relay]]:
    """The wire form of a gateway WebSocket: the same upgrade, sent to the actor's node."""

    async def open_relay(peer: Peer, actor_id: str | None, hops: int) -> Relay:
        query = parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        route = forwarded_route(scope.get("path", ""), query, actor_id)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        return await peer.relay(route, list(scope.get("subprotocols") or []), headers, hops)

    return open_relay


def _hops(scope: dict[str, Any]) -> int:
    raw = next((v for k, v in scope.get("headers", []) if k == HOPS_HEADER.encode()), b"")
    return int(raw) if raw.isdigit() else 0


class _GatewaySocket:
    """An ASGI WebSocket application: one receive loop per socket, plus the origin check.

    Not a Channels consumer on purpose. Channels' ``AsyncConsumer`` starts a task
    per incoming message and hops to a thread to close stale database connections
    before each one (``aclose_old_connections``); these sockets never touch the
    ORM themselves (the runtime's storage thread does) and events reach them
    directly from the runtime, not through channel-layer channels. Mounted in
    Channels' ``URLRouter`` like any consumer (``as_asgi()``).
    """

    scope: dict[str, Any]

    def __init__(self, scope: dict[str, Any], send: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
        self.scope = scope
        self._send = send

    @classmethod
    def as_asgi(cls) -> Any:
        async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
            await cls(scope, send).serve(receive)

        app.consumer_class = cls  # type: ignore[attr-defined]  # as Channels' as_asgi() marks its apps
        return app

    async def serve(self, receive: Callable[[], Awaitable[dict[str, Any]]]) -> None:
        while True:
            message = await receive()
            kind = message["type"]
            if kind == "websocket.receive":
                text = message.get("text")
                if text is not None:
                    await self.receive(text_data=text)
                else:
                    await self.receive(bytes_data=message.get("bytes") or b"")
            elif kind == "websocket.connect":
                await self.connect()
            elif kind == "websocket.disconnect":
                await self.disconnect(message.get("code", 1000))
                return

    async def connect(self) -> None:
        raise NotImplementedError

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        raise NotImplementedError

    async def disconnect(self, code: int) -> None:
        raise NotImplementedError

    async def accept(self, subprotocol: str | None = None) -> None:
        await self._send({"type": "websocket.accept", "subprotocol": subprotocol})

    async def send(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if text_data is not None:
            await self._send({"type": "websocket.send", "text": text_data})
        else:
            await self._send({"type": "websocket.send", "bytes": bytes_data})

    async def close(self, code: int | None = None, reason: str | None = None) -> None:
        """Close the socket; before ``accept()`` this refuses the upgrade (HTTP 403)."""
        message: dict[str, Any] = {"type": "websocket.close"}
        if code is not None:
            message["code"] = code
        if reason:
            message["reason"] = reason
        await self._send(message)

    def origin_ok(self) -> bool:
        origin = next((v.decode("latin-1") for k, v in self.scope.get("headers", []) if k == b"origin"), None)
        host = next((v.decode("latin-1") for k, v in self.scope.get("headers", []) if k == b"host"), None)
        return origin_allowed(origin, host, self.scope.get("scheme", "ws"))


class ActorConnectConsumer(_GatewaySocket):
    """A stateful actor connection (PROTOCOL.md section 8)."""

    conn: Conn | None = None
    relay: Relay | None = None
    #: Tracing on: the context of the ``traceparent`` the upgrade request carried, which
    #: the connection's actions (and its connect hooks) continue.
    trace: Any = None

    async def _relayed_frame(self, frame: str | bytes) -> None:
        self.outbox.put_nowait(("frame", frame))

    async def _relayed_close(self, code: int, reason: str) -> None:
        self.outbox.put_nowait(("relay-close", (code, reason)))

    async def connect(self) -> None:
        if not self.origin_ok():
            await self.close(code=4003)
            return
        subprotocols = _subprotocol_values(self.scope)
        self.outbox: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self.tasks: set[asyncio.Task[Any]] = set()
        self.closing = False
        try:
            self.encoding: protocol.Encoding = protocol.parse_encoding(subprotocols.get("rivet_encoding") or "json")
        except PublicError:
            self.encoding = "json"
            await self.accept(subprotocol="rivet")
            await self.refuse(protocol.ErrorMessage("encoding", "invalid", "Invalid encoding", None, None))
            return
        # Selecting "rivet" is required: Node clients drop a socket accepted without it.
        await self.accept(subprotocol="rivet")
        self.writer = asyncio.get_running_loop().create_task(self.write_frames())
        try:
            raw_params = subprotocols.get("rivet_conn_params")
            params = parse_conn_params(
                unquote(raw_params) if raw_params else None, int(rivet_settings.MAX_CONN_PARAMS_SIZE)
            )
            gateway = await current_gateway()
            target = _target(self.scope, subprotocols)
            request = ConnectRequest(self.scope)
            sink = _ConnectionSink(self)
            if tracing.enabled() and "traceparent" in request.headers:
                self.trace = tracing.extract(request.headers)

            async def open_conn(runtime: Any, actor_id: str) -> Conn:
                self.runtime = runtime
                return await runtime.connect(actor_id, params, sink=sink, request=request)  # type: ignore[no-any-return]

            with self._traced():
                actor_id, conn = await gateway.dispatch(
                    target, open_conn, _relay_to(self.scope), hops=_hops(self.scope)
                )
            if isinstance(conn, Relay):
                # The actor lives on another node: its frames and its close pass through.
                self.relay = conn
                conn.start(self._relayed_frame, self._relayed_close)
                return
            assert isinstance(conn, Conn) and actor_id is not None
            self.conn = conn
        except ActorNotFound as exc:
            # As RivetKit's gateway: no Error frame, only the close whose reason the official
            # client parses (a get/getOrCreate handle then resolves its key again and retries).
            self.closing = True
            await self.close(code=CLOSE_ERROR, reason=f"{exc.group}.{exc.code}")
            return
        except Exception as exc:
            await self.refuse(self.error_message(exc, None))
            return
        self.enqueue(protocol.Init(actor_id, conn.id))

    async def refuse(self, error: protocol.ErrorMessage) -> None:
        """Connection-level error, then close 1011 with ``group.code`` (what clients parse)."""
        await self.send_frame(protocol.encode_to_client(self.encoding, error, SERVER_FRAME_VERSION))
        await self.close(code=CLOSE_ERROR, reason=f"{error.group}.{error.code}")
        self.closing = True

    def error_message(self, exc: BaseException, action_id: int | None) -> protocol.ErrorMessage:
        if isinstance(exc, PublicError):
            return protocol.ErrorMessage(exc.group, exc.code, exc.message, exc.metadata, action_id)
        if not (isinstance(exc, RivetError) and exc.public):
            logger.error("Internal error on connection %s", getattr(self.conn, "id", "?"), exc_info=exc)
        return protocol.ErrorMessage(INTERNAL_ERROR_GROUP, "internal_error", INTERNAL_ERROR_MESSAGE, None, action_id)

    # -- incoming ------------------------------------------------------------------

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if self.relay is not None:
            await self.relay.send(text_data if text_data is not None else (bytes_data or b""))
            return
        if self.conn is None or self.closing:
            return
        data: str | bytes = text_data if text_data is not None else (bytes_data or b"")
        size = len(data.encode()) if isinstance(data, str) else len(data)
        limit = int(rivet_settings.MAX_INCOMING_MESSAGE_SIZE)
        try:
            if size > limit:
                raise IncomingTooLong(f"Message of {size} bytes is over the {limit} byte limit")
            message = protocol.decode_to_server(self.encoding, data)
        except PublicError as exc:
            # Undecodable input: drop the connection, touch nothing.
            await self.send_frame(
                protocol.encode_to_client(self.encoding, self.error_message(exc, None), SERVER_FRAME_VERSION)
            )
            self.closing = True
            await self.close(code=CLOSE_ERROR, reason=f"{exc.group}.{exc.code}")
            return
        if isinstance(message, protocol.ActionRequest):
            task = asyncio.get_running_loop().create_task(self.run_action(message))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        else:
            try:
                await self.runtime.subscribe(self.conn, message.event_name, message.subscribe)
            except Forbidden as exc:
                # RivetKit closes the connection on a refused subscription (no Error frame),
                # after the frames already produced.
                await _ConnectionSink(self).close(f"{exc.group}.{exc.code}")
            except Exception as exc:
                self.enqueue(self.error_message(exc, None))

    def _traced(self) -> contextlib.AbstractContextManager[Any]:
        """The block continues the upgrade request's trace, if it carried one."""
        return tracing.within(self.trace) if self.trace is not None else contextlib.nullcontext()

    async def run_action(self, request: protocol.ActionRequest) -> None:
        assert self.conn is not None
        try:
            with self._traced():
                output = await self.runtime.call_action(self.conn.actor_id, request.name, request.args, conn=self.conn)
            frame = protocol.encode_to_client(
                self.encoding, protocol.ActionResponse(request.id, output), SERVER_FRAME_VERSION
            )
            limit = int(rivet_settings.MAX_OUTGOING_MESSAGE_SIZE)
            if len(frame) > limit:
                raise OutgoingTooLong(f"Response of {len(frame)} bytes is over the {limit} byte limit")
        except Exception as exc:
            if isinstance(exc, (TypeError, ValueError)) and not isinstance(exc, RivetError):
                logger.error("Output of action %r is not serializable: %s", request.name, exc)
            self.enqueue(self.error_message(exc, request.id))
            return
        self.outbox.put_nowait(("frame", frame))

    async def disconnect(self, code: int) -> None:
        # Actions still running finish (and commit); only their replies are dropped.
        self.closing = True
        writer = getattr(self, "writer", None)
        if writer is not None:
            writer.cancel()
        if self.relay is not None:
            await self.relay.close(code)
        if self.conn is not None:
            try:
                await self.runtime.disconnect(self.conn)
            except Exception:
                logger.exception("on_disconnect of connection %s failed", self.conn.id)

    # -- outgoing (ConnSink) -------------------------------------------------------

    def send_event(self, event: OutgoingEvent) -> None:
        frame = event.encoded(self.encoding, _encode_event)
        self.outbox.put_nowait(("frame", frame))

    def enqueue(self, message: protocol.ToClient) -> None:
        self.outbox.put_nowait(("frame", protocol.encode_to_client(self.encoding, message, SERVER_FRAME_VERSION)))

    async def write_frames(self) -> None:
        # One writer keeps frames in the order they were produced (events before
        # the response of the action that broadcast them).
        while True:
            kind, payload = await self.outbox.get()
            if kind == "relay-close":
                self.closing = True
                code, reason = payload
                await self.close(code=code, reason=reason or None)
                return
            if kind == "close":
                reason, sent = payload
                self.closing = True
                try:
                    await self.close(code=1000 if reason is None else CLOSE_ERROR, reason=reason)
                finally:
                    if not sent.done():
                        sent.set_result(None)
                return
            if self.outbox.qsize() > MAX_QUEUED_FRAMES:
                logger.warning("Connection %s is not reading; closing it", getattr(self.conn, "id", "?"))
                self.closing = True
                await self.close(code=CLOSE_ERROR, reason="message.outgoing_too_long")
                return
            await self.send_frame(payload)

    async def send_frame(self, frame: bytes | str) -> None:
        if isinstance(frame, str):
            await self.send(text_data=frame)
        else:
            await self.send(bytes_data=frame)


class _ConnectionSink:
    """The runtime's view of a consumer (:class:`~rivet_django.runtime.conn.ConnSink`)."""

    __slots__ = ("consumer",)

    def __init__(self, consumer: ActorConnectConsumer) -> None:
        self.consumer = consumer

    def send_event(self, event: OutgoingEvent) -> None:
        self.consumer.send_event(event)

    async def close(self, reason: str | None) -> None:
        # Through the outbox, so frames already produced reach the client first;
        # wait (briefly) until the close frame is out, so a shutdown does not drop it.
        sent: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.consumer.outbox.put_nowait(("close", (reason, sent)))
        try:
            await asyncio.wait_for(asyncio.shield(sent), timeout=2.0)
        except (TimeoutError, asyncio.CancelledError):
            pass


def _encode_event(encoding: str, event: OutgoingEvent) -> bytes | str:
    return protocol.encode_to_client(
        encoding,  # type: ignore[arg-type]
        protocol.Event(event.name, list(event.args)),
        SERVER_FRAME_VERSION,
    )


class RawWebSocket:
    """The socket handed to ``on_websocket(ws)``: text stays text, binary stays binary."""

    def __init__(self, consumer: RawWebSocketConsumer, path: str, request: ConnectRequest) -> None:
        self._consumer = consumer
        self.path = path
        self.query = request.GET
        self.query_string = request.query_string
        self.headers = request.headers
        self.request = request
        self._incoming: asyncio.Queue[str | bytes | None] = asyncio.Queue()
        self._closed_event = asyncio.Event()
        self.closed = False
        #: Set by the runtime: commits state changes before the next message is handed out.
        self.before_receive: Any = None

    async def send(self, data: str | bytes) -> None:
        if self.closed:
            raise ConnectionError("The WebSocket is closed")
        if isinstance(data, str):
            await self._consumer.send(text_data=data)
        else:
            await self._consumer.send(bytes_data=bytes(data))

    async def receive(self) -> str | bytes | None:
        """The next message, or None once the peer closed."""
        if self.before_receive is not None:
            await self.before_receive()
        if self.closed and self._incoming.empty():
            return None
        return await self._incoming.get()

    def __aiter__(self) -> AsyncIterator[str | bytes]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[str | bytes]:
        while True:
            message = await self.receive()
            if message is None:
                return
            yield message

    async def close(self, code: int = 1000, reason: str = "") -> None:
        if not self.closed:
            self.closed = True
            await self._consumer.close(code=code, reason=reason or None)
            self._incoming.put_nowait(None)
            self._closed_event.set()

    async def wait_closed(self) -> None:
        """Until either side closed the socket."""
        await self._closed_event.wait()


class RawWebSocketConsumer(_GatewaySocket):
    """``.../websocket/{path}``: the actor's ``on_websocket`` owns the socket.

    Like RivetKit, the socket is a connection: ``on_before_connect`` (params from the
    ``rivet_conn_params.*`` subprotocol), ``create_conn_state`` and ``on_connect`` run
    before it is accepted, ``on_disconnect`` after it ends. A refusal accepts, then closes
    1011 with ``group.code``. An actor without ``on_websocket`` keeps the socket open and
    silent.
    """

    async def connect(self) -> None:
        if not self.origin_ok():
            await self.close(code=4003)
            return
        self.ws: RawWebSocket | None = None
        self.handler: asyncio.Task[Any] | None = None
        # Browsers and Node's ws drop a handshake that selects none of the offered subprotocols.
        subprotocol = "rivet" if "rivet" in (self.scope.get("subprotocols") or []) else None
        path = "/" + (self.scope.get("url_route", {}).get("kwargs", {}).get("path") or "").lstrip("/")
        request = ConnectRequest(self.scope, path=path)
        try:
            gateway = await current_gateway()
            subprotocols = _subprotocol_values(self.scope)
            raw_params = subprotocols.get("rivet_conn_params")
            params = parse_conn_params(
                unquote(raw_params) if raw_params else None, int(rivet_settings.MAX_CONN_PARAMS_SIZE)
            )
            target = _target(self.scope, subprotocols)

            async def open_socket(runtime: Any, actor_id: str) -> Any:
                return runtime, await runtime.open_raw_websocket(actor_id, params, request)

            _, opened = await gateway.dispatch(target, open_socket, _relay_to(self.scope), hops=_hops(self.scope))
        except Exception as exc:
            reason = f"{exc.group}.{exc.code}" if isinstance(exc, PublicError) else "rivetkit.internal_error"
            if not isinstance(exc, PublicError):
                logger.exception("Raw WebSocket upgrade failed")
            await self.accept(subprotocol=subprotocol)
            await self.close(code=CLOSE_ERROR, reason=reason)
            return
        if isinstance(opened, Relay):
            # The actor lives on another node: accept as it did, then pass messages through.
            self.relay = opened
            await self.accept(subprotocol=opened.subprotocol)
            opened.start(self._relayed_message, self._relayed_close)
            return
        runtime, (inst, conn) = opened
        await self.accept(subprotocol=subprotocol)
        self.ws = RawWebSocket(self, path, request)
        self.handler = asyncio.get_running_loop().create_task(runtime.run_websocket(inst, self.ws, request, conn))
        self.handler.add_done_callback(self._handler_done)

    def _handler_done(self, task: asyncio.Task[Any]) -> None:
        if task.cancelled():
            return
        if task.exception() is not None:
            logger.error("on_websocket raised", exc_info=task.exception())
        if self.ws is not None and not self.ws.closed:
            asyncio.get_running_loop().create_task(self.ws.close(1000 if task.exception() is None else CLOSE_ERROR))

    relay: Relay | None = None

    async def _relayed_message(self, message: str | bytes) -> None:
        if isinstance(message, str):
            await self.send(text_data=message)
        else:
            await self.send(bytes_data=message)

    async def _relayed_close(self, code: int, reason: str) -> None:
        await self.close(code=code, reason=reason or None)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if self.relay is not None:
            await self.relay.send(text_data if text_data is not None else (bytes_data or b""))
        elif self.ws is not None:
            self.ws._incoming.put_nowait(text_data if text_data is not None else (bytes_data or b""))

    async def disconnect(self, code: int) -> None:
        if self.relay is not None:
            await self.relay.close(code)
        if self.ws is not None:
            self.ws.closed = True
            self.ws._incoming.put_nowait(None)
            self.ws._closed_event.set()
