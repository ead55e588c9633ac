"""The wire to another node: its public actor API, over HTTP and WebSocket.

A forwarded operation is the request the caller would have sent to the owner
itself, with the actor id resolved and an ``x-rivet-hops`` header, so the owner
answers exactly as if it had been called directly: same status, body, close code.
Nothing the owner accepts from a peer is more than it accepts from any client,
so the hop needs no secret: a client that sends ``x-rivet-hops`` itself only
stops its own call from being forwarded.

- HTTP (actions, queue sends, raw requests) goes through one pooled keep-alive
  ``httpx.AsyncClient`` per peer; structured calls from the local client reuse
  :class:`~rivet_django.client.transport.HttpTransport` on the same pool.
- WebSockets (``/connect``, raw ``/websocket``) are relayed: one upstream socket
  to the owner per client socket, frames and the close code passed through as
  they are, so events, action replies and errors keep their order.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import quote

import httpx
import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException
from websockets.typing import Subprotocol

from .. import tracing
from ..client.errors import HttpRequestError
from ..client.transport import HttpTransport
from ..exceptions import ActorNotFound, ActorStopping, PublicError, RivetError
from ..gateway import strip_rvt_params
from .link import PeerResponse

__all__ = [
    "HOPS_HEADER",
    "Peer",
    "PeerUnreachable",
    "Peers",
    "Relay",
    "api_base",
    "forwarded_route",
    "peer_error",
    "unreachable",
]

#: How many times an operation was forwarded already (loops end at ``MAX_HOPS``).
HOPS_HEADER = "x-rivet-hops"

# Headers that describe one HTTP hop, not the request (RFC 9110 section 7.6.1), and the
# ones httpx sets from what it sends.
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "content-length",
        HOPS_HEADER,
    }
)
#: Upgrade headers a relayed WebSocket keeps (W3C trace context: its actions continue the caller's trace).
_WS_HEADERS = ("origin", "cookie", "authorization", "user-agent", "x-forwarded-for", "traceparent", "tracestate")

_TIMEOUT = httpx.Timeout(None, connect=5.0)


class PeerUnreachable(Exception):
    """The operation never reached the peer (it refused the connection or is gone)."""


@functools.cache
def api_base() -> str:
    """Where this project mounts the actor API (``/api/rivet/``), from its URLconf."""
    from django.urls import NoReverseMatch, reverse

    try:
        return reverse("rivet:get_metadata").rsplit("metadata", 1)[0]
    except NoReverseMatch:
        return "/api/rivet/"


def forwarded_route(path: str, query: Iterable[tuple[str, str]], actor_id: str | None) -> str:
    """The route (after the API base) and query to send a peer, for a request to ``path``.

    With ``actor_id``, the query and header forms become the direct form: the peer
    does not resolve the key again. Without, the request goes as it came.
    """
    base = api_base()
    route = path[len(base) :] if path.startswith(base) else path.lstrip("/")
    pairs = list(query)
    if actor_id is not None and route.startswith("gateway/"):
        segment, _, rest = route[len("gateway/") :].partition("/")
        token = dict(pairs).get("rvt-token") or segment.partition("@")[2]
        route = f"gateway/{actor_id}{'@' + token if token else ''}/{rest}"
        query_string = strip_rvt_params(pairs)
    else:
        from urllib.parse import urlencode

        query_string = urlencode(pairs)
    return route + ("?" + query_string if query_string else "")


#: Bodies larger than this go over plain HTTP rather than the link (a node's WebSocket
#: frames are capped at ``MAX_OUTGOING_MESSAGE_SIZE``).
_LINK_MAX_BODY = 512 * 1024


class _LinkTransport(httpx.AsyncBaseTransport):
    """httpx over the peer link: the client transport's structured calls take the same path."""

    def __init__(self, peer: Peer) -> None:
        self.peer = peer

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = await request.aread()
        route = request.url.raw_path.decode("ascii")
        route = route[len(self.peer.link.path) + 1 :] if route.startswith(self.peer.link.path) else route.lstrip("/")
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.headers.raw if k.lower() != b"host"]
        answer = await self.peer.send(request.method, route, headers, body)
        return httpx.Response(answer.status_code, headers=answer.headers, content=answer.content, request=request)


class Peer:
    """Another node's actor API at ``address`` (``http://host:port/api/rivet``)."""

    def __init__(self, address: str) -> None:
        from .link import PeerLink

        self.address = address.rstrip("/")
        self.link = PeerLink(self.address)
        self.http = httpx.AsyncClient(
            timeout=_TIMEOUT,
            limits=httpx.Limits(max_connections=256, max_keepalive_connections=64),
            headers={"user-agent": "rivet_django-peer"},
        )
        self._linked_http = httpx.AsyncClient(timeout=_TIMEOUT, transport=_LinkTransport(self))
        self._transports: dict[tuple[int, str], HttpTransport] = {}

    async def send(self, method: str, route: str, headers: list[tuple[str, str]], body: bytes) -> PeerResponse:
        """One request to the peer: over the link, or plain HTTP for a large body."""
        if len(body) <= _LINK_MAX_BODY:
            return await self.link.request(method, route, headers, body)
        try:
            answer = await self.http.request(method, f"{self.address}/{route}", headers=headers, content=body)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise PeerUnreachable(f"{self.address}: {exc!r}") from exc
        return PeerResponse(answer.status_code, list(answer.headers.multi_items()), answer.content)

    async def operate(self, name: str, fields: dict[str, Any], payload: Any) -> Any:
        """An internal operation on the peer (``link.OPERATIONS``); its result. With tracing
        on, the hop is a ``peer <name>`` client span whose context goes along (``tc``), so
        the operation's spans on the peer (a scheduled run's action) are its children."""
        if tracing.enabled():
            attributes = {"rivet.forward.to": self.address, "rivet.forward.actor": fields.get("a")}
            with tracing.client_span(f"peer {name}", **attributes):
                carrier: dict[str, str] = {}
                tracing.inject(carrier)
                answer = await self.link.operation(name, {**fields, "tc": carrier}, payload)
        else:
            answer = await self.link.operation(name, fields, payload)
        payload = orjson.loads(answer.content)
        if answer.status_code == 200:
            return payload
        raise peer_error(answer.status_code, payload)

    def transport(self, hops: int, namespace: str) -> HttpTransport:
        """A client transport to this peer (structured calls of the local client)."""
        key = (hops, namespace)
        transport = self._transports.get(key)
        if transport is None:
            transport = self._transports[key] = HttpTransport(
                self.address,
                namespace,
                encoding="cbor",
                headers={HOPS_HEADER: str(hops)},
                http_client=self._linked_http,
            )
        return transport

    async def forward_http(
        self, method: str, route: str, headers: Iterable[tuple[str, str]], body: bytes, hops: int, client: str | None
    ) -> PeerResponse:
        """Send a request on; the peer's answer, whatever its status."""
        out = [(k, v) for k, v in headers if k.lower() not in _HOP_BY_HOP]
        out.append((HOPS_HEADER, str(hops)))
        if client:
            out.append(("x-forwarded-for", client))
        return await self.send(method, route, out, body)

    async def relay(self, route: str, subprotocols: Sequence[str], headers: Mapping[str, str], hops: int) -> Relay:
        """Open the upstream half of a relayed WebSocket."""
        return Relay(await self.open_websocket(route, subprotocols, headers, hops))

    async def open_websocket(
        self, route: str, subprotocols: Sequence[str], headers: Mapping[str, str], hops: int
    ) -> ClientConnection:
        """The upstream socket of a relayed WebSocket. A refused upgrade raises ``InvalidStatus``."""
        url = "ws" + self.address.removeprefix("http") + "/" + route
        extra = {name: headers[name] for name in _WS_HEADERS if name in headers and name != "origin"}
        extra[HOPS_HEADER] = str(hops)
        try:
            return await connect(
                url,
                subprotocols=[Subprotocol(_token(p)) for p in subprotocols] or None,
                additional_headers=extra,
                origin=headers.get("origin"),  # type: ignore[arg-type]
                user_agent_header=headers.get("user-agent", "rivet_django-peer"),
                open_timeout=10,
                max_size=None,
                compression=None,
            )
        except InvalidStatus:
            raise
        except (OSError, TimeoutError, WebSocketException) as exc:
            raise PeerUnreachable(f"{url}: {exc!r}") from exc

    async def close(self) -> None:
        await self.link.close()
        await self._linked_http.aclose()
        await self.http.aclose()


_TCHAR = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


def _token(subprotocol: str) -> str:
    """A subprotocol as it goes on the wire: servers hand some over decoded (daphne
    unquotes ``rivet_conn_params.%7B...``); quote the value again where it must be."""
    if all(c in _TCHAR for c in subprotocol):
        return subprotocol
    name, _, value = subprotocol.partition(".")
    return f"{name}.{quote(value, safe='')}"


class Peers:
    """One :class:`Peer` per address, made on first use."""

    def __init__(self) -> None:
        self._peers: dict[str, Peer] = {}

    def get(self, address: str) -> Peer:
        peer = self._peers.get(address)
        if peer is None:
            peer = self._peers[address] = Peer(address)
        return peer

    async def close(self) -> None:
        peers, self._peers = self._peers, {}
        for peer in peers.values():
            with contextlib.suppress(Exception):
                await peer.close()


def peer_error(status: int, error: dict[str, Any]) -> RivetError:
    """The exception a peer's internal operation failed with, as close to the original as the
    caller needs: a missing actor, a move (retryable) or an error that keeps its text."""
    group, code, message = error.get("group"), error.get("code"), str(error.get("message"))
    if (group, code) == ("actor", "not_found"):
        return ActorNotFound(message)
    if group == "actor" and code in ("stopping", "lost_ownership"):
        return ActorStopping(message)
    exc: RivetError
    if error.get("public"):
        exc = PublicError(message, group=group, code=code, status_code=status, metadata=error.get("metadata"))
    else:
        exc = RivetError(message, group=group, code=code, status_code=status)
    exc.remote_type = str(error.get("type") or type(exc).__name__)  # type: ignore[attr-defined]
    return exc


def unreachable(exc: BaseException) -> bool:
    """Whether a client-transport failure means the request never reached the peer."""
    if isinstance(exc, PeerUnreachable):
        return True
    return isinstance(exc, HttpRequestError) and isinstance(exc.__cause__, (httpx.ConnectError, httpx.ConnectTimeout))


class Relay:
    """A client's WebSocket carried to the owner node: messages both ways, then its close."""

    def __init__(self, upstream: ClientConnection) -> None:
        self.upstream = upstream
        self.subprotocol: str | None = upstream.subprotocol
        self._pump: asyncio.Task[None] | None = None

    def start(self, deliver: Any, closed: Any) -> None:
        """Hand each upstream message to ``await deliver(message)``, then ``await closed(code, reason)``."""
        self._pump = asyncio.get_running_loop().create_task(self._run(deliver, closed))

    async def _run(self, deliver: Any, closed: Any) -> None:
        try:
            async for message in self.upstream:
                await deliver(message)
        except ConnectionClosed:
            pass
        close = self.upstream.protocol.close_rcvd
        if close is None:
            # The owner went away without a close frame (killed): the reason the official
            # client reconnects on, as when a node shuts down.
            await closed(1011, "actor.stopping")
        else:
            await closed(close.code, close.reason)

    async def send(self, message: str | bytes) -> None:
        with contextlib.suppress(ConnectionClosed):
            await self.upstream.send(message)

    async def close(self, code: int = 1000) -> None:
        """The client left: close upstream (the owner runs its disconnect hooks)."""
        with contextlib.suppress(Exception):
            await self.upstream.close(code if code in (1000, 1001) or 3000 <= code < 5000 else 1000)
        if self._pump is not None and not self._pump.done():
            self._pump.cancel()
