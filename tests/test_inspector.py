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
    entries, metadata = history["history"]["entries"], history["history"]["entryMetadata"]
    steps = [e for e in entries if e["kind"]["tag"] == "WorkflowStepEntry"]
    assert steps and metadata[steps[0]["id"]]["status"] == "COMPLETED"
    counter_id, counter_token = await _actor(http, "counter", "wf", "increment", [1])
    plain = (
        await http.get(f"{API}/gateway/{counter_id}/inspector/workflow-history", headers=_auth(counter_token))
    ).json()
    assert plain == {"history": None, "workflowState": None, "isWorkflowEnabled": False}
    assert (await http.get(f"{base}/traces", headers=_auth(token))).json() == {"otlp": [], "clamped": False}
    unknown = await http.get(f"{base}/nothing-here", headers=_auth(token))
    assert unknown.status_code == 404 and unknown.json()["code"] == "not_found"
    assert unknown.json()["message"] == "Inspector route was not found"
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


async def _history(http: httpx.AsyncClient, base: str, token: str, until: str, tries: int = 250) -> dict:
    """The workflow-history answer once its workflowState is ``until`` (bounded wait)."""
    import asyncio

    for _ in range(tries):
        answer = (await http.get(f"{base}/workflow-history", headers=_auth(token))).json()
        if answer["workflowState"] == until:
            return answer
        await asyncio.sleep(0.02)
    raise AssertionError(f"workflowState never became {until!r}: {answer}")


def _named(history: dict) -> dict[str, dict]:
    """Entries by their location's names joined with "/" (iteration markers as their number)."""
    names = history["nameRegistry"]

    def path(location: list[dict]) -> str:
        return "/".join(
            names[seg["val"]] if seg["tag"] == "WorkflowNameIndex" else str(seg["val"]["iteration"]) for seg in location
        )

    return {path(e["location"]): e for e in history["entries"]}


async def test_workflow_history_in_rivetkits_shape_and_replay_from_a_step(http):
    from tests.testapp.actors import WF_RUNS

    actor_id, token = await _actor(http, "wfSteps", "replayed", "progress")
    base = f"{API}/gateway/{actor_id}/inspector"
    answer = await _history(http, base, token, "completed")
    rpcs = (await http.get(f"{base}/rpcs", headers=_auth(token))).json()["rpcs"]
    assert rpcs == ["progress"]  # not the runtime's internal wake-up action of workflows
    history = answer["history"]
    assert set(history) == {"nameRegistry", "entries", "entryMetadata"}
    assert history["nameRegistry"] == ["a", "b", "c", "finish"]
    entries = _named(history)
    assert list(entries) == ["a", "b", "c", "finish"]
    assert entries["a"]["location"] == [{"tag": "WorkflowNameIndex", "val": 0}]
    assert entries["b"]["kind"] == {"tag": "WorkflowStepEntry", "val": {"output": 4, "error": None}}
    meta = history["entryMetadata"][entries["c"]["id"]]
    assert meta["status"] == "COMPLETED" and meta["attempts"] == 1 and meta["error"] is None
    assert isinstance(meta["createdAt"], int) and meta["completedAt"] >= meta["createdAt"]
    assert set(meta) == {
        "status",
        "error",
        "attempts",
        "lastAttemptAt",
        "createdAt",
        "completedAt",
        "rollbackCompletedAt",
        "rollbackError",
    }
    # Replay from step b: a keeps its result, b, c and finish run again.
    replayed = await http.post(f"{base}/workflow/replay", headers=_auth(token), json={"entryId": entries["b"]["id"]})
    assert replayed.status_code == 200, replayed.text
    assert set(replayed.json()) == {"history", "workflowState", "isWorkflowEnabled"}
    assert list(_named(replayed.json()["history"])) == ["a"]  # what was left when the workflow started again
    again = _named((await _history(http, base, token, "completed"))["history"])
    assert again["a"]["id"] == entries["a"]["id"] and again["b"]["id"] != entries["b"]["id"]
    assert {s: WF_RUNS[("replayed", s)] for s in "abc"} == {"a": 1, "b": 2, "c": 2}
    assert WF_RUNS[("replayed", "finish")] == 2
    state = (await http.get(f"{base}/state", headers=_auth(token))).json()["state"]
    assert state["done"] == ["a", "b", "c", "b", "c"] and state["result"] == [2, 4, 8]
    # Without entryId: from the start.
    assert (await http.post(f"{base}/workflow/replay", headers=_auth(token), json={})).status_code == 200
    await _history(http, base, token, "completed")
    assert WF_RUNS[("replayed", "a")] == 2 and WF_RUNS[("replayed", "finish")] == 3


async def test_workflow_replay_is_refused_while_the_workflow_runs_and_checks_its_target(http):
    import asyncio

    from tests.testapp.actors import WF_CONTROL, WF_RUNS

    reached = asyncio.Event()
    WF_CONTROL["in-flight"] = {"gate": "a", "reached": reached}
    try:
        actor_id, token = await _actor(http, "wfSteps", "in-flight", "progress")
        base = f"{API}/gateway/{actor_id}/inspector"
        await asyncio.wait_for(reached.wait(), 10)  # parked in its body after step a: in flight
        before = (await http.get(f"{base}/workflow-history", headers=_auth(token))).json()
        assert before["workflowState"] == "running"
        refused = await http.post(f"{base}/workflow/replay", headers=_auth(token), json={})
        assert refused.status_code == 409, refused.text
        assert refused.json()["code"] == "workflow_in_flight"
        assert refused.json()["message"] == "Workflow replay is unavailable while the workflow is currently in flight."
        assert (await http.get(f"{base}/workflow-history", headers=_auth(token))).json() == before
        assert WF_RUNS[("in-flight", "a")] == 1
    finally:
        WF_CONTROL.pop("in-flight", None)

    # Bad targets, on a workflow that waits (a durable sleep): clear errors, nothing deleted.
    actor_id, token = await _actor(http, "wfSleep", "targets", "progress")
    base = f"{API}/gateway/{actor_id}/inspector"
    waiting = await _history(http, base, token, "sleeping")
    named = _named(waiting["history"])
    assert named["nap"]["kind"]["tag"] == "WorkflowSleepEntry" and named["nap"]["kind"]["val"]["state"] == "PENDING"
    assert waiting["history"]["entryMetadata"][named["nap"]["id"]]["status"] == "RUNNING"
    for body, message in (
        ({"entryId": "999999999"}, "Workflow step not found: 999999999"),
        ({"entryId": named["nap"]["id"]}, "Workflow replay target must be a step"),
        ({"entryId": 5}, "entryId is a string"),
    ):
        bad = await http.post(f"{base}/workflow/replay", headers=_auth(token), json=body)
        assert bad.status_code == 400 and bad.json()["message"] == message, bad.text
    assert (await http.get(f"{base}/workflow-history", headers=_auth(token))).json()["history"] == waiting["history"]
    # A waiting workflow may be replayed: its sleep starts over.
    ok = await http.post(f"{base}/workflow/replay", headers=_auth(token), json={"entryId": named["before"]["id"]})
    assert ok.status_code == 200, ok.text
    after = _named((await _history(http, base, token, "sleeping"))["history"])
    assert after["nap"]["kind"]["val"]["deadline"] >= named["nap"]["kind"]["val"]["deadline"]
    assert after["before"]["id"] != named["before"]["id"]


async def test_workflow_loops_queue_waits_and_plain_actors_in_the_history(http):
    actor_id, token = await _actor(http, "wfQueue", "shaped", "progress")
    base = f"{API}/gateway/{actor_id}/inspector"
    sent = await http.post(
        f"{API}/gateway/{actor_id}/queue/jobs", headers={"x-rivet-encoding": "json"}, json={"body": {"n": 7}}
    )
    assert sent.status_code == 200, sent.text
    import asyncio

    for _ in range(250):
        state = (await http.get(f"{base}/state", headers=_auth(token))).json()["state"]
        if state["seen"] == [7]:
            break
        await asyncio.sleep(0.02)
    answer = await _history(http, base, token, "sleeping")  # waits for its next message
    loop = _named(answer["history"])["jobs"]
    assert loop["kind"]["tag"] == "WorkflowLoopEntry" and loop["kind"]["val"]["iteration"] == 1
    assert answer["history"]["entryMetadata"][loop["id"]]["status"] == "RUNNING"


def test_workflow_locations_become_name_indexes_and_loop_iteration_markers():
    from rivet_django.workflow_history import _location

    names: dict[str, int] = {}
    kinds = {"setup": "step", "task-loop": "loop", "fetch": "join"}
    assert _location("setup", kinds, names) == [{"tag": "WorkflowNameIndex", "val": 0}]
    assert _location("task-loop/3/process", kinds, names) == [
        {"tag": "WorkflowNameIndex", "val": 1},
        {"tag": "WorkflowLoopIterationMarker", "val": {"loop": 1, "iteration": 3}},
        {"tag": "WorkflowNameIndex", "val": 2},
    ]
    # A join's branch named "3" is a name, not an iteration.
    assert _location("fetch/3/get", kinds, names) == [
        {"tag": "WorkflowNameIndex", "val": 3},
        {"tag": "WorkflowNameIndex", "val": 4},
        {"tag": "WorkflowNameIndex", "val": 5},
    ]
    assert list(names) == ["setup", "task-loop", "process", "fetch", "3", "get"]


async def test_deleting_the_queue_removes_the_messages_no_handler_holds(http):
    from rivet_django.models import ActorQueueMessage

    actor_id, token = await _actor(http, "worker", "reset", "status")
    for i in range(3):
        sent = await http.post(
            f"{API}/gateway/{actor_id}/queue/never", headers={"x-rivet-encoding": "json"}, json={"body": {"n": i}}
        )
        assert sent.status_code == 200, sent.text
    url = f"{API}/gateway/{actor_id}/inspector/queue"
    assert (await http.get(url, headers=_auth(token))).json()["size"] == 3
    assert (await http.delete(url)).status_code == 401  # protected like every route
    reset = await http.delete(url, headers=_auth(token))
    assert reset.status_code == 200 and reset.json() == {}
    assert (await http.get(url, headers=_auth(token))).json()["size"] == 0
    stored = await sync_to_async(lambda: ActorQueueMessage.objects.filter(actor_id=actor_id).count())()
    assert stored == 0
    # The queue works after it: a new message is stored and listed.
    sent = await http.post(url, headers=_auth(token), json={"name": "never", "body": 1})
    assert (await http.get(url, headers=_auth(token))).json()["messages"][0]["id"] == sent.json()["id"]


async def test_metrics_count_what_this_wake_did_in_rivetkits_shape(http):
    actor_id, token = await _actor(http, "notes", "metered", "add", ["first"])
    base = f"{API}/gateway/{actor_id}/inspector"
    for _ in range(2):
        assert (await http.post(f"{API}/gateway/{actor_id}/action/add", json={"args": ["more"]})).status_code == 200
    missing = await http.post(f"{API}/gateway/{actor_id}/action/nope", json={"args": []})
    assert missing.status_code == 404
    metrics = (await http.get(f"{base}/metrics", headers=_auth(token))).json()
    assert metrics["action_calls"] == {"type": "counter", "help": "Total action invocations", "value": 4}
    assert metrics["action_errors"]["value"] == 1 and metrics["action_duration_ms"]["value"] > 0
    assert metrics["startup_is_new"]["value"] == 1 and metrics["startup_total_ms"]["type"] == "gauge"
    assert metrics["startup_user_db_migrate_ms"]["value"] > 0
    sql = metrics["sql_statements"]
    assert sql["type"] == "labeled_counter" and sql["values"]["insert"] == 3, sql
    assert metrics["sql_duration_ms"]["value"] > 0
    assert metrics["kv_operations"]["type"] == "labeled_timing"
    # The ORM's queries inside db.run count too (the demo's notebook: Django models).
    book_id, book_token = await _actor(http, "notebook", "metered", "add", ["first", ["a"]])
    assert (await http.post(f"{API}/gateway/{book_id}/action/notes", json={"args": []})).status_code == 200
    book = (await http.get(f"{API}/gateway/{book_id}/inspector/metrics", headers=_auth(book_token))).json()
    orm = book["sql_statements"]["values"]
    assert orm["insert"] >= 2 and orm["select"] >= 1, orm  # the note and its tag; the listing
    # KV operations, counted by kind with their keys.
    kv_id, kv_token = await _actor(http, "storage", "metered", "kv_put", ["a", 1])
    for action, args in (("kv_put", ["b", 2]), ("kv_get", ["a"]), ("kv_list", [""]), ("kv_delete", ["a"])):
        assert (await http.post(f"{API}/gateway/{kv_id}/action/{action}", json={"args": args})).status_code == 200
    kv = (await http.get(f"{API}/gateway/{kv_id}/inspector/metrics", headers=_auth(kv_token))).json()
    ops = kv["kv_operations"]["values"]
    assert {op: (v["calls"], v["keys"]) for op, v in ops.items() if v["calls"]} == {
        "put": (2, 2),
        "get": (1, 1),
        "list": (1, 2),
        "deleteBatch": (1, 1),
    }
    assert (await http.get(f"{base}/metrics")).status_code == 401
    # Connections (not one-off HTTP calls): opened and closed.
    from rivet_django.client import AsyncClient

    async with AsyncClient.local() as client, client.notes.get_for_id(actor_id).connect() as conn:
        await conn.add("connected")
    metrics = (await http.get(f"{base}/metrics", headers=_auth(token))).json()
    assert (metrics["connections_opened"]["value"], metrics["connections_closed"]["value"]) == (1, 1)
    # A new wake counts from zero, and is not new.
    slept = await http.post(f"{API}/gateway/{actor_id}/action/add", json={"args": ["again"]})
    assert slept.status_code == 200
    from rivet_django.node import get_node

    await get_node().runtime.instances[actor_id].stop()
    woken = (await http.get(f"{base}/metrics", headers=_auth(token))).json()
    assert woken["startup_is_new"]["value"] == 0 and woken["action_calls"]["value"] == 0
