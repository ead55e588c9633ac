"""RivetKit's actor client protocol on the wire: pure Python, no Django.

What travels between the official RivetKit clients (npm ``rivetkit`` 2.x) and
an actor server, read from rivetkit 2.3.19:

- :mod:`.encoding`: the ``json``/``cbor``/``bare`` choice and content types.
- :mod:`.values`: actor values in compat JSON and CBOR, actor inputs.
- :mod:`.keys`: actor keys as REST strings and as the gateway's ``rvt-key``.
- :mod:`.bare`: BARE primitives and the 2-byte version prefix.
- :mod:`.bodies`: HTTP bodies of actions, queue sends and errors.
- :mod:`.messages`: WebSocket messages of stateful connections.

Undecodable input raises :class:`rivet_django.exceptions.InvalidRequest`; an
unknown encoding name raises :class:`rivet_django.exceptions.InvalidEncoding`.
Values outside the value model raise :class:`TypeError` when encoded.
"""

from __future__ import annotations

from .bare import CURRENT_VERSION
from .bodies import (
    QueueSendRequest,
    decode_action_request,
    decode_action_response,
    decode_error,
    decode_queue_send_request,
    decode_queue_send_response,
    encode_action_request,
    encode_action_response,
    encode_error,
    encode_queue_send_request,
    encode_queue_send_response,
)
from .encoding import ENCODINGS, Encoding, content_type, is_binary, parse_encoding
from .keys import EMPTY_KEY, deserialize_key, parse_query_key, serialize_key
from .messages import (
    ActionRequest,
    ActionResponse,
    ErrorMessage,
    Event,
    Init,
    SubscriptionRequest,
    ToClient,
    ToServer,
    decode_to_client,
    decode_to_server,
    encode_to_client,
    encode_to_server,
)
from .values import (
    MAX_SAFE_INTEGER,
    cbor_dumps,
    cbor_loads,
    decode_input,
    decode_query_input,
    encode_input,
    encode_query_input,
    from_json_compat,
    json_dumps,
    json_loads,
    to_json_compat,
)

__all__ = [
    "CURRENT_VERSION",
    "EMPTY_KEY",
    "ENCODINGS",
    "MAX_SAFE_INTEGER",
    "ActionRequest",
    "ActionResponse",
    "Encoding",
    "ErrorMessage",
    "Event",
    "Init",
    "QueueSendRequest",
    "SubscriptionRequest",
    "ToClient",
    "ToServer",
    "cbor_dumps",
    "cbor_loads",
    "content_type",
    "decode_action_request",
    "decode_action_response",
    "decode_error",
    "decode_input",
    "decode_query_input",
    "decode_queue_send_request",
    "decode_queue_send_response",
    "decode_to_client",
    "decode_to_server",
    "deserialize_key",
    "encode_action_request",
    "encode_action_response",
    "encode_error",
    "encode_input",
    "encode_query_input",
    "encode_queue_send_request",
    "encode_queue_send_response",
    "encode_to_client",
    "encode_to_server",
    "from_json_compat",
    "is_binary",
    "json_dumps",
    "json_loads",
    "parse_encoding",
    "parse_query_key",
    "serialize_key",
    "to_json_compat",
]
