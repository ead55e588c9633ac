"""Schedules: ``self.schedule`` in-process against the real database, and the reminder demo over HTTP.

Where time matters a :class:`ManualClock` drives the scheduler (misfires after a
10-minute outage, retries and backoff); real time is used only for the
precision checks, which stay short.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from asgiref.sync import sync_to_async
from django.db import connections

from rivet_django.client import ActorError, Client
from rivet_django.exceptions import InvalidSchedule, TooManySchedules
from rivet_django.models import Actor as ActorRow
from rivet_django.models import ActorSchedule
from rivet_django.runtime import serde
from rivet_django.runtime.schedule import ScheduleRecord, plan_run
from rivet_django.testing import ManualClock, crash_node, fire_schedules, running_node
from tests.server import LiveServer
from tests.testapp.actors import SLOW_RELEASED, SLOW_STARTED

pytestmark = pytest.mark.django_db(transaction=True)


async def make(node, key, name: str = "scheduled") -> str:
    record, _ = await node.router.get_or_create("default", name, list(key))
    return record.actor_id


async def call(node, actor_id: str, action: str, *args, **kwargs):
    return await node.router.call_action(actor_id, action, list(args), kwargs or None)


@sync_to_async
def schedule_rows(actor_id: str) -> list[dict]:
    return list(ActorSchedule.objects.filter(actor_id=actor_id).order_by("due_at").values())


async def stored_runs(actor_id: str) -> list[dict]:
    """The actor's recorded runs, read from storage (does not wake it)."""
    row = await sync_to_async(ActorRow.objects.get)(pk=actor_id)
    return [] if row.state is None else serde.loads(bytes(row.state))["runs"]


async def wait_for_runs(actor_id: str, count: int, timeout: float) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        runs = await stored_runs(actor_id)
        if len(runs) >= count or time.monotonic() > deadline:
            return runs
        await asyncio.sleep(0.02)


@pytest.fixture
async def clock_node(transactional_db):
    """A node whose scheduler runs on a ManualClock."""
    async with running_node(clock=ManualClock()) as node:
        yield node
    await sync_to_async(connections.close_all)()


def tags(runs: list[dict]) -> list[str]:
    return [run["tag"] for run in runs]


# -- the API ---------------------------------------------------------------------------


async def test_after_at_cron_every_list_get(clock_node):
    node, clock = clock_node, clock_node.runtime.clock
    actor_id = await make(node, ["api"])
    t0 = clock.time()
    later = await call(node, actor_id, "add", "after", 10, "record", "after")
    soon = await call(node, actor_id, "add", "at", t0 + 5, "record", "at")
    dated = await call(node, actor_id, "add", "at", datetime.fromtimestamp(t0 + 7, UTC), "record", "at-datetime")
    delta = await call(node, actor_id, "add", "after", timedelta(seconds=8), "record", "after-timedelta")
    daily = await call(node, actor_id, "add", "cron", "daily", "0 9 * * *", "record", "cron", tz="Europe/Paris")
    tick = await call(node, actor_id, "add", "every", "tick", 30, "record", "every")

    listed = await call(node, actor_id, "schedules")
    assert [s["id"] for s in listed] == [soon, dated, delta, later, tick, daily]
    by_id = {s["id"]: s for s in listed}
    assert by_id[later] == {
        "id": later, "kind": "at", "action": "record", "args": ["after"], "due_at": pytest.approx(t0 + 10),
        "name": None, "cron": None, "tz": None, "interval": None, "misfire": "run_once", "attempts": 0,
        "max_attempts": 5, "last_error": "", "created_at": by_id[later]["created_at"], "last_run_at": None,
        "retry_at": None,
    }  # fmt: skip
    assert by_id[tick]["kind"] == "every" and by_id[tick]["interval"] == 30 and by_id[tick]["name"] == "tick"
    paris = ZoneInfo("Europe/Paris")
    expected = datetime.fromtimestamp(t0, paris).replace(hour=9, minute=0, second=0, microsecond=0)
    if expected.timestamp() <= t0:
        expected = (expected + timedelta(days=1)).replace(hour=9)
    cron = await call(node, actor_id, "get_schedule", daily)
    assert (cron["cron"], cron["tz"], cron["due_at"]) == ("0 9 * * *", "Europe/Paris", expected.timestamp())
    assert await call(node, actor_id, "get_schedule", "nope") is None

    await fire_schedules(node, advance=5)
    assert tags(await call(node, actor_id, "runs")) == ["at"]
    await fire_schedules(node, advance=25)
    assert tags(await call(node, actor_id, "runs")) == ["at", "at-datetime", "after-timedelta", "after", "every"]
    # One-shots are gone once run; the interval moved on by one interval.
    remaining = {s["id"]: s for s in await call(node, actor_id, "schedules")}
    assert set(remaining) == {tick, daily}
    assert remaining[tick]["due_at"] == pytest.approx(t0 + 60)
    assert remaining[tick]["last_run_at"] == pytest.approx(t0 + 30)
    # The action ran as an internal call: no connection.
    assert not any(run["conn"] for run in await call(node, actor_id, "runs"))


async def test_redeclaring_a_name_replaces_the_schedule(clock_node):
    node, clock = clock_node, clock_node.runtime.clock
    actor_id = await make(node, ["redeclare"])
    first = await call(node, actor_id, "add", "every", "job", 60, "record", "v1")
    second = await call(node, actor_id, "add", "every", "job", 10, "record", "v2")
    assert first == second
    again = await call(node, actor_id, "add", "cron", "job", "*/5 * * * *", "record", "v3")
    assert again == first
    [row] = await schedule_rows(actor_id)
    assert (row["kind"], row["cron"], serde.loads(bytes(row["args"]))) == ("cron", "*/5 * * * *", ["v3"])
    assert row["due_at"].timestamp() > clock.time()


async def test_cancel(clock_node):
    node = clock_node
    actor_id = await make(node, ["cancel"])
    doomed = await call(node, actor_id, "add", "after", 5, "record", "doomed")
    await call(node, actor_id, "add", "after", 5, "record", "kept")
    recurring = await call(node, actor_id, "add", "every", "tick", 5, "record", "tick")
    assert await call(node, actor_id, "cancel", doomed) is True
    assert await call(node, actor_id, "cancel", doomed) is False
    assert await call(node, actor_id, "cancel", recurring) is True
    assert await call(node, actor_id, "get_schedule", doomed) is None
    await fire_schedules(node, advance=60)
    assert tags(await call(node, actor_id, "runs")) == ["kept"]
    assert await schedule_rows(actor_id) == []
    # An actor cannot cancel another actor's schedule.
    other = await make(node, ["cancel-other"])
    theirs = await call(node, other, "add", "after", 5, "record", "theirs")
    assert await call(node, actor_id, "cancel", theirs) is False
    assert len(await schedule_rows(other)) == 1


async def test_several_schedules_run_in_due_order(clock_node):
    node, clock = clock_node, clock_node.runtime.clock
    actor_id = await make(node, ["order"])
    t0 = clock.time()
    await call(node, actor_id, "add", "after", 3, "record", "c")
    await call(node, actor_id, "add", "after", 1, "record", "a")
    await call(node, actor_id, "add", "at", t0 + 2, "record", "b")
    await call(node, actor_id, "add", "after", 1, "record", "a2")  # same due time: made later, runs later
    await call(node, actor_id, "add", "every", "tick", 2.5, "record", "tick")
    await fire_schedules(node, advance=5)
    assert tags(await call(node, actor_id, "runs")) == ["a", "a2", "b", "tick", "c"]


async def test_destroy_deletes_the_actors_schedules(clock_node):
    node = clock_node
    actor_id = await make(node, ["destroyed"])
    await call(node, actor_id, "add", "after", 5, "record", "never")
    await node.router.destroy(actor_id)
    assert await schedule_rows(actor_id) == []
    assert await fire_schedules(node, advance=10) == 0


async def test_schedule_of_an_actor_class_this_process_does_not_know_is_left_alone(clock_node):
    node, clock = clock_node, clock_node.runtime.clock

    @sync_to_async
    def ghost_schedule() -> None:
        ActorRow.objects.create(id="ghost1", name="ghost", key=["g"], key_hash="ghost-hash", initialized=True)
        ActorSchedule.objects.create(
            id="ghost-run", actor_id="ghost1", kind="at", action="haunt", args=serde.dumps([]),
            due_at=datetime.fromtimestamp(clock.time(), UTC),
        )  # fmt: skip

    await ghost_schedule()
    await fire_schedules(node)
    [row] = await schedule_rows("ghost1")
    # Kept for a process that knows "ghost", and not looked at again for a minute.
    assert row["attempts"] == 0 and row["locked_until"].timestamp() == pytest.approx(clock.time() + 60)
    assert await fire_schedules(node, advance=30) == 0


# -- bad input -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        (("after", 1, "no_such_action"), {}, "has no such action"),
        (("after", 1, "record"), {}, "do not fit action 'record'"),
        (("after", 1, "record", "a", "b"), {}, "do not fit action 'record'"),
        (("after", 1, "record", object()), {}, "args[0] holds a value of type 'object'"),
        (("after", 1, "record", {"nested": [1, {2, object()}]}), {}, "of type 'object'"),
        (("after", -1, "record", "x"), {}, "delay must be >= 0"),
        (("after", float("nan"), "record", "x"), {}, "finite"),
        (("after", True, "record", "x"), {}, "number of seconds"),
        (("after", "5", "record", "x"), {}, "number of seconds"),
        (("after", timedelta(seconds=-3), "record", "x"), {}, "delay must be >= 0"),
        (("at", datetime(2030, 1, 1), "record", "x"), {}, "timezone-aware"),
        (("at", -5, "record", "x"), {}, "epoch seconds >= 0"),
        (("at", "tomorrow", "record", "x"), {}, "datetime or epoch seconds"),
        (("cron", "c", "61 * * * *", "record", "x"), {}, "does not parse"),
        (("cron", "c", "every day", "record", "x"), {}, "has 2 fields"),
        (("cron", "c", "* * * * * *", "record", "x"), {}, "has 6 fields"),
        (("cron", "c", "", "record", "x"), {}, "non-empty string"),
        (("cron", "c", "0 0 30 2 *", "record", "x"), {}, "never names a time"),
        (("after", 1e12, "record", "x"), {}, "too far in the future"),
        (("at", 1e15, "record", "x"), {}, "too far in the future"),
        (("every", "e", 1e12, "record", "x"), {}, "too far in the future"),
        (("cron", "c", "0 9 * * *", "record", "x"), {"tz": "Mars/Olympus"}, "Unknown time zone"),
        (("cron", "", "0 9 * * *", "record", "x"), {}, "schedule name"),
        (("cron", "c", "0 9 * * *", "nope"), {}, "has no such action"),
        (("every", "e", 0, "record", "x"), {}, "interval must be > 0"),
        (("every", "e", -10, "record", "x"), {}, "interval must be > 0"),
        (("every", "x" * 129, 10, "record", "x"), {}, "schedule name"),
        (("after", 1, "record", "x"), {"misfire": "sometimes"}, "misfire must be one of"),
        (("after", 1, "record", "x"), {"max_attempts": 0}, "max_attempts must be an integer >= 1"),
    ],
)
async def test_bad_input_fails_at_the_call_and_stores_nothing(rivet_node, args, kwargs, message):
    actor_id = await make(rivet_node, ["bad"])
    with pytest.raises(InvalidSchedule) as error:
        await call(rivet_node, actor_id, "add", *args, **kwargs)
    assert (error.value.group, error.value.code) == ("schedule", "invalid")
    assert message in error.value.message
    assert await schedule_rows(actor_id) == []


async def test_bad_input_reaches_a_client_as_schedule_invalid(rivet_client):
    handle = rivet_client.scheduled.get_or_create(["bad-client"])
    with pytest.raises(ActorError) as error:
        await handle.add("after", -1, "record", "x")
    assert (error.value.group, error.value.code) == ("schedule", "invalid")
    assert "delay must be >= 0" in error.value.message


async def test_at_most_max_schedules_per_actor(transactional_db, settings):
    settings.RIVET = {**settings.RIVET, "MAX_SCHEDULES_PER_ACTOR": 3}
    async with running_node(clock=ManualClock()) as node:
        actor_id = await make(node, ["limit"])
        first = await call(node, actor_id, "add", "after", 5, "record", "1")
        await call(node, actor_id, "add", "after", 5, "record", "2")
        await call(node, actor_id, "add", "every", "tick", 5, "record", "3")
        with pytest.raises(TooManySchedules) as error:
            await call(node, actor_id, "add", "after", 5, "record", "4")
        assert (error.value.group, error.value.code) == ("schedule", "limit_exceeded")
        assert "MAX_SCHEDULES_PER_ACTOR is 3" in error.value.message
        # Re-declaring a name replaces it; it is not one more.
        await call(node, actor_id, "add", "every", "tick", 7, "record", "3b")
        assert len(await schedule_rows(actor_id)) == 3
        assert await call(node, actor_id, "cancel", first)
        await call(node, actor_id, "add", "after", 5, "record", "4")
        # The limit is per actor.
        other = await make(node, ["limit-other"])
        await call(node, other, "add", "after", 5, "record", "x")


# -- failures, retries, misfires ---------------------------------------------------------


async def test_failed_run_is_retried_with_exponential_backoff(clock_node):
    node, clock = clock_node, clock_node.runtime.clock
    actor_id = await make(node, ["retry"])
    await call(node, actor_id, "set_fail", 2)
    t0 = clock.time()
    schedule_id = await call(node, actor_id, "add", "after", 1, "flaky", "x")
    await fire_schedules(node, advance=1)
    first = await call(node, actor_id, "get_schedule", schedule_id)
    assert first["attempts"] == 1 and "UserError: not yet" in first["last_error"]
    assert first["retry_at"] == pytest.approx(clock.time() + 1)  # SCHEDULE_RETRY_BACKOFF
    assert first["due_at"] == pytest.approx(t0 + 1)  # still the run being retried
    assert await fire_schedules(node, advance=0.5) == 0  # not yet
    await fire_schedules(node, advance=0.5)
    second = await call(node, actor_id, "get_schedule", schedule_id)
    assert second["attempts"] == 2 and second["retry_at"] == pytest.approx(clock.time() + 2)  # doubled
    await fire_schedules(node, advance=2)
    assert tags(await call(node, actor_id, "runs")) == ["x"]
    assert await call(node, actor_id, "get_schedule", schedule_id) is None


async def test_retries_give_up_after_max_attempts(clock_node, caplog):
    node, clock = clock_node, clock_node.runtime.clock
    actor_id = await make(node, ["give-up"])
    t0 = clock.time()
    one_shot = await call(node, actor_id, "add", "after", 1, "boom", max_attempts=3)
    recurring = await call(node, actor_id, "add", "every", "e", 60, "boom", max_attempts=2)
    with caplog.at_level(logging.WARNING, logger="rivet_django.schedule"):
        await fire_schedules(node, advance=1)  # attempt 1; retry in 1 s
        await fire_schedules(node, advance=1)  # attempt 2; retry in 2 s
        await fire_schedules(node, advance=2)  # attempt 3: given up, dropped
        assert await call(node, actor_id, "get_schedule", one_shot) is None
        await fire_schedules(node, advance=60 - 4)  # the interval's first run fails...
        await fire_schedules(node, advance=1)  # ...and its retry: it moves to its next time
    state = await call(node, actor_id, "get_schedule", recurring)
    assert state["attempts"] == 0 and state["due_at"] == pytest.approx(t0 + 120)
    assert state["last_error"] == "RuntimeError: scheduled failure"
    assert "failed 3 time(s); giving up: RuntimeError: scheduled failure" in caplog.text
    assert "failed 2 time(s); giving up until its next time" in caplog.text
    assert node.runtime.scheduler.failures == 5


@pytest.mark.parametrize(
    ("policy", "ticks", "one_shots"),
    [("run_once", 1, 1), ("skip", 0, 0), ("run_all", 10, 1)],
)
async def test_misfire_policy_after_a_10_minute_outage(transactional_db, policy, ticks, one_shots):
    clock = ManualClock()
    t0 = clock.time()
    async with running_node(clock=clock) as node:
        actor_id = await make(node, ["misfire", policy])
        tick = await call(node, actor_id, "add", "every", "tick", 20, "record", "tick", misfire=policy)
        await call(node, actor_id, "add", "after", 30, "record", "once", misfire=policy)
        await crash_node(node)
    # Down for 10 minutes and a half: 31 runs of the interval were due, the newest 15 s ago.
    clock.advance(635)
    async with running_node(clock=clock) as node:
        await fire_schedules(node)
        runs = tags(await call(node, actor_id, "runs"))
        assert runs.count("tick") == ticks  # no flood: run_all stops at SCHEDULE_RUN_ALL_LIMIT
        assert runs.count("once") == one_shots
        # Whatever the policy, the interval continues at its next time after now, in phase.
        after = await call(node, actor_id, "get_schedule", tick)
        assert after["due_at"] == pytest.approx(t0 + 640)
        assert [r["kind"] for r in await call(node, actor_id, "schedules")] == ["every"]
        # And it is back to normal: one run per interval.
        await fire_schedules(node, advance=5)
        assert tags(await call(node, actor_id, "runs")).count("tick") == ticks + 1
    await sync_to_async(connections.close_all)()


def test_cron_misfire_plans():
    # 2024-01-01 00:00 UTC; "every 10 minutes", the system was down for an hour.
    base = datetime(2024, 1, 1, tzinfo=UTC).timestamp()
    record = ScheduleRecord(id="x", actor_id="a", kind="cron", action="f", args=b"", due_at=base, cron="*/10 * * * *")
    now = base + 3600 + 30
    once = plan_run(record, now, grace=10, run_all_limit=3)
    assert (once.run, once.next_due) == (True, base + 3600 + 600)
    record.misfire = "skip"
    assert plan_run(record, now, grace=10, run_all_limit=3).run is False
    assert plan_run(record, now, grace=60, run_all_limit=3).run is True  # the newest was 30 s ago
    record.misfire = "run_all"
    # 7 runs were due (00:00 ... 01:00): the last 3 run, from 00:40.
    first = plan_run(record, now, grace=10, run_all_limit=3)
    assert (first.run, first.next_due) == (True, base + 3000)
    plan = plan_run(record, now, grace=10, run_all_limit=10)
    assert (plan.run, plan.next_due) == (True, base + 600)  # all 7 fit: oldest first
    # Retried runs are not occurrences: the following one comes after them.
    record.due_at = base + 65
    assert plan_run(record, base + 70, grace=10, run_all_limit=3).next_due == base + 600


# -- durability --------------------------------------------------------------------------


async def test_schedule_survives_a_crash_and_fires_once(transactional_db):
    async with running_node() as node:
        actor_id = await make(node, ["crash"])
        due = time.time() + 0.6
        await call(node, actor_id, "add", "at", due, "record", "after-crash")
        await crash_node(node)  # kill -9 between scheduling and the due time
    async with running_node() as node:
        runs = await wait_for_runs(actor_id, 1, timeout=3)
        assert tags(runs) == ["after-crash"]
        assert runs[0]["at"] >= due
        await asyncio.sleep(0.5)
        assert tags(await stored_runs(actor_id)) == ["after-crash"]
        assert await schedule_rows(actor_id) == []
    await sync_to_async(connections.close_all)()


async def wait_until(check, timeout: float = 5.0):
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value or time.monotonic() > deadline:
            return value
        await asyncio.sleep(0.02)


async def test_a_run_longer_than_its_claim_keeps_it_and_fires_once(clock_node):
    node, clock = clock_node, clock_node.runtime.clock
    store = node.runtime.scheduler.store
    actor_id = await make(node, ["long-run"], name="slowScheduled")
    SLOW_STARTED.clear()
    await call(node, actor_id, "add", "after", 1, "slow", "long")
    clock.advance(1)
    firing = asyncio.ensure_future(node.runtime.scheduler.fire_due())
    try:
        assert await wait_until(lambda: _async("long" in SLOW_STARTED))

        async def lock_ahead(seconds: float) -> bool:
            [row] = await schedule_rows(actor_id)
            return row["locked_until"].timestamp() >= clock.time() + seconds

        # The run lasts 5 minutes of the scheduler's clock, far longer than one claim (120 s):
        # while it is in flight its claim is renewed before it runs out.
        for _ in range(3):
            clock.advance(100)
            assert await wait_until(lambda: lock_ahead(100)), "the claim was not renewed"
        # So no other process can claim the run meanwhile.
        other, _ = await store.claim_due(now=clock.time(), node_id="test-node", lock_until=clock.time() + 120, limit=10)
        assert other == []
    finally:
        SLOW_RELEASED.add("long")
        await asyncio.wait_for(firing, 5)
    # The run ended with its (renewed) claim: the one-shot is gone, and it ran once.
    assert await schedule_rows(actor_id) == []
    assert tags(await call(node, actor_id, "runs")) == ["long"]
    assert await fire_schedules(node, advance=300) == 0


async def test_a_long_run_whose_schedule_is_cancelled_stops_renewing_and_is_not_revived(clock_node, caplog):
    node, clock = clock_node, clock_node.runtime.clock
    scheduler = node.runtime.scheduler
    actor_id = await make(node, ["long-cancelled"], name="slowScheduled")
    SLOW_STARTED.clear()
    schedule_id = await call(node, actor_id, "add", "every", "slowly", 60, "slow", "cancelled")
    clock.advance(60)
    firing = asyncio.ensure_future(scheduler.fire_due())
    try:
        assert await wait_until(lambda: _async("cancelled" in SLOW_STARTED))
        assert await call(node, actor_id, "cancel", schedule_id) is True  # while its run is in flight
        clock.advance(100)
        with caplog.at_level(logging.WARNING, logger="rivet_django.schedule"):
            assert await wait_until(lambda: _async(not scheduler._claims)), "the lost claim is still renewed"
        assert "the claim of its run in flight was lost" in caplog.text
    finally:
        SLOW_RELEASED.add("cancelled")
        await asyncio.wait_for(firing, 5)
    # The run's end did not write the cancelled schedule back.
    assert await schedule_rows(actor_id) == []
    assert tags(await call(node, actor_id, "runs")) == ["cancelled"]


async def _async(value):
    return value


async def test_schedules_survive_a_clean_restart(transactional_db):
    clock = ManualClock()
    async with running_node(clock=clock) as node:
        actor_id = await make(node, ["restart"])
        schedule_id = await call(node, actor_id, "add", "every", "tick", 60, "record", "tick")
    async with running_node(clock=clock) as node:
        await fire_schedules(node, advance=60)
        assert tags(await call(node, actor_id, "runs")) == ["tick"]
        assert (await call(node, actor_id, "get_schedule", schedule_id))["due_at"] == pytest.approx(clock.time() + 60)
    await sync_to_async(connections.close_all)()


# -- precision (real time, short) ---------------------------------------------------------------


async def test_awake_actor_fires_within_100ms_in_due_order(rivet_node):
    actor_id = await make(rivet_node, ["precise"])
    start = time.time()
    delays = {"c": 0.35, "a": 0.15, "d": 0.45, "b": 0.25}
    due = {tag: start + 0.1 + delay for tag, delay in delays.items()}
    for tag, at in due.items():
        await call(rivet_node, actor_id, "add", "at", at, "record", tag)
    assert actor_id in rivet_node.runtime.instances
    runs = await wait_for_runs(actor_id, len(due), timeout=3)
    assert tags(runs) == ["a", "b", "c", "d"]
    for run in runs:
        late = run["at"] - due[run["tag"]]
        assert -0.002 <= late < 0.1, (run["tag"], late)


async def test_sleeping_actor_is_woken_within_1_5s(rivet_node):
    actor_id = await make(rivet_node, ["asleep"], name="sleepyScheduled")
    due = time.time() + 0.5
    await call(rivet_node, actor_id, "add", "at", due, "record", "wake")
    await call(rivet_node, actor_id, "add", "every", "hourly", 3600, "record", "hourly")
    await rivet_node.runtime.sleep_actor(actor_id)
    assert actor_id not in rivet_node.runtime.instances
    [run] = await wait_for_runs(actor_id, 1, timeout=3)
    assert 0 <= run["at"] - due < 1.5
    # Pending schedules do not keep it awake: it falls asleep again.
    deadline = time.monotonic() + 3
    while actor_id in rivet_node.runtime.instances and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert actor_id not in rivet_node.runtime.instances


async def test_schedule_written_by_another_process_fires_within_1_5s(rivet_node):
    actor_id = await make(rivet_node, ["external"], name="sleepyScheduled")
    await rivet_node.runtime.sleep_actor(actor_id)
    due = time.time() + 0.3
    # Straight into the database: this node has no timer for it; its poll finds it.
    await sync_to_async(ActorSchedule.objects.create)(
        id="external1", actor_id=actor_id, kind="at", action="record", args=serde.dumps(["external"]),
        due_at=datetime.fromtimestamp(due, UTC),
    )  # fmt: skip
    [run] = await wait_for_runs(actor_id, 1, timeout=3)
    assert run["tag"] == "external" and 0 <= run["at"] - due < 1.5


# -- the celery driver, in process ----------------------------------------------------------


async def test_celery_driver_nodes_do_not_poll_and_run_what_is_dispatched(transactional_db, settings):
    from rivet_django.tasks import dispatch_due_schedules

    settings.RIVET = {**settings.RIVET, "SCHEDULER": "celery"}
    async with running_node() as node:
        assert node.runtime.scheduler.config.mode == "celery"
        actor_id = await make(node, ["celery-in-process"])
        await sync_to_async(ActorSchedule.objects.create)(
            id="dispatched1", actor_id=actor_id, kind="at", action="record", args=serde.dumps(["dispatched"]),
            due_at=datetime.fromtimestamp(time.time() - 1, UTC),
        )  # fmt: skip
        await asyncio.sleep(1.2)  # longer than the embedded driver's poll
        assert await stored_runs(actor_id) == []
        # The beat task (called here directly) claims it and sends it to the owning node.
        assert await sync_to_async(dispatch_due_schedules)() == 1
        runs = await wait_for_runs(actor_id, 1, timeout=3)
        assert tags(runs) == ["dispatched"]
        assert await sync_to_async(dispatch_due_schedules)() == 0
        # Schedules made through the node keep their precise timers.
        due = time.time() + 0.2
        await call(node, actor_id, "add", "at", due, "record", "local")
        runs = await wait_for_runs(actor_id, 2, timeout=2)
        assert tags(runs) == ["dispatched", "local"] and runs[1]["at"] - due < 0.1
    await sync_to_async(connections.close_all)()


# -- the reminder demo, over HTTP, with kill -9 --------------------------------------------------


def _wait(predicate, timeout: float):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.05)


def test_reminder_demo_and_kill_9(tmp_path):
    server = LiveServer(str(tmp_path / "db.sqlite3"), node_id="reminder-node")
    server.start()
    try:
        with Client(server.endpoint) as client:
            ann = client.reminder.get_or_create(["ann"])
            events: list = []
            conn = ann.connect()
            conn.on("reminder", events.append)
            ann.remind_in(0.2, "stretch")
            assert _wait(lambda: ann.fired(), 3)[0]["text"] == "stretch"
            assert _wait(lambda: events, 3)[0]["text"] == "stretch"
            conn.dispose()

            soon = datetime.now(UTC) + timedelta(hours=1)
            at_id = ann.remind_at(soon.isoformat(), "meeting")
            daily = ann.daily("standup", "0 9 * * 1-5", "stand-up", "Europe/Paris")
            assert ann.daily("standup", "30 9 * * 1-5", "stand-up", "Europe/Paris") == daily
            listed = ann.list()
            assert (listed[0]["id"], listed[0]["text"]) == (at_id, "meeting")
            assert {r["id"]: r["cron"] for r in listed}[daily] == "30 9 * * 1-5"
            assert ann.cancel(at_id) is True and [r["id"] for r in ann.list()] == [daily]
            with pytest.raises(ActorError) as bad:
                ann.daily("broken", "every morning", "x")
            assert (bad.value.group, bad.value.code) == ("schedule", "invalid")

            bob = client.reminder.get_or_create(["bob"])
            due = time.time() + 1.5
            bob.remind_at(due, "after the crash")
        server.kill()  # kill -9 between scheduling and the due time
        server.start()
        with Client(server.endpoint) as client:
            bob = client.reminder.get_or_create(["bob"])
            fired = _wait(lambda: bob.fired(), 6)
            assert [f["text"] for f in fired] == ["after the crash"] and fired[0]["at"] >= due
            time.sleep(1.0)
            assert len(bob.fired()) == 1  # once
    finally:
        try:
            server.stop()
        finally:
            server.kill()
