"""Request headers read where Django keeps them, in ``request.META``.

``request.headers`` builds a dictionary of every header the first time it is used; the
gateway reads a handful per call, so it looks each one up directly instead.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

__all__ = ["RequestHeaders", "bearer_token", "header"]

#: Header name -> its META key (names come from this package's code: a small set).
_META_KEYS: dict[str, str] = {}


def header(request: Any, name: str) -> str | None:
    """The value of header ``name`` (any case) of a Django request, or None."""
    key = _META_KEYS.get(name)
    if key is None:
        key = name.upper().replace("-", "_")
        if key not in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            key = "HTTP_" + key
        _META_KEYS[name] = key
    value = request.META.get(key)
    return None if value is None else str(value)


def bearer_token(request: Any) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, or None."""
    raw = header(request, "authorization") or ""
    token = raw[7:].strip() if raw[:7].lower() == "bearer " else ""
    return token or None


class RequestHeaders(Mapping[str, str]):
    """A read-only view of a request's headers backed by :func:`header`."""

    __slots__ = ("_request",)

    def __init__(self, request: Any) -> None:
        self._request = request

    def __getitem__(self, name: str) -> str:
        value = header(self._request, name)
        if value is None:
            raise KeyError(name)
        return value

    def get(self, name: str, default: Any = None) -> Any:
        value = header(self._request, name)
        return default if value is None else value

    def __iter__(self) -> Iterator[str]:
        return iter(self._request.headers)

    def __len__(self) -> int:
        return len(self._request.headers)
