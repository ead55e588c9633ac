"""Python clients for rivet_django (and any RivetKit server).

``AsyncClient`` for asyncio code, ``Client`` for everything else; both speak
RivetKit's client protocol over HTTP and WebSocket, or run in-process via
``.local()``. ``handle.connect()`` opens a stateful connection
(:class:`ActorConnection` / :class:`SyncActorConnection`).
"""

from __future__ import annotations

from .channel import ChannelClosed, ConnectionChannel
from .client import AsyncClient, Client
from .connection import ActorConnection, ConnectionStatus, SyncActorConnection
from .errors import (
    ActorError,
    ConnectionClosedError,
    ConnectionDisposedError,
    ConnectionLostError,
    HttpRequestError,
)
from .handle import ActorAccessor, ActorHandle, SyncActorAccessor, SyncActorHandle
from .transport import ActorQuery, HttpTransport, Transport

__all__ = [
    "ActorAccessor",
    "ActorConnection",
    "ActorError",
    "ActorHandle",
    "ActorQuery",
    "AsyncClient",
    "ChannelClosed",
    "Client",
    "ConnectionChannel",
    "ConnectionClosedError",
    "ConnectionDisposedError",
    "ConnectionLostError",
    "ConnectionStatus",
    "HttpRequestError",
    "HttpTransport",
    "SyncActorAccessor",
    "SyncActorConnection",
    "SyncActorHandle",
    "Transport",
]
