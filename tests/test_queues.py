"""Durable queues: send/receive, acknowledgement, completion, limits, waiting senders, sleep and wake, crashes."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from asgiref.sync import sync_to_async
from django.db import connections
from django.test import AsyncClient as DjangoAsyncClient

from rivet_django import protocol
from rivet_django.client import ActorError, AsyncClient, Client
from rivet_django.client.transport import HttpTransport
from rivet_django.exceptions import (
    InvalidRequest,
    QueueAlreadyCompleted,
    QueueFull,
    QueueMessageTooLarge,
    UserError,
)
from rivet_django.models import ActorQueueMessage
from rivet_django.testing import crash_node, running_node
from tests.helpers import eventually, make
from tests.server import LiveServer
from tests.testapp.actors import QUEUE_LOG

pytestmark = pytest.mark.django_db(transaction=True)

API = "/api/rivet"


@sync_to_async
def stored(actor_id: str) -> list[dict[str, Any]]:
    """The actor's queue as stored."""
    return list(
        ActorQueueMessage.objects.filter(actor_id=actor_id).order_by("id").values("id", "name", "attempts", "waiting")
    )


# -- sending and receiving (in-process, from actions) -----------------------------------------


async def test_send_then_receive_in_order_with_names(rivet_node):
    actor_id = await make(rivet_node, "inbox", ["order"])
    call = rivet_node.router.call_action
    ids = [await call(actor_id, "send", [name, body]) for name, body in [("a", 1), ("b", {"x": [1, 2]}), ("a", 3)]]
    assert ids == sorted(ids)
    assert [row["name"] for row in await stored(actor_id)] == ["a", "b", "a"]
    assert await call(actor_id, "size") == 3
    assert await call(actor_id, "size", ["a"]) == 2
    # Names filter; oldest first.
    assert await call(actor_id, "try_next", ["b"]) == {"id": ids[1], "name": "b", "body": {"x": [1, 2]}, "attempts": 1}
    assert await call(actor_id, "next", [["a", "zzz"]]) == {"id": ids[0], "name": "a", "body": 1, "attempts": 1}
    assert await call(actor_id, "try_next") == {"id": ids[2], "name": "a", "body": 3, "attempts": 1}
    assert await call(actor_id, "try_next") is None
    # Each action acknowledged what it received when it returned.
    assert await stored(actor_id) == []
    assert await call(actor_id, "size") == 0


async def test_next_wakes_on_send_without_polling(rivet_node):
    actor_id = await make(rivet_node, "inbox", ["wake"])
    call = rivet_node.router.call_action
    waiting = asyncio.ensure_future(call(actor_id, "next", [None, 30]))
    await asyncio.sleep(0.1)
    assert not waiting.done()
    started = time.monotonic()
    message_id = await call(actor_id, "send", ["jobs", "hello"])
    got = await asyncio.wait_for(waiting, 5)
    assert time.monotonic() - started < 1.0
    assert got == {"id": message_id, "name": "jobs", "body": "hello", "attempts": 1}
    # A waiter filtered on another name is not woken by it.
    other = asyncio.ensure_future(call(actor_id, "next", ["other", 0.3]))
    await asyncio.sleep(0.05)
    await call(actor_id, "send", ["jobs", "not for you"])
    assert await other is None
    assert await call(actor_id, "try_next", ["jobs"]) == {
        "id": message_id + 1,
        "name": "jobs",
        "body": "not for you",
        "attempts": 1,
    }


async def test_timeouts_batches_and_try_next(rivet_node):
    actor_id = await make(rivet_node, "inbox", ["batch"])
    call = rivet_node.router.call_action
    started = time.monotonic()
    assert await call(actor_id, "next", [None, 0.2]) is None
    assert await call(actor_id, "next_batch", [None, 3, 0.1]) == []
    assert await call(actor_id, "next", [None, 0]) is None
    assert time.monotonic() - started < 2
    assert await call(actor_id, "try_next_batch", [None, 5]) == []
    for n in range(5):
        await call(actor_id, "send", ["q", n])
    assert [m["body"] for m in await call(actor_id, "next_batch", [None, 3, 1])] == [0, 1, 2]
    assert [m["body"] for m in await call(actor_id, "try_next_batch", ["q", 10])] == [3, 4]
    assert await stored(actor_id) == []
    # A batch waits for the first message, then takes what is there.
    waiting = asyncio.ensure_future(call(actor_id, "next_batch", [None, 10, 5]))
    await asyncio.sleep(0.05)
    await call(actor_id, "send", ["q", "late"])
    assert [m["body"] for m in await waiting] == ["late"]
    # A signal aborts the wait with actor.aborted (RivetKit), set before or while waiting.
    started = time.monotonic()
    assert await call(actor_id, "wait_with_signal", [0.1]) == "actor.aborted"
    assert await call(actor_id, "wait_with_signal", [0]) == "actor.aborted"
    assert await call(actor_id, "wait_with_signal", [0, True]) == "actor.aborted"
    assert time.monotonic() - started < 2
    # Stored messages come first, whatever the signal says.
    await call(actor_id, "send", ["q", "kept"])
    assert (await call(actor_id, "wait_with_signal", [0]))["body"] == "kept"
    # iter ends quietly when the signal is set.
    await call(actor_id, "send", ["q", "one"])
    assert await call(actor_id, "iterate_with_signal", [0.1]) == ["one"]


async def test_receiving_acknowledges_the_previous_message(rivet_node):
    actor_id = await make(rivet_node, "inbox", ["ack"])
    call = rivet_node.router.call_action
    for n in range(3):
        await call(actor_id, "send", ["q", n])
    # drain() receives three times in one action: each receive acknowledged the one before.
    drained = await call(actor_id, "drain")
    assert [m["body"] for m in drained] == [0, 1, 2]
    assert await stored(actor_id) == []


async def test_failed_handler_gives_the_message_back(rivet_node):
    actor_id = await make(rivet_node, "inbox", ["fail"])
    call = rivet_node.router.call_action
    message_id = await call(actor_id, "send", ["q", "poison?"])
    with pytest.raises(UserError) as info:
        await call(actor_id, "receive_and_fail")
    assert info.value.metadata == {"id": message_id}
    # Still stored, delivery counted, and delivered again.
    assert await stored(actor_id) == [{"id": message_id, "name": "q", "attempts": 1, "waiting": False}]
    assert await call(actor_id, "try_next") == {"id": message_id, "name": "q", "body": "poison?", "attempts": 2}
    assert await stored(actor_id) == []


async def test_completion_rules(rivet_node):
    actor_id = await make(rivet_node, "inbox", ["complete"])
    call = rivet_node.router.call_action
    await call(actor_id, "send", ["q", 1])
    with pytest.raises(QueueAlreadyCompleted) as info:
        await call(actor_id, "complete_twice")
    assert (info.value.group, info.value.code) == ("queue", "already_completed")
    assert await stored(actor_id) == []  # completed once, removed once
    # A completable message must be completed before the handler receives more;
    # not completed when its handler returns, it goes back to the queue.
    first = await call(actor_id, "send", ["q", "keep"])
    await call(actor_id, "send", ["q", "next"])
    assert await call(actor_id, "hold_completable") == {"held": first, "error": "queue.previous_message_not_completed"}
    assert (await call(actor_id, "try_next"))["id"] == first
    assert (await call(actor_id, "next", [None, 1, True, {"ok": True}]))["body"] == "next"
    assert await stored(actor_id) == []


async def test_bad_input_is_refused_and_nothing_is_stored(rivet_node):
    inbox = await make(rivet_node, "inbox", ["bad"])
    worker = await make(rivet_node, "worker", ["bad"])
    call = rivet_node.router.call_action
    with pytest.raises(InvalidRequest, match="Queue names"):
        await call(inbox, "bad_send", ["name"])
    with pytest.raises(InvalidRequest, match="not serializable"):
        await call(inbox, "bad_send", ["body"])
    with pytest.raises(InvalidRequest, match="count"):
        await call(inbox, "bad_send", ["count"])
    assert await stored(inbox) == [] and await stored(worker) == []


async def test_sends_to_undeclared_queues(rivet_node, caplog):
    """As RivetKit 2.3.19: a client's send to a name the actor does not declare (or to an actor
    declaring no queues) is answered "completed", with or without wait, and nothing is stored;
    the actor's own sends may use any name."""
    worker = await make(rivet_node, "worker", ["undeclared"])
    plain = await make(rivet_node, "counter", ["no-queues"])
    client = AsyncClient.local()
    with caplog.at_level(logging.WARNING, logger="rivet_django.actor"):
        assert await client.worker.get_for_id(worker).queue.send("nope", 1) == {"status": "completed"}
        assert await client.worker.get_for_id(worker).queue.send("nope", 1, wait=True, timeout=5) == {
            "status": "completed"
        }
        assert await client.counter.get_for_id(plain).queue.send("jobs", 1, wait=True) == {"status": "completed"}
    assert caplog.text.count("does not declare in queues") == 3
    assert await stored(worker) == [] and await stored(plain) == []
    # The actor itself may send to and read from any name.
    call = rivet_node.router.call_action
    await call(worker, "publish", ["scratch", {"n": 1}])
    assert (await call(worker, "peek", [["scratch"]]))["body"] == {"n": 1}


async def test_limits(rivet_node):
    inbox = await make(rivet_node, "inbox", ["limits"])
    worker = await make(rivet_node, "worker", ["limits"])
    call = rivet_node.router.call_action
    # Meta.max_queue_size = 20 over all of the actor's queues.
    for n in range(20):
        await call(inbox, "send", [f"q{n % 3}", n])
    with pytest.raises(QueueFull) as full:
        await call(inbox, "send", ["q0", "one too many"])
    assert (full.value.group, full.value.code, full.value.status_code) == ("queue", "full", 400)
    assert full.value.message == "Queue is full. Limit is 20 messages."
    assert len(await stored(inbox)) == 20
    # Room again once one is consumed.
    await call(inbox, "try_next")
    await call(inbox, "send", ["q0", "fits"])
    # Meta.max_queue_message_size = 1024 bytes of CBOR.
    with pytest.raises(QueueMessageTooLarge) as large:
        await call(inbox, "send", ["q1", "x" * 2000])
    assert (large.value.group, large.value.code) == ("queue", "message_too_large")
    assert "Limit is 1024 bytes" in large.value.message
    # A declared queue's own limits: queue(max_size=2, max_message_size=64).
    await call(worker, "publish", ["small", 1])
    await call(worker, "publish", ["small", 2])
    with pytest.raises(QueueFull, match=r"^Queue is full\. Limit is 2 messages\.$"):
        await call(worker, "publish", ["small", 3])
    with pytest.raises(QueueMessageTooLarge):
        await call(worker, "publish", ["small", "y" * 100])
    assert [row["name"] for row in await stored(worker)] == ["small", "small"]


async def test_destroy_deletes_the_queue(rivet_node):
    actor_id = await make(rivet_node, "inbox", ["destroy"])
    await rivet_node.router.call_action(actor_id, "send", ["q", 1])
    assert await rivet_node.runtime.destroy_actor(actor_id)
    assert await stored(actor_id) == []


# -- run loops, waiting senders, clients ---------------------------------------------------------


async def test_run_loop_consumes_and_waiting_senders_get_answers(rivet_client, rivet_node):
    worker = rivet_client.worker.get_or_create(["loop"])
    assert await worker.queue.send("jobs", {"n": 1}) == {"status": "completed"}
    # The consumer completes with a value: the waiting sender gets it.
    result = await worker.queue.send("jobs", {"n": 2, "reply": "two"}, wait=True, timeout=5)
    assert result == {"status": "completed", "response": {"reply": "two", "done": 2}}
    # Acknowledged without a value (the loop asked for the next message): completed, no response.
    assert await worker.queue.send("jobs", {"n": 3}, wait=True, timeout=5) == {"status": "completed"}
    # Nobody consumes "never": the sender times out, the message stays stored.
    started = time.monotonic()
    assert await worker.queue.send("never", "x", wait=True, timeout=0.2) == {"status": "timedOut"}
    assert time.monotonic() - started < 2
    actor_id = await worker.resolve()
    assert [(row["name"], row["waiting"]) for row in await stored(actor_id)] == [("never", True)]
    assert (await worker.status())["done"] == [1, 2, 3]
    # From another actor, through its client.
    inbox = rivet_client.inbox.get_or_create(["to-worker"])
    assert await inbox.send_to_worker("loop", {"n": 4, "reply": "four"}) == {
        "status": "completed",
        "response": {"reply": "four", "done": 4},
    }


async def test_can_publish(rivet_client, rivet_node):
    worker = rivet_client.worker.get_or_create(["private"])
    with pytest.raises(ActorError) as info:
        await worker.queue.send("private", "hi")
    assert (info.value.group, info.value.code) == ("auth", "forbidden")
    allowed = rivet_client.worker.get_or_create(["private"], params={"token": "secret"})
    assert await allowed.queue.send("private", "hi") == {"status": "completed"}
    # The actor itself is not a client: no check.
    assert await worker.publish("private", "from inside")
    assert [row["name"] for row in await stored(await worker.resolve())] == ["private", "private"]


def _query(key: str) -> str:
    return urlencode(
        {
            "rvt-namespace": "default",
            "rvt-method": "getOrCreate",
            "rvt-key": key,
            "rvt-runner": "default",
            "rvt-crash-policy": "sleep",
        }
    )


async def _post_queue(
    client: DjangoAsyncClient, url: str, encoding: str, request: protocol.QueueSendRequest, **headers: str
):
    return await client.post(
        url,
        data=protocol.encode_queue_send_request(encoding, request),  # type: ignore[arg-type]
        content_type=protocol.content_type(encoding),  # type: ignore[arg-type]
        headers={"x-rivet-encoding": encoding, **headers},
    )


@pytest.mark.parametrize("encoding", ["json", "cbor", "bare"])
async def test_http_queue_route(rivet_node, encoding):
    client = DjangoAsyncClient()
    url = f"{API}/gateway/worker/queue/jobs?{_query(f'http-{encoding}')}"
    response = await _post_queue(
        client, url, encoding, protocol.QueueSendRequest({"n": 1, "reply": [1, "a"]}, "jobs", True, 5000)
    )
    assert response.status_code == 200, response.content
    assert protocol.decode_queue_send_response(encoding, response.content) == (  # type: ignore[arg-type]
        "completed",
        {"reply": [1, "a"], "done": 1},
    )
    actor_id = response.headers["x-rivet-actor"]
    response = await _post_queue(client, url, encoding, protocol.QueueSendRequest({"n": 2}))
    assert response.status_code == 200
    assert protocol.decode_queue_send_response(encoding, response.content) == ("completed", None)  # type: ignore[arg-type]
    if encoding == "json":
        assert response.json() == {"status": "completed"}  # no "response" key without a value
    response = await _post_queue(
        client, f"{API}/gateway/{actor_id}/queue/never", encoding, protocol.QueueSendRequest(0, "never", True, 100)
    )
    assert protocol.decode_queue_send_response(encoding, response.content) == ("timedOut", None)  # type: ignore[arg-type]
    # Header form.
    response = await _post_queue(
        client,
        f"{API}/queue/jobs",
        encoding,
        protocol.QueueSendRequest({"n": 3, "reply": "h"}, "jobs", True, 5000),
        **{"x-rivet-target": "actor", "x-rivet-actor": actor_id},
    )
    assert protocol.decode_queue_send_response(encoding, response.content) == ("completed", {"reply": "h", "done": 3})  # type: ignore[arg-type]
    # Errors, in the request's encoding.
    response = await _post_queue(
        client, f"{API}/gateway/{actor_id}/queue/small", encoding, protocol.QueueSendRequest("z" * 100)
    )
    assert response.status_code == 400
    error = protocol.decode_error(encoding, response.content)  # type: ignore[arg-type]
    assert (error["group"], error["code"]) == ("queue", "message_too_large")
    response = await _post_queue(
        client, f"{API}/gateway/{actor_id}/queue/private", encoding, protocol.QueueSendRequest(1)
    )
    assert response.status_code == 403
    assert protocol.decode_error(encoding, response.content)["code"] == "forbidden"  # type: ignore[arg-type]
    # An undeclared name: answered completed, nothing stored (RivetKit).
    response = await _post_queue(client, f"{API}/gateway/{actor_id}/queue/nope", encoding, protocol.QueueSendRequest(1))
    assert response.status_code == 200
    assert protocol.decode_queue_send_response(encoding, response.content)[0] == "completed"  # type: ignore[arg-type]
    for n in range(2):
        await _post_queue(client, f"{API}/gateway/{actor_id}/queue/small", encoding, protocol.QueueSendRequest(n))
    response = await _post_queue(
        client, f"{API}/gateway/{actor_id}/queue/small", encoding, protocol.QueueSendRequest(2)
    )
    assert response.status_code == 400
    assert protocol.decode_error(encoding, response.content) == {  # type: ignore[arg-type]
        "group": "queue",
        "code": "full",
        "message": "Queue is full. Limit is 2 messages.",
        "metadata": None,
    }
    assert [row["name"] for row in await stored(actor_id)] == ["never", "small", "small"]


async def test_http_queue_route_bad_requests(rivet_node):
    client = DjangoAsyncClient()
    url = f"{API}/gateway/inbox/queue/q?{_query('http-bad')}"
    for body in (b'{"body": 1, "wait": "yes"}', b'{"body": 1, "timeout": -5}', b"[1, 2]", b"not json"):
        response = await client.post(url, data=body, content_type="application/json")
        assert response.status_code == 400, body
        assert response.json()["code"] == "invalid_request", body
    response = await client.get(url)
    assert response.status_code == 405 and response.json()["code"] == "method_not_allowed"
    response = await client.post(
        f"{API}/gateway/inbox/queue/{'n' * 200}?{_query('http-bad')}",
        data=b'{"body": 1}',
        content_type="application/json",
    )
    assert response.status_code == 400 and response.json()["code"] == "invalid_request"
    actor_id = (await rivet_node.router.get("default", "inbox", ["http-bad"])).actor_id
    assert await stored(actor_id) == []


@pytest.mark.parametrize("encoding", ["json", "cbor", "bare"])
async def test_http_python_client_waits_for_the_response(rivet_node, encoding):
    from tests.asgi import application

    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=application))
    transport = HttpTransport("http://testserver/api/rivet", encoding=encoding, http_client=http)
    async with AsyncClient(transport=transport) as client:
        worker = client.worker.get_or_create([f"py-http-{encoding}"])
        result = await worker.queue.send("jobs", {"n": 1, "reply": b"bytes"}, wait=True, timeout=5)
        assert result == {"status": "completed", "response": {"reply": b"bytes", "done": 1}}
        assert await worker.queue.send("jobs", {"n": 2}) == {"status": "completed"}
        assert await worker.queue.send("never", 1, wait=True, timeout=0.1) == {"status": "timedOut"}
        with pytest.raises(ActorError) as info:
            await worker.queue.send("small", "w" * 100)
        assert info.value.code == "message_too_large"
    await http.aclose()


async def test_sync_local_client_waits_for_the_response(rivet_node):
    def run() -> dict[str, Any]:
        with Client.local() as client:
            return client.worker.get_or_create(["sync-local"]).queue.send(
                "jobs", {"n": 1, "reply": "sync"}, wait=True, timeout=5
            )

    assert await asyncio.wait_for(asyncio.to_thread(run), 30) == {
        "status": "completed",
        "response": {"reply": "sync", "done": 1},
    }


# -- sleeping, stopping, crashing ---------------------------------------------------------------


async def test_actor_sleeps_while_its_run_loop_waits_and_a_send_wakes_it(rivet_client, rivet_node):
    worker = rivet_client.worker.get_or_create(["sleepy"])
    assert (await worker.status())["wakes"] == 1
    actor_id = await worker.resolve()
    inst = rivet_node.runtime.instances[actor_id]
    # The run loop is blocked in next() on an empty queue: the actor is idle (a run loop
    # that is not waiting on its queue keeps it awake, tests/test_lifecycle.py).
    await eventually(lambda: _async(inst.sleep_blocked() is False))
    inst.last_activity -= 1000
    assert await rivet_node.runtime.reap_idle() == 1
    # The abort ends the wait at once, far within the grace period.
    await asyncio.wait_for(inst.stopped, 2)
    assert actor_id not in rivet_node.runtime.instances
    # A send wakes it; its run loop resumes and answers.
    result = await worker.queue.send("jobs", {"n": 5, "reply": "awake"}, wait=True, timeout=5)
    assert result == {"status": "completed", "response": {"reply": "awake", "done": 1}}
    assert (await worker.status())["wakes"] == 2


async def test_a_run_loop_holding_a_message_keeps_the_actor_awake(rivet_client, rivet_node):
    worker = rivet_client.worker.get_or_create(["busy"])
    await worker.queue.send("jobs", {"n": 1, "block": 0.5})
    actor_id = await worker.resolve()
    inst = rivet_node.runtime.instances[actor_id]
    await eventually(lambda: _started(worker))
    inst.last_activity -= 1000
    assert await rivet_node.runtime.reap_idle() == 0
    await eventually(lambda: _done(worker, 1))
    await eventually(lambda: _no_rows(actor_id))
    inst.last_activity -= 1000
    assert await rivet_node.runtime.reap_idle() == 1


async def test_a_stopping_run_loop_receives_its_stored_backlog_then_ends(rivet_client, rivet_node):
    """RivetKit: receives return stored messages first, aborted or not; the wait that finds
    none raises actor.aborted, which ends the loop (within run_stop_timeout)."""
    worker = rivet_client.worker.get_or_create(["backlog"])
    for n in range(3):
        await worker.queue.send("jobs", {"n": n, "block": 0.3})
    actor_id = await worker.resolve()
    await eventually(lambda: _started(worker))
    inst = rivet_node.runtime.instances[actor_id]
    started = time.monotonic()
    await asyncio.wait_for(inst.stop(), 5)
    assert time.monotonic() - started < 3
    assert await stored(actor_id) == []
    assert (await worker.status())["done"] == [0, 1, 2]


async def _async(value: Any) -> Any:
    return value


async def _started(worker: Any) -> Any:
    return (await worker.status()).get("started")


async def _done(worker: Any, n: Any) -> bool:
    return n in (await worker.status())["done"]


async def _no_rows(actor_id: str) -> bool:
    return await stored(actor_id) == []


async def test_stopping_ends_a_waiting_next(rivet_node):
    actor_id = await make(rivet_node, "inbox", ["stop"])
    waiting = asyncio.ensure_future(rivet_node.router.call_action(actor_id, "wait_until_stopped"))
    await asyncio.sleep(0.1)
    inst = rivet_node.runtime.instances[actor_id]
    inst.stop()
    assert await asyncio.wait_for(waiting, 2) == "actor.aborted"
    await asyncio.wait_for(inst.stopped, 2)


async def test_crash_mid_handler_redelivers_after_restart(transactional_db):
    QUEUE_LOG.clear()
    async with running_node(node_id="queue-crash") as node:
        client = AsyncClient.local()
        worker = client.worker.get_or_create(["crash"])
        await worker.queue.send("jobs", {"n": 1})
        await worker.queue.send("jobs", {"n": 2, "block": 60})
        await worker.queue.send("jobs", {"n": 3})
        actor_id = await worker.resolve()
        await eventually(lambda: _started(worker))
        assert (await worker.status())["done"] == [1]
        await crash_node(node)  # kill -9: nothing more is written
    rows = await stored(actor_id)
    assert [(row["attempts"]) for row in rows] == [1, 0]  # n=2 was being handled, n=3 never delivered
    async with running_node(node_id="queue-crash") as node:
        # Nobody calls the actor: the restarted node wakes it because it has messages for its run loop.
        await eventually(lambda: _awake(node, actor_id))
        await eventually(lambda: _no_rows(actor_id))
        status = await node.router.call_action(actor_id, "status")
        assert status["done"] == [1, 2, 3] and status["wakes"] == 2
    received = [(what, attempts) for key, what, _, attempts in QUEUE_LOG if key == "crash"]
    assert received == [("received", 1), ("received", 1), ("received", 2), ("received", 1)]
    await sync_to_async(connections.close_all)()  # the test's own queries ran on asgiref's thread


async def _awake(node: Any, actor_id: str) -> bool:
    return actor_id in node.runtime.instances


# -- end to end: a real runactors process, kill -9 ------------------------------------------------


@pytest.fixture
def queue_server(tmp_path) -> Iterator[LiveServer]:
    """``runactors`` serving the test app's actors (the demo project has no queue actors)."""
    server = LiveServer(str(tmp_path / "db.sqlite3"), node_id="queue-live", settings="tests.settings_live")
    try:
        yield server
    finally:
        try:
            server.stop()
        finally:
            server.kill()


def _wait_for(check: Callable[[], Any], timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s (last value {value!r})")
        time.sleep(0.05)


def _stored_rows(db_path: str) -> list[tuple[int, int]]:
    with sqlite3.connect(db_path) as db:
        return db.execute("SELECT id, attempts FROM rivet_django_actorqueuemessage ORDER BY id").fetchall()


def test_kill_minus_9_mid_handler_redelivers_after_restart(queue_server):
    queue_server.start()
    with Client(queue_server.endpoint) as client:
        worker = client.worker.get_or_create(["live"])
        # The sync HTTP client waits for the consumer's answer.
        assert worker.queue.send("jobs", {"n": 1, "reply": "one"}, wait=True, timeout=10) == {
            "status": "completed",
            "response": {"reply": "one", "done": 1},
        }
        assert worker.queue.send("jobs", {"n": 2, "block": 120}) == {"status": "completed"}
        _wait_for(lambda: worker.status().get("started"))
        assert worker.status()["done"] == [1]
    queue_server.kill()
    rows = _stored_rows(queue_server.db_path)
    assert [attempts for _, attempts in rows] == [1]  # delivered once, never acknowledged
    queue_server.start()
    # The restarted node wakes the actor by itself and its run loop gets the message again.
    _wait_for(lambda: _stored_rows(queue_server.db_path) == [])
    with Client(queue_server.endpoint) as client:
        status = client.worker.get_or_create(["live"]).status()
    assert status["done"] == [1, 2]
    assert status["wakes"] == 2
