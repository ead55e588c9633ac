"""RivetKit 2.3.19 parity of the actor lifecycle, in-process against the real database:
sleep on time and its blockers, ``run`` keeping an actor awake, the stop sequence (and
hibernated connections), events during an action, ``on_state_change`` and workflow hooks.

Fixture actors: tests/parityapp/actors.py. What crosses the wire is also checked with the
official JS client (tests/js/parity.spec.mjs).
"""

from __future__ import annotations

import asyncio
import logging
import statistics
import time
from typing import Any

import pytest
from asgiref.sync import sync_to_async

from rivet_django.client import ActorError
from rivet_django.exceptions import ActorNotFound, ActorStopping
from rivet_django.models import Actor as ActorRow
from rivet_django.runtime import serde
from tests.helpers import eventually, make
from tests.parityapp.actors import JOURNAL, journal

pytestmark = pytest.mark.django_db(transaction=True)


async def stored_state(actor_id: str) -> Any:
    row = await sync_to_async(ActorRow.objects.get)(pk=actor_id)
    return serde.loads(bytes(row.state))


def whats(key: str) -> list[str]:
    return [entry["what"] for entry in journal(key)]


def when(key: str, what: str) -> float | None:
    return next((entry["t"] for entry in journal(key) if entry["what"] == what), None)


async def listening(handle: Any, event: str) -> tuple[Any, list[Any]]:
    """An open connection of ``handle`` and the arguments of every ``event`` it gets."""
    seen: list[Any] = []
    conn = handle.connect()
    conn.on(event, seen.append)
    await conn.wait_open(timeout=5)
    await asyncio.sleep(0.05)  # its subscription reached the actor
    return conn, seen


async def asleep(node: Any, actor_id: str) -> bool:
    return actor_id not in node.runtime.instances


async def wait_stopped(inst: Any, timeout: float = 10) -> None:
    """Until this instance has stopped (the actor may already be awake again)."""
    await asyncio.wait_for(asyncio.shield(inst.stopped), timeout)


# -- sleep on time (item 3) ---------------------------------------------------------------


async def test_idle_actors_sleep_on_time(rivet_node, rivet_client):
    """Each actor sleeps sleep_timeout (0.3 s) after its last call, within a few tens of ms."""
    JOURNAL.clear()
    keys = [f"ontime-{i}" for i in range(20)]
    ended = await asyncio.gather(*(rivet_client.napper.get_or_create([k]).touch() for k in keys))
    deadline = time.monotonic() + 10
    while any(when(k, "sleep") is None for k in keys):
        assert time.monotonic() < deadline, "not every actor went to sleep"
        await asyncio.sleep(0.02)
    late = sorted(when(k, "sleep") - t - 0.3 for k, t in zip(keys, ended, strict=True))  # type: ignore[operator]
    p50, p99 = statistics.median(late), late[-1]
    print(f"sleep delay after sleep_timeout: p50 {p50 * 1000:.1f} ms, max {p99 * 1000:.1f} ms (n={len(late)})")
    assert min(late) >= -0.005, "an actor slept before its sleep_timeout"
    # A few tens of milliseconds, with margin for a loaded CI machine (the old reaper: up to 500 ms).
    assert p50 < 0.05 and p99 < 0.2


async def test_every_blocker_end_rearms_the_timer(rivet_node, rivet_client):
    """keep_awake work, prevent_sleep, a connection and a raw WebSocket each hold the actor
    awake; it sleeps sleep_timeout after the blocker ends, not after the last call."""
    JOURNAL.clear()
    held = rivet_client.napper.get_or_create(["held"])
    released = await held.hold(0.6) + 0.6
    prevented = rivet_client.napper.get_or_create(["prevented"])
    await prevented.prevent(True)
    lingering = rivet_client.napper.get_or_create(["lingering"])
    lingered = await lingering.linger(2.0)
    conn = rivet_client.napper.get_or_create(["connected"]).connect()
    await conn.wait_open(timeout=5)
    await asyncio.sleep(0.7)
    # wait_until work does not keep an actor awake (RivetKit's waitUntil): it slept on time.
    assert when("lingering", "sleep") is not None
    assert when("lingering", "sleep") - lingered < 0.45  # type: ignore[operator]
    # The others are held.
    for key in ("prevented", "connected"):
        assert when(key, "sleep") is None, key
    cleared = await prevented.prevent(False)
    await conn.dispose()
    disposed = time.monotonic()
    await eventually(lambda: _async(all(when(k, "sleep") for k in ("held", "prevented", "connected"))), timeout=5)
    # Not before sleep_timeout after the blocker ended (the upper bound leaves room for a
    # loaded machine).
    assert 0.25 <= when("held", "sleep") - released < 1.0  # type: ignore[operator]
    assert 0.25 <= when("prevented", "sleep") - cleared < 1.0  # type: ignore[operator]
    assert 0.2 <= when("connected", "sleep") - disposed < 1.0  # type: ignore[operator]


async def test_a_raw_websocket_keeps_the_actor_awake(rivet_node):
    from channels.testing import WebsocketCommunicator

    from tests.asgi import application

    JOURNAL.clear()
    query = "rvt-namespace=default&rvt-method=getOrCreate&rvt-runner=default&rvt-key=rawws"
    comm = WebsocketCommunicator(application, f"/api/rivet/gateway/napper/websocket/echo?{query}")
    connected, _ = await comm.connect(timeout=5)
    assert connected
    await comm.send_to(text_data="hi")
    assert await comm.receive_from(5) == "hi"
    await asyncio.sleep(0.6)
    assert when("rawws", "sleep") is None
    await comm.disconnect()
    closed = time.monotonic()
    await eventually(lambda: _async(when("rawws", "sleep") is not None), timeout=5)
    assert 0.2 <= when("rawws", "sleep") - closed < 1.0  # type: ignore[operator]


async def test_a_stop_waits_for_work_started_by_a_raw_websocket_close_handler(rivet_node, rivet_client):
    """Sleep closes a raw WebSocket (1000 actor.stopped) after on_sleep; the handler's code after
    the socket closed starts wait_until work, which the stop waits for and whose state it saves."""
    from channels.testing import WebsocketCommunicator

    from tests.asgi import application

    JOURNAL.clear()
    query = "rvt-namespace=default&rvt-method=getOrCreate&rvt-runner=default&rvt-key=closing"
    comm = WebsocketCommunicator(application, f"/api/rivet/gateway/napper/websocket/x?{query}")
    connected, _ = await comm.connect(timeout=5)
    assert connected
    actor_id = (await rivet_node.router.get("default", "napper", ["closing"])).actor_id  # type: ignore[union-attr]
    inst = rivet_node.runtime.instances[actor_id]
    await rivet_client.napper.get_for_id(actor_id).go_to_sleep()
    closed = await comm.receive_output(5)
    assert (closed["type"], closed["code"], closed.get("reason")) == ("websocket.close", 1000, "actor.stopped")
    await wait_stopped(inst)
    assert whats("closing")[-2:] == ["sleep", "close-work-done"]
    assert (await stored_state(actor_id))["closed_cleanly"] is True


# -- run keeps the actor awake (item 4) ---------------------------------------------------------


async def test_an_active_run_keeps_the_actor_awake_a_queue_wait_does_not(rivet_node, rivet_client):
    JOURNAL.clear()
    ticker = await make(rivet_node, "runTicker", ["awake"])
    runner = rivet_client.queueRunner.get_or_create(["waiting"])
    runner_id = await runner.resolve()
    await asyncio.sleep(1.0)  # five sleep timeouts
    # The polling run loop holds its actor; the one blocked on its queue let it sleep.
    assert ticker in rivet_node.runtime.instances and when("awake", "sleep") is None
    assert when("waiting", "sleep") is not None and runner_id not in rivet_node.runtime.instances
    # The queue wait ended with the abort (actor.aborted): iter() ended quietly.
    assert whats("waiting")[:2] == ["run-end", "sleep"]
    # A message wakes it; its run loop resumes and handles it.
    assert await runner.queue.send("jobs", 7) == {"status": "completed"}
    await eventually(lambda: _done(runner, 7))
    assert (await runner.status())["wakes"] == 2
    # Asked to sleep, the ticker's run loop sees the abort and ends before on_sleep.
    await rivet_node.runtime.instances[ticker].stop()
    assert whats("awake") == ["run-end", "sleep"]


async def _done(handle: Any, value: Any) -> bool:
    return value in (await handle.status())["done"]


async def _async(value: Any) -> Any:
    return value


# -- the stop sequence (item 5) -------------------------------------------------------------------


async def test_the_stop_sequence_runs_in_rivetkits_order(rivet_node, rivet_client):
    JOURNAL.clear()
    handle = rivet_client.stopper.get_or_create(["order"])
    actor_id = await handle.resolve()
    conn, events = await listening(handle, "sleeping")
    first_conn_id = conn.connection_id
    inst = rivet_node.runtime.instances[actor_id]
    assert await conn.go_to_sleep() is True  # on the connection: no short-lived one of its own
    await wait_stopped(inst)
    order = [w for w in whats("order") if w != "wake"]
    # abort -> run returns -> on_sleep -> wait_until work -> (connections hibernate) -> final save
    assert order[:5] == ["abort-seen", "run-end", "on_sleep", "on_sleep-end", "wait_until-done"], order
    on_sleep = next(e for e in journal("order") if e["what"] == "on_sleep")
    assert on_sleep["aborted"] is True
    assert on_sleep["conn"] is False, "on_sleep saw the connection of the action that asked to sleep"
    assert order.count("on_sleep") == 1  # the second sleep() was a no-op
    # The broadcast in on_sleep reached the connection, and what wait_until changed was saved.
    await eventually(lambda: _async(events == [1]))
    state = await stored_state(actor_id)
    assert state["wait_until_ran"] is True
    # The connection hibernated: still open, same id, no on_disconnect.
    assert "on_disconnect" not in order and conn.is_connected and conn.connection_id == first_conn_id
    # schedule.after(0) from on_sleep fired after the next wake (which it caused), never
    # into the stopping instance; the queue message sent in on_sleep is there.
    await eventually(lambda: _async(any(e["what"] == "scheduled" for e in journal("order"))), timeout=10)
    scheduled = [e for e in journal("order") if e["what"] == "scheduled"]
    assert [e["wakes"] for e in scheduled] == [2]
    assert await handle.take_jobs() == ["from on_sleep 1"]
    # A call on the hibernated connection reaches the new instance.
    assert (await conn.ping())["wakes"] == 2
    await conn.dispose()


async def test_calls_during_the_stop_run_on_the_next_instance(rivet_node, rivet_client):
    """on_sleep takes a second: an action arriving meanwhile waits and wakes the actor;
    a new connection is refused with the retryable actor.stopping."""
    JOURNAL.clear()
    handle = rivet_client.stopper.get_or_create(["slow"])
    actor_id = await handle.resolve()
    await handle.go_to_sleep("slow")
    await eventually(lambda: _async("on_sleep" in whats("slow")))
    with pytest.raises(ActorStopping):
        await rivet_node.runtime.connect(actor_id)
    started = time.monotonic()
    pong = await handle.ping()
    assert pong["wakes"] == 2 and time.monotonic() - started > 0.5  # it waited for the stop
    assert whats("slow").index("on_sleep-end") < whats("slow").index("wake", 1)
    # The official client (and ours) retry actor.stopping: a connection made now gets through.
    conn = handle.connect()
    await conn.wait_open(timeout=10)
    await conn.dispose()


@pytest.mark.parametrize("mode", ["throw", "reject"])
async def test_a_failing_on_sleep_or_wait_until_does_not_prevent_a_clean_stop(rivet_node, rivet_client, mode, caplog):
    JOURNAL.clear()
    handle = rivet_client.stopper.get_or_create([mode])
    actor_id = await handle.resolve()
    inst = rivet_node.runtime.instances[actor_id]
    with caplog.at_level(logging.ERROR, logger="rivet_django.actor"):
        await handle.go_to_sleep(mode)
        await wait_stopped(inst)
    if mode == "throw":
        assert "on_sleep raised" in caplog.text
    else:
        assert "actor wait_until promise rejected" in caplog.text
    # Clean: the final save happened (wait_until from before the failure included) and the
    # next wake works.
    assert (await stored_state(actor_id))["wait_until_ran"] is True
    assert (await handle.ping())["wakes"] >= 2


async def test_prevent_sleep_set_in_on_sleep_holds_the_final_save(rivet_node, rivet_client):
    JOURNAL.clear()
    handle = rivet_client.stopper.get_or_create(["prevent"])
    actor_id = await handle.resolve()
    inst = rivet_node.runtime.instances[actor_id]
    await handle.go_to_sleep("prevent")
    await wait_stopped(inst)
    order = whats("prevent")
    assert order.index("prevent-cleared") > order.index("on_sleep-end")
    assert (await stored_state(actor_id))["wait_until_ran"] is True


async def test_destroy_closes_connections_and_a_destroy_during_sleep_wins(rivet_node, rivet_client):
    JOURNAL.clear()
    handle = rivet_client.stopper.get_or_create(["destroyed"])
    closes: list[Any] = []
    conn = handle.connect()
    conn.on_close(lambda: closes.append(True))
    await conn.wait_open(timeout=5)
    await handle.destroy_me()
    await eventually(lambda: _async("on_destroy" in whats("destroyed")), timeout=10)
    await eventually(lambda: _async("on_disconnect" in whats("destroyed")))
    await conn.dispose()
    # Asked to destroy while it goes to sleep: it is destroyed (on_destroy runs too).
    other = rivet_client.stopper.get_or_create(["escalated"])
    actor_id = await other.resolve()
    inst = rivet_node.runtime.instances[actor_id]
    await other.go_to_sleep("slow")
    await eventually(lambda: _async("on_sleep" in whats("escalated")))
    await rivet_node.runtime.destroy_actor(actor_id)
    await wait_stopped(inst)
    assert "on_destroy" in whats("escalated")
    assert await rivet_node.router.get_by_id(actor_id) is None


# -- events during an action (item 6) --------------------------------------------------------------


async def test_events_stream_while_the_action_runs_each_after_its_commit(rivet_node, rivet_client):
    handle = rivet_client.streamer.get_or_create(["stream"])
    actor_id = await handle.resolve()
    conn, seen = await listening(handle, "progress")
    work = asyncio.ensure_future(handle.work(3, 0.3))
    await eventually(lambda: _async(seen == [1]), timeout=5)
    assert not work.done(), "the event waited for the whole action"
    # The output gate: the state the event describes was committed before it was sent.
    assert (await stored_state(actor_id))["step"] >= 1
    assert await work == 3
    assert seen == [1, 2, 3]
    await conn.dispose()


async def test_an_event_whose_state_is_not_committed_is_never_sent(rivet_node, rivet_client):
    """Fencing: another node took the actor; the commit an event waits for fails, so the
    event (describing a state that never became durable) is dropped."""
    handle = rivet_client.streamer.get_or_create(["fenced"])
    actor_id = await handle.resolve()
    conn, seen = await listening(handle, "progress")
    await sync_to_async(lambda: ActorRow.objects.filter(pk=actor_id).update(generation=999))()
    with pytest.raises(ActorError):
        await handle.work(1, 0)
    await asyncio.sleep(0.3)
    assert seen == []
    await conn.dispose()


# -- on_state_change (item 7) --------------------------------------------------------------------------


async def test_on_state_change_fires_per_change_like_rivetkits_proxy(rivet_node, rivet_client):
    handle = rivet_client.watched.get_or_create(["watched"])
    assert (await handle.seen())["calls"] == []  # reads change nothing
    # One synchronous stretch of mutations: one call, with the final state.
    await handle.bump_three()
    seen = await handle.seen()
    assert [c["n"] for c in seen["calls"]] == [2] and seen["calls"][0]["a"] == {"b": 1}
    # Across awaits: one call per stretch, while the action runs (before its reply).
    await handle.bump_across_awaits()
    calls = (await handle.seen())["calls"]
    assert [(c["n"], c["a"]["b"], len(c["items"])) for c in calls[1:]] == [(3, 1, 0), (3, 2, 0), (3, 2, 1)]
    # Nested mutations deep in the state count; assigning the same value does not.
    await handle.deep()
    await handle.same()
    calls = (await handle.seen())["calls"]
    assert len(calls) == 5 and calls[-1]["items"] == [{"x": [1, 2]}]
    await handle.replace()
    assert (await handle.seen())["calls"][-1]["n"] == 100 and await handle.read() == 100
    # Its own mutations raise actor.state_mutation_reentrant (not applied, no re-trigger).
    await handle.reenter()
    seen = await handle.seen()
    assert seen["error"] == "actor.state_mutation_reentrant" and len(seen["calls"]) == 7
    assert "derived" not in seen["calls"][-1]


async def test_actors_without_on_state_change_keep_plain_state(rivet_node, rivet_client):
    assert await rivet_client.unwatched.get_or_create(["plain"]).types() == ["dict", "dict"]


# -- workflows (items 15, 16, 18) -------------------------------------------------------------------


async def test_a_completed_workflow_message_answers_its_waiting_sender(rivet_node, rivet_client):
    handle = rivet_client.wfEcho.get_or_create(["echo"])
    result = await handle.queue.send("requests", {"value": 123}, wait=True, timeout=5)
    assert result == {"status": "completed", "response": {"echo": {"value": 123}}}
    assert await handle.received() == [{"value": 123}]


async def test_a_failed_workflow_sleeps_and_on_error_saw_every_attempt(rivet_node, rivet_client):
    JOURNAL.clear()
    handle = rivet_client.wfFailing.get_or_create(["failing"])
    actor_id = await handle.resolve()
    conn, seen = await listening(handle, "workflowError")
    await handle.queue.send("go", 1)
    await eventually(lambda: _async(len(seen) == 2), timeout=10)
    await conn.dispose()
    await eventually(lambda: asleep(rivet_node, actor_id), timeout=10)
    status = await handle.status()  # wakes it: the recorded failure replays, nothing runs again
    assert status["attempts"] == 2
    # What on_error did was committed: its state changes and its queue messages.
    assert status["errors"] == [["doomed", 1, True], ["doomed", 2, False]]
    assert await handle.enqueued_errors() == [1, 2]
    await asyncio.sleep(0.5)
    assert whats("failing").count("sleep") == 2  # slept again, no spinning
    assert (await handle.status())["attempts"] == 2


async def test_destroy_from_inside_a_workflow_step(rivet_node):
    JOURNAL.clear()
    actor_id = await make(rivet_node, "wfDestroyer", ["gone"])
    await eventually(lambda: _async("on_destroy" in whats("gone")), timeout=10)
    assert journal("gone")[0]["steps"] == 1 and "after-destroy" not in whats("gone")
    await eventually(lambda: asleep(rivet_node, actor_id))
    with pytest.raises(ActorNotFound):
        await rivet_node.router.call_action(actor_id, "_rivet_workflow_wake")
    assert await rivet_node.router.get("default", "wfDestroyer", ["gone"]) is None


async def test_lifecycle_log_lines_carry_the_actor_and_its_node(rivet_node, rivet_client, caplog):
    import logging

    caplog.set_level(logging.DEBUG, logger="rivet_django.actor")
    counter = rivet_client.counter.get_or_create(["logged"])
    await counter.increment(1)
    actor_id = await counter.resolve()
    await rivet_node.router.destroy(actor_id)
    lines = [r for r in caplog.records if getattr(r, "rivet_actor_id", None) == actor_id]
    node = rivet_node.runtime.node_id
    assert {r.getMessage().split(f"@{node}] ", 1)[1] for r in lines} >= {"awake (generation 1)", "destroyed"}
    for record in lines:
        assert (record.rivet_actor, record.rivet_key, record.rivet_node) == ("counter", ["logged"], rivet_node.runtime.node_id)
        assert record.getMessage().startswith(f"[counter ['logged'] {actor_id} @{rivet_node.runtime.node_id}] ")
