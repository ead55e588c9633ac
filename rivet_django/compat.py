"""Small fixes to third-party servers, applied once by ``runactors`` and ``routing``.

daphne 4.2.3 drops the ``reason`` of an ASGI ``websocket.close`` message, and
autobahn's ``sendClose`` refuses 1011 (a valid server close code, RFC 6455).
The official RivetKit client reads ``group.code`` from the close reason to tell
a refused connection or a sleeping actor from a network failure, so the reason
must reach the wire.
"""

from __future__ import annotations

from typing import Any

__all__ = ["patch_daphne_close_reason"]


def patch_daphne_close_reason() -> None:
    """Make daphne send ``websocket.close`` with its code and reason (idempotent)."""
    try:
        from daphne.ws_protocol import WebSocketProtocol
    except ImportError:  # pragma: no cover - daphne is a dependency, but be tolerant
        return
    if getattr(WebSocketProtocol, "_rivet_close_reason", False):
        return
    original = WebSocketProtocol.handle_reply

    def handle_reply(self: Any, message: dict[str, Any]) -> Any:
        if message.get("type") == "websocket.close" and self.state != self.STATE_CONNECTING:
            code = message.get("code") or 1000
            reason = message.get("reason") or None
            self.sendCloseFrame(code=code, reasonUtf8=reason.encode()[:123] if reason else None, isReply=False)
            return None
        return original(self, message)

    WebSocketProtocol.handle_reply = handle_reply
    WebSocketProtocol._rivet_close_reason = True
