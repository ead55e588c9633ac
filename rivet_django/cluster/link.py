"""The node-to-node link: HTTP requests multiplexed over one persistent WebSocket per peer.

A forwarded HTTP request costs the forwarding node one frame out and one frame in,
instead of a whole HTTP client request (``httpx`` spends more CPU per request than
the action itself). The receiving node hands each request to its own ASGI
application, exactly as if it had arrived over HTTP, so the answer is the one a
direct call would get.

Frames are binary: a 4-byte big-endian length, a JSON header, then the body.

- request ``{"i": id, "m": method, "p": path, "q": query, "h": [[name, value], ...]}``
- response ``{"i": id, "s": status, "h": [[name, value], ...]}``
- internal operation ``{"i": id, "o": name, ...}``, body JSON: work no client may ask for
  (a scheduled run is an action called without a connection; the admin's inspector
  operations and its actor list's connection counts), answered like a request
  (status 200 and the JSON result, or the error's status and its RivetKit error body).

The link authenticates with a token derived from ``RIVET["CLUSTER_SECRET"]`` (by
default from ``SECRET_KEY``, which every node of a project shares); the peer
endpoint refuses any socket without it. It carries nothing a client could not
send itself, but it skips the origin check and lets one socket speak for many
callers, so it stays closed to anyone else.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import struct
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, WebSocketException

from .. import tracing
from ..exceptions import INTERNAL_ERROR_GROUP, ActorStopping, RivetError

__all__ = ["AUTH_HEADER", "LINK_ROUTE", "PeerLink", "PeerLost", "PeerResponse", "cluster_token", "serve_peer"]

logger = logging.getLogger("rivet_django.cluster")

#: Where a node accepts links, under the actor API's base (``/api/rivet/_peer``).
LINK_ROUTE = "_peer"
AUTH_HEADER = "x-rivet-cluster-token"

_LENGTH = struct.Struct(">I")

#: Seconds between pings on an idle or busy link, and how long a pong may take before
#: the peer counts as unresponsive.
PING_INTERVAL = 1.0
PING_TIMEOUT = 3.0


class PeerLost(ActorStopping):
    """The link dropped with this request in flight: it may or may not have run (the
    caller gets the retryable ``actor.stopping``; retrying is the caller's choice)."""


@dataclass
class PeerResponse:
    status_code: int
    headers: list[tuple[str, str]]
    content: bytes


def cluster_token() -> str:
    from django.conf import settings

    from ..conf import rivet_settings

    secret = rivet_settings.CLUSTER_SECRET or settings.SECRET_KEY
    return hmac.new(str(secret).encode(), b"rivet_django peer link v1", hashlib.sha256).hexdigest()


def _frame(header: dict[str, Any], body: bytes) -> bytes:
    head = orjson.dumps(header)
    return _LENGTH.pack(len(head)) + head + body


def _unframe(data: bytes) -> tuple[dict[str, Any], bytes]:
    (size,) = _LENGTH.unpack_from(data)
    return orjson.loads(data[4 : 4 + size]), data[4 + size :]


class PeerLink:
    """The forwarding side: one WebSocket to a peer, many requests in flight on it."""

    def __init__(self, address: str) -> None:
        #: ``ws://host:port/api/rivet/_peer`` for ``http://host:port/api/rivet``.
        self.url = "ws" + address.rstrip("/").removeprefix("http") + "/" + LINK_ROUTE
        self.path = "/" + address.split("://", 1)[-1].partition("/")[2].strip("/")
        self._ws: ClientConnection | None = None
        self._connecting: asyncio.Lock | None = None
        self._pending: dict[int, asyncio.Future[PeerResponse]] = {}
        self._next_id = 0
        self._reader: asyncio.Task[None] | None = None
        self._pinger: asyncio.Task[None] | None = None
        #: The peer did not answer a ping in time (paused, overloaded): new requests are
        #: not sent to it (they go elsewhere, or wait for its leases); those in flight wait.
        self.unresponsive = False

    async def _socket(self) -> ClientConnection:
        ws = self._ws
        if ws is not None:
            return ws
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            if self._ws is None:
                from .peers import PeerUnreachable

                try:
                    ws = await connect(
                        self.url,
                        additional_headers={AUTH_HEADER: cluster_token()},
                        open_timeout=5,
                        max_size=None,
                        compression=None,
                        ping_interval=None,
                    )
                except (OSError, TimeoutError, WebSocketException) as exc:
                    raise PeerUnreachable(f"{self.url}: {exc!r}") from exc
                self._ws = ws
                self.unresponsive = False
                loop = asyncio.get_running_loop()
                self._reader = loop.create_task(self._read(ws))
                self._pinger = loop.create_task(self._ping(ws))
            assert self._ws is not None
            return self._ws

    async def request(self, method: str, route: str, headers: Sequence[tuple[str, str]], body: bytes) -> PeerResponse:
        """Send one request (``route``: after the API base, with its query); the peer's answer."""
        path, _, query = route.partition("?")
        return await self._exchange({"m": method, "p": f"{self.path}/{path}", "q": query, "h": list(headers)}, body)

    async def operation(self, name: str, fields: dict[str, Any], payload: Any) -> PeerResponse:
        """Ask the peer for an internal operation (see :data:`OPERATIONS`); its answer."""
        return await self._exchange({"o": name, **fields}, orjson.dumps(payload))

    async def _exchange(self, header: dict[str, Any], body: bytes) -> PeerResponse:
        ws = await self._socket()
        if self.unresponsive:
            from .peers import PeerUnreachable

            raise PeerUnreachable(f"{self.url} does not answer pings")
        self._next_id += 1
        request_id = self._next_id
        future: asyncio.Future[PeerResponse] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        try:
            try:
                await ws.send(_frame({"i": request_id, **header}, body))
            except ConnectionClosed as exc:
                # Not sent (the socket was already closed): safe to send elsewhere.
                from .peers import PeerUnreachable

                self._drop(ws)
                raise PeerUnreachable(f"{self.url}: {exc!r}") from exc
            return await future
        finally:
            self._pending.pop(request_id, None)

    async def _read(self, ws: ClientConnection) -> None:
        try:
            async for message in ws:
                if isinstance(message, str):
                    continue
                header, body = _unframe(message)
                future = self._pending.get(header["i"])
                if future is not None and not future.done():
                    future.set_result(PeerResponse(header["s"], [tuple(h) for h in header["h"]], body))  # type: ignore[misc]
        except ConnectionClosed:
            pass
        except Exception:
            logger.exception("Peer link %s failed", self.url)
        finally:
            self._drop(ws)

    async def _ping(self, ws: ClientConnection) -> None:
        """Mark the peer unresponsive while it leaves pings unanswered for ``PING_TIMEOUT``.

        Never closes the link: requests in flight on a paused peer may still run when it
        resumes, so their callers keep waiting rather than getting an error and retrying."""
        with contextlib.suppress(ConnectionClosed, asyncio.CancelledError):
            while self._ws is ws:
                await asyncio.sleep(PING_INTERVAL)
                pong = await ws.ping()
                try:
                    await asyncio.wait_for(asyncio.shield(pong), PING_TIMEOUT)
                    self.unresponsive = False
                except TimeoutError:
                    if not self.unresponsive:
                        logger.warning("Peer %s does not answer pings; sending it nothing new", self.url)
                    self.unresponsive = True
                    await pong  # resumes (or the link closes)
                    self.unresponsive = False

    def _drop(self, ws: ClientConnection) -> None:
        if self._ws is ws:
            self._ws = None
        pending, self._pending = self._pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(PeerLost(f"The link to {self.url} dropped with the request in flight"))

    async def close(self) -> None:
        ws, self._ws = self._ws, None
        if ws is not None:
            with contextlib.suppress(Exception):
                await ws.close()
        for task in (self._reader, self._pinger):
            if task is not None:
                task.cancel()


# -- the receiving side ------------------------------------------------------------------


async def serve_peer(
    scope: dict[str, Any],
    receive: Callable[[], Awaitable[dict[str, Any]]],
    send: Callable[[dict[str, Any]], Awaitable[None]],
) -> None:
    """ASGI WebSocket application of ``{base}_peer``: run each request frame through this
    project's ASGI application and send its answer back."""
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    token = next((v.decode("latin-1") for k, v in scope.get("headers", []) if k == AUTH_HEADER.encode()), "")
    if not hmac.compare_digest(token, cluster_token()):
        logger.warning("Refused a peer link from %s: wrong cluster token", scope.get("client"))
        await send({"type": "websocket.close", "code": 4003})
        return
    await send({"type": "websocket.accept"})
    app = _http_app()
    tasks: set[asyncio.Task[None]] = set()
    lock = asyncio.Lock()

    async def reply(frame: bytes) -> None:
        async with lock:
            await send({"type": "websocket.send", "bytes": frame})

    try:
        while True:
            message = await receive()
            kind = message["type"]
            if kind == "websocket.disconnect":
                return
            if kind == "websocket.receive" and message.get("bytes"):
                task = asyncio.get_running_loop().create_task(_handle(app, scope, message["bytes"], reply))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
    finally:
        # The forwarding node is gone: its callers already got an error; the requests
        # themselves finish (like an HTTP request whose client disconnected).
        pass


async def _handle(app: Any, link_scope: dict[str, Any], data: bytes, reply: Callable[[bytes], Awaitable[None]]) -> None:
    header, body = _unframe(data)
    if "o" in header:
        await _operate(header, body, reply)
        return
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": header["m"],
        "scheme": "http",
        "path": header["p"],
        "raw_path": header["p"].encode(),
        "query_string": header["q"].encode(),
        "root_path": "",
        "headers": [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in header["h"]],
        "client": link_scope.get("client"),
        "server": link_scope.get("server"),
    }
    status = 500
    headers: list[list[str]] = []
    chunks: list[bytes] = []
    sent = False
    done = asyncio.Event()

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await done.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
            headers.extend([k.decode("latin-1"), v.decode("latin-1")] for k, v in message.get("headers", []))
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    try:
        await app(scope, receive, send)
    except Exception:
        logger.exception("A forwarded request failed")
        status, headers, chunks = (
            500,
            [["content-type", "application/json"]],
            [orjson.dumps({"group": "rivetkit", "code": "internal_error", "message": "An internal error occurred"})],
        )
    finally:
        done.set()
    with contextlib.suppress(Exception):
        await reply(_frame({"i": header["i"], "s": status, "h": headers}, b"".join(chunks)))


async def _operate(header: dict[str, Any], body: bytes, reply: Callable[[bytes], Awaitable[None]]) -> None:
    """Run an internal operation here and answer it (JSON result, or the error's RivetKit body)."""
    status, answer = 200, b"null"
    try:
        operation = OPERATIONS.get(header["o"])
        if operation is None:
            raise ValueError(f"unknown peer operation {header['o']!r}")
        carrier = header.get("tc")
        if carrier and tracing.enabled():  # the asking node's trace continues here
            with tracing.within(tracing.extract(carrier)):
                answer = orjson.dumps(await operation(header, orjson.loads(body)))
        else:
            answer = orjson.dumps(await operation(header, orjson.loads(body)))
    except Exception as exc:
        # Nodes trust each other: the error goes back whole, internal ones too (the
        # caller records it, e.g. as a schedule's last error), and is logged here.
        public = isinstance(exc, RivetError) and exc.public
        if not public:
            logger.error("Peer operation %s failed", header["o"], exc_info=exc)
        status = exc.status_code if isinstance(exc, RivetError) else 500
        error = {
            "group": exc.group if isinstance(exc, RivetError) else INTERNAL_ERROR_GROUP,
            "code": exc.code if isinstance(exc, RivetError) else "internal_error",
            "message": exc.message if isinstance(exc, RivetError) else str(exc),
            "public": public,
            "type": type(exc).__name__,
        }
        try:
            answer = orjson.dumps({**error, "metadata": getattr(exc, "metadata", None)})
        except TypeError:
            answer = orjson.dumps(error)
    with contextlib.suppress(Exception):
        await reply(_frame({"i": header["i"], "s": status, "h": []}, answer))


def _gateway() -> Any:
    """This node's gateway (a process hosting no actors serves no operations)."""
    from ..node import get_node

    node = get_node()
    if node is None:
        raise ActorStopping("This process hosts no actors")
    return node.gateway


async def _run_action(header: dict[str, Any], args: Any) -> Any:
    """``run_action``: an action called without a connection (a scheduled run), wherever its actor lives."""
    return await _gateway().run_action(header["a"], header["n"], list(args), hops=int(header.get("hops", 1)))


async def _inspect(header: dict[str, Any], payload: Any) -> Any:
    """``inspect``: an inspector operation for an authorized caller (the admin), where the actor lives."""
    args = dict(payload)
    op = str(args.pop("op"))
    return await _gateway().inspect(header["a"], op, hops=int(header.get("hops", 1)), **args)


async def _connection_counts(header: dict[str, Any], payload: Any) -> Any:
    """``connection_counts``: connections of those of the actors (``{"ids": [...]}``) this node
    holds (the admin's actor list); reads only, never wakes or places an actor."""
    from ..node import get_node

    node = get_node()
    if node is None:
        raise ActorStopping("This process hosts no actors")
    return node.runtime.connection_counts(str(actor_id) for actor_id in payload["ids"])


#: Internal operations a peer may ask for over the link, by name.
OPERATIONS: dict[str, Callable[[dict[str, Any], Any], Awaitable[Any]]] = {
    "run_action": _run_action,
    "inspect": _inspect,
    "connection_counts": _connection_counts,
}


def _http_app() -> Any:
    """This project's ASGI application (HTTP side)."""
    from django.conf import settings
    from django.utils.module_loading import import_string

    return import_string(settings.ASGI_APPLICATION)
