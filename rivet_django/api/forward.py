"""The wire form of an actor API request: sent on to the node that holds the actor.

A forwarded request is the request as it came (method, headers, body), addressed to
the resolved actor in the direct form; the peer's answer is served as it is. With
``RIVET["TRACING"]`` on, the hop is a ``forward`` span (kind client) of the caller's
trace, and the request carries that span as its ``traceparent``: the owner's spans are
its children, so a trace shows the time the hop took.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Any
from urllib.parse import parse_qsl

from django.http import HttpRequest, HttpResponse

from .. import tracing
from ..cluster.peers import HOPS_HEADER, Peer, forwarded_route
from ..headers import header
from ..node import get_node

__all__ = ["Forwarded", "forwarder", "hops"]

_TRACE_HEADERS = frozenset({"traceparent", "tracestate"})

_RESPONSE_HOP_HEADERS = frozenset(
    {"content-length", "transfer-encoding", "connection", "keep-alive", "content-encoding", "server", "date"}
)


def hops(request: HttpRequest) -> int:
    """How many nodes forwarded this request already (0 from a client)."""
    raw = header(request, HOPS_HEADER)
    return int(raw) if raw and raw.isdigit() else 0


class Forwarded:
    """A peer's answer to a forwarded request."""

    __slots__ = ("response",)

    def __init__(self, response: HttpResponse) -> None:
        self.response = response


def forwarder(request: HttpRequest) -> Callable[[Peer, str | None, int], Awaitable[Forwarded]]:
    """The remote form of ``request`` for :meth:`~rivet_django.cluster.Gateway.dispatch`."""

    async def send(peer: Peer, actor_id: str | None, hops: int, headers: Iterable[tuple[str, str]]) -> Any:
        query = parse_qsl(request.META.get("QUERY_STRING", ""), keep_blank_values=True)
        return await peer.forward_http(
            request.method or "GET",
            forwarded_route(request.path, query, actor_id),
            headers,
            request.body,
            hops,
            request.META.get("REMOTE_ADDR"),
        )

    async def forward(peer: Peer, actor_id: str | None, hops: int) -> Forwarded:
        if tracing.enabled():
            node = get_node()
            attributes = {
                "rivet.node": node.runtime.node_id if node is not None else None,
                "rivet.forward.to": peer.address,
                "rivet.forward.actor": actor_id,
                "rivet.hops": hops,
            }
            with tracing.client_span(f"forward {request.method}", **attributes):
                headers = {k: v for k, v in request.headers.items() if k.lower() not in _TRACE_HEADERS}
                tracing.inject(headers)  # the owner's spans are children of this hop
                answer = await send(peer, actor_id, hops, headers.items())
        else:
            answer = await send(peer, actor_id, hops, request.headers.items())
        response = HttpResponse(answer.content, status=answer.status_code)
        for name, value in answer.headers:
            if name.lower() not in _RESPONSE_HOP_HEADERS:
                response[name] = value
        response["x-rivet-forwarded"] = "1"
        return Forwarded(response)

    return forward
