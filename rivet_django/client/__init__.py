"""Python clients for rivet_django (and any RivetKit server).

``AsyncClient`` for asyncio code, ``Client`` for everything else; both speak
RivetKit's client protocol over HTTP, or run in-process via ``.local()``.
"""

from __future__ import annotations

from .client import AsyncClient, Client
from .errors import ActorError, HttpRequestError
from .handle import ActorAccessor, ActorHandle, SyncActorAccessor, SyncActorHandle
from .transport import ActorQuery, HttpTransport, Transport

__all__ = [
    "ActorAccessor",
    "ActorError",
    "ActorHandle",
    "ActorQuery",
    "AsyncClient",
    "Client",
    "HttpRequestError",
    "HttpTransport",
    "SyncActorAccessor",
    "SyncActorHandle",
    "Transport",
]
