"""Errors raised by the rivet_django clients.

::

    Exception
     +-- ActorError          the server answered with a protocol error (group.code)
     +-- HttpRequestError    the request never got a protocol answer: connection
     |                       failure, timeout, or an error body that does not decode
     +-- ConnectionClosedError        a stateful connection ended before a call was answered
          +-- ConnectionLostError     the socket dropped without a protocol reason
          +-- ConnectionDisposedError the connection was disposed (``dispose()``)

An :class:`ActorError` is the client-side mirror of
:class:`rivet_django.exceptions.PublicError`: whatever ``group``, ``code``,
``message`` and ``metadata`` the actor raised reach the caller unchanged.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "ActorError",
    "ConnectionClosedError",
    "ConnectionDisposedError",
    "ConnectionLostError",
    "HttpRequestError",
]


class ActorError(Exception):
    """An error the server reported for a call, identified by ``group.code``."""

    def __init__(
        self,
        group: str,
        code: str,
        message: str,
        metadata: Any = None,
        *,
        status_code: int | None = None,
    ) -> None:
        self.group = group
        self.code = code
        self.message = message
        self.metadata = metadata
        # The HTTP status it was served with; None when it did not come over HTTP.
        self.status_code = status_code
        super().__init__(group, code, message, metadata)

    def __str__(self) -> str:
        return f"{self.group}.{self.code}: {self.message}"

    def __repr__(self) -> str:
        return f"ActorError({self.group}.{self.code}: {self.message!r})"


class HttpRequestError(Exception):
    """A request failed before the server gave a protocol answer."""

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        self.status_code = status_code
        super().__init__(message)


class ConnectionClosedError(Exception):
    """A stateful connection ended before the call got an answer (it may or may not have run)."""


class ConnectionLostError(ConnectionClosedError):
    """The connection's socket closed without a ``group.code`` reason (network failure, 1006...)."""

    def __init__(self, message: str, *, code: int | None = None, reason: str = "") -> None:
        self.code = code
        self.reason = reason
        super().__init__(message)


class ConnectionDisposedError(ConnectionClosedError):
    """The connection was disposed; it makes no more calls."""

    def __init__(self, message: str = "The actor connection is disposed") -> None:
        super().__init__(message)
