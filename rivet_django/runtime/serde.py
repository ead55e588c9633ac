"""CBOR encoding of durable values (state, input, KV values).

Plain CBOR through cbor2: bytes, big integers (beyond 64 bits), nested dicts
and lists, sets and datetimes round-trip. A value that cannot be encoded raises
:class:`ValueNotSerializable` naming the offending value's type and where it is.
"""

from __future__ import annotations

from typing import Any

import cbor2

__all__ = ["ValueNotSerializable", "dumps", "find_unserializable", "loads"]


class ValueNotSerializable(TypeError):
    """A value (or something inside it) has no CBOR form."""

    def __init__(self, path: str, type_name: str) -> None:
        self.path = path
        self.type_name = type_name
        super().__init__(f"value of type {type_name!r} at {path} is not CBOR serializable")


def dumps(value: Any) -> bytes:
    """CBOR bytes of ``value``; :class:`ValueNotSerializable` if it has none."""
    try:
        return cbor2.dumps(value)
    except (cbor2.CBOREncodeError, TypeError, ValueError) as exc:
        path, type_name = find_unserializable(value) or ("<root>", type(exc).__name__)
        raise ValueNotSerializable(path, type_name) from exc


def loads(data: bytes) -> Any:
    return cbor2.loads(data)


_SCALARS = (str, bytes, bytearray, int, float, bool, type(None))


def find_unserializable(value: Any, path: str = "state") -> tuple[str, str] | None:
    """Walk ``value`` and return (path, type name) of the first part CBOR refuses."""
    if isinstance(value, _SCALARS):
        return None
    if isinstance(value, dict):
        for k, v in value.items():
            found = find_unserializable(k, f"{path} key {k!r}") or find_unserializable(v, f"{path}[{k!r}]")
            if found:
                return found
        return None
    if isinstance(value, (list, tuple, set, frozenset)):
        for i, item in enumerate(value):
            found = find_unserializable(item, f"{path}[{i}]")
            if found:
                return found
        return None
    try:
        cbor2.dumps(value)
    except Exception:
        return path, type(value).__name__
    return None
