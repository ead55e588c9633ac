"""Connections to an actor: the ``Conn`` object actor code sees as ``self.conn``."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any

__all__ = ["Conn"]


class Conn:
    """One client connection (a WebSocket, or a short-lived one per HTTP call).

    ``state`` is per-connection memory from ``conn_state`` / ``create_conn_state``;
    ``send`` pushes an event to this connection only.
    """

    def __init__(
        self,
        params: Any = None,
        *,
        conn_id: str | None = None,
        transport: str = "http",
        sender: Callable[[str, tuple[Any, ...]], None] | None = None,
        closer: Callable[[str | None], Any] | None = None,
    ) -> None:
        self.id = conn_id or secrets.token_hex(8)
        self.params = params
        self.state: Any = None
        self.transport = transport
        self.subscriptions: set[str] = set()
        self._sender = sender
        self._closer = closer

    def send(self, event: str, *args: Any) -> None:
        """Send an event to this connection (returns at once)."""
        if self._sender is not None:
            self._sender(event, args)

    async def disconnect(self, reason: str | None = None) -> None:
        """Close this connection."""
        if self._closer is not None:
            result = self._closer(reason)
            if hasattr(result, "__await__"):
                await result

    def __repr__(self) -> str:
        return f"<Conn {self.id} {self.transport}>"
