"""WebSocket messages of a stateful connection (``.../connect``), both ways.

In json and cbor a message is ``{"body": {"tag": T, "val": {...}}}``; json
travels in text frames, cbor and bare in binary frames. A bare frame carries
the same 2-byte version prefix as an HTTP body (the JS client uses vbare's
``serializeWithEmbeddedVersion`` for frames too), then the BARE union:

========  ===  =================================================================
ToClient  [0]  Init ``actorId, connectionId: str`` (v1 also ``connectionToken``)
          [1]  Error ``group, code, message: str, metadata: data?,
               actionId: uint?`` and from v4 ``actor: ActorSpecifier?``
          [2]  ActionResponse ``id: uint, output: data``
          [3]  Event ``name: str, args: data``
ToServer  [0]  ActionRequest ``id: uint, name: str, args: data``
          [1]  SubscriptionRequest ``eventName: str, subscribe: bool``
========  ===  =================================================================

Ids are 64-bit and the JS client checks them with ``z.bigint()``: in json
they are written ``["$BigInt", "7"]``, in cbor as 8-byte ints (see
:class:`.values.FixedUint64`); a plain number makes the client drop the
message.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, TypeAlias

from rivet_django.exceptions import InvalidRequest

from .bare import (
    CURRENT_VERSION,
    VERSIONS,
    BareReader,
    BareWriter,
    check_version,
    split_version,
    with_version,
)
from .bodies import Converter, read_actor_specifier, structured_dumps, structured_loads
from .encoding import Encoding
from .values import FixedUint64, cbor_dumps, cbor_loads

__all__ = [
    "ActionRequest",
    "ActionResponse",
    "ErrorMessage",
    "Event",
    "Init",
    "SubscriptionRequest",
    "ToClient",
    "ToServer",
    "decode_to_client",
    "decode_to_server",
    "encode_to_client",
    "encode_to_server",
]

_U64_LIMIT = 2**64


@dataclass(frozen=True, slots=True)
class Init:
    """First server message of a connection: who the client is talking to."""

    actor_id: str
    connection_id: str


@dataclass(frozen=True, slots=True)
class ErrorMessage:
    """An error for one action (``action_id``) or the whole connection (None)."""

    group: str
    code: str
    message: str
    metadata: Any = None
    action_id: int | None = None


@dataclass(frozen=True, slots=True)
class ActionResponse:
    """The output of the action call with the same ``id``."""

    id: int
    output: Any


@dataclass(frozen=True, slots=True)
class Event:
    """A broadcast or targeted event the connection subscribed to."""

    name: str
    args: list[Any] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class ActionRequest:
    """A client call of action ``name``; the answer carries the same ``id``."""

    id: int
    name: str
    args: list[Any] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class SubscriptionRequest:
    """The client starts (``subscribe``) or stops listening to an event."""

    event_name: str
    subscribe: bool


ToClient: TypeAlias = Init | ErrorMessage | ActionResponse | Event
ToServer: TypeAlias = ActionRequest | SubscriptionRequest

_TO_CLIENT_TAGS: dict[type[Any], int] = {
    Init: 0,
    ErrorMessage: 1,
    ActionResponse: 2,
    Event: 3,
}
_TO_SERVER_TAGS: dict[type[Any], int] = {ActionRequest: 0, SubscriptionRequest: 1}


# --------------------------------------------------------------------------
# Shared helpers
# --------------------------------------------------------------------------


def _frame(encoding: Encoding, payload: bytes) -> bytes | str:
    # JSON goes out as a text frame; the client only needs str vs bytes.
    return payload.decode("utf-8") if encoding == "json" else payload


def _binary(data: bytes | str) -> bytes:
    if isinstance(data, str):
        raise InvalidRequest("Invalid message: expected a binary frame")
    return bytes(data)


def _wire_id(encoding: Encoding, value: int) -> Any:
    if not 0 <= value < _U64_LIMIT:
        raise ValueError(f"message id {value} does not fit in an unsigned 64-bit integer")
    if encoding == "json":
        return ["$BigInt", str(value)]
    return FixedUint64(value)


def _read_id(value: Any, name: str) -> int:
    # After reviving, a ["$BigInt", "7"] or an 8-byte CBOR int is a Python int.
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < _U64_LIMIT:
        raise InvalidRequest(f"Invalid message: `{name}` must be an unsigned 64-bit integer")
    return value


def _str(val: dict[str, Any], name: str) -> str:
    value = val.get(name)
    if not isinstance(value, str):
        raise InvalidRequest(f"Invalid message: `{name}` must be a string")
    return value


def _args(value: Any) -> list[Any]:
    # Same leniency as HTTP action bodies: null is no args, a lone value is one.
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _envelope(data: bytes | str, encoding: Encoding) -> tuple[str, dict[str, Any]]:
    obj = structured_loads(encoding, data)
    body = obj.get("body")
    if not isinstance(body, dict):
        raise InvalidRequest("Invalid message: missing `body`")
    tag = body.get("tag")
    val = body.get("val")
    if not isinstance(tag, str) or not isinstance(val, dict):
        raise InvalidRequest("Invalid message: `body` needs a `tag` and a `val` object")
    return tag, val


# --------------------------------------------------------------------------
# Server -> client
# --------------------------------------------------------------------------


def _to_client_val(encoding: Encoding, message: ToClient, convert: Converter) -> tuple[str, dict[str, Any]]:
    if isinstance(message, Init):
        return "Init", {
            "actorId": message.actor_id,
            "connectionId": message.connection_id,
        }
    if isinstance(message, ErrorMessage):
        val: dict[str, Any] = {
            "group": message.group,
            "code": message.code,
            "message": message.message,
        }
        if message.metadata is not None:
            val["metadata"] = convert(message.metadata)
        # `actionId` is nullable but not optional in the client's schema.
        val["actionId"] = None if message.action_id is None else _wire_id(encoding, message.action_id)
        return "Error", val
    if isinstance(message, ActionResponse):
        return "ActionResponse", {
            "id": _wire_id(encoding, message.id),
            "output": convert(message.output),
        }
    return "Event", {"name": message.name, "args": convert(list(message.args))}


def encode_to_client(encoding: Encoding, message: ToClient, version: int = CURRENT_VERSION) -> bytes | str:
    """Encode a server message: ``str`` for a json text frame, else ``bytes``."""
    if encoding != "bare":

        def build(convert: Converter) -> dict[str, Any]:
            tag, val = _to_client_val(encoding, message, convert)
            return {"body": {"tag": tag, "val": val}}

        return _frame(encoding, structured_dumps(encoding, build))

    check_version(version, VERSIONS)
    writer = BareWriter()
    writer.u8(_TO_CLIENT_TAGS[type(message)])
    if isinstance(message, Init):
        writer.string(message.actor_id)
        writer.string(message.connection_id)
        if version == 1:
            # v1 still had connection tokens; later clients ignore them.
            writer.string("")
    elif isinstance(message, ErrorMessage):
        writer.string(message.group)
        writer.string(message.code)
        writer.string(message.message)
        if writer.optional_present(message.metadata is not None):
            writer.data(cbor_dumps(message.metadata))
        if writer.optional_present(message.action_id is not None):
            assert message.action_id is not None
            writer.uint(message.action_id)
        if version >= 4:
            writer.optional_present(False)
    elif isinstance(message, ActionResponse):
        writer.uint(message.id)
        writer.data(cbor_dumps(message.output))
    else:
        writer.string(message.name)
        writer.data(cbor_dumps(list(message.args)))
    return with_version(version, writer.getvalue())


def decode_to_client(encoding: Encoding, data: bytes | str, version: int = CURRENT_VERSION) -> ToClient:
    """Decode a server message (client side).

    A bare frame names its own version in its prefix, which is what gets
    decoded; ``version`` only documents what the caller expects.
    """
    if encoding != "bare":
        tag, val = _envelope(data, encoding)
        if tag == "Init":
            return Init(actor_id=_str(val, "actorId"), connection_id=_str(val, "connectionId"))
        if tag == "Error":
            raw_action_id = val.get("actionId")
            return ErrorMessage(
                group=_str(val, "group"),
                code=_str(val, "code"),
                message=_str(val, "message"),
                metadata=val.get("metadata"),
                action_id=None if raw_action_id is None else _read_id(raw_action_id, "actionId"),
            )
        if tag == "ActionResponse":
            return ActionResponse(id=_read_id(val.get("id"), "id"), output=val.get("output"))
        if tag == "Event":
            return Event(name=_str(val, "name"), args=_args(val.get("args")))
        raise InvalidRequest(f"Invalid message: unknown tag {tag!r}")

    frame_version, payload = split_version(_binary(data), VERSIONS)
    reader = BareReader(payload)
    tag_index = reader.u8()
    message: ToClient
    if tag_index == 0:
        message = Init(actor_id=reader.string(), connection_id=reader.string())
        if frame_version == 1:
            reader.string()
    elif tag_index == 1:
        group = reader.string()
        code = reader.string()
        text = reader.string()
        raw_metadata = reader.optional(reader.data)
        action_id = reader.optional(reader.uint)
        if frame_version >= 4:
            reader.optional(lambda: read_actor_specifier(reader))
        reader.finish()
        return ErrorMessage(
            group=group,
            code=code,
            message=text,
            metadata=None if raw_metadata is None else cbor_loads(raw_metadata),
            action_id=action_id,
        )
    elif tag_index == 2:
        action_id = reader.uint()
        raw_output = reader.data()
        reader.finish()
        return ActionResponse(id=action_id, output=cbor_loads(raw_output))
    elif tag_index == 3:
        name = reader.string()
        raw_args = reader.data()
        reader.finish()
        return Event(name=name, args=_args(cbor_loads(raw_args)))
    else:
        raise InvalidRequest(f"Invalid message: unknown tag {tag_index}")
    reader.finish()
    return message


# --------------------------------------------------------------------------
# Client -> server
# --------------------------------------------------------------------------


def encode_to_server(encoding: Encoding, message: ToServer, version: int = CURRENT_VERSION) -> bytes | str:
    """Encode a client message: ``str`` for a json text frame, else ``bytes``."""
    if encoding != "bare":

        def build(convert: Converter) -> dict[str, Any]:
            if isinstance(message, ActionRequest):
                tag = "ActionRequest"
                val: dict[str, Any] = {
                    "id": _wire_id(encoding, message.id),
                    "name": message.name,
                    "args": convert(list(message.args)),
                }
            else:
                tag = "SubscriptionRequest"
                val = {"eventName": message.event_name, "subscribe": message.subscribe}
            return {"body": {"tag": tag, "val": val}}

        return _frame(encoding, structured_dumps(encoding, build))

    check_version(version, VERSIONS)
    writer = BareWriter()
    writer.u8(_TO_SERVER_TAGS[type(message)])
    if isinstance(message, ActionRequest):
        writer.uint(message.id)
        writer.string(message.name)
        writer.data(cbor_dumps(list(message.args)))
    else:
        writer.string(message.event_name)
        writer.boolean(message.subscribe)
    return with_version(version, writer.getvalue())


def decode_to_server(encoding: Encoding, data: bytes | str, version: int = CURRENT_VERSION) -> ToServer:
    """Decode a client message; garbage, unknown tags or bad ids raise InvalidRequest.

    A bare frame names its own version in its prefix (v1 to v4 share this
    schema); ``version`` only documents what the caller expects.
    """
    if encoding != "bare":
        tag, val = _envelope(data, encoding)
        if tag == "ActionRequest":
            return ActionRequest(
                id=_read_id(val.get("id"), "id"),
                name=_str(val, "name"),
                args=_args(val.get("args")),
            )
        if tag == "SubscriptionRequest":
            subscribe = val.get("subscribe")
            if not isinstance(subscribe, bool):
                raise InvalidRequest("Invalid message: `subscribe` must be a boolean")
            return SubscriptionRequest(event_name=_str(val, "eventName"), subscribe=subscribe)
        raise InvalidRequest(f"Invalid message: unknown tag {tag!r}")

    _, payload = split_version(_binary(data), VERSIONS)
    reader = BareReader(payload)
    tag_index = reader.u8()
    if tag_index == 0:
        action_id = reader.uint()
        name = reader.string()
        raw_args = reader.data()
        reader.finish()
        return ActionRequest(id=action_id, name=name, args=_args(cbor_loads(raw_args)))
    if tag_index == 1:
        event_name = reader.string()
        subscribe = reader.boolean()
        reader.finish()
        return SubscriptionRequest(event_name=event_name, subscribe=subscribe)
    raise InvalidRequest(f"Invalid message: unknown tag {tag_index}")
