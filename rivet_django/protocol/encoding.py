"""The three body encodings a RivetKit client may pick with ``x-rivet-encoding``."""

from __future__ import annotations

from typing import Final, Literal, TypeGuard

from rivet_django.exceptions import InvalidEncoding

__all__ = ["ENCODINGS", "Encoding", "content_type", "is_binary", "parse_encoding"]

Encoding = Literal["json", "cbor", "bare"]

ENCODINGS: Final[tuple[Encoding, ...]] = ("json", "cbor", "bare")


def _is_encoding(value: str) -> TypeGuard[Encoding]:
    return value in ENCODINGS


def parse_encoding(value: str | None) -> Encoding:
    """The encoding named by a header or subprotocol; absent or empty means json.

    Names are matched exactly (the JS server validates with ``z.enum``), so
    ``"JSON"`` is as unknown as ``"xml"``.
    """
    if not value:
        return "json"
    if _is_encoding(value):
        return value
    raise InvalidEncoding(f"Invalid encoding `{value}`.")


def content_type(encoding: Encoding) -> str:
    """The ``Content-Type`` of a body in ``encoding``."""
    return "application/json" if encoding == "json" else "application/octet-stream"


def is_binary(encoding: Encoding) -> bool:
    """Whether WebSocket frames in ``encoding`` are binary (json travels as text)."""
    return encoding != "json"
