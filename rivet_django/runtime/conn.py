"""Connections to an actor: the ``Conn`` object actor code sees as ``self.conn``.

A connection's transport (a WebSocket consumer, an in-process client, or
nothing for the short-lived connection of a stateless HTTP call) plugs in as a
:class:`ConnSink`: the runtime pushes events into it and asks it to close.
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from ..definition import ActorDefinition
    from .instance import ActorInstance

__all__ = ["Conn", "ConnSink", "OutgoingEvent"]


class OutgoingEvent:
    """An event on its way to connections; encoded once per encoding for all of them."""

    __slots__ = ("_encoded", "args", "name")

    def __init__(self, name: str, args: tuple[Any, ...]) -> None:
        self.name = name
        self.args = args
        self._encoded: dict[str, bytes | str] = {}

    def encoded(self, encoding: str, encode: Any) -> bytes | str:
        """``encode(encoding, self)`` computed once per encoding and shared."""
        data = self._encoded.get(encoding)
        if data is None:
            data = self._encoded[encoding] = encode(encoding, self)
        return data


class ConnSink(Protocol):
    """The transport side of a connection."""

    def send_event(self, event: OutgoingEvent) -> None:
        """Queue an event for the client; must not block."""

    async def close(self, reason: str | None) -> None:
        """Close the connection from the server side (``reason`` is ``group.code``)."""


class Conn:
    """One client connection (a WebSocket, or a short-lived one per HTTP call).

    ``state`` is per-connection memory from ``conn_state`` / ``create_conn_state``;
    ``send`` pushes an event to this connection only.
    """

    __slots__ = (
        "_id",
        "actor_id",
        "definition",
        "owner",
        "params",
        "request",
        "sink",
        "state",
        "subscriptions",
        "transport",
    )

    def __init__(
        self,
        params: Any = None,
        *,
        conn_id: str | None = None,
        transport: str = "http",
        sink: ConnSink | None = None,
        request: Any = None,
        actor_id: str = "",
    ) -> None:
        self._id = conn_id
        self.params = params
        self.state: Any = None
        self.transport = transport
        self.subscriptions: set[str] = set()
        self.sink = sink
        self.request = request
        self.actor_id = actor_id
        #: The awake instance holding this connection (None while it hibernates).
        self.owner: ActorInstance | None = None
        #: The actor's definition while the connection hibernates.
        self.definition: ActorDefinition | None = None

    @property
    def id(self) -> str:
        """A random id, made when first asked for: most HTTP calls' connections never are."""
        if self._id is None:
            self._id = secrets.token_hex(8)
        return self._id

    def send(self, event: str, *args: Any) -> None:
        """Send an event to this connection (returns at once; in commit durability it goes
        out once the state changes made before it are committed)."""
        if self.sink is None:
            return
        if self.owner is not None:
            self.owner.emit(self.sink.send_event, OutgoingEvent(event, args))
        else:
            self.sink.send_event(OutgoingEvent(event, args))

    async def disconnect(self, reason: str | None = None) -> None:
        """Close this connection."""
        if self.sink is not None:
            await self.sink.close(reason)

    def __repr__(self) -> str:
        return f"<Conn {self.id} {self.transport}>"
