"""Errors raised by the rivet_django clients.

::

    Exception
     +-- ActorError          the server answered with a protocol error (group.code)
     +-- HttpRequestError    the request never got a protocol answer: connection
                             failure, timeout, or an error body that does not decode

An :class:`ActorError` is the client-side mirror of
:class:`rivet_django.exceptions.PublicError`: whatever ``group``, ``code``,
``message`` and ``metadata`` the actor raised reach the caller unchanged.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ActorError", "HttpRequestError"]


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
