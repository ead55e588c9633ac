"""BARE primitives and the versioned framing of RivetKit's client protocol.

Every BARE body or frame starts with the schema version as a 2-byte
little-endian integer (vbare's ``serializeWithEmbeddedVersion``), then the BARE
encoding of the message in that version's schema. The primitives follow
``@rivetkit/bare-ts``: ``uint`` is a canonical LEB128 varint of at most 10
bytes (u64), lengths are varints limited to u32, ``bool`` is one byte that
must be 0 or 1, union tags and ``optional`` markers are single bytes, and
``u64`` is 8 bytes little-endian. Decoding is strict: truncation, bad
markers, invalid UTF-8 and trailing bytes raise :class:`InvalidRequest`.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Collection
from typing import Final, TypeVar

from rivet_django.exceptions import InvalidRequest

__all__ = [
    "CURRENT_VERSION",
    "QUEUE_VERSIONS",
    "VERSIONS",
    "BareReader",
    "BareWriter",
    "check_version",
    "split_version",
    "with_version",
]

CURRENT_VERSION: Final = 4
"""The client-protocol schema version rivetkit 2.3.x writes."""

VERSIONS: Final = range(1, CURRENT_VERSION + 1)
"""Versions of the schemas that exist since v1 (messages, actions, errors)."""

QUEUE_VERSIONS: Final = range(3, CURRENT_VERSION + 1)
"""Queue send bodies only exist since v3."""

_U64_LIMIT: Final = 2**64
_U32_LIMIT: Final = 2**32

T = TypeVar("T")


class BareReader:
    """Reads BARE values from a byte string, front to back."""

    __slots__ = ("_data", "_offset")

    def __init__(self, data: bytes) -> None:
        self._data = bytes(data)
        self._offset = 0

    def _take(self, count: int) -> bytes:
        end = self._offset + count
        if end > len(self._data):
            raise InvalidRequest("Invalid BARE message: unexpected end of data")
        chunk = self._data[self._offset : end]
        self._offset = end
        return chunk

    def u8(self) -> int:
        """One unsigned byte."""
        return self._take(1)[0]

    def u64(self) -> int:
        """An unsigned 64-bit integer, 8 bytes little-endian."""
        value: int = struct.unpack("<Q", self._take(8))[0]
        return value

    def _varint(self, max_bytes: int) -> int:
        result = 0
        for index in range(max_bytes):
            byte = self.u8()
            result |= (byte & 0x7F) << (7 * index)
            if byte < 0x80:
                # A trailing zero group could have been left out: bare-ts
                # rejects such non-canonical encodings, and so do we.
                if index > 0 and byte == 0:
                    raise InvalidRequest("Invalid BARE message: non-canonical integer")
                return result
        raise InvalidRequest("Invalid BARE message: integer too long")

    def uint(self) -> int:
        """A ``uint`` (LEB128 varint) that must fit in 64 bits."""
        value = self._varint(10)
        if value >= _U64_LIMIT:
            raise InvalidRequest("Invalid BARE message: integer too large")
        return value

    def length(self) -> int:
        """A length prefix: a varint that must fit in 32 bits."""
        value = self._varint(5)
        if value >= _U32_LIMIT:
            raise InvalidRequest("Invalid BARE message: length too large")
        return value

    def boolean(self) -> bool:
        """A ``bool``: one byte, 0 or 1."""
        byte = self.u8()
        if byte > 1:
            raise InvalidRequest("Invalid BARE message: a bool must be 0 or 1")
        return byte == 1

    def data(self) -> bytes:
        """A length-prefixed byte string."""
        return self._take(self.length())

    def string(self) -> str:
        """A length-prefixed UTF-8 string."""
        raw = self.data()
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidRequest("Invalid BARE message: invalid UTF-8 string") from exc

    def optional(self, read: Callable[[], T]) -> T | None:
        """An ``optional<T>``: a presence bool, then the value when present."""
        return read() if self.boolean() else None

    def finish(self) -> None:
        """Assert that the whole input was consumed."""
        if self._offset != len(self._data):
            raise InvalidRequest("Invalid BARE message: remaining bytes")


class BareWriter:
    """Accumulates BARE values into a byte string."""

    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = bytearray()

    def u8(self, value: int) -> None:
        """One unsigned byte."""
        self._buffer.append(value)

    def u64(self, value: int) -> None:
        """An unsigned 64-bit integer, 8 bytes little-endian."""
        self._buffer += struct.pack("<Q", value)

    def uint(self, value: int) -> None:
        """A ``uint`` as a LEB128 varint."""
        if not 0 <= value < _U64_LIMIT:
            raise ValueError(f"{value} does not fit in a BARE uint")
        while value >= 0x80:
            self._buffer.append((value & 0x7F) | 0x80)
            value >>= 7
        self._buffer.append(value)

    def boolean(self, value: bool) -> None:
        """A ``bool`` as one byte."""
        self._buffer.append(1 if value else 0)

    def data(self, value: bytes) -> None:
        """A length-prefixed byte string."""
        self.uint(len(value))
        self._buffer += value

    def string(self, value: str) -> None:
        """A length-prefixed UTF-8 string."""
        self.data(value.encode("utf-8"))

    def optional_present(self, present: bool) -> bool:
        """Write the presence marker of an ``optional<T>``; return ``present``."""
        self.boolean(present)
        return present

    def getvalue(self) -> bytes:
        """Everything written so far."""
        return bytes(self._buffer)


def check_version(version: int, supported: Collection[int]) -> None:
    """Refuse to *encode* in a schema version that lacks the message."""
    if version not in supported:
        raise ValueError(f"client protocol version {version} cannot carry this message")


def split_version(body: bytes, supported: Collection[int]) -> tuple[int, bytes]:
    """Split a versioned BARE body into its version and payload.

    A body shorter than the prefix or in a version outside ``supported``
    raises :class:`InvalidRequest`.
    """
    if len(body) < 2:
        raise InvalidRequest("Invalid BARE message: payload too short for embedded version")
    version = int.from_bytes(body[:2], "little")
    if version not in supported:
        raise InvalidRequest(f"Unsupported client protocol version {version}")
    return version, bytes(body[2:])


def with_version(version: int, payload: bytes) -> bytes:
    """Prefix a BARE payload with its 2-byte little-endian schema version."""
    return version.to_bytes(2, "little") + payload
