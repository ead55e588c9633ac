"""The ``chatRoom`` actor: one per room key (``client.chatRoom.getOrCreate([room])``).

- History: the last :data:`MAX_MESSAGES` messages, in durable state.
- Presence: who is here is read from the live connections, never stored, so a
  restart or a dropped socket cannot leave ghosts behind.
- Typing: a fire-and-forget event; the page hides a stale indicator by itself.

Connect with params ``{"name": "Ada"}``; the name lives in the connection's state.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

from rivet_django import Actor, UserError, action, event

__all__ = ["MAX_MESSAGES", "MAX_NAME_LENGTH", "MAX_TEXT_LENGTH", "ChatRoom"]

MAX_MESSAGES = 100
MAX_NAME_LENGTH = 32
MAX_TEXT_LENGTH = 2000


def clean_name(params: Any) -> str:
    """The user name from the connection params, or a ``UserError`` saying what is wrong."""
    name = params.get("name") if isinstance(params, dict) else None
    if not isinstance(name, str) or not name.strip():
        raise UserError("A name is required to join the room", code="name_required")
    name = name.strip()
    if len(name) > MAX_NAME_LENGTH:
        raise UserError(
            f"Names are at most {MAX_NAME_LENGTH} characters", code="name_too_long", metadata={"max": MAX_NAME_LENGTH}
        )
    return name


class ChatRoom(Actor):
    """Registered as "chatRoom": a chat room with bounded history, presence and typing events."""

    state = {"messages": []}
    events = {"message": event(), "presence": event(), "typing": event()}

    # -- connections ------------------------------------------------------------

    def on_before_connect(self, params: Any) -> None:
        clean_name(params)

    def create_conn_state(self, params: Any) -> dict[str, str]:
        return {"name": clean_name(params)}

    def on_connect(self, conn: Any) -> None:
        self.broadcast("presence", self._member_names(joining=conn))

    def on_disconnect(self, conn: Any) -> None:
        self.broadcast("presence", self._member_names(leaving=conn))
        # Whoever leaves mid-sentence is not typing any more.
        self.broadcast("typing", {"name": conn.state["name"], "typing": False})

    def _member_names(self, *, joining: Any = None, leaving: Any = None) -> list[str]:
        """Sorted distinct names of the live connections (one person may have several tabs)."""
        conns = dict(self.conns)
        # Be explicit about the connection in flight rather than rely on when the
        # runtime adds it to (or drops it from) ``self.conns`` around the hook.
        if joining is not None:
            conns[joining.id] = joining
        if leaving is not None:
            conns.pop(leaving.id, None)
        return sorted({c.state["name"] for c in conns.values() if isinstance(c.state, dict) and "name" in c.state})

    def _sender(self) -> str:
        if self.conn is None or not isinstance(self.conn.state, dict):
            raise UserError("Join the room with a name first", code="not_joined")
        return self.conn.state["name"]

    # -- actions ----------------------------------------------------------------

    @action(name="sendMessage")
    def send_message(self, text: str) -> dict[str, Any]:
        """Post a message to everyone in the room; returns the stored message."""
        if not isinstance(text, str) or not text.strip():
            raise UserError("A message cannot be empty", code="empty_message")
        text = text.strip()
        if len(text) > MAX_TEXT_LENGTH:
            raise UserError(
                f"Messages are at most {MAX_TEXT_LENGTH} characters",
                code="message_too_long",
                metadata={"max": MAX_TEXT_LENGTH},
            )
        message = {
            "id": secrets.token_hex(8),
            "name": self._sender(),
            "text": text,
            "ts": int(time.time() * 1000),
        }
        messages = self.state["messages"]
        messages.append(message)
        del messages[:-MAX_MESSAGES]
        self.broadcast("message", message)
        return message

    @action
    def typing(self, is_typing: bool = True) -> None:
        """Tell the others that this user started or stopped typing."""
        self.broadcast("typing", {"name": self._sender(), "typing": bool(is_typing)})

    @action
    def history(self) -> list[dict[str, Any]]:
        """The stored messages, oldest first."""
        return list(self.state["messages"])

    @action
    def members(self) -> list[str]:
        """Names of the people connected right now."""
        return self._member_names()
