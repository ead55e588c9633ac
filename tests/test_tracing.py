"""OpenTelemetry spans (``RIVET["TRACING"]``): off by default; on, an HTTP action call
continues its caller's trace (W3C traceparent), actor-to-actor calls, workflow steps,
scheduled runs and queue messages (sent, received and handled) are spans of the same
machinery, a connection's actions continue the trace its upgrade carried, a trace
crosses nodes (two real ``runactors`` nodes), and the inspector's ``traces`` route
answers an actor's recent spans as OTLP JSON."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from asgiref.sync import sync_to_async

from rivet_django import protocol, tracing
from rivet_django.client import AsyncClient
from rivet_django.models import Actor
from rivet_django.runtime.queue import enter_handler, leave_handler
from tests.cluster import Cluster, postgres_available
from tests.helpers import make
from tests.otlp import OtlpCollector

pytestmark = pytest.mark.django_db(transaction=True)

API = "/api/rivet"
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"


async def _traces(http: httpx.AsyncClient, actor_id: str) -> list[dict]:
    token = await sync_to_async(lambda: Actor.objects.get(pk=actor_id).inspector_token)()
    response = await http.get(
        f"{API}/gateway/{actor_id}/inspector/traces", headers={"authorization": f"Bearer {token}"}
    )
    assert response.status_code == 200, response.text
    return response.json()["otlp"]


async def _call(
    http: httpx.AsyncClient, name: str, key: str, action: str, args: list, **headers: str
) -> httpx.Response:
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
    tracing.setup()  # a span made while off would now land in the buffer
    response = await _call(http, "counter", "quiet", "increment", [1], traceparent=f"00-{TRACE}-{PARENT}-01")
    actor_id = response.headers["x-rivet-actor"]
    assert tracing.BUFFER.spans(actor_id, None, None, 100) == ([], False)
    assert await _traces(http, actor_id) == []


async def test_an_action_continues_its_callers_trace(http, settings):
    settings.RIVET = {**settings.RIVET, "TRACING": True}
    response = await _call(http, "counter", "traced", "increment", [2], traceparent=f"00-{TRACE}-{PARENT}-01")
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
        f"{API}/gateway/errors/action/user_error",
        params={"rvt-method": "getOrCreate", "rvt-key": "traced"},
        json={"args": []},
    )
    spans = await _traces(http, response.headers.get("x-rivet-actor") or await _id(http, "errors", "traced"))
    failed = next(s for s in spans if s["name"] == "action user_error")
    assert failed["status"]["code"] == 2 and any(e["name"] == "exception" for e in failed["events"])


async def _id(http: httpx.AsyncClient, name: str, key: str) -> str:
    return (await _call(http, name, key, "value", [])).headers["x-rivet-actor"]


# -- queues ------------------------------------------------------------------------------

OTHER_TRACE = "0af7651916cd43dd8448eb211c80319c"
OTHER_PARENT = "b7ad6b7169203331"


def _attributes(span: dict) -> dict:
    return {a["key"]: a["value"] for a in span["attributes"]}


async def _queue_send(
    http: httpx.AsyncClient, name: str, key: str, queue: str, body: object, **headers: str
) -> httpx.Response:
    """Send ``body`` to ``queue`` over HTTP and wait (up to 5 s) for its completion."""
    response = await http.post(
        f"{API}/gateway/{name}/queue/{queue}",
        params={"rvt-method": "getOrCreate", "rvt-key": key},
        content=protocol.encode_queue_send_request("json", protocol.QueueSendRequest(body, queue, True, 5000)),
        headers={"content-type": "application/json", **headers},
    )
    assert response.status_code == 200, response.text
    return response


async def test_a_queue_message_is_handled_in_its_senders_trace(http, settings):
    """A client's send continues the caller's trace; the run loop's handling descends from the send."""
    settings.RIVET = {**settings.RIVET, "TRACING": True}
    response = await _queue_send(
        http, "worker", "traced", "jobs", {"n": 1, "reply": "pong"}, traceparent=f"00-{TRACE}-{PARENT}-01"
    )
    assert response.json() == {"status": "completed", "response": {"reply": "pong", "done": 1}}
    spans = await _traces(http, response.headers["x-rivet-actor"])
    send = next(s for s in spans if s["name"] == "queue send jobs")
    handled = next(s for s in spans if s["name"] == "queue receive jobs")
    assert send["traceId"] == TRACE and send["parentSpanId"] == PARENT
    assert send["kind"] == 4 and handled["kind"] == 5  # producer, consumer
    # The run loop has no span of its own: the handling is a child of the send, and links to it.
    assert handled["traceId"] == TRACE and handled["parentSpanId"] == send["spanId"]
    assert [(link["traceId"], link["spanId"]) for link in handled["links"]] == [(TRACE, send["spanId"])]
    sent, received = _attributes(send), _attributes(handled)
    assert sent["rivet.queue"] == received["rivet.queue"] == {"stringValue": "jobs"}
    assert sent["rivet.queue.message_id"] == received["rivet.queue.message_id"]
    assert received["rivet.queue.outcome"] == {"stringValue": "completed"}
    assert received["rivet.queue.attempt"] == {"intValue": "1"}
    # Received after it was sent.
    assert int(handled["startTimeUnixNano"]) >= int(send["startTimeUnixNano"])
    assert handled["status"]["code"] == 0


async def test_messages_received_in_an_action_are_children_of_its_span(http, settings):
    """Each receive of ``drain`` is a child of the action (the previous message's span stops
    being current at the next receive), linked to the send in another trace."""
    settings.RIVET = {**settings.RIVET, "TRACING": True}
    sent_in = f"00-{OTHER_TRACE}-{OTHER_PARENT}-01"
    actor_id = (await _call(http, "inbox", "traced", "send", ["a", 1], traceparent=sent_in)).headers["x-rivet-actor"]
    await _call(http, "inbox", "traced", "send", ["a", 2], traceparent=sent_in)
    drained = await _call(http, "inbox", "traced", "drain", [], traceparent=f"00-{TRACE}-{PARENT}-01")
    assert [m["body"] for m in drained.json()["output"]] == [1, 2]
    spans = await _traces(http, actor_id)
    drain = next(s for s in spans if s["name"] == "action drain")
    sends = [s for s in spans if s["name"] == "queue send a"]
    received = [s for s in spans if s["name"] == "queue receive a"]
    assert len(sends) == 2 and len(received) == 2
    assert {s["traceId"] for s in sends} == {OTHER_TRACE}
    assert all(s["traceId"] == TRACE and s["parentSpanId"] == drain["spanId"] for s in received)
    assert [link["spanId"] for s in received for link in s["links"]] == [s["spanId"] for s in sends]
    assert [_attributes(s)["rivet.queue.outcome"] for s in received] == [{"stringValue": "acknowledged"}] * 2
    # Each handling ended within the action (acknowledged by the next receive, or the action's end).
    assert all(int(s["endTimeUnixNano"]) <= int(drain["endTimeUnixNano"]) for s in received)


async def test_a_message_given_back_is_an_error_then_delivered_again(http, settings):
    settings.RIVET = {**settings.RIVET, "TRACING": True}
    actor_id = (await _call(http, "inbox", "failing", "send", ["a", 1])).headers["x-rivet-actor"]
    failed = await http.post(f"{API}/gateway/{actor_id}/action/receive_and_fail", json={"args": []})
    assert failed.json()["code"] == "user_error", failed.text
    await _call(http, "inbox", "failing", "next", [None, 1])
    received = [s for s in await _traces(http, actor_id) if s["name"] == "queue receive a"]
    assert [_attributes(s)["rivet.queue.attempt"] for s in received] == [{"intValue": "1"}, {"intValue": "2"}]
    given_back, handled = received
    assert given_back["status"]["code"] == 2 and _attributes(given_back)["rivet.queue.outcome"] == {
        "stringValue": "released"
    }
    assert handled["status"]["code"] == 0 and _attributes(handled)["rivet.queue.outcome"] == {
        "stringValue": "acknowledged"
    }


async def test_a_received_message_is_the_current_span_until_its_handler_moves_on(rivet_node, settings):
    """What a handler does with a message (its own spans, calls to other actors) is in the
    message's trace; the next receive and the handler's end make the handler's span current again."""
    from opentelemetry import trace

    settings.RIVET = {**settings.RIVET, "TRACING": True}
    inst = await rivet_node.runtime.instance(await make(rivet_node, "inbox", ["current"]))
    await inst.queue.send("a", 1)
    await inst.queue.send("a", 2)

    with tracing.span("handler") as handler:
        scope = enter_handler()
        assert await inst.queue.try_next() is not None
        with tracing.span("work") as work:  # the handler's work on the first message
            pass
        assert await inst.queue.try_next() is not None
        second = trace.get_current_span()
        consumer = leave_handler(scope)
        assert trace.get_current_span() is handler
        assert consumer is not None
        await consumer.finish(True)
    received = [s for s in tracing.BUFFER.spans(inst.actor_id, None, None, 100)[0] if s.name == "queue receive a"]
    assert len(received) == 2 and received[1].context.span_id == second.get_span_context().span_id
    assert work.parent.span_id == received[0].context.span_id
    # The first message's span was current no longer when the second came: both are the handler's.
    assert [s.parent.span_id for s in received] == [handler.get_span_context().span_id] * 2


async def test_a_handlers_own_span_around_each_receive_stays_the_parent(rivet_node, settings):
    """A handler that makes a span of its own per message (``with`` around the receive): each
    message's span is a child of the block it was received in, never of an earlier one."""
    from opentelemetry import trace

    settings.RIVET = {**settings.RIVET, "TRACING": True}
    inst = await rivet_node.runtime.instance(await make(rivet_node, "inbox", ["blocks"]))
    await inst.queue.send("a", 1)
    await inst.queue.send("a", 2)
    scope = enter_handler()
    parents = []
    for name in ("first", "second"):
        with tracing.span(name) as block:
            assert await inst.queue.try_next() is not None
            received = trace.get_current_span()
            assert received.name == "queue receive a"
            parents.append((received.parent.span_id, block.get_span_context().span_id))
    assert trace.get_current_span() is trace.INVALID_SPAN  # nothing brought back after the blocks
    consumer = leave_handler(scope)
    assert consumer is not None
    await consumer.finish(True)
    assert [got for got, _ in parents] == [want for _, want in parents]


async def test_off_queue_messages_make_no_spans(rivet_node):
    tracing.setup()  # a provider and the buffer exist: a span made while off would be seen
    assert tracing.enabled() is False
    actor_id = await make(rivet_node, "inbox", ["quiet"])
    await rivet_node.router.call_action(actor_id, "send", ["a", 1])
    assert (await rivet_node.router.call_action(actor_id, "next", [None, 1]))["body"] == 1
    assert tracing.BUFFER.spans(actor_id, None, None, 100) == ([], False)


# -- connections ---------------------------------------------------------------------------

WS_QUERY = "rvt-namespace=default&rvt-method=getOrCreate&rvt-runner=default&rvt-crash-policy=sleep&rvt-key="


async def _connection_call(key: str, headers: list[tuple[bytes, bytes]]) -> protocol.Init:
    """Open a connection to counter ``key`` with upgrade ``headers``, call ``increment(1)`` on it, close it."""
    from channels.testing import WebsocketCommunicator

    from tests.asgi import application

    comm = WebsocketCommunicator(
        application,
        f"{API}/gateway/counter/connect?{WS_QUERY}{key}",
        subprotocols=["rivet", "rivet_encoding.json"],
        headers=headers,
    )
    connected, _ = await comm.connect(timeout=5)
    assert connected
    try:
        init = protocol.decode_to_client("json", (await comm.receive_output(5))["text"])
        assert isinstance(init, protocol.Init)
        await comm.send_to(text_data=protocol.encode_to_server("json", protocol.ActionRequest(1, "increment", [1])))
        reply = protocol.decode_to_client("json", (await comm.receive_output(5))["text"])
        assert isinstance(reply, protocol.ActionResponse) and reply.output == 1
        return init
    finally:
        await comm.disconnect()


async def test_connection_actions_continue_the_trace_the_upgrade_carried(http, settings):
    settings.RIVET = {**settings.RIVET, "TRACING": True}
    traced = await _connection_call("ws-traced", [(b"traceparent", f"00-{TRACE}-{PARENT}-01".encode())])
    plain = await _connection_call("ws-plain", [])
    (span,) = [s for s in await _traces(http, traced.actor_id) if s["name"] == "action increment"]
    assert span["traceId"] == TRACE and span["parentSpanId"] == PARENT
    assert _attributes(span)["rivet.conn"] == {"stringValue": traced.connection_id}
    # Without the header, a connection's action starts a trace of its own.
    (span,) = [s for s in await _traces(http, plain.actor_id) if s["name"] == "action increment"]
    assert span["traceId"] != TRACE and span["parentSpanId"] == ""
    assert _attributes(span)["rivet.conn"] == {"stringValue": plain.connection_id}


# -- across nodes ----------------------------------------------------------------------------


def _node_call(endpoint: str, name: str, key: str, action: str, args: list, **headers: str) -> httpx.Response:
    response = httpx.post(
        f"{endpoint}/gateway/{name}/action/{action}",
        params={"rvt-method": "getOrCreate", "rvt-key": key},
        json={"args": args},
        headers=headers,
        timeout=20,
    )
    assert response.status_code == 200, response.text
    return response


def _node_traces(endpoint: str, actor_id: str) -> list[dict]:
    response = httpx.get(
        f"{endpoint}/gateway/{actor_id}/inspector/traces",
        headers={"authorization": "Bearer cluster-inspector"},
        timeout=20,
    )
    assert response.status_code == 200, response.text
    assert response.headers.get("x-rivet-forwarded") is None  # answered by the node that recorded them
    return response.json()["otlp"]


@pytest.mark.skipif(not postgres_available(), reason="PostgreSQL is not running on 127.0.0.1:5432")
@pytest.mark.timeout(180)
def test_a_trace_crosses_nodes(settings):
    """Two ``runactors`` nodes: a call entering n1 for an actor on n2 is a ``forward`` span
    on n1 (exported over OTLP) in the caller's trace, whose child is the action on n2; that
    actor's call to one on n1 is a child of its span; a connection opened by the Python
    client through n1 to an actor on n2 carries the opener's trace."""
    import time

    settings.RIVET = {**settings.RIVET, "TRACING": True}  # this process's client sends its trace too
    assert tracing.enabled()  # (and has set the SDK up for the span below)
    collector = OtlpCollector()
    env = {
        "RIVET_TRACING": "1",
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{collector.port}",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
    }
    with Cluster(2, lease_seconds=30.0, env=env) as cluster:
        n1, n2 = cluster.endpoints()
        fan_id = _node_call(n2, "fanOut", "x", "fan", [0]).headers["x-rivet-actor"]  # wakes on n2
        counter_id = _node_call(n1, "counter", "fan-0", "increment", [0]).headers["x-rivet-actor"]  # on n1
        response = _node_call(n1, "fanOut", "x", "fan", [1], traceparent=f"00-{TRACE}-{PARENT}-01")
        assert response.headers.get("x-rivet-forwarded") == "1" and response.json()["output"] == 1

        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not any(
            name == "forward POST" and trace == TRACE for name, trace, _, _ in collector.ids
        ):
            time.sleep(0.1)
        forwards = [
            (span, parent) for name, trace, span, parent in collector.ids if name == "forward POST" and trace == TRACE
        ]
        assert len(forwards) == 1, collector.ids
        ((forward, forward_parent),) = forwards
        assert forward_parent == PARENT  # the hop continues the caller's trace on n1
        (fan,) = [s for s in _node_traces(n2, fan_id) if s["traceId"] == TRACE]
        assert fan["name"] == "action fan" and fan["parentSpanId"] == forward  # n2's action is the hop's child
        assert _attributes(fan)["rivet.node"] == {"stringValue": "n2"}
        (increment,) = [s for s in _node_traces(n1, counter_id) if s["traceId"] == TRACE]
        assert increment["name"] == "action increment" and increment["parentSpanId"] == fan["spanId"]
        assert _attributes(increment)["rivet.node"] == {"stringValue": "n1"}

        ws_id = _node_call(n2, "counter", "ws", "increment", [0]).headers["x-rivet-actor"]  # on n2

        async def connection_call() -> tuple[object, str]:
            async with AsyncClient(n1) as client:
                with tracing.span("opener") as opener:
                    conn = client.counter.get_or_create(["ws"]).connect()
                    assert await conn.increment(1) == 1
                    conn_id = conn.connection_id
                    await conn.dispose()
            return opener.get_span_context(), conn_id

        opener, conn_id = asyncio.run(connection_call())
        (span,) = [s for s in _node_traces(n2, ws_id) if s["traceId"] == format(opener.trace_id, "032x")]
        assert span["name"] == "action increment" and span["parentSpanId"] == format(opener.span_id, "016x")
        assert _attributes(span)["rivet.conn"] == {"stringValue": conn_id}
        assert _attributes(span)["rivet.node"] == {"stringValue": "n2"}


def test_spans_are_exported_with_the_standard_otlp_exporter(tmp_path):
    """A live ``runactors`` with OTEL_EXPORTER_OTLP_ENDPOINT set sends its spans to the collector."""
    import time

    from tests.server import LiveServer

    collector = OtlpCollector()
    server = LiveServer(
        str(tmp_path / "db.sqlite3"),
        settings="tests.settings_live",
        env={
            "RIVET_TRACING": "1",
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{collector.port}",
            "OTEL_BSP_SCHEDULE_DELAY": "100",
        },
    )
    server.start()
    try:
        response = httpx.post(
            f"{server.endpoint}/gateway/counter/action/increment",
            params={"rvt-method": "getOrCreate", "rvt-key": "exported"},
            json={"args": [3]},
            headers={"traceparent": f"00-{TRACE}-{PARENT}-01"},
            timeout=20,
        )
        assert response.status_code == 200, response.text
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not any(name == "action increment" for name, _ in collector.spans):
            time.sleep(0.1)
        exported = [attrs for name, attrs in collector.spans if name == "action increment"]
        assert exported, collector.spans
        assert exported[0]["rivet.actor.name"] == "counter" and exported[0]["rivet.action"] == "increment"
    finally:
        server.stop()
        collector.close()
