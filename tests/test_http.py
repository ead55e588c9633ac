"""The HTTP wire in-process (Django's ASGI test client): manager routes, gateway, encodings, bad input."""

from __future__ import annotations

import base64
from urllib.parse import urlencode

import cbor2
import orjson
import pytest
from django.test import AsyncClient

from rivet_django import protocol

pytestmark = pytest.mark.django_db(transaction=True)

API = "/api/rivet"


def q(method: str = "getOrCreate", key: str = "k", **extra: str) -> str:
    params = {"rvt-namespace": "default", "rvt-method": method, "rvt-key": key}
    if method == "getOrCreate":
        params["rvt-runner"] = "default"
        params["rvt-crash-policy"] = "sleep"
    params.update(extra)
    return urlencode(params)


async def call(client: AsyncClient, name: str, action: str, args, *, key: str = "k", encoding: str = "json", **headers):
    body = protocol.encode_action_request(encoding, args)  # type: ignore[arg-type]
    return await client.post(
        f"{API}/gateway/{name}/action/{action}?{q(key=key)}",
        data=body,
        content_type=protocol.content_type(encoding),  # type: ignore[arg-type]
        headers={"x-rivet-encoding": encoding, **headers},
    )


class ASGIClient:
    """The same calls through ``rivet_django.routing.application`` (the server's ASGI app:
    its own handler and fast action route), not Django's test client."""

    def __init__(self) -> None:
        import httpx

        from rivet_django.routing import application

        self._client = httpx.AsyncClient(transport=httpx.ASGITransport(app=application()), base_url="http://testserver")

    async def post(self, url: str, data: bytes = b"", content_type: str = "application/json", headers=None):
        return await self._client.post(url, content=data, headers={"content-type": content_type, **(headers or {})})


CLIENTS = {"django": AsyncClient, "asgi": ASGIClient}


def body_of(response, encoding: str = "json"):
    if response.status_code == 200:
        return protocol.decode_action_response(encoding, response.content)  # type: ignore[arg-type]
    return protocol.decode_error(encoding, response.content)  # type: ignore[arg-type]


async def test_metadata(rivet_node):
    response = await AsyncClient().get(f"{API}/metadata")
    assert response.status_code == 200
    data = response.json()
    assert data["runtime"] == "rivetkit" and "clientEndpoint" not in data


@pytest.mark.parametrize("encoding", ["json", "cbor", "bare"])
async def test_action_in_every_encoding(rivet_node, encoding):
    client = AsyncClient()
    response = await call(client, "counter", "increment", [3], key=f"enc-{encoding}", encoding=encoding)
    assert response.status_code == 200, response.content
    assert body_of(response, encoding) == 3
    assert response.headers["x-rivet-actor"]
    response = await call(client, "errors", "user_error", [], encoding=encoding)
    assert response.status_code == 500  # as RivetKit 2.3.19 answers a UserError
    assert body_of(response, encoding) == {
        "group": "user", "code": "custom_code", "message": "nope", "metadata": {"why": "because"}
    }


async def test_manager_routes(rivet_node):
    client = AsyncClient()
    input_b64 = base64.b64encode(cbor2.dumps({"x": 1})).decode()
    put = await client.put(
        f"{API}/actors?namespace=default",
        data={"name": "lifecycle", "key": "a/b\\/c", "runner_name_selector": "default", "crash_policy": "sleep",
              "input": input_b64},
        content_type="application/json",
    )
    assert put.status_code == 200, put.content
    data = put.json()
    assert data["created"] is True
    actor = data["actor"]
    assert actor["name"] == "lifecycle" and actor["key"] == "a/b\\/c" and actor["namespace_id"] == "default"
    again = (await client.put(f"{API}/actors", data={"name": "lifecycle", "key": "a/b\\/c", "runner_name_selector": "default", "crash_policy": "sleep"}, content_type="application/json")).json()
    assert again == {"actor": again["actor"], "created": False} and again["actor"]["actor_id"] == actor["actor_id"]
    # The key really is ["a", "b/c"]: the actor sees it and its input.
    info = await rivet_node.router.call_action(actor["actor_id"], "info")
    assert info["key"] == ["a", "b/c"] and info["state"]["input"] == {"x": 1}

    found = (await client.get(f"{API}/actors?name=lifecycle&key={'a/b%5C%2Fc'}&namespace=default")).json()
    assert [a["actor_id"] for a in found["actors"]] == [actor["actor_id"]]
    assert (await client.get(f"{API}/actors?name=lifecycle&key=nope")).json() == {"actors": []}
    by_id = (await client.get(f"{API}/actors?actor_ids={actor['actor_id']}")).json()
    assert by_id["actors"][0]["actor_id"] == actor["actor_id"]
    listed = (await client.get(f"{API}/actors?name=lifecycle")).json()
    assert len(listed["actors"]) == 1

    post = await client.post(f"{API}/actors", data={"name": "lifecycle", "key": "a/b\\/c", "runner_name_selector": "default", "crash_policy": "sleep"}, content_type="application/json")
    assert post.status_code == 400 and post.json()["code"] == "duplicate_key"
    post = await client.post(f"{API}/actors", data={"name": "lifecycle", "key": "/", "runner_name_selector": "default", "crash_policy": "sleep"}, content_type="application/json")
    assert post.status_code == 200
    assert (await rivet_node.router.call_action(post.json()["actor"]["actor_id"], "info"))["key"] == []

    names = (await client.get(f"{API}/actors/names")).json()["names"]
    assert "counter" in names and "lifecycle" in names

    deleted = await client.delete(f"{API}/actors/{actor['actor_id']}")
    assert deleted.status_code == 200 and deleted.json() == {}
    assert (await client.delete(f"{API}/actors/{actor['actor_id']}")).status_code == 404
    assert (await client.get(f"{API}/actors?name=lifecycle&key={'a/b%5C%2Fc'}")).json() == {"actors": []}


async def test_gateway_forms(rivet_node):
    client = AsyncClient()
    first = await call(client, "counter", "increment", [1], key="forms")
    actor_id = first.headers["x-rivet-actor"]
    body = protocol.encode_action_request("json", [1])
    direct = await client.post(f"{API}/gateway/{actor_id}/action/increment", data=body, content_type="application/json")
    assert direct.json() == {"output": 2}
    token_form = await client.post(f"{API}/gateway/{actor_id}@sometoken/action/increment", data=body, content_type="application/json")
    assert token_form.json() == {"output": 3}
    header_form = await client.post(
        f"{API}/action/increment", data=body, content_type="application/json",
        headers={"x-rivet-target": "actor", "x-rivet-actor": actor_id},
    )
    assert header_form.json() == {"output": 4}
    get_form = await client.post(f"{API}/gateway/counter/action/getCount?{q('get', 'forms')}", data=protocol.encode_action_request("json", []), content_type="application/json")
    assert get_form.json() == {"output": 4}
    health = await client.get(f"{API}/gateway/{actor_id}/health")
    assert health.status_code == 200 and health.content == b"ok"
    meta = await client.get(f"{API}/gateway/{actor_id}/metadata")
    assert meta.json()["runtime"] == "rivetkit"


async def test_unknown_routes_and_methods(rivet_node):
    client = AsyncClient()
    actor_id = (await call(client, "counter", "increment", [1], key="routes")).headers["x-rivet-actor"]
    r = await client.get(f"{API}/gateway/{actor_id}/action/increment")
    assert r.status_code == 405 and r.json()["code"] == "method_not_allowed"
    r = await client.get(f"{API}/gateway/{actor_id}/nope/nothing")
    assert r.status_code == 404 and r.json()["code"] == "not_found"
    r = await client.post(f"{API}/gateway/does-not-exist/action/increment", data=b'{"args":[]}', content_type="application/json")
    assert r.status_code == 404 and r.json()["code"] == "not_found"
    r = await client.get(f"{API}/whatever")
    assert r.status_code == 404


async def _count(client, key):
    r = await call(client, "counter", "getCount", [], key=key)
    return r.json()["output"]


@pytest.mark.parametrize(
    "description, mutate, status, group, code",
    [
        ("malformed json", lambda p: p | {"body": b"{not json", "encoding": "json"}, 400, "actor", "invalid_request"),
        ("malformed cbor", lambda p: p | {"body": b"\xbf\xff\xff\x1f", "encoding": "cbor"}, 400, "actor", "invalid_request"),
        ("truncated bare", lambda p: p | {"body": b"\x04\x00\x09\x01", "encoding": "bare"}, 400, "actor", "invalid_request"),
        ("unknown bare version", lambda p: p | {"body": b"\x63\x00\x01\x80", "encoding": "bare"}, 400, "actor", "invalid_request"),
        ("unknown encoding", lambda p: p | {"encoding_header": "yaml"}, 400, "encoding", "invalid"),
        ("unknown actor name", lambda p: p | {"name": "nosuchactor"}, 404, "actor", "not_found"),
        ("unknown action", lambda p: p | {"action": "nosuchaction"}, 404, "actor", "action_not_found"),
        ("wrong argument count", lambda p: p | {"body": b'{"args":[1,2,3]}'}, 400, "actor", "invalid_request"),
        ("oversized body", lambda p: p | {"body": b'{"args":["' + b"x" * 70000 + b'"]}'}, 400, "message", "incoming_too_long"),
        ("invalid key string", lambda p: p | {"query": q(key="x" * 200)}, 400, "actor", "invalid_request"),
        ("unknown rvt param", lambda p: p | {"query": q(**{"rvt-bogus": "1"})}, 400, "guard", "unknown_query_param"),
        ("duplicate rvt param", lambda p: p | {"query": q() + "&rvt-key=other"}, 400, "guard", "duplicate_query_param"),
        ("getOrCreate param on get", lambda p: p | {"query": q("get") + "&rvt-runner=default"}, 400, "guard", "invalid_query_param"),
        ("invalid conn params", lambda p: p | {"headers": {"x-rivet-conn-params": "{nope"}}, 400, "actor", "invalid_request"),
        ("oversized conn params", lambda p: p | {"headers": {"x-rivet-conn-params": '"' + "x" * 5000 + '"'}}, 400, "message", "incoming_too_long"),
    ],
)
@pytest.mark.parametrize("client_kind", list(CLIENTS))
async def test_bad_input_gets_protocol_error_and_changes_nothing(
    rivet_node, client_kind, description, mutate, status, group, code
):
    client = CLIENTS[client_kind]()
    key = "bad-input"
    await call(client, "counter", "increment", [7], key=key)
    plan = mutate({
        "name": "counter", "action": "increment", "body": b'{"args":[1]}', "encoding": "json",
        "query": q(key=key), "headers": {},
    })
    encoding = plan.get("encoding_header", plan["encoding"])
    response = await client.post(
        f"{API}/gateway/{plan['name']}/action/{plan['action']}?{plan['query']}",
        data=plan["body"],
        content_type="application/octet-stream",
        headers={"x-rivet-encoding": encoding, **plan["headers"]},
    )
    assert response.status_code == status, (description, response.content)
    err_encoding = plan["encoding"] if encoding in ("json", "cbor", "bare") else "json"
    error = protocol.decode_error(err_encoding, response.content)
    assert (error["group"], error["code"]) == (group, code), (description, error)
    assert await _count(client, key) == 7


@pytest.mark.parametrize("client_kind", list(CLIENTS))
async def test_internal_errors_are_masked_and_logged(rivet_node, caplog, client_kind):
    client = CLIENTS[client_kind]()
    for encoding in ("json", "cbor", "bare"):
        response = await call(client, "errors", "internal", [], encoding=encoding)
        assert response.status_code == 500
        error = body_of(response, encoding)
        assert error == {"group": "actor", "code": "internal_error", "message": "An internal error occurred", "metadata": None} or (
            error["code"] == "internal_error" and "hunter2" not in str(error)
        )
        assert b"hunter2" not in response.content
    assert "hunter2" in caplog.text


@pytest.mark.parametrize("client_kind", list(CLIENTS))
async def test_non_serializable_result_and_state(rivet_node, client_kind):
    client = CLIENTS[client_kind]()
    response = await call(client, "errors", "bad_output", [], key="ser")
    assert response.status_code == 500 and body_of(response)["code"] == "internal_error"
    response = await call(client, "errors", "bad_state", [], key="ser")
    assert response.status_code == 500
    error = body_of(response)
    assert (error["group"], error["code"]) == ("state", "not_serializable")
    assert "object" in error["message"]
    assert body_of(await call(client, "errors", "value", [], key="ser")) == 1


async def test_action_timeout_and_outgoing_limit(rivet_node):
    client = AsyncClient()
    response = await call(client, "errors", "slow", [2], key="t")
    assert response.status_code == 408 and body_of(response)["code"] == "action_timed_out"
    response = await call(client, "errors", "big", [2 * 1024 * 1024], key="t")
    assert response.status_code == 400 and body_of(response)["code"] == "outgoing_too_long"


async def test_json_value_tagging_over_http(rivet_node):
    client = AsyncClient()
    args_json = orjson.dumps({"args": [["$BigInt", "123456789012345678901234567890"], ["$Uint8Array", base64.b64encode(b"\x00\x01").decode()], ["$$literal", 1]]})
    response = await client.post(f"{API}/gateway/counter/action/echo?{q(key='tags')}", data=args_json, content_type="application/json")
    assert response.status_code == 200, response.content
    output = orjson.loads(response.content)["output"]
    # The actor saw real Python values; the reply tags them again the same way.
    assert output["types"] == ["int", "bytes", "list"]
    assert output["values"] == [
        ["$BigInt", "123456789012345678901234567890"], ["$Uint8Array", "AAE="], ["$$literal", 1]
    ]


async def test_openapi_docs(rivet_node):
    client = AsyncClient()
    schema = (await client.get(f"{API}/openapi.json")).json()
    assert "/api/rivet/actors" in schema["paths"]
    assert "/api/rivet/gateway/{target}/action/{name}" in schema["paths"]
    assert (await client.get(f"{API}/docs")).status_code == 200


async def test_asgi_application_routes_api_lean_and_the_rest_through_django(rivet_node):
    import httpx

    from tests.asgi import application

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=application), base_url="http://testserver") as client:
        response = await client.post(
            f"{API}/gateway/counter/action/increment?{q(key='asgi')}", content=b'{"args":[2]}',
            headers={"content-type": "application/json"},
        )
        assert response.status_code == 200 and response.json() == {"output": 2}
        # The API path skips the project's middleware (no session cookie, no CSRF).
        assert "set-cookie" not in response.headers
        admin = await client.get("/admin/login/")
        assert admin.status_code == 200
        assert "csrftoken" in admin.headers.get("set-cookie", "")


async def test_raw_request_passthrough(rivet_node):
    import httpx

    from tests.asgi import application

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=application), base_url="http://testserver") as client:
        url = f"{API}/gateway/room/request/some/path?{q(key='raw')}&keep=1"
        response = await client.post(url, content=b"payload")
        assert response.status_code == 200, response.text
        assert response.json() == {
            "path": "/some/path", "query": {"keep": "1"}, "method": "POST", "body": "payload", "requests": 1
        }
        response = await client.get(f"{API}/gateway/room/request?{q(key='raw')}")
        assert response.json()["path"] == "/" and response.json()["requests"] == 2
        # Returning nothing is a 500; no handler is a bare 404 (RivetKit: an actor.not_found
        # body would make the official client resolve the key again and retry).
        response = await client.get(f"{API}/gateway/room/request/none?{q(key='raw')}")
        assert response.status_code == 500 and response.json()["code"] == "internal_error"
        response = await client.get(f"{API}/gateway/counter/request/x?{q(key='raw')}")
        assert response.status_code == 404 and response.content == b""
    # The handler's state change was committed like an action's.
    actor_id = (await rivet_node.router.get("default", "room", ["raw"])).actor_id
    from asgiref.sync import sync_to_async

    from rivet_django.models import Actor as ActorRow
    from rivet_django.runtime import serde

    row = await sync_to_async(ActorRow.objects.get)(pk=actor_id)
    assert serde.loads(bytes(row.state))["requests"] == 3


async def test_cors(rivet_node, settings):
    import httpx

    from tests.asgi import application

    settings.RIVET = {"ALLOWED_ORIGINS": ["https://app.example"]}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=application), base_url="http://testserver") as client:
        preflight = await client.options(
            f"{API}/gateway/counter/action/increment",
            headers={"origin": "https://app.example", "access-control-request-method": "POST",
                     "access-control-request-headers": "x-rivet-encoding, content-type"},
        )
        assert preflight.status_code == 204
        assert preflight.headers["access-control-allow-origin"] == "https://app.example"
        assert preflight.headers["access-control-allow-credentials"] == "true"
        assert "x-rivet-encoding" in preflight.headers["access-control-allow-headers"]
        response = await client.get(f"{API}/metadata", headers={"origin": "https://app.example"})
        assert response.headers["access-control-allow-origin"] == "https://app.example"
        evil = await client.get(f"{API}/metadata", headers={"origin": "https://evil.example"})
        assert "access-control-allow-origin" not in evil.headers
        denied = await client.options(f"{API}/metadata", headers={"origin": "https://evil.example"})
        assert denied.status_code == 403
        settings.RIVET = {"ALLOWED_ORIGINS": ["*"]}
        anyone = await client.get(f"{API}/metadata", headers={"origin": "https://other.example"})
        # Never "*" with credentials: the origin is mirrored.
        assert anyone.headers["access-control-allow-origin"] == "https://other.example"


async def test_stale_cached_address_is_resolved_afresh(rivet_node):
    client = AsyncClient()
    first = await call(client, "counter", "increment", [5], key="stale")
    old_id = first.headers["x-rivet-actor"]
    # Another process destroys the actor: this node's router cache still maps the key to it
    # (a local stop drops the entry, so put it back as another node's destroy would leave it).
    await rivet_node.runtime.destroy_actor(old_id)
    assert rivet_node.router._cached_id("default", "counter", ("stale",)) is None
    rivet_node.router._ids[("default", "counter", ("stale",))] = old_id
    again = await call(client, "counter", "increment", [1], key="stale")
    assert again.status_code == 200 and body_of(again) == 1
    assert again.headers["x-rivet-actor"] != old_id


async def test_manager_lookups_report_current_timestamps(rivet_node):
    client = AsyncClient()
    actor_id = (await call(client, "counter", "increment", [1], key="ts")).headers["x-rivet-actor"]
    await rivet_node.runtime.sleep_actor(actor_id)
    found = (await client.get(f"{API}/actors?name=counter&key=ts")).json()["actors"][0]
    assert found["actor_id"] == actor_id and found["sleep_ts"] >= found["create_ts"]
    assert found["start_ts"] >= found["create_ts"]


async def test_a_sleeping_actor_leaves_the_router_cache(rivet_node):
    """A sleeping actor costs only its row: its cached address goes, and the next call finds it again."""
    client = AsyncClient()
    actor_id = (await call(client, "counter", "increment", [2], key="evict")).headers["x-rivet-actor"]
    assert rivet_node.router._cached_id("default", "counter", ("evict",)) == actor_id
    await rivet_node.runtime.sleep_actor(actor_id)
    assert rivet_node.router._cached_id("default", "counter", ("evict",)) is None
    again = await call(client, "counter", "increment", [1], key="evict")
    assert again.headers["x-rivet-actor"] == actor_id and body_of(again) == 3


def test_header_reads_request_meta_like_request_headers():
    from django.test import RequestFactory

    from rivet_django.headers import RequestHeaders, header

    request = RequestFactory().post(
        "/x", data=b"abc", content_type="application/cbor", HTTP_X_RIVET_ENCODING="cbor", HTTP_ORIGIN="http://a"
    )
    for name in ("x-rivet-encoding", "X-Rivet-Encoding", "origin", "content-type", "content-length", "x-missing"):
        assert header(request, name) == request.headers.get(name)
    view = RequestHeaders(request)
    assert view.get("x-rivet-encoding") == "cbor" and view.get("x-missing", "d") == "d"
    assert view["content-length"] == "3" and dict(view) == dict(request.headers)
    with pytest.raises(KeyError):
        view["x-missing"]
