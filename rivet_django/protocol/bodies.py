"""HTTP bodies of the actor routes: actions, queue sends and errors.

In json and cbor a body is an object (``{"args": [...]}``, ``{"output": v}``,
...) whose values carry the compat tagging of :mod:`.values`. In bare it is a
versioned BARE struct whose ``data`` fields hold compat CBOR of the value; the
schemas per version are:

==================  ===========================================================
HttpActionRequest   ``args: data``
HttpActionResponse  ``output: data``
HttpQueueSendReq.   ``body: data, name: str?, wait: bool?, timeout: u64?`` (v3+)
HttpQueueSendResp.  ``status: str, response: data?`` (v3+)
HttpResponseError   ``group, code, message: str, metadata: data?``, and from v4
                    ``actor: ActorSpecifier?`` (always written absent here)
==================  ===========================================================

Decoders return the BARE version the request used so the answer can be
written in the same one (json and cbor report :data:`CURRENT_VERSION`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

import orjson

from rivet_django.exceptions import InvalidRequest

from .bare import (
    CURRENT_VERSION,
    QUEUE_VERSIONS,
    VERSIONS,
    BareReader,
    BareWriter,
    check_version,
    split_version,
    with_version,
)
from .encoding import Encoding
from .values import (
    cbor_dumps,
    cbor_dumps_raw,
    cbor_loads,
    json_loads,
    to_cbor_compat,
    to_json_compat,
)

__all__ = [
    "QueueSendRequest",
    "decode_action_request",
    "decode_action_response",
    "decode_error",
    "decode_queue_send_request",
    "decode_queue_send_response",
    "encode_action_request",
    "encode_action_response",
    "encode_error",
    "encode_queue_send_request",
    "encode_queue_send_response",
    "read_actor_specifier",
    "structured_dumps",
    "structured_loads",
]

Converter: TypeAlias = Callable[[Any], Any]
"""Turns a Python value into its compat form for one encoding."""

EnvelopeBuilder: TypeAlias = Callable[[Converter], Any]
"""Builds a json/cbor envelope given the value converter of the encoding."""


@dataclass(frozen=True, slots=True)
class QueueSendRequest:
    """A ``POST .../queue/{name}`` body: the message and how to wait for it."""

    body: Any
    name: str | None = None
    wait: bool = False
    timeout_ms: int | None = None


# --------------------------------------------------------------------------
# Helpers shared with the WebSocket messages
# --------------------------------------------------------------------------


def structured_dumps(encoding: Encoding, build: EnvelopeBuilder) -> bytes:
    """Encode a json/cbor envelope; ``build(convert)`` makes it from compat values.

    ``build`` receives the value converter of the encoding, so envelopes are
    written once for both: JSON gets ``$``-tagged values, CBOR the values
    ``encodeCborCompat`` would produce.
    """
    if encoding == "json":
        return orjson.dumps(build(to_json_compat))
    return cbor_dumps_raw(build(to_cbor_compat))


def structured_loads(encoding: Encoding, data: bytes | str) -> dict[str, Any]:
    """Decode a json/cbor envelope, which must be an object."""
    if encoding == "json":
        value = json_loads(data)
    else:
        if isinstance(data, str):
            raise InvalidRequest("Invalid request: expected a binary body")
        value = cbor_loads(data)
    if not isinstance(value, dict):
        raise InvalidRequest("Invalid request: the body must be an object")
    return value


def _string_field(obj: dict[str, Any], name: str) -> str:
    value = obj.get(name)
    if not isinstance(value, str):
        raise InvalidRequest(f"Invalid request: `{name}` must be a string")
    return value


def _normalize_args(args: Any) -> list[Any]:
    # The JS server accepts any value as args: null means no arguments and a
    # lone value is the single argument.
    if args is None:
        return []
    if isinstance(args, list):
        return args
    return [args]


def read_actor_specifier(reader: BareReader) -> dict[str, Any]:
    """Read a v4 ``ActorSpecifier`` (``actorId: str, generation: uint, key: str?``)."""
    return {
        "actorId": reader.string(),
        "generation": reader.uint(),
        "key": reader.optional(reader.string),
    }


def _bare_body(body: bytes, supported: range) -> tuple[int, BareReader]:
    version, payload = split_version(body, supported)
    return version, BareReader(payload)


# --------------------------------------------------------------------------
# Actions
# --------------------------------------------------------------------------


def decode_action_request(encoding: Encoding, body: bytes) -> tuple[list[Any], int]:
    """Parse a ``POST .../action/{name}`` body into its args and BARE version.

    Non-list args become ``[args]`` and null (or missing) args ``[]``.
    """
    if encoding == "bare":
        version, reader = _bare_body(body, VERSIONS)
        raw = reader.data()
        reader.finish()
        return _normalize_args(cbor_loads(raw)), version
    obj = structured_loads(encoding, body)
    return _normalize_args(obj.get("args")), CURRENT_VERSION


def encode_action_request(encoding: Encoding, args: Sequence[Any], version: int = CURRENT_VERSION) -> bytes:
    """Write an action call body (client side)."""
    values = list(args)
    if encoding == "bare":
        check_version(version, VERSIONS)
        writer = BareWriter()
        writer.data(cbor_dumps(values))
        return with_version(version, writer.getvalue())
    return structured_dumps(encoding, lambda convert: {"args": convert(values)})


def encode_action_response(encoding: Encoding, output: Any, version: int = CURRENT_VERSION) -> bytes:
    """Write the 200 answer of an action call."""
    if encoding == "bare":
        check_version(version, VERSIONS)
        writer = BareWriter()
        writer.data(cbor_dumps(output))
        return with_version(version, writer.getvalue())
    return structured_dumps(encoding, lambda convert: {"output": convert(output)})


def decode_action_response(encoding: Encoding, body: bytes) -> Any:
    """Read the output of an action call (client side)."""
    if encoding == "bare":
        _, reader = _bare_body(body, VERSIONS)
        raw = reader.data()
        reader.finish()
        return cbor_loads(raw)
    return structured_loads(encoding, body).get("output")


# --------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------


def encode_error(
    encoding: Encoding,
    group: str,
    code: str,
    message: str,
    metadata: Any = None,
    version: int = CURRENT_VERSION,
) -> bytes:
    """Write an error body; ``metadata`` is left out when it is None."""
    if encoding == "bare":
        check_version(version, VERSIONS)
        writer = BareWriter()
        writer.string(group)
        writer.string(code)
        writer.string(message)
        if writer.optional_present(metadata is not None):
            writer.data(cbor_dumps(metadata))
        if version >= 4:
            # v4 names the actor that failed; we never have one to report.
            writer.optional_present(False)
        return with_version(version, writer.getvalue())

    def build(convert: Converter) -> dict[str, Any]:
        error: dict[str, Any] = {"group": group, "code": code, "message": message}
        if metadata is not None:
            error["metadata"] = convert(metadata)
        return error

    return structured_dumps(encoding, build)


def decode_error(encoding: Encoding, body: bytes) -> dict[str, Any]:
    """Read an error body into ``{"group", "code", "message", "metadata"}``.

    Servers answer some errors in JSON whatever the request's encoding: pick
    ``encoding`` from the response's ``Content-Type`` as the JS client does.
    """
    if encoding == "bare":
        version, reader = _bare_body(body, VERSIONS)
        group = reader.string()
        code = reader.string()
        message = reader.string()
        raw_metadata = reader.optional(reader.data)
        if version >= 4:
            reader.optional(lambda: read_actor_specifier(reader))
        reader.finish()
        metadata = cbor_loads(raw_metadata) if raw_metadata is not None else None
        return {"group": group, "code": code, "message": message, "metadata": metadata}
    obj = structured_loads(encoding, body)
    return {
        "group": _string_field(obj, "group"),
        "code": _string_field(obj, "code"),
        "message": _string_field(obj, "message"),
        "metadata": obj.get("metadata"),
    }


# --------------------------------------------------------------------------
# Queue sends
# --------------------------------------------------------------------------


def _timeout_ms(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidRequest("Invalid request: `timeout` must be a number")
    if (isinstance(value, float) and not math.isfinite(value)) or value < 0:
        raise InvalidRequest("Invalid request: `timeout` must be a non-negative number")
    return int(value)


def decode_queue_send_request(encoding: Encoding, body: bytes) -> tuple[QueueSendRequest, int]:
    """Parse a ``POST .../queue/{name}`` body into a request and its BARE version."""
    if encoding == "bare":
        version, reader = _bare_body(body, QUEUE_VERSIONS)
        raw = reader.data()
        name = reader.optional(reader.string)
        wait = reader.optional(reader.boolean)
        timeout = reader.optional(reader.u64)
        reader.finish()
        request = QueueSendRequest(body=cbor_loads(raw), name=name, wait=bool(wait), timeout_ms=timeout)
        return request, version
    obj = structured_loads(encoding, body)
    name = obj.get("name")
    if name is not None and not isinstance(name, str):
        raise InvalidRequest("Invalid request: `name` must be a string")
    wait = obj.get("wait")
    if wait is not None and not isinstance(wait, bool):
        raise InvalidRequest("Invalid request: `wait` must be a boolean")
    request = QueueSendRequest(
        body=obj.get("body"),
        name=name,
        wait=bool(wait),
        timeout_ms=_timeout_ms(obj.get("timeout")),
    )
    return request, CURRENT_VERSION


def encode_queue_send_request(encoding: Encoding, request: QueueSendRequest, version: int = CURRENT_VERSION) -> bytes:
    """Write a queue send body (client side)."""
    if encoding == "bare":
        check_version(version, QUEUE_VERSIONS)
        writer = BareWriter()
        writer.data(cbor_dumps(request.body))
        if writer.optional_present(request.name is not None):
            assert request.name is not None
            writer.string(request.name)
        # The JS client always sends `wait`, false when not waiting.
        writer.optional_present(True)
        writer.boolean(request.wait)
        if writer.optional_present(request.timeout_ms is not None):
            assert request.timeout_ms is not None
            writer.u64(request.timeout_ms)
        return with_version(version, writer.getvalue())

    def build(convert: Converter) -> dict[str, Any]:
        out: dict[str, Any] = {"body": convert(request.body), "wait": request.wait}
        if request.timeout_ms is not None:
            out["timeout"] = request.timeout_ms
        if request.name is not None:
            out["name"] = request.name
        return out

    return structured_dumps(encoding, build)


def encode_queue_send_response(
    encoding: Encoding,
    status: str,
    response: Any = None,
    has_response: bool = False,
    version: int = CURRENT_VERSION,
) -> bytes:
    """Write the answer of a queue send.

    ``response`` is included when ``has_response`` is true (the consumer
    completed the message with a value, possibly None) or when it is not None.
    """
    include = has_response or response is not None
    if encoding == "bare":
        check_version(version, QUEUE_VERSIONS)
        writer = BareWriter()
        writer.string(status)
        if writer.optional_present(include):
            writer.data(cbor_dumps(response))
        return with_version(version, writer.getvalue())

    def build(convert: Converter) -> dict[str, Any]:
        out: dict[str, Any] = {"status": status}
        if include:
            out["response"] = convert(response)
        return out

    return structured_dumps(encoding, build)


def decode_queue_send_response(encoding: Encoding, body: bytes) -> tuple[str, Any]:
    """Read a queue send answer (client side) into ``(status, response or None)``."""
    if encoding == "bare":
        _, reader = _bare_body(body, QUEUE_VERSIONS)
        status = reader.string()
        raw = reader.optional(reader.data)
        reader.finish()
        return status, cbor_loads(raw) if raw is not None else None
    obj = structured_loads(encoding, body)
    return _string_field(obj, "status"), obj.get("response")
