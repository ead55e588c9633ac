"""Workflows: recording and replay, retries, loops, queue waits, durable sleep, divergence.

Everything runs in-process against the real database; crashes are ``crash_node``
(``kill -9``: nothing written, every task dropped) and time that matters is a
:class:`ManualClock`. Step functions count their real executions in
``WF_RUNS``, which survives the crashes (it is not durable state). One test
kills (``-9``) a real ``runactors`` process instead; its actor counts in files.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.db import connections

from rivet_django.client import Client
from rivet_django.exceptions import WorkflowHistoryDivergence
from rivet_django.models import WorkflowEntry
from rivet_django.runtime import serde
from rivet_django.storage.workflows import DjangoWorkflowStore, EntryRecord
from rivet_django.testing import ManualClock, crash_node, fire_schedules, running_node
from rivet_django.workflow import END_LOCATION, WAKE_ACTION, Loop, _Engine
from tests.helpers import eventually, make
from tests.server import LiveServer
from tests.testapp.actors import WF_CONTROL, WF_EVENTS, WF_RUNS

pytestmark = pytest.mark.django_db(transaction=True)


async def call(node: Any, actor_id: str, action: str, *args: Any) -> Any:
    return await node.router.call_action(actor_id, action, list(args), None)


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


async def ended(actor_id: str, status: str = "completed") -> dict[str, dict[str, Any]]:
    """The actor's entries, once its workflow's end is recorded with ``status`` (bounded wait)."""

    async def check() -> Any:
        stored = await entries(actor_id)
        return stored if stored.get(END_LOCATION, {}).get("status") == status else None

    return await eventually(check)


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
    stored = await ended(actor_id)
    assert {loc: (e["kind"], e["status"]) for loc, e in stored.items()} == {
        "a": ("step", "completed"), "b": ("step", "completed"), "c": ("step", "completed"),
        "finish": ("step", "completed"), END_LOCATION: ("workflow", "completed"),
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
    assert progress["vars"] == {"try": "ValueError: not yet", "kind": "exhausted", "message": "not yet", "attempts": 2}
    # on_error saw every failed attempt ("!": not retried).
    assert progress["state"]["errors"] == ["maybe#1", "maybe#2!", "flaky#1", "flaky#2"]
    first = WF_EVENTS["retry"][0]["step"]
    assert first["stepName"] == "maybe" and first["attempt"] == 1 and first["willRetry"] is True
    assert first["retryDelay"] == 10 and first["error"] == {"name": "ValueError", "message": "not yet"}
    assert first["workflowId"] == actor_id and first["maxRetries"] == 1 and first["remainingRetries"] == 1
    assert "retryDelay" not in WF_EVENTS["retry"][1]["step"] and WF_EVENTS["retry"][1]["step"]["willRetry"] is False
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
        errors = ["maybe#1", "maybe#2!", "flaky#1", "flaky#2", "flaky#3!"]
        assert (await call(node, actor_id, "progress"))["state"]["errors"] == errors
        await crash_node(node)
    async with running_node() as node:
        # Woken again: the recorded failure replays; the step does not run again, and
        # on_error is not called again.
        await call(node, actor_id, "progress")
        await asyncio.sleep(0.2)
        assert runs("doomed", "flaky", "after") == [5, 0]
        assert (await call(node, actor_id, "progress"))["state"]["errors"] == errors
    await sync_to_async(connections.close_all)()


async def test_on_error_state_changes_are_durable_with_the_failure(transactional_db):
    WF_CONTROL["handled"] = {"fail": 100}
    async with running_node() as node:
        actor_id = await make(node, "wfRetry", ["handled"])
        stored = await ended(actor_id, "failed")
        assert stored["flaky"]["status"] == "failed"
        await crash_node(node)  # kill -9 right after the failure is recorded
    async with running_node() as node:
        # The handler saw every failure; what it wrote to the state survived the crash.
        errors = ["maybe#1", "maybe#2!", "flaky#1", "flaky#2", "flaky#3!"]
        assert (await call(node, actor_id, "progress"))["state"]["errors"] == errors
        assert runs("handled", "flaky", "after") == [5, 0]
    await sync_to_async(connections.close_all)()


async def test_a_wake_up_does_not_cut_a_retry_backoff_short(rivet_node):
    actor_id = await make(rivet_node, "wfBackoff", ["nudged"])

    async def retrying() -> bool:
        return (await entries(actor_id)).get("once", {}).get("status") == "retrying"

    await eventually(retrying)
    # A durable sleep's wake-up (here: a spare one) arrives during the 60 s backoff.
    await call(rivet_node, actor_id, WAKE_ACTION)
    await asyncio.sleep(0.2)
    assert runs("nudged", "once") == [1]


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
    stored = await ended(actor_id)
    # Finished loops keep one entry each: no iteration entries are left.
    assert set(stored) == {"n", "count", "outer", "finish", END_LOCATION}
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
        assert set(await ended(actor_id)) == {"jobs", "done", END_LOCATION}
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
        await ended(actor_id)
        await crash_node(node)
    # A finished workflow never replays: forget its end, as if it had crashed just before.
    await sync_to_async(WorkflowEntry.objects.filter(actor_id=actor_id, location=END_LOCATION).delete)()
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


async def join_and_race_done(node, actor_id: str) -> Any:
    """The wfJoin actor's progress once its race (its last step) has a winner."""

    async def finished() -> Any:
        state = await call(node, actor_id, "progress")
        return state if state["race"] is not None else None

    return await eventually(finished)


async def test_join_and_race(rivet_node):
    actor_id = await make(rivet_node, "wfJoin", ["jr"])
    state = await join_and_race_done(rivet_node, actor_id)
    assert state["join"] == {"left": 2, "right": 3}
    assert state["race"] == ["fast", "f"]
    async def recorded() -> bool:
        # The branches' entries are pruned.
        return set(await entries(actor_id)) == {"both", "first", "record", END_LOCATION}

    await eventually(recorded)
    await rivet_node.runtime.instances[actor_id].stop()
    await call(rivet_node, actor_id, "progress")
    await asyncio.sleep(0.1)
    assert runs("jr", "left", "right", "fast", "record") == [1, 1, 1, 1]


@sync_to_async
def message_ids(actor_id: str) -> list[int]:
    from rivet_django.models import ActorQueueMessage

    return list(ActorQueueMessage.objects.filter(actor_id=actor_id).order_by("id").values_list("id", flat=True))


async def received_by_taker(actor_id: str) -> int:
    """The id of the message branch ``taker`` of WfRaceQueue recorded (once it has)."""

    async def check() -> Any:
        entry = (await entries(actor_id)).get("r/taker/take")
        return entry["output"]["id"] if entry else None

    return await eventually(check)


async def race_queue_outcome(node: Any, actor_id: str) -> dict[str, Any]:
    async def check() -> Any:
        state = await call(node, actor_id, "progress")
        return state if state["after"] is not None else None

    return await eventually(check)


@pytest.mark.parametrize("crash", [False, True])
async def test_a_message_received_by_a_losing_race_branch_goes_back_to_the_queue(transactional_db, crash):
    key = f"loser-{crash}"
    win, raced = asyncio.Event(), asyncio.Event()
    WF_CONTROL[key] = {"win": win, "gate": "raced" if crash else None, "reached": raced}
    async with running_node() as node:
        actor_id = await make(node, "wfRaceQueue", [key])
        await node.runtime.queues.send(actor_id, "jobs", {"n": 1})
        taken = await received_by_taker(actor_id)
        assert await message_ids(actor_id) == []  # consumed with its entry
        await node.runtime.queues.send(actor_id, "jobs", {"n": 2})
        (second,) = await message_ids(actor_id)
        win.set()  # the taker loses the race: its entry is pruned, its message must not be lost
        if not crash:
            # In memory: the message is deliverable again, and the next receive gets it.
            state = await race_queue_outcome(node, actor_id)
            assert state == {"race": ["other", "other"], "after": [taken, {"n": 1}]}
            assert await message_ids(actor_id) == [second]
            assert await node.runtime.instances[actor_id].queue.size() == 1
            return
        await asyncio.wait_for(raced.wait(), 10)
        # Stored again in the race's transaction, with its id (so still first in line).
        assert await message_ids(actor_id) == [taken, second]
        engine = node.runtime.instances[actor_id].actor._rivet_workflow_engine
        assert not any(loc.startswith("r/") for loc in engine.reached)  # cancelled branches forgotten
        await crash_node(node)
    WF_CONTROL[key]["gate"] = None
    async with running_node() as node:
        state = await race_queue_outcome(node, actor_id)
        assert state == {"race": ["other", "other"], "after": [taken, {"n": 1}]}
        assert await message_ids(actor_id) == [second]
    await sync_to_async(connections.close_all)()


async def test_a_race_branch_cancelled_while_recording_a_message_loses_nothing(transactional_db, monkeypatch):
    key = "mid-write"
    win, raced = asyncio.Event(), asyncio.Event()
    WF_CONTROL[key] = {"win": win, "gate": "raced", "reached": raced}
    committed, release = asyncio.Event(), asyncio.Event()
    real_write = DjangoWorkflowStore.write

    async def slow_write(self: Any, actor_id: str, generation: int, write: Any) -> None:
        await real_write(self, actor_id, generation, write)
        if write.entry.location == "r/taker/take":
            committed.set()
            await release.wait()  # committed, but the branch awaiting it has not resumed yet

    monkeypatch.setattr(DjangoWorkflowStore, "write", slow_write)
    async with running_node() as node:
        actor_id = await make(node, "wfRaceQueue", [key])
        await node.runtime.queues.send(actor_id, "jobs", {"n": 1})
        await asyncio.wait_for(committed.wait(), 10)
        taken = await received_by_taker(actor_id)
        win.set()  # the race cancels the taker in the middle of its write
        await asyncio.sleep(0.1)
        assert "r" not in await entries(actor_id)  # the race waits for that write to end
        release.set()
        await asyncio.wait_for(raced.wait(), 10)
        assert await message_ids(actor_id) == [taken]
        # Stored once and deliverable once: not also handed back in memory by the cancellation.
        assert await node.runtime.instances[actor_id].queue.size() == 1
        await crash_node(node)
    WF_CONTROL[key]["gate"] = None
    async with running_node() as node:
        state = await race_queue_outcome(node, actor_id)
        assert state == {"race": ["other", "other"], "after": [taken, {"n": 1}]}
        assert await message_ids(actor_id) == []
    await sync_to_async(connections.close_all)()


async def test_concurrent_branches_write_one_at_a_time(rivet_node, monkeypatch):
    writing, most = 0, 0
    real_write = DjangoWorkflowStore.write

    async def slow_write(self: Any, actor_id: str, generation: int, write: Any) -> None:
        nonlocal writing, most
        writing += 1
        most = max(most, writing)
        try:
            await asyncio.sleep(0.03)  # long enough for the other join branch to write meanwhile
            await real_write(self, actor_id, generation, write)
        finally:
            writing -= 1

    monkeypatch.setattr(DjangoWorkflowStore, "write", slow_write)
    actor_id = await make(rivet_node, "wfJoin", ["serial"])
    state = await join_and_race_done(rivet_node, actor_id)
    assert state["join"] == {"left": 2, "right": 3}
    assert most == 1


# -- the end of a workflow ------------------------------------------------------------------------


async def test_a_finished_workflow_does_not_run_again(transactional_db):
    async with running_node() as node:
        actor_id = await make(node, "wfOnce", ["done"])
        stored = await ended(actor_id)
        assert (stored[END_LOCATION]["kind"], stored[END_LOCATION]["error"]) == ("workflow", "")
        assert runs("done", "body", "a", "b") == [1, 1, 1]
        # Asleep and awake again: run() finds the end and returns; the body does not replay.
        await node.runtime.instances[actor_id].stop()
        assert (await call(node, actor_id, "progress"))["done"] == ["a", "b"]
        await asyncio.sleep(0.1)
        assert runs("done", "body", "a", "b") == [1, 1, 1]
        await crash_node(node)
    async with running_node() as node:
        await call(node, actor_id, "progress")
        await asyncio.sleep(0.1)
        assert runs("done", "body", "a", "b") == [1, 1, 1]
        assert set(await entries(actor_id)) == {"a", "b", END_LOCATION}
    await sync_to_async(connections.close_all)()


async def test_a_failed_workflow_is_recorded_and_does_not_run_again(transactional_db):
    WF_CONTROL["broken"] = {"fail": True}
    async with running_node() as node:
        actor_id = await make(node, "wfOnce", ["broken"])
        stored = await ended(actor_id, "failed")
        assert stored["b"]["status"] == "failed"
        assert "broken for good" in stored[END_LOCATION]["error"] and "'b'" in stored[END_LOCATION]["error"]
        assert runs("broken", "body", "a", "b") == [1, 1, 1]
        await node.runtime.instances[actor_id].stop()
        assert (await call(node, actor_id, "progress"))["done"] == ["a"]
        await asyncio.sleep(0.1)
        # Not replayed, not retried: the actor idles (and sleeps) instead of spinning.
        assert runs("broken", "body", "a", "b") == [1, 1, 1]
        assert node.runtime.instances[actor_id]._run_task.done()
    await sync_to_async(connections.close_all)()


# -- kill -9 of a real runactors process ------------------------------------------------------

#: Where ``wfKill`` is killed, in order: after step i's effect but before its entry is recorded
#: ("effect-i"), and after step i's entry is recorded, as step i+1 begins ("start-i+1", then "end").
KILL_POINTS = ["effect-0", "start-1", "effect-1", "start-2", "effect-2", "start-3", "effect-3", "end"]


def _wait_for_file(path: Path, server: LiveServer, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise AssertionError(f"{path.name} did not appear within {timeout}s:\n{server.log()}")
        time.sleep(0.02)


def _rows(db_path: str, actor_id: str) -> dict[str, tuple[str, str]]:
    with sqlite3.connect(db_path) as db:
        rows = db.execute(
            "SELECT location, kind, status FROM rivet_django_workflowentry WHERE actor_id = ?", (actor_id,)
        ).fetchall()
    return {loc: (kind, status) for loc, kind, status in rows}


def _counts(path: Path) -> dict[str, int]:
    lines = path.read_text().splitlines() if path.exists() else []
    return {line: lines.count(line) for line in sorted(set(lines))}


def test_kill_minus_9_at_every_step_boundary_runs_each_effect_once(tmp_path):
    """A live ``runactors`` is killed at each boundary of each step, restarted each time on the same database."""
    files = tmp_path / "wf"
    key = "k9"
    work = files / key
    work.mkdir(parents=True)
    for point in KILL_POINTS:
        (work / f"hold-{point}").touch()
    server = LiveServer(
        str(tmp_path / "db.sqlite3"), node_id="wf-kill", settings="tests.settings_live",
        env={"RIVET_WF_KILL_DIR": str(files)},
    )  # fmt: skip
    try:
        server.start()
        with Client(server.endpoint) as client:
            actor_id = client.wfKill.get_or_create([key]).resolve()
        attempts_when_recorded: dict[str, int] = {}
        for point in KILL_POINTS:
            _wait_for_file(work / f"at-{point}", server)
            server.kill()
            rows = _rows(server.db_path, actor_id)
            kind, _, i = point.partition("-")
            if kind == "effect":
                # Its effect is in the ledger, its entry is not recorded: it will run again.
                assert i in (work / "ledger").read_text().split() and f"step-{i}" not in rows
            else:
                # The previous step is recorded (and must never run again); this one has no effect yet.
                done = 3 if kind == "end" else int(i) - 1
                assert rows[f"step-{done}"] == ("step", "completed")
                attempts_when_recorded[str(done)] = _counts(work / "attempts")[str(done)]
            assert END_LOCATION not in rows
            (work / f"hold-{point}").unlink()
            server.start()
            with Client(server.endpoint) as client:
                client.wfKill.get_or_create([key]).progress()  # wakes it: the workflow replays
        deadline = time.monotonic() + 20
        while END_LOCATION not in _rows(server.db_path, actor_id):
            assert time.monotonic() < deadline, f"the workflow did not finish:\n{server.log()}"
            time.sleep(0.05)
        server.stop()
        body_runs = _counts(work / "body")["run"]
        server.start()  # and wake it once more: a finished workflow does not run again
        with Client(server.endpoint) as client:
            state = client.wfKill.get_or_create([key]).progress()
        time.sleep(0.2)
        assert _counts(work / "body")["run"] == body_runs == len(KILL_POINTS) + 1
    finally:
        try:
            server.stop()
        finally:
            server.kill()
    assert (work / "ledger").read_text().split() == ["0", "1", "2", "3"]  # every effect exactly once
    # Killed after its effect: run again (idempotent). Killed as the next step began: never again.
    assert _counts(work / "attempts") == {"0": 2, "1": 3, "2": 3, "3": 3}
    assert attempts_when_recorded == {"0": 2, "1": 3, "2": 3, "3": 3}
    assert state == {"results": [0, 1, 2, 3]}  # each step's state change committed once, with its entry
    assert _rows(server.db_path, actor_id) == {
        **{f"step-{i}": ("step", "completed") for i in range(4)}, END_LOCATION: ("workflow", "completed"),
    }


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
            if "outside_step" in caplog.text or "only available inside workflow steps" in caplog.text:
                break
    assert "state is only available inside workflow steps" in caplog.text
    # Actions (not the workflow's body) use state freely.
    assert await rivet_node.router.call_action(record.actor_id, "read") == {"inside": 1}
