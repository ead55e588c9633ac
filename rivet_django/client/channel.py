"""The message channel under a stateful connection, and its WebSocket implementation.

An :class:`~rivet_django.client.connection.ActorConnection` holds the logic
of a connection (action ids, listeners, subscriptions, reconnects); a
:class:`ConnectionChannel` only carries protocol messages
(:mod:`rivet_django.protocol.messages`) for one attempt. A transport opens one
per attempt with ``Transport.open_connection``: :class:`WebSocketChannel`
speaks PROTOCOL.md section 8 over a real WebSocket, ``LocalTransport``
delivers the same messages in-process.

A channel ends exactly once, by raising :class:`ChannelClosed` from
:meth:`ConnectionChannel.receive` with the close code and reason.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, InvalidURI, WebSocketException
from websockets.typing import Subprotocol

from rivet_django.protocol import Encoding, ToClient, ToServer, decode_error, decode_to_client, encode_to_server

from .errors import ActorError, HttpRequestError

__all__ = [
    "SUBPROTOCOL",
    "ChannelClosed",
    "CloseReason",
    "ConnectionChannel",
    "WebSocketChannel",
    "open_websocket_channel",
    "parse_close_reason",
]

logger = logging.getLogger("rivet_django.client")

#: The subprotocol a RivetKit server must select (PROTOCOL.md section 8).
SUBPROTOCOL = "rivet"

#: A close frame without a code: the socket dropped (RFC 6455 section 7.1.5).
ABNORMAL_CLOSURE = 1006

# Servers cap outgoing messages at 1 MiB (PROTOCOL.md section 10); the frame
# around such a message is a little larger, so leave room.
MAX_FRAME_SIZE = 16 * 2**20


class ChannelClosed(Exception):
    """The channel ended; ``code`` and ``reason`` come from the close frame (1006 if there was none)."""

    def __init__(self, code: int = ABNORMAL_CLOSURE, reason: str = "") -> None:
        self.code = code
        self.reason = reason
        super().__init__(f"connection closed (code: {code}, reason: {reason})")


@dataclass(frozen=True)
class CloseReason:
    """A close reason in RivetKit's ``group.code[#rayId]`` form."""

    group: str
    code: str
    ray_id: str | None = None


def parse_close_reason(reason: str) -> CloseReason | None:
    """Parse ``group.code`` (optionally ``#rayId``) like the JS client; None if it is not one."""
    main, _, ray_id = reason.partition("#")
    parts = main.split(".")
    if len(parts) < 2 or not parts[0] or not parts[1]:
        return None
    return CloseReason(parts[0], parts[1], ray_id or None)


class ConnectionChannel(ABC):
    """One attempt of a stateful connection: protocol messages in and out."""

    @abstractmethod
    async def send(self, message: ToServer) -> None:
        """Send one message; raises :class:`ChannelClosed` once the channel has ended."""

    @abstractmethod
    async def receive(self) -> ToClient:
        """The next message from the actor; raises :class:`ChannelClosed` when the channel ends."""

    @abstractmethod
    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close from the client side (idempotent); :meth:`receive` then raises :class:`ChannelClosed`."""


class WebSocketChannel(ConnectionChannel):
    """A channel over a ``websockets`` client connection, frames encoded in ``encoding``."""

    def __init__(self, websocket: ClientConnection, encoding: Encoding) -> None:
        self.websocket = websocket
        self.encoding = encoding

    @property
    def subprotocol(self) -> str | None:
        """The subprotocol the server selected (``"rivet"`` for a conforming server)."""
        return self.websocket.subprotocol

    async def send(self, message: ToServer) -> None:
        try:
            await self.websocket.send(encode_to_server(self.encoding, message))
        except ConnectionClosed as exc:
            raise _closed(exc) from exc

    async def receive(self) -> ToClient:
        while True:
            try:
                data = await self.websocket.recv()
            except ConnectionClosed as exc:
                raise _closed(exc) from exc
            try:
                return decode_to_client(self.encoding, data)
            except Exception as exc:
                # Like the JS client: a frame we cannot read is logged and skipped.
                logger.warning("Dropped an undecodable connection message: %s", exc)

    async def close(self, code: int = 1000, reason: str = "") -> None:
        await self.websocket.close(code, reason)


def _closed(exc: ConnectionClosed) -> ChannelClosed:
    # ``rcvd`` is the peer's close frame (for a close we started, its echo).
    frame = exc.rcvd or exc.sent
    if frame is None:
        return ChannelClosed(ABNORMAL_CLOSURE, "")
    return ChannelClosed(frame.code, frame.reason)


async def open_websocket_channel(
    url: str,
    encoding: Encoding,
    subprotocols: Sequence[str],
    *,
    headers: Mapping[str, str] | None = None,
    open_timeout: float | None = 10.0,
) -> WebSocketChannel:
    """Open the WebSocket at ``url`` (``ws://`` or ``wss://``) and wrap it in a channel.

    A refused upgrade with a RivetKit error body raises :class:`ActorError`;
    any other failure to open raises :class:`HttpRequestError`.
    """
    try:
        websocket = await connect(
            url,
            subprotocols=[Subprotocol(p) for p in subprotocols],
            additional_headers=dict(headers or {}),
            user_agent_header="rivet_django-client",
            open_timeout=open_timeout,
            max_size=MAX_FRAME_SIZE,
        )
    except InvalidStatus as exc:
        raise _refusal(exc) from exc
    except InvalidURI:
        raise
    except (OSError, TimeoutError, WebSocketException) as exc:
        raise HttpRequestError(f"WebSocket {_redact(url)} failed to open: {exc!r}") from exc
    if websocket.subprotocol != SUBPROTOCOL:
        logger.warning("Server selected subprotocol %r instead of %r", websocket.subprotocol, SUBPROTOCOL)
    return WebSocketChannel(websocket, encoding)


def _refusal(exc: InvalidStatus) -> Exception:
    """An HTTP answer to the upgrade: the server's JSON error if it sent one."""
    response = exc.response
    body = response.body or b""
    try:
        error = decode_error("json", bytes(body))
        return ActorError(
            str(error["group"]),
            str(error["code"]),
            str(error["message"]),
            error.get("metadata"),
            status_code=response.status_code,
        )
    except Exception:
        text = bytes(body).decode("utf-8", errors="replace")
        return HttpRequestError(
            f"WebSocket upgrade refused: {response.status_code} {response.reason_phrase}: {text}",
            status_code=response.status_code,
        )


def _redact(url: str) -> str:
    return url.split("?", 1)[0]
