"""The inspector (PROTOCOL.md section 11) through the server's ASGI application: every
route, every auth case, bad input answered with a clear error and nothing changed."""

from __future__ import annotations

import httpx
import orjson
import pytest
from asgiref.sync import sync_to_async

from rivet_django.models import Actor
from tests.testapp import actors as testactors

pytestmark = pytest.mark.django_db(transaction=True)

API = "/api/rivet"


@pytest.fixture
async def http(rivet_node):
    from rivet_django.routing import application

    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=application()), base_url="http://testserver"
    ) as client:
        yield client


async def _actor(
    http: httpx.AsyncClient, name: str, key: str, action: str = "", args: list | None = None
) -> tuple[str, str]:
    """Create (or wake) the actor with one call; its id and own inspector token."""
    response = await http.post(
        f"{API}/gateway/{name}/action/{action}",
        params={"rvt-method": "getOrCreate", "rvt-key": key},
        json={"args": args or []},
    )
    assert response.status_code == 200, response.text
    actor_id = response.headers["x-rivet-actor"]
    token = await sync_to_async(lambda: Actor.objects.get(pk=actor_id).inspector_token)()
    return actor_id, token


def _auth(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


async def test_a_token_is_required_outside_debug(http, settings):
    actor_id, token = await _actor(http, "counter", "auth", "increment", [1])
    url = f"{API}/gateway/{actor_id}/inspector/state"
    for headers in ({}, _auth("wrong"), {"authorization": token}):  # no "Bearer": no token
        response = await http.get(url, headers=headers)
        assert response.status_code == 401, response.text
        assert response.json()["group"] == "inspector" and response.json()["code"] == "unauthorized"
    assert (await http.get(url, headers=_auth(token))).json() == {"state": {"count": 1}, "isStateEnabled": True}
    # Another actor's token does not open this one.
    _, other = await _actor(http, "counter", "auth-other", "increment", [1])
    assert (await http.get(url, headers=_auth(other))).status_code == 401
    settings.RIVET = {**settings.RIVET, "INSPECTOR_TOKEN": "global-secret"}
    assert (await http.get(url, headers=_auth("global-secret"))).status_code == 200
    assert (await http.get(url)).status_code == 401
    settings.DEBUG = True  # open only with DEBUG on and no global token
    assert (await http.get(url)).status_code == 401
    settings.RIVET = {k: v for k, v in settings.RIVET.items() if k != "INSPECTOR_TOKEN"}
    assert (await http.get(url)).status_code == 200


async def test_summary_state_connections_and_rpcs(http):
    actor_id, token = await _actor(http, "counter", "summary", "increment", [2])
    base = f"{API}/gateway/{actor_id}/inspector"
    summary = (await http.get(f"{base}/summary", headers=_auth(token))).json()
    assert summary["state"] == {"count": 2} and summary["isStateEnabled"] is True
    assert summary["connections"] == [] and "increment" in summary["rpcs"]
    assert summary["queueSize"] == 0 and summary["isDatabaseEnabled"] is False and summary["isWorkflowEnabled"] is False
    assert (await http.get(f"{base}/rpcs", headers=_auth(token))).json()["rpcs"] == sorted(summary["rpcs"])
    assert (await http.get(f"{base}/connections", headers=_auth(token))).json() == {"connections": []}


async def test_patching_state_is_committed_like_an_action_and_checked(http, rivet_node):
    actor_id, token = await _actor(http, "lifecycle", "patch", "touch")
    base = f"{API}/gateway/{actor_id}/inspector"
    testactors.EVENTS.clear()
    patched = await http.patch(f"{base}/state", headers=_auth(token), json={"state": {"input": None, "wakes": 9}})
    assert patched.status_code == 200 and patched.json() == {"ok": True}
    assert ("patch", "on_state_change") in testactors.EVENTS
    stored = await sync_to_async(lambda: bytes(Actor.objects.get(pk=actor_id).state))()
    from rivet_django.runtime import serde

    assert serde.loads(stored) == {"input": None, "wakes": 9}  # committed before the answer
    for body in (b"{not json", b"[1, 2]", b"{}"):
        bad = await http.patch(
            f"{base}/state", headers={**_auth(token), "content-type": "application/json"}, content=body
        )
        assert bad.status_code == 400 and bad.json()["code"] == "invalid_request", bad.text
    assert (await http.get(f"{base}/state", headers=_auth(token))).json()["state"] == {"input": None, "wakes": 9}


async def test_calling_actions(http):
    actor_id, token = await _actor(http, "counter", "act", "increment", [1])
    base = f"{API}/gateway/{actor_id}/inspector/action"
    done = await http.post(f"{base}/increment", headers=_auth(token), json={"args": [5]})
    assert done.status_code == 200 and done.json() == {"output": 6}
    assert (await http.post(f"{base}/increment", headers=_auth(token), json={"args": 4})).json() == {"output": 10}
    missing = await http.post(f"{base}/nope", headers=_auth(token), json={"args": []})
    assert missing.status_code == 404 and missing.json()["code"] == "action_not_found"
    both = await http.post(f"{base}/increment", headers=_auth(token), json={"args": [1], "properties": {"a": 1}})
    assert both.status_code == 400 and "not both" in both.json()["message"]
    errors_id, errors_token = await _actor(http, "errors", "act", "value")
    failed = await http.post(
        f"{API}/gateway/{errors_id}/inspector/action/user_error", headers=_auth(errors_token), json={}
    )
    assert failed.status_code == 500 and failed.json()["code"] == "custom_code"
    assert (await http.get(f"{base}/increment", headers=_auth(token))).status_code == 405


async def test_the_queue(http):
    actor_id, token = await _actor(http, "worker", "inspected", "status")
    for i in range(3):
        sent = await http.post(
            f"{API}/gateway/{actor_id}/queue/never", headers={"x-rivet-encoding": "json"}, json={"body": {"n": i}}
        )
        assert sent.status_code == 200, sent.text
    queue = (await http.get(f"{API}/gateway/{actor_id}/inspector/queue?limit=2", headers=_auth(token))).json()
    assert queue["size"] == 3 and queue["truncated"] is True
    assert [m["name"] for m in queue["messages"]] == ["never", "never"]
    assert all(isinstance(m["createdAtMs"], int) and m["id"] for m in queue["messages"])
    # POST: a message sent as the actor itself would (RivetKit's shape back).
    sent = await http.post(
        f"{API}/gateway/{actor_id}/inspector/queue", headers=_auth(token), json={"name": "never", "body": {"n": 9}}
    )
    assert sent.status_code == 200, sent.text
    assert sent.json()["name"] == "never" and sent.json()["id"] and isinstance(sent.json()["createdAtMs"], int)
    after = (await http.get(f"{API}/gateway/{actor_id}/inspector/queue", headers=_auth(token))).json()
    assert after["size"] == 4 and after["messages"][-1]["id"] == sent.json()["id"]
    for bad in ({"body": 1}, {"name": ""}, {"name": 5}):
        refused = await http.post(f"{API}/gateway/{actor_id}/inspector/queue", headers=_auth(token), json=bad)
        assert refused.status_code == 400 and refused.json()["code"] == "invalid_request", refused.text
    assert (await http.get(f"{API}/gateway/{actor_id}/inspector/queue", headers=_auth(token))).json()["size"] == 4


async def test_the_database(http):
    actor_id, token = await _actor(http, "notes", "inspected", "add", ["first"])
    base = f"{API}/gateway/{actor_id}/inspector/database"
    schema = (await http.get(f"{base}/schema", headers=_auth(token))).json()["schema"]["tables"]
    notes = next(t for t in schema if t["table"]["name"] == "notes")
    assert notes["table"] == {"schema": "main", "name": "notes", "type": "table"} and notes["records"] == 1
    assert [c["name"] for c in notes["columns"]] == ["id", "text", "done"]
    rows = (await http.get(f"{base}/rows", params={"table": "notes"}, headers=_auth(token))).json()
    assert rows == {"rows": [{"id": 1, "text": "first", "done": 0}]}
    assert (await http.get(f"{base}/rows", headers=_auth(token))).status_code == 400
    query = await http.post(
        f"{base}/execute", headers=_auth(token), json={"sql": "SELECT text FROM notes WHERE id = ?", "args": [1]}
    )
    assert query.json() == {"rows": [{"text": "first"}]}
    named = await http.post(
        f"{base}/execute", headers=_auth(token), json={"sql": "SELECT :x AS x", "properties": {"x": 7}}
    )
    assert named.json() == {"rows": [{"x": 7}]}
    # Read-only unless asked: the write is refused and changes nothing.
    write = {"sql": "DELETE FROM notes"}
    refused = await http.post(f"{base}/execute", headers=_auth(token), json=write)
    assert refused.status_code == 400 and refused.json()["code"] == "database_error", refused.text
    assert "readonly" in refused.json()["message"]
    bad_sql = await http.post(f"{base}/execute", headers=_auth(token), json={"sql": "SELEC nothing"})
    assert bad_sql.status_code == 400 and "syntax error" in bad_sql.json()["message"]
    assert (await http.post(f"{base}/execute", headers=_auth(token), json={})).status_code == 400
    assert (await http.get(f"{base}/rows", params={"table": "notes"}, headers=_auth(token))).json()["rows"] != []
    allowed = await http.post(f"{base}/execute", headers=_auth(token), json={**write, "readonly": False})
    assert allowed.status_code == 200
    assert (await http.get(f"{base}/rows", params={"table": "notes"}, headers=_auth(token))).json() == {"rows": []}
    # An actor without a database.
    counter_id, counter_token = await _actor(http, "counter", "no-db", "increment", [1])
    none = await http.get(f"{API}/gateway/{counter_id}/inspector/database/schema", headers=_auth(counter_token))
    assert none.status_code == 400 and none.json()["code"] == "database_not_enabled"


async def test_workflow_history_traces_and_unknown_routes(http, rivet_node):
    import asyncio

    actor_id, token = await _actor(http, "wfNotes", "inspected", "lines")
    base = f"{API}/gateway/{actor_id}/inspector"
    for _ in range(100):
        history = (await http.get(f"{base}/workflow-history", headers=_auth(token))).json()
        if history["history"]["entries"]:
            break
        await asyncio.sleep(0.02)
    assert history["isWorkflowEnabled"] is True and history["workflowState"] in ("running", "failed")
    steps = [e for e in history["history"]["entries"] if e["kind"] == "step"]
    assert steps and steps[0]["status"] == "completed"
    counter_id, counter_token = await _actor(http, "counter", "wf", "increment", [1])
    plain = (
        await http.get(f"{API}/gateway/{counter_id}/inspector/workflow-history", headers=_auth(counter_token))
    ).json()
    assert plain == {"history": None, "workflowState": None, "isWorkflowEnabled": False}
    assert (await http.get(f"{base}/traces", headers=_auth(token))).json() == {"otlp": [], "clamped": False}
    unknown = await http.get(f"{base}/nothing-here", headers=_auth(token))
    assert unknown.status_code == 404 and unknown.json()["group"] == "inspector"
    assert (await http.post(f"{base}/summary", headers=_auth(token))).status_code == 405


async def test_the_header_form_reaches_the_inspector_too(http):
    actor_id, token = await _actor(http, "counter", "header-form", "increment", [3])
    response = await http.get(
        f"{API}/inspector/state", headers={**_auth(token), "x-rivet-target": "actor", "x-rivet-actor": actor_id}
    )
    assert response.status_code == 200 and response.json()["state"] == {"count": 3}


def test_openapi_lists_the_inspector_routes(client):
    schema = orjson.loads(client.get(f"{API}/openapi.json").content)
    paths = schema["paths"]
    for route in ("summary", "state", "database/rows", "database/execute", "action/{name}"):
        assert f"{API}/gateway/{{target}}/inspector/{route}" in paths
