"""Unit tests of the HTTP client's wire shape (URLs, headers, bodies) over httpx.MockTransport.

No Django and no server: the requests the client sends are compared with what the
official RivetKit 2.3 JS client sends. Behaviour against a live server is tested
elsewhere.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Callable
from typing import Any

import cbor2
import httpx
import pytest

from rivet_django import protocol
from rivet_django.client import (
    ActorError,
    ActorQuery,
    AsyncClient,
    Client,
    HttpRequestError,
    HttpTransport,
)

ENDPOINT = "http://testserver/api/rivet"
Handler = Callable[[httpx.Request], httpx.Response]


def _transport(
    handler: Handler, sent: list[httpx.Request], **kwargs: Any
) -> HttpTransport:
    def record(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return handler(request)

    http = httpx.AsyncClient(transport=httpx.MockTransport(record))
    kwargs.setdefault("encoding", "json")
    return HttpTransport(ENDPOINT, http_client=http, **kwargs)


def _client(handler: Handler, sent: list[httpx.Request], **kwargs: Any) -> AsyncClient:
    return AsyncClient(transport=_transport(handler, sent, **kwargs))


def _json(
    status: int = 200, /, **body: Any
) -> Callable[[httpx.Request], httpx.Response]:
    return lambda request: httpx.Response(status, json=body)


def _query_pairs(request: httpx.Request) -> list[tuple[str, str]]:
    return list(request.url.params.multi_items())


def _actor(actor_id: str = "abc", name: str = "counter") -> dict[str, Any]:
    return {"actor_id": actor_id, "name": name, "key": "k", "namespace_id": "default"}


@pytest.mark.asyncio
async def test_get_handle_action_uses_query_gateway() -> None:
    sent: list[httpx.Request] = []
    client = _client(_json(output=6), sent)

    assert await client.counter.get(["a", "b"]).increment(5) == 6

    (request,) = sent
    assert request.method == "POST"
    assert request.url.path == "/api/rivet/gateway/counter/action/increment"
    assert _query_pairs(request) == [
        ("rvt-namespace", "default"),
        ("rvt-method", "get"),
        ("rvt-key", "a,b"),
    ]
    assert request.headers["x-rivet-encoding"] == "json"
    assert request.headers["content-type"] == "application/json"
    assert "x-rivet-conn-params" not in request.headers
    assert json.loads(request.content) == {"args": [5]}
    await client.aclose()


@pytest.mark.asyncio
async def test_get_or_create_query_params_match_js_client() -> None:
    sent: list[httpx.Request] = []
    client = _client(_json(output=None), sent, namespace="ns1")

    await client.counter.get_or_create("k", create_with_input={"start": 3}).action(
        "get_count"
    )

    (request,) = sent
    assert request.url.path == "/api/rivet/gateway/counter/action/get_count"
    pairs = _query_pairs(request)
    assert [name for name, _ in pairs] == [
        "rvt-namespace",
        "rvt-method",
        "rvt-runner",
        "rvt-key",
        "rvt-input",
        "rvt-crash-policy",
    ]
    params = dict(pairs)
    assert params["rvt-namespace"] == "ns1"
    assert params["rvt-method"] == "getOrCreate"
    assert params["rvt-runner"] == "default"
    assert params["rvt-key"] == "k"
    assert params["rvt-crash-policy"] == "sleep"
    raw = params["rvt-input"]
    assert "=" not in raw and "+" not in raw and "/" not in raw
    assert cbor2.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4))) == {
        "start": 3
    }
    await client.aclose()


@pytest.mark.asyncio
async def test_empty_key_and_no_input_omit_their_params() -> None:
    sent: list[httpx.Request] = []
    client = _client(_json(output=1), sent)

    await client.counter.get_or_create().ping()
    await client.counter.get(None).ping()

    assert [n for n, _ in _query_pairs(sent[0])] == [
        "rvt-namespace",
        "rvt-method",
        "rvt-runner",
        "rvt-crash-policy",
    ]
    assert _query_pairs(sent[1]) == [
        ("rvt-namespace", "default"),
        ("rvt-method", "get"),
    ]
    await client.aclose()


@pytest.mark.asyncio
async def test_id_handle_uses_direct_gateway_and_conn_params() -> None:
    sent: list[httpx.Request] = []
    client = _client(_json(output="ok"), sent)

    handle = client.counter.get_for_id("actor/1", params={"token": "é"})
    assert await handle.action("do it", 1, [2]) == "ok"

    (request,) = sent
    assert request.url.raw_path == b"/api/rivet/gateway/actor%2F1/action/do%20it"
    assert json.loads(request.headers["x-rivet-conn-params"]) == {"token": "é"}
    assert json.loads(request.content) == {"args": [1, [2]]}
    await client.aclose()


@pytest.mark.asyncio
async def test_attribute_names_are_used_as_action_names() -> None:
    sent: list[httpx.Request] = []
    client = _client(_json(output=0), sent)
    handle = client["counter"].get("k")

    await handle.get_count()

    assert sent[0].url.path.endswith("/action/get_count")
    with pytest.raises(AttributeError):
        handle._private  # noqa: B018
    assert client.actor("actor").name == "actor"
    await client.aclose()


@pytest.mark.asyncio
async def test_error_body_becomes_actor_error() -> None:
    sent: list[httpx.Request] = []
    body = {
        "group": "user",
        "code": "too_big",
        "message": "Too big",
        "metadata": {"max": 3},
    }
    client = _client(_json(400, **body), sent)

    with pytest.raises(ActorError) as info:
        await client.counter.get("k").increment(99)

    err = info.value
    assert (err.group, err.code, err.message, err.metadata) == (
        "user",
        "too_big",
        "Too big",
        {"max": 3},
    )
    assert err.status_code == 400
    assert str(err) == "user.too_big: Too big"
    await client.aclose()


@pytest.mark.asyncio
async def test_json_error_is_decoded_as_json_whatever_the_request_encoding() -> None:
    sent: list[httpx.Request] = []
    error = {"group": "actor", "code": "not_found", "message": "Actor not found"}
    client = _client(_json(404, **error), sent, encoding="bare")

    with pytest.raises(ActorError) as info:
        await client.counter.get("missing").increment()

    assert (info.value.group, info.value.code) == ("actor", "not_found")
    assert sent[0].headers["x-rivet-encoding"] == "bare"
    assert sent[0].headers["content-type"] == "application/octet-stream"
    await client.aclose()


@pytest.mark.asyncio
async def test_undecodable_error_and_transport_failure_raise_http_request_error() -> (
    None
):
    sent: list[httpx.Request] = []
    client = _client(lambda r: httpx.Response(502, text="bad gateway"), sent)
    with pytest.raises(HttpRequestError) as info:
        await client.counter.get("k").increment()
    assert info.value.status_code == 502
    assert "bad gateway" in str(info.value)
    await client.aclose()

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    client = _client(refuse, sent)
    with pytest.raises(HttpRequestError, match="connection refused"):
        await client.counter.get("k").increment()
    await client.aclose()


@pytest.mark.asyncio
async def test_create_posts_actors_and_returns_id_handle() -> None:
    sent: list[httpx.Request] = []
    client = _client(_json(actor=_actor("new-id")), sent, namespace="ns")

    handle = await client.counter.create(["k1", "a/b"], input={"x": 1}, params={"p": 1})

    (request,) = sent
    assert request.method == "POST"
    assert request.url.path == "/api/rivet/actors"
    assert _query_pairs(request) == [("namespace", "ns")]
    assert request.headers["content-type"] == "application/json"
    body = json.loads(request.content)
    assert body == {
        "name": "counter",
        "key": "k1/a\\/b",
        "runner_name_selector": "default",
        "crash_policy": "sleep",
        "input": base64.b64encode(cbor2.dumps({"x": 1})).decode(),
    }
    assert handle.query == ActorQuery("counter", actor_id="new-id", method="id")
    assert handle.params == {"p": 1}
    await client.aclose()


@pytest.mark.asyncio
async def test_create_duplicate_key() -> None:
    sent: list[httpx.Request] = []
    error = {"group": "actor", "code": "duplicate_key", "message": "taken"}
    client = _client(_json(400, **error), sent)

    with pytest.raises(ActorError) as info:
        await client.counter.create("k")

    assert info.value.code == "duplicate_key"
    assert "input" not in json.loads(sent[0].content)
    await client.aclose()


@pytest.mark.asyncio
async def test_resolve_get_uses_actors_by_key() -> None:
    sent: list[httpx.Request] = []
    client = _client(_json(actors=[_actor("id-1")]), sent)

    assert await client.counter.get(["k1", "a/b"]).resolve() == "id-1"

    (request,) = sent
    assert request.method == "GET"
    assert request.url.path == "/api/rivet/actors"
    assert _query_pairs(request) == [
        ("name", "counter"),
        ("key", "k1/a\\/b"),
        ("namespace", "default"),
    ]
    await client.aclose()


@pytest.mark.asyncio
async def test_resolve_get_missing_is_not_found() -> None:
    client = _client(_json(actors=[]), [])
    with pytest.raises(ActorError) as info:
        await client.counter.get("nope").resolve()
    assert (info.value.group, info.value.code) == ("actor", "not_found")
    await client.aclose()


@pytest.mark.asyncio
async def test_resolve_get_or_create_puts_actors() -> None:
    sent: list[httpx.Request] = []
    client = _client(_json(actor=_actor("id-2"), created=True), sent)

    assert (
        await client.counter.get_or_create([], create_with_input=5).resolve() == "id-2"
    )

    (request,) = sent
    assert request.method == "PUT"
    assert json.loads(request.content) == {
        "name": "counter",
        "key": "/",
        "runner_name_selector": "default",
        "crash_policy": "sleep",
        "input": base64.b64encode(cbor2.dumps(5)).decode(),
    }
    await client.aclose()


@pytest.mark.asyncio
async def test_resolve_id_checks_the_actor_exists() -> None:
    sent: list[httpx.Request] = []
    client = _client(_json(actors=[_actor("id-3")]), sent)

    assert await client.counter.get_for_id("id-3").resolve() == "id-3"
    assert _query_pairs(sent[0]) == [("actor_ids", "id-3"), ("namespace", "default")]
    with pytest.raises(ActorError):
        await client.other.get_for_id("id-3").resolve()  # name mismatch
    await client.aclose()


@pytest.mark.asyncio
async def test_destroy() -> None:
    sent: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "GET":
            return httpx.Response(200, json={"actors": [_actor("id-4")]})
        return httpx.Response(200, json={})

    client = _client(handler, sent)
    await client.counter.get_for_id("id-4").destroy()
    await client.counter.get("k").destroy()

    assert [(r.method, r.url.path) for r in sent] == [
        ("DELETE", "/api/rivet/actors/id-4"),
        ("GET", "/api/rivet/actors"),
        ("DELETE", "/api/rivet/actors/id-4"),
    ]
    assert _query_pairs(sent[0]) == [("namespace", "default")]
    await client.aclose()


@pytest.mark.asyncio
async def test_queue_send() -> None:
    sent: list[httpx.Request] = []
    client = _client(_json(status="completed", response={"ok": True}), sent)

    result = await client.worker.get("w").queue.send(
        "jobs", {"n": 1}, wait=True, timeout=5
    )

    assert result == {"status": "completed", "response": {"ok": True}}
    (request,) = sent
    assert request.url.path == "/api/rivet/gateway/worker/queue/jobs"
    assert request.headers["x-rivet-encoding"] == "json"
    body = json.loads(request.content)
    assert body == {"body": {"n": 1}, "name": "jobs", "wait": True, "timeout": 5000}
    await client.aclose()


@pytest.mark.asyncio
async def test_queue_send_without_wait_has_no_response() -> None:
    client = _client(_json(status="completed"), [])
    assert await client.worker.get("w").queue.send("jobs", 1) == {"status": "completed"}
    await client.aclose()


@pytest.mark.asyncio
async def test_fetch_is_raw_passthrough() -> None:
    sent: list[httpx.Request] = []
    client = _client(lambda r: httpx.Response(500, text="boom"), sent)

    response = await client.counter.get("k", params={"a": 1}).fetch(
        "/foo/bar?x=1", method="post", headers={"x-custom": "1"}, body="hi"
    )

    assert response.status_code == 500 and response.text == "boom"
    (request,) = sent
    assert request.method == "POST"
    assert request.url.path == "/api/rivet/gateway/counter/request/foo/bar"
    assert _query_pairs(request) == [
        ("x", "1"),
        ("rvt-namespace", "default"),
        ("rvt-method", "get"),
        ("rvt-key", "k"),
    ]
    assert request.headers["x-custom"] == "1"
    assert json.loads(request.headers["x-rivet-conn-params"]) == {"a": 1}
    assert request.content == b"hi"
    await client.aclose()


@pytest.mark.asyncio
async def test_key_with_comma_resolves_first_and_uses_direct_gateway() -> None:
    sent: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/actors"):
            return httpx.Response(200, json={"actor": _actor("id-5"), "created": False})
        return httpx.Response(200, json={"output": 1})

    client = _client(handler, sent)
    await client.counter.get_or_create(["a,b"]).increment()

    assert [(r.method, r.url.path) for r in sent] == [
        ("PUT", "/api/rivet/actors"),
        ("POST", "/api/rivet/gateway/id-5/action/increment"),
    ]
    assert json.loads(sent[0].content)["key"] == "a,b"
    await client.aclose()


@pytest.mark.asyncio
async def test_bare_round_trip_through_the_protocol_codecs() -> None:
    sent: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        binary = {"content-type": "application/octet-stream"}
        if "/queue/" in request.url.path:
            queued, _ = protocol.decode_queue_send_request("bare", request.content)
            assert (queued.name, queued.wait, queued.timeout_ms) == ("jobs", True, 1500)
            body = protocol.encode_queue_send_response(
                "bare", "completed", queued.body, has_response=True
            )
            return httpx.Response(200, content=body, headers=binary)
        args, version = protocol.decode_action_request("bare", request.content)
        assert version == protocol.CURRENT_VERSION
        if request.url.path.endswith("/fail"):
            body = protocol.encode_error("bare", "user", "nope", "No", {"a": 1})
            return httpx.Response(400, content=body, headers=binary)
        body = protocol.encode_action_response("bare", {"echo": args})
        return httpx.Response(200, content=body, headers=binary)

    client = _client(handler, sent, encoding="bare")
    handle = client.counter.get_or_create("k")

    assert await handle.echo(1, b"\x00", None) == {"echo": [1, b"\x00", None]}
    queued = await handle.queue.send("jobs", {"n": 2}, wait=True, timeout=1.5)
    assert queued == {"status": "completed", "response": {"n": 2}}
    with pytest.raises(ActorError) as info:
        await handle.fail()
    assert (info.value.code, info.value.metadata) == ("nope", {"a": 1})
    assert {r.headers["x-rivet-encoding"] for r in sent} == {"bare"}
    await client.aclose()


def test_key_normalization() -> None:
    client = AsyncClient(ENDPOINT)
    assert client.counter.get("k").query.key == ("k",)
    assert client.counter.get().query.key == ()
    assert client.counter.get(["a", "b"]).query.key == ("a", "b")
    with pytest.raises(TypeError):
        client.counter.get(["a", 1])  # type: ignore[list-item]


def test_constructor_arguments() -> None:
    with pytest.raises(TypeError):
        AsyncClient()
    with pytest.raises(ValueError):
        AsyncClient(ENDPOINT, encoding="xml")
    local = Client.local()
    try:
        assert type(local.transport).__name__ == "LocalTransport"
    finally:
        local.close()


def test_sync_client_from_script_and_from_a_loop_worker_thread() -> None:
    sent: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/actors"):
            return httpx.Response(200, json={"actor": _actor("id-6")})
        return httpx.Response(200, json={"output": 42})

    with Client(transport=_transport(handler, sent)) as client:
        handle = client.counter.get("k")
        assert handle.increment(1) == 42
        assert handle.action("increment", 1) == 42
        created = client.counter.create("k2")
        assert created.query.actor_id == "id-6"

        async def inside_a_running_loop() -> Any:
            return await asyncio.to_thread(handle.get_count)

        assert asyncio.run(inside_a_running_loop()) == 42

    with pytest.raises(RuntimeError, match="closed"):
        handle.increment(1)


async def test_a_temporary_sync_client_lives_as_long_as_its_handles(rivet_node):
    """``Client.local().counter.get_or_create(k).increment(1)``: no variable holds the client,
    yet the handle keeps it (and its loop) alive for its calls."""
    import gc

    from asgiref.sync import sync_to_async

    from rivet_django.client import Client

    def call() -> int:
        handle = Client.local().counter.get_or_create(["temporary"])
        gc.collect()  # the client object itself is unreachable from this frame
        return handle.increment(1) + handle.increment(1)

    assert await sync_to_async(call, thread_sensitive=False)() == 3
