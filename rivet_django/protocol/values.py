"""Actor values on the wire: RivetKit's JSON and CBOR "compat" forms.

Actor code sees plain Python values: ``None``, ``bool``, ``int`` (any size),
``float``, ``str``, ``bytes``, ``list``, ``dict`` (``str`` or other keys) and
``set``/``frozenset``; tuples travel as lists. The JavaScript client maps them
to its own types, and values that JSON cannot carry are tagged as 2-item
arrays::

    ["$BigInt", "123"]        bigint          <-> int outside the JS safe range
    ["$Uint8Array", "<b64>"]  Uint8Array      <-> bytes ("$ArrayBuffer" too)
    ["$Undefined", 0]         undefined        -> None
    ["$Set", [...]]           Set             <-> set / frozenset
    ["$$x", 1]                a user ["$x", 1] (one more "$" escapes it)

The same tagging is applied before CBOR encoding (the JS ``encodeCborCompat``),
and undone after CBOR decoding (``decodeCborCompat``). On top of it:

- Integers follow cbor-x, the JS CBOR library. It writes a JS number that is an
  integer in ``[-2**32, 2**32)`` as a CBOR int and any other number as a
  float64, and it decodes every 8-byte CBOR int as a ``BigInt``. So a Python int
  in the safe range but outside 32 bits is written as a float64 (the JS side
  must get a ``number``, not a ``BigInt``), and an integral float64 in that
  range decodes back to an int. Larger ints within 64 bits are native 8-byte
  CBOR ints (``BigInt`` in JS); beyond that they are ``["$BigInt", "..."]``.
- A dict with any non-``str`` key is written under CBOR tag 259 so cbor-x
  rebuilds a ``Map`` instead of stringifying the keys.
- The JS client CBOR-encodes its JSON-like envelopes without the compat
  tagging, so the decoder also accepts cbor-x's native forms: tag 64 typed
  arrays (bytes), tag 258 sets, tag 259 maps, ``undefined`` and bignums.
"""

from __future__ import annotations

import base64
import binascii
import io
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import cbor2
import orjson

from rivet_django.exceptions import InvalidRequest

__all__ = [
    "MAX_SAFE_INTEGER",
    "FixedUint64",
    "cbor_dumps",
    "cbor_dumps_raw",
    "cbor_loads",
    "decode_input",
    "decode_query_input",
    "encode_input",
    "encode_query_input",
    "from_json_compat",
    "json_dumps",
    "json_loads",
    "to_cbor_compat",
    "to_json_compat",
]

MAX_SAFE_INTEGER: Final = 2**53 - 1
"""``Number.MAX_SAFE_INTEGER``: larger ints are ``BigInt`` on the JS side."""

_U32_LIMIT: Final = 2**32
_U64_LIMIT: Final = 2**64

_BIGINT: Final = "$BigInt"
_ARRAY_BUFFER: Final = "$ArrayBuffer"
_UINT8_ARRAY: Final = "$Uint8Array"
_UNDEFINED: Final = "$Undefined"
_SET: Final = "$Set"

# CBOR tags that cbor-x writes for JS types it encodes natively.
_TAG_SET: Final = 258
_TAG_MAP: Final = 259
_TAG_UINT8_ARRAY: Final = 64
_TAG_UINT8_CLAMPED_ARRAY: Final = 68


# --------------------------------------------------------------------------
# Shared pieces of the tagging
# --------------------------------------------------------------------------


def _b64encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _b64decode(text: str) -> bytes:
    """Decode base64 leniently, like Node's ``Buffer.from(s, "base64")``.

    Both alphabets are accepted and padding is optional, because JS encoders
    differ (``btoa`` pads, the query form strips it).
    """
    cleaned = "".join(text.split()).replace("-", "+").replace("_", "/").rstrip("=")
    if len(cleaned) % 4 == 1:
        raise InvalidRequest("Invalid base64 data")
    try:
        return base64.b64decode(cleaned + "=" * (-len(cleaned) % 4), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidRequest("Invalid base64 data") from exc


def _escape_array(items: list[Any]) -> list[Any]:
    # A user array that looks like a tag gets one more "$"; the JS side only
    # ever tags 2-item arrays, so only those need it.
    if len(items) == 2 and isinstance(items[0], str) and items[0].startswith("$"):
        return ["$" + items[0], items[1]]
    return items


def _as_set(items: list[Any]) -> set[Any] | list[Any]:
    """A Python set of ``items``, or the list itself when Python cannot hash them.

    A JS ``Set`` may hold objects and arrays, which no Python set can; those
    arrive as a list rather than failing the whole message.
    """
    hashable = [frozenset(item) if isinstance(item, set) else item for item in items]
    try:
        return set(hashable)
    except TypeError:
        return items


def _revive_tagged(tag: str, payload: Any, revive: Callable[[Any], Any]) -> Any:
    """Undo one ``[tag, payload]`` pair (``reviveJsonCompatValue``)."""
    if tag == _BIGINT:
        if isinstance(payload, int) and not isinstance(payload, bool):
            return payload
        if isinstance(payload, str):
            try:
                return int(payload.strip(), 10)
            except ValueError:
                pass
        raise InvalidRequest(f"Invalid {_BIGINT} value")
    if tag in (_UINT8_ARRAY, _ARRAY_BUFFER):
        if not isinstance(payload, str):
            raise InvalidRequest(f"Invalid {tag} value")
        return _b64decode(payload)
    if tag == _UNDEFINED:
        return None
    if tag == _SET:
        if not isinstance(payload, list):
            raise InvalidRequest(f"Invalid {_SET} value")
        return _as_set([revive(item) for item in payload])
    if tag.startswith("$$"):
        return [tag[1:], revive(payload)]
    raise InvalidRequest(f"Unknown JSON encoding type: {tag}")


def _unsupported(value: Any) -> TypeError:
    return TypeError(f"Value of type {type(value).__name__!r} is not serializable")


# --------------------------------------------------------------------------
# JSON
# --------------------------------------------------------------------------


def _json_key(key: Any) -> str:
    # JS object keys are strings; spell scalars the way ``String(x)`` would.
    if isinstance(key, str):
        return key
    if key is None:
        return "null"
    if isinstance(key, bool):
        return "true" if key else "false"
    if isinstance(key, int):
        return str(key)
    if isinstance(key, float):
        return str(int(key)) if key.is_integer() and abs(key) < 1e21 else repr(key)
    raise TypeError(f"Dict key of type {type(key).__name__!r} is not JSON serializable")


def to_json_compat(value: Any) -> Any:
    """Turn a Python value into a JSON-ready structure with RivetKit's ``$`` tags.

    Raises :class:`TypeError` for values outside the value model.
    """
    if value is None or isinstance(value, (bool, str, float)):
        return value
    if isinstance(value, int):
        if -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
            return value
        return [_BIGINT, str(value)]
    if isinstance(value, (bytes, bytearray, memoryview)):
        return [_UINT8_ARRAY, _b64encode(bytes(value))]
    if isinstance(value, (set, frozenset)):
        return [_SET, [to_json_compat(item) for item in value]]
    if isinstance(value, Mapping):
        return {_json_key(k): to_json_compat(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return _escape_array([to_json_compat(item) for item in value])
    raise _unsupported(value)


def from_json_compat(value: Any) -> Any:
    """Undo :func:`to_json_compat` on parsed JSON.

    Raises :class:`InvalidRequest` for an unknown or malformed ``$`` tag.
    """
    if isinstance(value, list):
        if len(value) == 2 and isinstance(value[0], str) and value[0].startswith("$"):
            return _revive_tagged(value[0], value[1], from_json_compat)
        return [from_json_compat(item) for item in value]
    if isinstance(value, dict):
        return {key: from_json_compat(item) for key, item in value.items()}
    return value


def json_dumps(value: Any) -> bytes:
    """Serialize a Python value as RivetKit compat JSON (UTF-8 bytes)."""
    return orjson.dumps(to_json_compat(value))


def json_loads(data: bytes | str) -> Any:
    """Parse RivetKit compat JSON; malformed input raises :class:`InvalidRequest`."""
    try:
        parsed = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"Invalid JSON: {exc}") from exc
    try:
        return from_json_compat(parsed)
    except RecursionError as exc:
        raise InvalidRequest("Invalid JSON: nested too deeply") from exc


# --------------------------------------------------------------------------
# CBOR
# --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FixedUint64:
    """An unsigned int that must be written as a full 8-byte CBOR head.

    cbor-x only decodes 8-byte ints (additional info 27) as ``BigInt``, and the
    JS client validates WebSocket message ids with ``z.bigint()``; a short int
    would make it drop the message.
    """

    value: int

    def __post_init__(self) -> None:
        if not 0 <= self.value < _U64_LIMIT:
            raise ValueError(f"{self.value} does not fit in an unsigned 64-bit integer")


def _write_fixed_uint64(encoder: cbor2.CBOREncoder, value: Any) -> None:
    # Major type 0 with additional info 27: the 8-byte big-endian form.
    encoder.write(b"\x1b" + struct.pack(">Q", value.value))


_ENCODERS: Final[dict[type, Callable[[cbor2.CBOREncoder, Any], None]]] = {FixedUint64: _write_fixed_uint64}


def _cbor_int(value: int) -> Any:
    if -_U32_LIMIT <= value < _U32_LIMIT:
        return value
    if -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
        # cbor-x would decode an 8-byte int as a BigInt; a float64 makes it a number.
        return float(value)
    if -_U64_LIMIT <= value < _U64_LIMIT:
        return value
    return [_BIGINT, str(value)]


def _freeze(value: Any) -> Any:
    # Encoded map keys must stay hashable for cbor2; arrays become tuples.
    if isinstance(value, list):
        return tuple(_freeze(item) for item in value)
    return value


def to_cbor_compat(value: Any) -> Any:
    """Turn a Python value into what cbor2 must encode to match ``encodeCborCompat``.

    Raises :class:`TypeError` for values outside the value model.
    """
    if value is None or isinstance(value, (bool, str, float)):
        return value
    if isinstance(value, int):
        return _cbor_int(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return [_UINT8_ARRAY, _b64encode(bytes(value))]
    if isinstance(value, (set, frozenset)):
        return [_SET, [to_cbor_compat(item) for item in value]]
    if isinstance(value, Mapping):
        if all(isinstance(key, str) for key in value):
            return {key: to_cbor_compat(item) for key, item in value.items()}
        entries = {_freeze(to_cbor_compat(k)): to_cbor_compat(v) for k, v in value.items()}
        return cbor2.CBORTag(_TAG_MAP, entries)
    if isinstance(value, (list, tuple)):
        return _escape_array([to_cbor_compat(item) for item in value])
    raise _unsupported(value)


def cbor_dumps_raw(value: Any) -> bytes:
    """CBOR-encode an already compat-tagged structure; honours :class:`FixedUint64`."""
    return cbor2.dumps(value, encoders=_ENCODERS)


def cbor_dumps(value: Any) -> bytes:
    """Serialize a Python value the way the JS ``encodeCborCompat`` would."""
    return cbor2.dumps(to_cbor_compat(value))


class _DecodedSet(list[Any]):
    """Items of a CBOR tag 258 set, kept as a list until they are revived."""


class _UnsupportedTag(Exception):
    pass


def _decode_set(value: Any, immutable: bool) -> Any:
    if not isinstance(value, (list, tuple)):
        raise _UnsupportedTag("tag 258 must wrap an array")
    return _DecodedSet(value)


def _decode_map(value: Any, immutable: bool) -> Any:
    if not isinstance(value, Mapping):
        raise _UnsupportedTag("tag 259 must wrap a map")
    return value


def _decode_uint8_array(value: Any, immutable: bool) -> Any:
    if not isinstance(value, bytes):
        raise _UnsupportedTag("typed array tag must wrap a byte string")
    return value


_SEMANTIC_DECODERS: Final = {
    _TAG_SET: _decode_set,
    _TAG_MAP: _decode_map,
    _TAG_UINT8_ARRAY: _decode_uint8_array,
    _TAG_UINT8_CLAMPED_ARRAY: _decode_uint8_array,
}


def _reject_tag(tag: cbor2.CBORTag, immutable: bool) -> Any:
    raise _UnsupportedTag(f"unsupported CBOR tag {tag.tag}")


def _revive_float(value: float) -> float | int:
    # cbor-x writes integral JS numbers beyond 32 bits as float64: give them
    # back as the ints they were, as JSON would.
    if value.is_integer() and _U32_LIMIT <= abs(value) <= MAX_SAFE_INTEGER:
        return int(value)
    return value


def _revive_key(key: Any) -> Any:
    if isinstance(key, float):
        return _revive_float(key)
    if isinstance(key, tuple):
        if len(key) == 2 and isinstance(key[0], str) and key[0].startswith("$"):
            revived = _revive_tagged(key[0], _thaw(key[1]), _revive_cbor)
            return _hashable(revived)
        return tuple(_revive_key(item) for item in key)
    if key is cbor2.undefined:
        return None
    return key


def _thaw(value: Any) -> Any:
    # Map keys come out of cbor2 as tuples; tag payloads are revived as lists.
    if isinstance(value, tuple):
        return [_thaw(item) for item in value]
    return value


def _hashable(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_hashable(item) for item in value)
    if isinstance(value, set):
        return frozenset(value)
    return value


def _revive_cbor(value: Any) -> Any:
    if isinstance(value, _DecodedSet):
        return _as_set([_revive_cbor(item) for item in value])
    if isinstance(value, list):
        if len(value) == 2 and isinstance(value[0], str) and value[0].startswith("$"):
            return _revive_tagged(value[0], value[1], _revive_cbor)
        return [_revive_cbor(item) for item in value]
    if isinstance(value, Mapping):
        return {_revive_key(key): _revive_cbor(item) for key, item in value.items()}
    if isinstance(value, float):
        return _revive_float(value)
    if value is cbor2.undefined:
        return None
    return value


def cbor_loads(data: bytes) -> Any:
    """Parse CBOR the way the JS ``decodeCborCompat`` does.

    Trailing bytes, unknown tags and malformed input raise
    :class:`InvalidRequest`.
    """
    raw = bytes(data)
    stream = io.BytesIO(raw)
    try:
        decoder = cbor2.CBORDecoder(stream, tag_hook=_reject_tag, semantic_decoders=_SEMANTIC_DECODERS)
        value = decoder.decode()
    except (
        cbor2.CBORError,
        _UnsupportedTag,
        ValueError,
        TypeError,
        RecursionError,
    ) as exc:
        raise InvalidRequest(f"Invalid CBOR: {exc}") from exc
    if stream.tell() != len(raw):
        raise InvalidRequest("Invalid CBOR: trailing bytes after the value")
    try:
        return _revive_cbor(value)
    except RecursionError as exc:
        raise InvalidRequest("Invalid CBOR: nested too deeply") from exc


# --------------------------------------------------------------------------
# Actor inputs
# --------------------------------------------------------------------------


def encode_input(value: Any) -> str:
    """The REST ``input`` field: base64 (standard alphabet, padded) of compat CBOR."""
    return _b64encode(cbor_dumps(value))


def decode_input(value: str) -> Any:
    """Undo :func:`encode_input`; bad base64 or CBOR raises :class:`InvalidRequest`."""
    return cbor_loads(_b64decode(value))


def encode_query_input(value: Any) -> str:
    """The gateway's ``rvt-input``: base64url without padding of compat CBOR."""
    return base64.urlsafe_b64encode(cbor_dumps(value)).decode("ascii").rstrip("=")


def decode_query_input(value: str) -> Any:
    """Undo :func:`encode_query_input`; bad input raises :class:`InvalidRequest`."""
    return cbor_loads(_b64decode(value))
