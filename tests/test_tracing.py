"""OpenTelemetry spans (``RIVET["TRACING"]``): off by default; on, an HTTP action call
continues its caller's trace (W3C traceparent), actor-to-actor calls, workflow steps
and scheduled runs are spans of the same machinery, and the inspector's ``traces``
route answers an actor's recent spans as OTLP JSON."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from asgiref.sync import sync_to_async

from rivet_django import tracing
from rivet_django.models import Actor

pytestmark = pytest.mark.django_db(transaction=True)

API = "/api/rivet"
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"


@pytest.fixture
async def http(rivet_node):
    from rivet_django.routing import application

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=application()), base_url="http://testserver") as client:
        yield client


async def _traces(http: httpx.AsyncClient, actor_id: str) -> list[dict]:
    token = await sync_to_async(lambda: Actor.objects.get(pk=actor_id).inspector_token)()
    response = await http.get(
        f"{API}/gateway/{actor_id}/inspector/traces", headers={"authorization": f"Bearer {token}"}
    )
    assert response.status_code == 200, response.text
    return response.json()["otlp"]


async def _call(http: httpx.AsyncClient, name: str, key: str, action: str, args: list, **headers: str) -> httpx.Response:
    response = await http.post(
        f"{API}/gateway/{name}/action/{action}",
        params={"rvt-method": "getOrCreate", "rvt-key": key},
        json={"args": args},
        headers=headers,
    )
    assert response.status_code == 200, response.text
    return response


async def test_off_by_default_nothing_is_traced(http):
    assert tracing.enabled() is False
    actor_id = (await _call(http, "counter", "quiet", "increment", [1])).headers["x-rivet-actor"]
    assert await _traces(http, actor_id) == []


async def test_an_action_continues_its_callers_trace(http, settings):
    settings.RIVET = {**settings.RIVET, "TRACING": True}
    response = await _call(
        http, "counter", "traced", "increment", [2], traceparent=f"00-{TRACE}-{PARENT}-01"
    )
    spans = await _traces(http, response.headers["x-rivet-actor"])
    span = next(s for s in spans if s["name"] == "action increment")
    assert span["traceId"] == TRACE and span["parentSpanId"] == PARENT
    attributes = {a["key"]: a["value"] for a in span["attributes"]}
    assert attributes["rivet.actor.name"] == {"stringValue": "counter"}
    assert attributes["rivet.action"] == {"stringValue": "increment"}
    assert attributes["rivet.actor.key"] == {"arrayValue": {"values": [{"stringValue": "traced"}]}}
    assert int(span["endTimeUnixNano"]) >= int(span["startTimeUnixNano"]) > 0
    assert span["status"]["code"] in (0, 1)  # unset or ok


async def test_actor_to_actor_calls_share_the_trace(http, settings):
    settings.RIVET = {**settings.RIVET, "TRACING": True}
    response = await _call(http, "fanOut", "traced", "fan", [2], traceparent=f"00-{TRACE}-{PARENT}-01")
    fan = next(s for s in await _traces(http, response.headers["x-rivet-actor"]) if s["name"] == "action fan")
    worker = (await _call(http, "counter", "fan-1", "increment", [0])).headers["x-rivet-actor"]
    inner = [s for s in await _traces(http, worker) if s["traceId"] == TRACE]
    assert inner and inner[0]["parentSpanId"] == fan["spanId"]


async def test_workflow_steps_and_failures_are_spans(http, settings):
    settings.RIVET = {**settings.RIVET, "TRACING": True}
    actor_id = (await _call(http, "wfNotes", "traced", "lines", [])).headers["x-rivet-actor"]
    for _ in range(100):
        spans = await _traces(http, actor_id)
        if any(s["name"] == "workflow step write" for s in spans):
            break
        await asyncio.sleep(0.02)
    step = next(s for s in spans if s["name"] == "workflow step write")
    assert {a["key"] for a in step["attributes"]} >= {"rivet.actor.id", "rivet.workflow.step"}


async def test_a_user_error_is_recorded_on_its_span(http, settings):
    settings.RIVET = {**settings.RIVET, "TRACING": True}
    response = await http.post(
        f"{API}/gateway/errors/action/user_error", params={"rvt-method": "getOrCreate", "rvt-key": "traced"}, json={"args": []}
    )
    spans = await _traces(http, response.headers.get("x-rivet-actor") or await _id(http, "errors", "traced"))
    failed = next(s for s in spans if s["name"] == "action user_error")
    assert failed["status"]["code"] == 2 and any(e["name"] == "exception" for e in failed["events"])


async def _id(http: httpx.AsyncClient, name: str, key: str) -> str:
    return (await _call(http, name, key, "value", [])).headers["x-rivet-actor"]
