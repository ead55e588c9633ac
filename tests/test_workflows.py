"""Workflows: recording and replay, retries, loops, queue waits, durable sleep, divergence.

Everything runs in-process against the real database; crashes are ``crash_node``
(``kill -9``: nothing written, every task dropped) and time that matters is a
:class:`ManualClock`. Step functions count their real executions in
``WF_RUNS``, which survives the crashes (it is not durable state).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.db import connections

from rivet_django.exceptions import WorkflowHistoryDivergence
from rivet_django.models import WorkflowEntry
from rivet_django.runtime import serde
from rivet_django.storage.workflows import EntryRecord
from rivet_django.testing import ManualClock, crash_node, fire_schedules, running_node
from rivet_django.workflow import WAKE_ACTION, Loop, _Engine
from tests.testapp.actors import WF_CONTROL, WF_RUNS

pytestmark = pytest.mark.django_db(transaction=True)


async def make(node: Any, name: str, key: list[str], input: Any = None) -> str:
    record, _ = await node.router.get_or_create("default", name, key, input)
    return record.actor_id


async def call(node: Any, actor_id: str, action: str, *args: Any) -> Any:
    return await node.router.call_action(actor_id, action, list(args), None)


async def eventually(check: Callable[[], Awaitable[Any]], timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s (last value {value!r})")
        await asyncio.sleep(0.02)


@sync_to_async
def entries(actor_id: str) -> dict[str, dict[str, Any]]:
    rows = WorkflowEntry.objects.filter(actor_id=actor_id).values("location", "kind", "status", "output", "error", "attempts")
    out = {}
    for row in rows:
        row["output"] = None if row["output"] is None else serde.loads(bytes(row["output"]))
        out[row["location"]] = row
    return out


@sync_to_async
def entry_count(actor_id: str) -> int:
    return WorkflowEntry.objects.filter(actor_id=actor_id).count()


@pytest.fixture(autouse=True)
def _reset_control():
    WF_RUNS.clear()
    WF_CONTROL.clear()
    yield
    WF_RUNS.clear()
    WF_CONTROL.clear()


def runs(key: str, *steps: str) -> list[int]:
    return [WF_RUNS.get((key, step), 0) for step in steps]


# -- steps: record and replay ----------------------------------------------------------------


async def test_steps_are_recorded_and_replayed(rivet_node):
    actor_id = await make(rivet_node, "wfSteps", ["plain"])
    state = await eventually(lambda: _done(rivet_node, actor_id))
    assert state["done"] == ["a", "b", "c"]
    assert state["result"] == [2, 4, 8]
    stored = await entries(actor_id)
    assert {loc: (e["kind"], e["status"]) for loc, e in stored.items()} == {
        "a": ("step", "completed"), "b": ("step", "completed"), "c": ("step", "completed"),
        "finish": ("step", "completed"),
    }
    assert stored["b"]["output"] == {"p": 1, "v": 4}
    # Asleep and awake again: run() replays from history; nothing runs twice.
    inst = rivet_node.runtime.instances[actor_id]
    await inst.stop()
    state = await call(rivet_node, actor_id, "progress")
    await asyncio.sleep(0.1)
    assert runs("plain", "a", "b", "c", "finish") == [1, 1, 1, 1]
    assert (await call(rivet_node, actor_id, "progress"))["done"] == ["a", "b", "c"]


async def _done(node: Any, actor_id: str) -> Any:
    state = await call(node, actor_id, "progress")
    return state if state["result"] is not None else None


@pytest.mark.parametrize("gate", ["start", "a", "b", "c"])
async def test_crash_at_each_step_boundary_runs_each_step_once(transactional_db, gate):
    key = f"crash-{gate}"
    reached = asyncio.Event()
    WF_CONTROL[key] = {"gate": gate, "reached": reached}
    async with running_node() as node:
        actor_id = await make(node, "wfSteps", [key])
        await asyncio.wait_for(reached.wait(), 10)
        await crash_node(node)  # kill -9 right after the step (before anything else runs)
    WF_CONTROL[key]["gate"] = None
    async with running_node() as node:
        state = await eventually(lambda: _done(node, actor_id))
        assert state["done"] == ["a", "b", "c"]
        assert state["result"] == [2, 4, 8]
        assert runs(key, "a", "b", "c", "finish") == [1, 1, 1, 1]
    await sync_to_async(connections.close_all)()


# -- retries and failures -------------------------------------------------------------------


async def test_step_retries_then_succeeds(rivet_node):
    WF_CONTROL["retry"] = {"fail": 4}
    actor_id = await make(rivet_node, "wfRetry", ["retry"])
    await eventually(lambda: _runs_of("retry", "after"))
    progress = await call(rivet_node, actor_id, "progress")
    # try_step: 2 attempts fail and it returns the failure; step: 2 fail, the third succeeds.
    assert progress["vars"] == {"try": "ValueError: not yet"}
    assert progress["state"]["errors"] == ["maybe"]  # on_error saw the exhausted try_step
    assert runs("retry", "flaky") == [5]
    stored = await entries(actor_id)
    assert (stored["maybe"]["status"], stored["maybe"]["attempts"]) == ("failed", 2)
    assert (stored["flaky"]["status"], stored["flaky"]["attempts"]) == ("completed", 3)
    assert stored["flaky"]["output"]["v"] == "ok"


async def _runs_of(key: str, step: str) -> bool:
    return WF_RUNS.get((key, step), 0) > 0


async def test_exhausted_step_fails_the_workflow_without_spinning(transactional_db, caplog):
    caplog.set_level(logging.WARNING)
    WF_CONTROL["doomed"] = {"fail": 100}
    async with running_node() as node:
        actor_id = await make(node, "wfRetry", ["doomed"])

        async def failed() -> bool:
            stored = await entries(actor_id)
            return stored.get("flaky", {}).get("status") == "failed"

        await eventually(failed)
        await asyncio.sleep(0.1)
        assert runs("doomed", "flaky", "after") == [5, 0]  # 2 (try_step) + 3 (step), then stop
        stored = await entries(actor_id)
        assert stored["flaky"]["attempts"] == 3
        assert stored["flaky"]["error"] == "ValueError: not yet"
        assert "after" not in stored
        assert any("workflow stopped" in r.getMessage() and "'flaky'" in r.getMessage() for r in caplog.records)
        assert (await call(node, actor_id, "progress"))["state"]["errors"] == ["maybe", "flaky"]
        await crash_node(node)
    async with running_node() as node:
        # Woken again: the recorded failure replays; the step does not run again.
        await call(node, actor_id, "progress")
        await asyncio.sleep(0.2)
        assert runs("doomed", "flaky", "after") == [5, 0]
    await sync_to_async(connections.close_all)()


def test_backoff_is_deterministic():
    from rivet_django.workflow import backoff_delay

    assert [backoff_delay(n, 0.1, 30) for n in range(1, 6)] == [0.1, 0.2, 0.4, 0.8, 1.6]
    assert backoff_delay(20, 0.1, 30) == 30


# -- loops ----------------------------------------------------------------------------------


async def test_loop_break_continue_nesting_and_bounded_history(rivet_node):
    n = 2000
    actor_id = await make(rivet_node, "wfLoop", ["big"], {"n": n})
    state = await eventually(lambda: _loop_done(rivet_node, actor_id), timeout=120)
    assert state["total"] == sum(range(n))
    assert state["inner"] == 6  # 2 outer iterations x 3 inner
    assert state["result"] == [n, "nested-done"]
    stored = await entries(actor_id)
    # Finished loops keep one entry each: no iteration entries are left.
    assert set(stored) == {"n", "count", "outer", "finish"}
    assert stored["count"]["output"]["v"] == n
    assert stored["count"]["attempts"] == n


async def _loop_done(node: Any, actor_id: str) -> Any:
    state = await call(node, actor_id, "progress")
    return state if state["result"] is not None else None


async def test_loop_history_stays_bounded_while_running(transactional_db):
    async with running_node() as node:
        actor_id = await make(node, "wfLoop", ["bounded"], {"n": 400})
        peak = 0
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            peak = max(peak, await entry_count(actor_id))
            if (await call(node, actor_id, "progress"))["result"] is not None:
                break
            await asyncio.sleep(0.005)
        # Never more than one entry per level of nesting ("n", "count" done, "outer",
        # "outer/i/inner", "outer/i/inner/j/tick", "finish"), whatever the iterations.
        assert peak <= 6
    await sync_to_async(connections.close_all)()


def test_loop_values():
    assert Loop.break_(3).is_break and Loop.break_(3).value == 3
    assert not Loop.continue_("s").is_break and Loop.continue_("s").value == "s"


# -- queue waits ----------------------------------------------------------------------------


async def test_queue_next_is_recorded_and_acknowledged(transactional_db):
    async with running_node() as node:
        actor_id = await make(node, "wfQueue", ["q"])
        for i in range(5):
            await node.runtime.queues.send(actor_id, "jobs", {"n": i})

        async def seen() -> Any:
            state = await call(node, actor_id, "progress")
            return state if len(state["seen"]) == 5 else None

        await eventually(seen)
        await crash_node(node)
    async with running_node() as node:
        # Replay after a crash: no message is handled twice, none is lost.
        await node.runtime.queues.send(actor_id, "jobs", {"n": 5})
        await node.runtime.queues.send(actor_id, "jobs", {"stop": "enough"})

        async def stopped() -> Any:
            state = await call(node, actor_id, "progress")
            return state if state["reason"] is not None else None

        state = await eventually(stopped)
        assert state["seen"] == [0, 1, 2, 3, 4, 5]
        assert state["reason"] == "enough"
        from rivet_django.models import ActorQueueMessage

        assert await sync_to_async(ActorQueueMessage.objects.filter(actor_id=actor_id).count)() == 0
        assert set(await entries(actor_id)) == {"jobs", "done"}
    await sync_to_async(connections.close_all)()


# -- durable sleep --------------------------------------------------------------------------


async def test_durable_sleep_across_a_restart(transactional_db):
    clock = ManualClock()
    async with running_node(clock=clock) as node:
        actor_id = await make(node, "wfSleep", ["restart"])

        async def sleeping() -> bool:
            return (await entries(actor_id)).get("nap", {}).get("status") == "sleeping"

        await eventually(sleeping)
        nap = (await entries(actor_id))["nap"]["output"]
        assert nap["until"] == pytest.approx(clock.time() + 3600)
        await crash_node(node)
    clock.advance(3601)
    async with running_node(clock=clock) as node:
        # The schedule the sleep left wakes the actor; the replay finds the sleep over.
        await fire_schedules(node)

        async def after() -> Any:
            state = await call(node, actor_id, "progress")
            return state if state["after"] else None

        state = await eventually(after)
        assert state["before"] is True
        assert runs("restart", "after") == [1]
        assert (await entries(actor_id))["nap"]["status"] == "completed"
    await sync_to_async(connections.close_all)()


async def test_durable_sleep_wakes_a_sleeping_actor(transactional_db):
    clock = ManualClock()
    async with running_node(clock=clock) as node:
        actor_id = await make(node, "wfSleep", ["asleep"])

        async def sleeping() -> bool:
            return (await entries(actor_id)).get("nap", {}).get("status") == "sleeping"

        await eventually(sleeping)
        # Idle while the workflow sleeps: the actor goes to sleep (sleep_timeout 0.3 s, real time).
        clock.advance(1)
        await eventually(lambda: _asleep(node, actor_id))
        assert runs("asleep", "after") == [0]
        await fire_schedules(node, advance=1800)  # nothing due yet
        assert runs("asleep", "after") == [0]
        await fire_schedules(node, advance=1800)
        await eventually(lambda: _runs_of("asleep", "after"))
        assert (await entries(actor_id))["nap"]["status"] == "completed"
    await sync_to_async(connections.close_all)()


async def _asleep(node: Any, actor_id: str) -> bool:
    return actor_id not in node.runtime.instances


def test_wake_action_is_added_to_workflow_actors():
    from rivet_django.registry import actors

    assert WAKE_ACTION in actors.get("wfSleep").actions


# -- divergence ------------------------------------------------------------------------------


def _engine_with(history: dict[str, tuple[str, int]]) -> _Engine:
    engine = _Engine.__new__(_Engine)
    engine.history, engine.decoded, engine.positions, engine.reached = {}, {}, {}, set()
    for loc, (kind, pos) in history.items():
        engine.history[loc] = EntryRecord(loc, kind, "completed", serde.dumps({"p": pos}))
        engine.decoded[loc] = {"p": pos}
        scope = loc[: loc.rfind("/") + 1]
        engine.positions[(scope, pos)] = loc
    return engine


def test_divergence_rules():
    history = {"a": ("step", 0), "b": ("step", 1), "l": ("loop", 2), "l/0/x": ("step", 0)}
    # Same code: fine.
    engine = _engine_with(history)
    for pos, (name, kind) in enumerate([("a", "step"), ("b", "step"), ("l", "loop")]):
        assert engine.visit("", pos, name, kind) is not None
    assert engine.visit("l/0/", 0, "x", "step") is not None
    engine.check_complete("")
    # Another kind at a recorded location.
    with pytest.raises(WorkflowHistoryDivergence, match="history recorded a step there, the workflow now runs a loop"):
        _engine_with(history).visit("", 0, "a", "loop")
    # Reordered.
    with pytest.raises(WorkflowHistoryDivergence, match=r"'b'.*entry #1.*now reaches it as entry #0"):
        _engine_with(history).visit("", 0, "b", "step")
    # Renamed: a new name where history has another.
    with pytest.raises(WorkflowHistoryDivergence, match=r"history recorded step 'a' there, the workflow now runs step 'a2'"):
        _engine_with(history).visit("", 0, "a2", "step")
    # Removed: the workflow ends before reaching recorded entries.
    engine = _engine_with(history)
    engine.visit("", 0, "a", "step")
    with pytest.raises(WorkflowHistoryDivergence, match=r"without reaching recorded entries 'b', 'l'"):
        engine.check_complete("")
    # Appending new entries after the recorded ones is not a divergence.
    engine = _engine_with(history)
    for pos, (name, kind) in enumerate([("a", "step"), ("b", "step"), ("l", "loop"), ("c", "step")]):
        engine.visit("", pos, name, kind)


async def test_divergence_stops_the_workflow(transactional_db, caplog):
    caplog.set_level(logging.ERROR)
    WF_CONTROL["div"] = {"order": ["a", "b"]}
    async with running_node() as node:
        actor_id = await make(node, "wfDiverging", ["div"])

        async def both() -> Any:
            return (await call(node, actor_id, "progress"))["done"] == ["a", "b"]

        await eventually(both)
        await crash_node(node)
    WF_CONTROL["div"]["order"] = ["b", "a", "c"]  # reordered, then a new step
    async with running_node() as node:
        await call(node, actor_id, "progress")

        async def logged() -> bool:
            return any("History divergence" in r.getMessage() for r in caplog.records)

        await eventually(logged)
        message = next(r.getMessage() for r in caplog.records if "History divergence" in r.getMessage())
        assert "'b'" in message and "#1" in message and "#0" in message
        await asyncio.sleep(0.05)
        assert (await call(node, actor_id, "progress"))["done"] == ["a", "b"]  # nothing ran
        assert set(await entries(actor_id)) == {"a", "b"}  # nothing overwritten
    await sync_to_async(connections.close_all)()


# -- join and race ---------------------------------------------------------------------------


async def test_join_and_race(rivet_node):
    actor_id = await make(rivet_node, "wfJoin", ["jr"])

    async def finished() -> Any:
        state = await call(rivet_node, actor_id, "progress")
        return state if state["race"] is not None else None

    state = await eventually(finished)
    assert state["join"] == {"left": 2, "right": 3}
    assert state["race"] == ["fast", "f"]
    async def recorded() -> bool:
        return set(await entries(actor_id)) == {"both", "first", "record"}  # the branches' entries are pruned

    await eventually(recorded)
    await rivet_node.runtime.instances[actor_id].stop()
    await call(rivet_node, actor_id, "progress")
    await asyncio.sleep(0.1)
    assert runs("jr", "left", "right", "fast", "record") == [1, 1, 1, 1]


# -- the demos ---------------------------------------------------------------------------------


class _Sink:
    def __init__(self) -> None:
        self.events: list[tuple[str, tuple[Any, ...]]] = []

    def send_event(self, event: Any) -> None:
        self.events.append((event.name, event.args))

    async def close(self, reason: str | None) -> None:
        pass


async def _watch(node: Any, actor_id: str, *events: str) -> _Sink:
    from rivet_django.runtime.conn import Conn

    sink = _Sink()
    inst = await node.runtime.instance(actor_id)
    conn = await inst.open_conn(None, conn=Conn(None, sink=sink, transport="websocket"))
    for name in events:
        await inst.subscribe(conn, name)
    return sink


async def test_worker_demo_survives_a_crash(transactional_db):
    import worker.actors  # noqa: F401  (registers "taskWorker")

    async with running_node() as node:
        actor_id = await make(node, "taskWorker", ["demo"])
        sink = await _watch(node, actor_id, "progress")
        await call(node, actor_id, "add_task", {"text": "hello durable world"})
        await call(node, actor_id, "add_task", {"numbers": [1, 2, 3.5]})

        async def two() -> Any:
            state = await call(node, actor_id, "progress")
            return state if state["processed"] == 2 else None

        state = await eventually(two)
        assert state["phase"] == "running"
        assert [r["value"] for r in state["results"]] == [3, 6.5]
        watched = [args[0]["processed"] for name, args in sink.events if name == "progress"]
        assert watched[-2:] == [1, 2]
        await crash_node(node)
    async with running_node() as node:
        await call(node, actor_id, "add_task", {"text": "after the crash"})
        await call(node, actor_id, "finish", "all done")

        async def finished() -> Any:
            state = await call(node, actor_id, "progress")
            return state if state["phase"] == "finished" else None

        state = await eventually(finished)
        assert state["processed"] == 3
        assert state["finished"] == "all done"
        assert [r["value"] for r in state["results"]] == [3, 6.5, 3]
    await sync_to_async(connections.close_all)()


async def test_agent_demo_streams_tokens(rivet_node):
    import agent.actors
    from agent.actors import generate

    agent.actors.Agent.token_delay = 0.001
    actor_id = await make(rivet_node, "agent", ["demo"])
    sink = await _watch(rivet_node, actor_id, "token", "done")
    await call(rivet_node, actor_id, "ask", "what is an actor?")
    await call(rivet_node, actor_id, "ask", "and a workflow?")

    async def answered() -> Any:
        return len([e for e in sink.events if e[0] == "done"]) == 2

    await eventually(answered)
    expected = list(generate("what is an actor?"))
    assert expected == list(generate("what is an actor?"))  # deterministic
    first_id = sink.events[0][1][0]["id"]
    tokens = [args[0]["token"] for name, args in sink.events if name == "token" and args[0]["id"] == first_id]
    assert tokens == expected
    done = [args[0] for name, args in sink.events if name == "done"]
    assert done[0]["text"] == " ".join(expected)
    assert [h["prompt"] for h in await call(rivet_node, actor_id, "history")] == ["what is an actor?", "and a workflow?"]


async def test_state_outside_a_step_raises_in_the_workflow_body(rivet_node, caplog):
    import logging

    record, _ = await rivet_node.router.get_or_create("default", "wfOutsideStep", ["guard"])
    with caplog.at_level(logging.ERROR, logger="rivet_django.actor"):
        for _ in range(100):
            await asyncio.sleep(0.02)
            if "outside_step" in caplog.text or "only be used inside ctx.step" in caplog.text:
                break
    assert "only be used inside ctx.step" in caplog.text
    # Actions (not the workflow's body) use state freely.
    assert await rivet_node.router.call_action(record.actor_id, "read") == {"inside": 1}
