"""Wire-protocol codecs (:mod:`rivet_django.protocol`); no Django needed.

Golden vectors marked "official" were produced by running rivetkit 2.3.19's
own encoders (``serializeWithEncoding``, ``encodeCborCompat``, the vbare
handlers, ``buildActorQueryGatewayUrl``) under Node 20. Our encodings that are
not byte-identical (cbor-x writes object headers as ``b9 00 NN``) were checked
to decode with the official client's decoders.
"""

from __future__ import annotations

import math
from typing import Any

import cbor2
import pytest

from rivet_django.exceptions import InvalidEncoding, InvalidRequest
from rivet_django.protocol import (
    CURRENT_VERSION,
    ActionRequest,
    ActionResponse,
    ErrorMessage,
    Event,
    Init,
    QueueSendRequest,
    SubscriptionRequest,
    ToClient,
    ToServer,
    cbor_dumps,
    cbor_loads,
    content_type,
    decode_action_request,
    decode_action_response,
    decode_error,
    decode_input,
    decode_query_input,
    decode_queue_send_request,
    decode_queue_send_response,
    decode_to_client,
    decode_to_server,
    deserialize_key,
    encode_action_request,
    encode_action_response,
    encode_error,
    encode_input,
    encode_query_input,
    encode_queue_send_request,
    encode_queue_send_response,
    encode_to_client,
    encode_to_server,
    from_json_compat,
    json_dumps,
    json_loads,
    parse_encoding,
    parse_query_key,
    serialize_key,
    to_json_compat,
)

ENCODINGS = ["json", "cbor", "bare"]

# Every kind of value actor code may send or receive.
VALUES: dict[str, Any] = {
    "none": None,
    "true": True,
    "false": False,
    "zero": 0,
    "int": 42,
    "negative": -7,
    "u32_max": 2**32 - 1,
    "beyond_u32": 2**32,
    "timestamp_ms": 1716239022123,
    "negative_40_bits": -(2**40),
    "max_safe": 2**53 - 1,
    "beyond_safe": 2**53,
    "u64_max": 2**64 - 1,
    "i64_min": -(2**63),
    "u64_overflow": 2**64,
    "huge": 2**200,
    "huge_negative": -(2**100),
    "float": 1.5,
    "negative_float": -0.25,
    "tiny_float": 1e-300,
    "str": "héllo ✓ \x00",
    "empty_str": "",
    "emoji": "\U0001f600",
    "bytes": b"\x00\x01\xfe\xff",
    "empty_bytes": b"",
    "list": [1, "two", [3.5, None]],
    "empty_list": [],
    "dict": {"a": 1, "b": {"c": [None, True]}, "$k": "v", "": 0},
    "empty_dict": {},
    "set": {1, "a", b"x", 2**70},
    "empty_set": set(),
    "set_of_frozensets": {frozenset({1, 2})},
    "escaped": ["$x", 1],
    "escaped_twice": ["$$y", [2]],
    "looks_like_bigint": ["$BigInt", "5"],
    "looks_like_set": ["$Set", [1]],
    "three_items_with_dollar": ["$x", 1, 2],
    "nested": {"items": [{"blob": b"\x09", "tags": {"t"}}], "big": [2**70, -(2**65)]},
}

# Values that only CBOR (and bare, which carries CBOR) can keep as they are.
CBOR_ONLY_VALUES: dict[str, Any] = {
    "int_keys": {1: "a", 2: [b"x"]},
    "mixed_keys": {"a": 1, 3: 2},
    "tuple_key": {(1, 2): "x"},
    "bytes_key": {b"k": 1},
}


def _hex(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", ""))


# --------------------------------------------------------------------------
# Encoding names
# --------------------------------------------------------------------------


def test_parse_encoding_defaults_to_json() -> None:
    assert parse_encoding(None) == "json"
    assert parse_encoding("") == "json"
    assert [parse_encoding(name) for name in ENCODINGS] == ENCODINGS


@pytest.mark.parametrize("name", ["xml", "JSON", "Bare", " cbor"])
def test_parse_encoding_rejects_unknown_names(name: str) -> None:
    with pytest.raises(InvalidEncoding) as info:
        parse_encoding(name)
    assert (info.value.group, info.value.code) == ("encoding", "invalid")


def test_content_type() -> None:
    assert content_type("json") == "application/json"
    assert content_type("cbor") == "application/octet-stream"
    assert content_type("bare") == "application/octet-stream"


# --------------------------------------------------------------------------
# Values: round trips in every encoding
# --------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(VALUES))
def test_json_round_trip(name: str) -> None:
    value = VALUES[name]
    assert json_loads(json_dumps(value)) == value


@pytest.mark.parametrize("name", sorted(VALUES | CBOR_ONLY_VALUES))
def test_cbor_round_trip(name: str) -> None:
    value = (VALUES | CBOR_ONLY_VALUES)[name]
    assert cbor_loads(cbor_dumps(value)) == value


@pytest.mark.parametrize("encoding", ENCODINGS)
@pytest.mark.parametrize("name", sorted(VALUES))
def test_action_output_round_trip(encoding: Any, name: str) -> None:
    value = VALUES[name]
    assert decode_action_response(encoding, encode_action_response(encoding, value)) == value


@pytest.mark.parametrize("encoding", ENCODINGS)
@pytest.mark.parametrize("name", sorted(VALUES))
def test_websocket_action_round_trip(encoding: Any, name: str) -> None:
    value = VALUES[name]
    request = ActionRequest(id=2**63 + 5, name="act", args=[value])
    assert decode_to_server(encoding, encode_to_server(encoding, request)) == request
    response = ActionResponse(id=2**64 - 1, output=value)
    assert decode_to_client(encoding, encode_to_client(encoding, response)) == response


def test_tuples_and_frozensets_travel_as_lists_and_sets() -> None:
    value = {"t": (1, ("$x", 2)), "f": frozenset({3})}
    expected = {"t": [1, ["$x", 2]], "f": {3}}
    assert json_loads(json_dumps(value)) == expected
    assert cbor_loads(cbor_dumps(value)) == expected


def test_unsupported_values_raise_type_error() -> None:
    with pytest.raises(TypeError):
        json_dumps({"x": object()})
    with pytest.raises(TypeError):
        cbor_dumps([1j])
    with pytest.raises(TypeError):
        json_dumps({(1, 2): "tuple keys have no JSON form"})


# --------------------------------------------------------------------------
# Values: the exact JSON tagging
# --------------------------------------------------------------------------


def test_json_tags_values_json_lacks() -> None:
    assert to_json_compat([2**70, b"\x01\x02", {7}, ["$x", 1], 5, 2**53 - 1, 2**53]) == [
        ["$BigInt", "1180591620717411303424"],
        ["$Uint8Array", "AQI="],
        ["$Set", [7]],
        ["$$x", 1],
        5,
        2**53 - 1,
        ["$BigInt", "9007199254740992"],
    ]


def test_json_escaping_only_applies_to_two_item_arrays() -> None:
    # The JS side only tags 2-item arrays, so only those are escaped.
    assert to_json_compat(["$x", 1, 2]) == ["$x", 1, 2]
    assert to_json_compat([["$$y", 1]]) == [["$$$y", 1]]
    assert from_json_compat(["$$$y", 1]) == ["$$y", 1]


def test_json_revives_every_tag() -> None:
    assert from_json_compat(
        [
            ["$BigInt", "-123456789012345678901234567890"],
            ["$Uint8Array", "AQI="],
            ["$ArrayBuffer", "AQI"],
            ["$Undefined", 0],
            ["$Set", [1, ["$BigInt", "2"]]],
            ["$$Set", [1]],
        ]
    ) == [
        -123456789012345678901234567890,
        b"\x01\x02",
        b"\x01\x02",
        None,
        {1, 2},
        ["$Set", [1]],
    ]


def test_json_non_string_keys_become_js_property_names() -> None:
    assert json_loads(json_dumps({1: "a", None: "c", 2.0: "d", 2.5: "e"})) == {
        "1": "a",
        "null": "c",
        "2": "d",
        "2.5": "e",
    }
    assert json_loads(json_dumps({True: 1})) == {"true": 1}


def test_json_decodes_the_official_action_request() -> None:
    # Official: jsonStringifyCompat({args: [1, "a", 2n**70n, Uint8Array[1,2], ["$x", 1]]})
    body = b'{"args":[1,"a",["$BigInt","1180591620717411303424"],["$Uint8Array","AQI="],["$$x",1]]}'
    args, version = decode_action_request("json", body)
    assert args == [1, "a", 2**70, b"\x01\x02", ["$x", 1]]
    assert version == CURRENT_VERSION


def test_set_with_unhashable_items_arrives_as_a_list() -> None:
    # A JS Set may hold arrays, which no Python set can.
    assert from_json_compat(["$Set", [[1, 2]]]) == [[1, 2]]
    # Official: encodeCborCompat(new Set([[1, 2]]))
    assert cbor_loads(_hex("82 64 24536574 81 82 01 02")) == [[1, 2]]


# --------------------------------------------------------------------------
# Values: the exact CBOR forms
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        (42, "18 2a"),
        (2**31, "1a 80000000"),
        (2**32 - 1, "1a ffffffff"),
        (-(2**32), "3a ffffffff"),
        # Safe-range ints beyond 32 bits are float64, as cbor-x writes JS numbers.
        (2**32, "fb 41f0000000000000"),
        (1716239022123, "fb 4278f97d1382b000"),
        # Unsafe ints within 64 bits are 8-byte CBOR ints: BigInt for cbor-x.
        (2**60, "1b 1000000000000000"),
        (-(2**63), "3b 7fffffffffffffff"),
        # Beyond 64 bits they are tagged like encodeCborCompat tags a BigInt.
        (2**64, "82 67 24426967496e74 74 3138343436373434303733373039353531363136"),
        (1.5, "fb 3ff8000000000000"),
        (b"\x01\x02", "82 6b 2455696e74384172726179 64 4151493d"),
        ({1: "a"}, "d9 0103 a1 01 6161"),
    ],
)
def test_cbor_encodes_like_encode_cbor_compat(value: Any, encoded: str) -> None:
    assert cbor_dumps(value).hex() == _hex(encoded).hex()


def test_cbor_matches_official_encode_cbor_compat() -> None:
    # Official: encodeCborCompat([2n**70n, Uint8Array[1,2], new Set(["a"]), ["$x", 1], 2**40, 2**31])
    official = _hex(
        "86 826724426967496e7476313138303539313632303731373431313330333432"
        "34 826b2455696e74384172726179644151493d 826424536574816161"
        " 826324247801 fb4270000000000000 1a80000000"
    )
    value = [2**70, b"\x01\x02", {"a"}, ["$x", 1], 2**40, 2**31]
    assert cbor_dumps(value) == official
    assert cbor_loads(official) == value


def test_cbor_decodes_cbor_x_native_forms() -> None:
    # The JS client CBOR-encodes envelopes without compat tagging, so values
    # arrive in cbor-x's own forms: tag 64 Uint8Array, tag 258 Set, tag 259
    # Map, undefined, 8-byte and bignum BigInts, b9-headed objects.
    assert cbor_loads(_hex("d840 42 aabb")) == b"\xaa\xbb"
    assert cbor_loads(_hex("d90102 83 01 6161 1b0000000000000002")) == {1, "a", 2}
    assert cbor_loads(_hex("d90103 a2 01 6161 6162 02")) == {1: "a", "b": 2}
    assert cbor_loads(_hex("82 f7 f6")) == [None, None]
    assert cbor_loads(_hex("c2 49 010000000000000000")) == 2**64
    assert cbor_loads(_hex("b90001 6161 01")) == {"a": 1}
    assert cbor_loads(_hex("826a24556e646566696e656400")) is None


def test_cbor_integral_floats_beyond_32_bits_decode_as_ints() -> None:
    # cbor-x writes Date.now() as a float64; actor code gets the int JSON would give.
    value = cbor_loads(_hex("fb 4278f97d1382b000"))
    assert value == 1716239022123 and isinstance(value, int)
    assert isinstance(cbor_loads(_hex("fb 4000000000000000")), float)  # 2.0 stays
    assert isinstance(cbor_loads(_hex("fb 4340000000000000")), float)  # 2**53 stays


# --------------------------------------------------------------------------
# Keys and inputs
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("parts", "text"),
    [
        (["k1", "a/b"], "k1/a\\/b"),
        ([], "/"),
        ([""], "\\0"),
        (["", ""], "\\0/\\0"),
        (["a\\b", ""], "a\\\\b/\\0"),
        (["x/", "/y", "\\0"], "x\\//\\/y/\\\\0"),
        (["a,b", "c"], "a,b/c"),
    ],
)
def test_key_serialization(parts: list[str], text: str) -> None:
    assert serialize_key(parts) == text
    assert deserialize_key(text) == parts


@pytest.mark.parametrize(
    ("text", "parts"),
    [
        # Quirks of the official deserializeActorKey, kept as is.
        ("", []),
        ("a/", ["a", ""]),
        ("/a", ["", "a"]),
        ("a\\", ["a\\"]),
        ("\\0abc/x", ["", "x"]),
        ("a//b", ["a", "", "b"]),
    ],
)
def test_key_deserialization_quirks(text: str, parts: list[str]) -> None:
    assert deserialize_key(text) == parts


def test_query_key_splits_on_commas() -> None:
    assert parse_query_key(None) == []
    assert parse_query_key("") == []
    assert parse_query_key("a") == ["a"]
    assert parse_query_key("a,,b") == ["a", "", "b"]
    # The JS client sends ["a", "b,c"] as "a,b,c": commas are not escaped.
    assert parse_query_key("a,b,c") == ["a", "b", "c"]


def test_query_input_from_the_official_client() -> None:
    # Official: buildActorQueryGatewayUrl(..., input: {n: 1n, b: Uint8Array[1]})
    encoded = "uQACYW6CZyRCaWdJbnRhMWFigmskVWludDhBcnJheWRBUT09"
    assert decode_query_input(encoded) == {"n": 1, "b": b"\x01"}


@pytest.mark.parametrize("name", sorted(VALUES))
def test_input_round_trips(name: str) -> None:
    value = VALUES[name]
    assert decode_input(encode_input(value)) == value
    assert decode_query_input(encode_query_input(value)) == value


def test_input_alphabets() -> None:
    value = {"data": b"\xfb\xff\xfe" * 5}
    rest = encode_input(value)
    query = encode_query_input(value)
    assert rest.endswith("=")
    assert "=" not in query
    assert query == rest.rstrip("=").replace("+", "-").replace("/", "_")
    assert decode_input(rest) == decode_query_input(query) == value


@pytest.mark.parametrize("text", ["!!!!", "a", "uQACYW6C"])
def test_bad_inputs_raise_invalid_request(text: str) -> None:
    with pytest.raises(InvalidRequest):
        decode_query_input(text)
    with pytest.raises(InvalidRequest):
        decode_input(text)


# --------------------------------------------------------------------------
# HTTP bodies: official golden vectors
# --------------------------------------------------------------------------


def test_bare_action_request_golden() -> None:
    # Official: HTTP_ACTION_REQUEST_VERSIONED, v4, args [1, "a"]
    official = _hex("0400 04 82 01 6161")
    assert encode_action_request("bare", [1, "a"]) == official
    assert decode_action_request("bare", official) == ([1, "a"], 4)


def test_bare_action_response_golden() -> None:
    # Official: HTTP_ACTION_RESPONSE_VERSIONED, v4, output 42 and ["a", 1.5, null, true]
    assert encode_action_response("bare", 42) == _hex("0400 02 182a")
    official = _hex("0400 0e 84 6161 fb3ff8000000000000 f6 f5")
    assert encode_action_response("bare", ["a", 1.5, None, True]) == official
    assert decode_action_response("bare", official) == ["a", 1.5, None, True]
    # A JS server writes objects with cbor-x's b9 header.
    assert decode_action_response("bare", _hex("0400 0a b90001 65636f756e74 05")) == {"count": 5}


def test_bare_error_golden() -> None:
    # Official v4: the trailing 00 is the absent `actor` ActorSpecifier.
    official_v4 = _hex("0400 05 6163746f72 09 6e6f745f666f756e64 0f 4163746f72206e6f7420666f756e64 00 00")
    assert encode_error("bare", "actor", "not_found", "Actor not found") == official_v4
    # Official v3 (no `actor` field), with metadata {n: 1}.
    official_v3 = _hex("0300 04 75736572 04 626f6f6d 04 426f6f6d 01 06 b90001 616e 01")
    assert decode_error("bare", official_v3) == {
        "group": "user",
        "code": "boom",
        "message": "Boom",
        "metadata": {"n": 1},
    }
    ours_v3 = encode_error("bare", "user", "boom", "Boom", {"n": 1}, version=3)
    assert ours_v3 == _hex("0300 04 75736572 04 626f6f6d 04 426f6f6d 01 04 a1 616e 01")


def test_bare_error_with_actor_specifier_decodes() -> None:
    # v4 error naming an actor (actorId "abc", generation 3, key "k").
    body = _hex("0400 01 67 01 63 01 6d 00 01 03616263 03 01 01 6b")
    assert decode_error("bare", body)["group"] == "g"


def test_bare_queue_golden() -> None:
    # Official: HTTP_QUEUE_SEND_REQUEST_VERSIONED v4 {body "job", name "jobs", wait, timeout 1500}
    official = _hex("0400 04 636a6f62 01 04 6a6f6273 01 01 01 dc05000000000000")
    request = QueueSendRequest(body="job", name="jobs", wait=True, timeout_ms=1500)
    assert encode_queue_send_request("bare", request) == official
    assert decode_queue_send_request("bare", official) == (request, 4)
    response = _hex("0400 09 636f6d706c65746564 01 05 64646f6e65")
    assert encode_queue_send_response("bare", "completed", "done", has_response=True) == response
    assert decode_queue_send_response("bare", response) == ("completed", "done")


def test_bare_answers_in_the_request_version() -> None:
    # Official v2 body (a 2.0.x client).
    args, version = decode_action_request("bare", _hex("0200 04 82 01 6161"))
    assert (args, version) == ([1, "a"], 2)
    assert encode_action_response("bare", 1, version=version)[:2] == b"\x02\x00"
    # Queue bodies only exist since v3.
    with pytest.raises(InvalidRequest):
        decode_queue_send_request("bare", _hex("0200 01 f6 00 00 00"))
    with pytest.raises(ValueError):
        encode_queue_send_response("bare", "completed", version=2)
    with pytest.raises(ValueError):
        encode_action_response("bare", 1, version=5)


# --------------------------------------------------------------------------
# HTTP bodies: shapes in every encoding
# --------------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ["json", "cbor"])
def test_structured_action_bodies(encoding: Any) -> None:
    for raw, expected in [
        ({"args": [1, 2]}, [1, 2]),
        ({"args": "solo"}, ["solo"]),
        ({"args": None}, []),
        ({}, []),
    ]:
        body = json_dumps(raw) if encoding == "json" else cbor_dumps(raw)
        assert decode_action_request(encoding, body) == (expected, CURRENT_VERSION)
    assert json_loads(encode_action_response("json", b"x")) == {"output": b"x"}
    assert cbor_loads(encode_action_response("cbor", None)) == {"output": None}


def test_bare_args_are_normalized_too() -> None:
    assert decode_action_request("bare", _hex("0400 01 f6")) == ([], 4)
    assert decode_action_request("bare", _hex("0400 01 05")) == ([5], 4)


def test_json_error_omits_missing_metadata() -> None:
    assert encode_error("json", "actor", "internal_error", "An internal error occurred") == (
        b'{"group":"actor","code":"internal_error","message":"An internal error occurred"}'
    )
    assert json_loads(encode_error("json", "user", "c", "m", {"big": 2**64})) == {
        "group": "user",
        "code": "c",
        "message": "m",
        "metadata": {"big": 2**64},
    }


@pytest.mark.parametrize("encoding", ENCODINGS)
@pytest.mark.parametrize("metadata", [None, {"a": [1, b"x"]}, 0, ""])
def test_error_round_trip(encoding: Any, metadata: Any) -> None:
    body = encode_error(encoding, "user", "boom", "Boom", metadata)
    assert decode_error(encoding, body) == {
        "group": "user",
        "code": "boom",
        "message": "Boom",
        "metadata": metadata,
    }


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_queue_round_trip(encoding: Any) -> None:
    for request in [
        QueueSendRequest(body={"job": 1}, name="jobs", wait=False, timeout_ms=None),
        QueueSendRequest(body=[2**70, b"x"], name="jobs", wait=True, timeout_ms=2500),
        QueueSendRequest(body=None),
    ]:
        encoded = encode_queue_send_request(encoding, request)
        assert decode_queue_send_request(encoding, encoded) == (
            request,
            CURRENT_VERSION,
        )
    for status, response, has_response, expected in [
        ("completed", {"ok": True}, True, {"ok": True}),
        ("completed", None, True, None),
        ("timedOut", None, False, None),
    ]:
        body = encode_queue_send_response(encoding, status, response, has_response)
        assert decode_queue_send_response(encoding, body) == (status, expected)


def test_json_queue_response_fields() -> None:
    assert encode_queue_send_response("json", "timedOut") == b'{"status":"timedOut"}'
    assert encode_queue_send_response("json", "completed", None, has_response=True) == (
        b'{"status":"completed","response":null}'
    )
    # The JS client sends `timeout` as a plain number of milliseconds.
    request, _ = decode_queue_send_request("json", b'{"body":{"x":1},"wait":true,"timeout":1500,"name":"jobs"}')
    assert request == QueueSendRequest(body={"x": 1}, name="jobs", wait=True, timeout_ms=1500)


# --------------------------------------------------------------------------
# WebSocket messages: official golden vectors
# --------------------------------------------------------------------------


def test_ws_cbor_action_response_has_an_8_byte_id() -> None:
    encoded = encode_to_client("cbor", ActionResponse(id=7, output=42))
    assert isinstance(encoded, bytes)
    assert encoded == _hex(
        "a1 64 626f6479 a2 63 746167 6e 416374696f6e526573706f6e7365"
        " 63 76616c a2 62 6964 1b 0000000000000007 66 6f7574707574 18 2a"
    )
    # Official: serializeWithEncoding("cbor", ...) of the same message (b9 headers).
    official = _hex(
        "b90001 64 626f6479 b90002 63 746167 6e 416374696f6e526573706f6e7365"
        " 63 76616c b90002 62 6964 1b 0000000000000007 66 6f7574707574 18 2a"
    )
    assert decode_to_client("cbor", official) == ActionResponse(id=7, output=42)


def test_ws_json_ids_are_tagged_bigints() -> None:
    assert encode_to_client("json", ActionResponse(id=7, output=[1])) == (
        '{"body":{"tag":"ActionResponse","val":{"id":["$BigInt","7"],"output":[1]}}}'
    )
    # `actionId` is nullable but required by the client's schema.
    assert encode_to_client("json", ErrorMessage("auth", "forbidden", "no")) == (
        '{"body":{"tag":"Error","val":{"group":"auth","code":"forbidden","message":"no","actionId":null}}}'
    )
    # Official: the JS client's json ActionRequest.
    official = (
        '{"body":{"tag":"ActionRequest","val":{"id":["$BigInt","7"],"name":"add",'
        '"args":[1,["$BigInt","1180591620717411303424"]]}}}'
    )
    assert encode_to_server("json", ActionRequest(7, "add", [1, 2**70])) == official
    assert decode_to_server("json", official) == ActionRequest(7, "add", [1, 2**70])


def test_ws_cbor_decodes_the_official_action_request() -> None:
    # Official: args [1, Uint8Array[1], new Set([1])] as cbor-x writes them natively.
    official = _hex(
        "b90001 64 626f6479 b90002 63 746167 6d 416374696f6e52657175657374"
        " 63 76616c b90003 62 6964 1b 0000000000000007 64 6e616d65 63 616464"
        " 64 61726773 83 01 d840 41 01 d90102 81 01"
    )
    assert decode_to_server("cbor", official) == ActionRequest(7, "add", [1, b"\x01", {1}])


@pytest.mark.parametrize(
    ("message", "official"),
    [
        (ActionResponse(id=7, output=42), "0400 02 07 02 182a"),
        (ActionResponse(id=300, output=42), "0400 02 ac02 02 182a"),
        (Init(actor_id="a1", connection_id="c1"), "0400 00 02 6131 02 6331"),
        (
            ErrorMessage("user", "c", "m", None, 3),
            "0400 01 04 75736572 01 63 01 6d 00 01 03 00",
        ),
        (Event(name="tick", args=[1, "x"]), "0400 03 04 7469636b 04 82 01 6178"),
    ],
)
def test_ws_bare_to_client_golden(message: ToClient, official: str) -> None:
    # WebSocket frames carry the same 2-byte version prefix as HTTP bodies.
    assert encode_to_client("bare", message) == _hex(official)
    assert decode_to_client("bare", _hex(official)) == message


@pytest.mark.parametrize(
    ("message", "official"),
    [
        (
            ActionRequest(id=1, name="increment", args=[5]),
            "0400 00 01 09 696e6372656d656e74 02 81 05",
        ),
        (
            SubscriptionRequest(event_name="tick", subscribe=True),
            "0400 01 04 7469636b 01",
        ),
    ],
)
def test_ws_bare_to_server_golden(message: ToServer, official: str) -> None:
    assert encode_to_server("bare", message) == _hex(official)
    assert decode_to_server("bare", _hex(official)) == message


def test_ws_bare_older_versions() -> None:
    # v1 Init still carried a connection token (official bytes).
    assert decode_to_client("bare", _hex("0100 00 02 6131 02 6331 00")) == Init("a1", "c1")
    assert encode_to_client("bare", Init("a1", "c1"), version=1) == _hex("0100 00 02 6131 02 6331 00")
    # Before v4 an Error has no `actor` field.
    error = ErrorMessage("g", "c", "m", {"k": 1}, 5)
    v3 = encode_to_client("bare", error, version=3)
    assert v3[:2] == b"\x03\x00" and v3[-2:] == b"\x01\x05"
    assert decode_to_client("bare", v3) == error


# --------------------------------------------------------------------------
# WebSocket messages: shapes in every encoding
# --------------------------------------------------------------------------


TO_CLIENT: list[ToClient] = [
    Init(actor_id="actor-1", connection_id="conn-1"),
    ErrorMessage("user", "bad", "Bad input", {"field": "x"}, 12),
    ErrorMessage("auth", "forbidden", "Forbidden", None, None),
    ActionResponse(id=0, output={"count": 1, "raw": b"\x00"}),
    Event(name="changed", args=[1, {2, 3}, None]),
    Event(name="empty", args=[]),
]
TO_SERVER: list[ToServer] = [
    ActionRequest(id=2**64 - 1, name="do", args=[["$x", 1], 2**70]),
    ActionRequest(id=0, name="none", args=[]),
    SubscriptionRequest(event_name="changed", subscribe=True),
    SubscriptionRequest(event_name="changed", subscribe=False),
]


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_ws_round_trips(encoding: Any) -> None:
    for version in (2, 3, 4) if encoding == "bare" else (CURRENT_VERSION,):
        for to_client in TO_CLIENT:
            frame = encode_to_client(encoding, to_client, version)
            assert isinstance(frame, str) == (encoding == "json")
            assert decode_to_client(encoding, frame) == to_client
        for to_server in TO_SERVER:
            frame = encode_to_server(encoding, to_server, version)
            assert isinstance(frame, str) == (encoding == "json")
            assert decode_to_server(encoding, frame) == to_server


def test_ws_args_are_normalized() -> None:
    frame = '{"body":{"tag":"ActionRequest","val":{"id":["$BigInt","1"],"name":"a","args":null}}}'
    assert decode_to_server("json", frame) == ActionRequest(1, "a", [])
    frame = '{"body":{"tag":"ActionRequest","val":{"id":["$BigInt","1"],"name":"a","args":3}}}'
    assert decode_to_server("json", frame) == ActionRequest(1, "a", [3])
    # A json frame may arrive as bytes too.
    assert decode_to_server("json", frame.encode()) == ActionRequest(1, "a", [3])


# --------------------------------------------------------------------------
# Malformed input
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        "",  # empty
        "04",  # shorter than the version prefix
        "0400",  # no payload
        "0400 05 8201",  # data shorter than its length
        "0400 04 82016161 00",  # trailing bytes
        "0000 04 82016161",  # version 0
        "0500 04 82016161",  # version from the future
        "0400 8000",  # non-canonical length varint
        "0400 ffffffffff01",  # length beyond u32
        "0400 03 830101",  # truncated CBOR inside data
        "0400 02 1c00",  # invalid CBOR inside data
        "0400 02 0101",  # CBOR followed by trailing bytes inside data
    ],
)
def test_malformed_bare_action_request(body: str) -> None:
    with pytest.raises(InvalidRequest):
        decode_action_request("bare", _hex(body))


@pytest.mark.parametrize(
    "frame",
    [
        "0400 02 00",  # ToServer union tag 2 does not exist
        "0400 ff",  # bad tag
        "0400 00 01 01 61",  # truncated ActionRequest
        "0400 00 8080808080808080808002 01 61 01 80",  # id varint longer than u64
        "0400 00 8100 01 61 01 80",  # non-canonical id
        "0400 01 01 61 02",  # a bool must be 0 or 1
        "0400 01 01 61 01 00",  # trailing bytes
        "0400 01 02 c328 01",  # invalid UTF-8 in the event name
        "0900 01 01 61 01",  # unknown version
    ],
)
def test_malformed_bare_frames(frame: str) -> None:
    with pytest.raises(InvalidRequest):
        decode_to_server("bare", _hex(frame))


def test_malformed_bare_to_client() -> None:
    for frame in ["0400 04", "0400 02 07", "0400 01 01 67 01 63 01 6d 00 00 02"]:
        with pytest.raises(InvalidRequest):
            decode_to_client("bare", _hex(frame))


@pytest.mark.parametrize(
    "frame",
    [
        "not json",
        "[1, 2",
        '"just a string"',
        "{}",
        '{"body": 1}',
        '{"body": {"tag": "Nope", "val": {}}}',
        '{"body": {"tag": "ActionRequest", "val": {"id": "7", "name": "a", "args": []}}}',
        '{"body": {"tag": "ActionRequest", "val": {"id": 7.5, "name": "a", "args": []}}}',
        '{"body": {"tag": "ActionRequest", "val": {"id": -1, "name": "a", "args": []}}}',
        '{"body": {"tag": "ActionRequest", "val": {"id": true, "name": "a", "args": []}}}',
        (
            '{"body": {"tag": "ActionRequest", "val": {"id": ["$BigInt", "18446744073709551616"],'
            ' "name": "a", "args": []}}}'
        ),
        '{"body": {"tag": "ActionRequest", "val": {"id": ["$BigInt", "1"], "name": 5, "args": []}}}',
        '{"body": {"tag": "SubscriptionRequest", "val": {"eventName": "e", "subscribe": 1}}}',
        '{"body": {"tag": "ActionRequest", "val": {"id": ["$BigInt", "x"], "name": "a"}}}',
        '{"body": {"tag": "ActionRequest", "val": {"id": ["$Mystery", 1], "name": "a"}}}',
    ],
)
def test_malformed_json_frames(frame: str) -> None:
    with pytest.raises(InvalidRequest):
        decode_to_server("json", frame)


def test_malformed_cbor_frames() -> None:
    # Short id (a JS number, not a BigInt) is still an int and accepted; but
    # a string id, garbage, trailing bytes and text frames are not.
    bad_id = cbor_dumps({"body": {"tag": "ActionRequest", "val": {"id": "7", "name": "a"}}})
    for frame in [b"", b"\xff", b"\xa1", bad_id, cbor_dumps({"body": 1}) + b"\x00"]:
        with pytest.raises(InvalidRequest):
            decode_to_server("cbor", frame)
    with pytest.raises(InvalidRequest):
        decode_to_server("cbor", "text frame")
    with pytest.raises(InvalidRequest):
        decode_to_server("bare", "text frame")


@pytest.mark.parametrize("data", [b"", b"{", b'{"args": [1,]}', b"\xff\xfe", b"NaN"])
def test_invalid_json_raises_invalid_request(data: bytes) -> None:
    with pytest.raises(InvalidRequest):
        json_loads(data)
    with pytest.raises(InvalidRequest):
        decode_action_request("json", data)


def test_json_body_must_be_an_object() -> None:
    with pytest.raises(InvalidRequest):
        decode_action_request("json", b"[1, 2]")
    with pytest.raises(InvalidRequest):
        decode_action_request("cbor", cbor_dumps([1, 2]))


@pytest.mark.parametrize(
    "data",
    [
        "",  # empty
        "82 01",  # truncated array
        "1c",  # reserved additional info
        "01 02",  # trailing bytes
        "d9 ffff 01",  # unknown tag
        "d9 0102 01",  # a set tag around a non-array
        "62 c328",  # invalid UTF-8 text
    ],
)
def test_invalid_cbor_raises_invalid_request(data: str) -> None:
    with pytest.raises(InvalidRequest):
        cbor_loads(_hex(data))


@pytest.mark.parametrize(
    "value",
    [
        ["$Mystery", 1],
        ["$BigInt", "1.5"],
        ["$BigInt", None],
        ["$Uint8Array", 5],
        ["$Uint8Array", "@@@"],
        ["$Set", "nope"],
    ],
)
def test_bad_tags_raise_invalid_request(value: list[Any]) -> None:
    with pytest.raises(InvalidRequest):
        from_json_compat(value)
    with pytest.raises(InvalidRequest):
        # Written without escaping, as cbor-x writes a user array natively.
        cbor_loads(cbor2.dumps(value))


def test_bad_queue_fields_raise_invalid_request() -> None:
    for body in [
        b'{"body": 1, "wait": "yes"}',
        b'{"body": 1, "timeout": "soon"}',
        b'{"body": 1, "timeout": -5}',
        b'{"body": 1, "name": 3}',
    ]:
        with pytest.raises(InvalidRequest):
            decode_queue_send_request("json", body)


def test_bad_error_bodies_raise_invalid_request() -> None:
    with pytest.raises(InvalidRequest):
        decode_error("json", b'{"group": "g", "code": 1, "message": "m"}')
    with pytest.raises(InvalidRequest):
        decode_error("bare", _hex("0400 01 67 01 63"))


def test_nan_and_infinity() -> None:
    # JSON has no NaN: like JSON.stringify, it becomes null.
    assert json_loads(json_dumps([math.nan, math.inf])) == [None, None]
    decoded = cbor_loads(cbor_dumps([math.nan, math.inf]))
    assert math.isnan(decoded[0]) and decoded[1] == math.inf
