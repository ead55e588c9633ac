"""``async def run(self)``: starts after on_wake, survives calls, stops on sleep within the grace period."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest
from asgiref.sync import sync_to_async

from rivet_django.models import Actor as ActorRow
from rivet_django.models import ActorStatus
from rivet_django.runtime import serde
from tests.testapp.actors import RUN_LOG

pytestmark = pytest.mark.django_db(transaction=True)


async def make(node, name, key):
    record, _ = await node.router.get_or_create("default", name, [key])
    return record.actor_id


async def test_run_starts_after_on_wake_and_keeps_running_across_calls(rivet_node):
    RUN_LOG.clear()
    actor_id = await make(rivet_node, "ticker", "t1")
    first = await rivet_node.router.call_action(actor_id, "ticks")
    await asyncio.sleep(0.1)
    second = await rivet_node.router.call_action(actor_id, "ticks")
    assert second > first
    assert [e for k, e in RUN_LOG if k == "t1"][:2] == ["on_wake", "run"]


async def test_sleep_aborts_the_run_loop_and_flushes_its_state(rivet_node):
    RUN_LOG.clear()
    actor_id = await make(rivet_node, "ticker", "t2")
    await rivet_node.router.call_action(actor_id, "ticks")
    await asyncio.sleep(0.05)
    started = time.monotonic()
    await rivet_node.runtime.sleep_actor(actor_id)
    assert time.monotonic() - started < 1.0
    assert ("t2", "run-stopped") in RUN_LOG
    row = await sync_to_async(ActorRow.objects.get)(pk=actor_id)
    assert row.status == ActorStatus.SLEEPING
    # Ticks counted by the loop are in the final flush.
    assert serde.loads(bytes(row.state))["ticks"] > 0


async def test_a_run_that_ignores_abort_is_cancelled_after_run_stop_timeout(rivet_node):
    RUN_LOG.clear()
    actor_id = await make(rivet_node, "stubborn", "s1")
    assert await rivet_node.router.call_action(actor_id, "ping") == "pong"
    started = time.monotonic()
    await rivet_node.runtime.sleep_actor(actor_id)
    elapsed = time.monotonic() - started
    assert 0.15 <= elapsed < 2.0
    assert ("s1", "cancelled") in RUN_LOG


@pytest.mark.parametrize("key", ["raise-1", "return-1"])
async def test_a_run_that_raises_or_returns_leaves_the_actor_alive(rivet_node, key, caplog):
    with caplog.at_level(logging.ERROR, logger="rivet_django.actor"):
        actor_id = await make(rivet_node, "crashy", key)
        await asyncio.sleep(0.05)
        assert await rivet_node.router.call_action(actor_id, "ping") == "pong"
    assert ("run loop exploded" in caplog.text) == key.startswith("raise")
    # It still sleeps later like any idle actor.
    inst = rivet_node.runtime.instances[actor_id]
    inst.last_activity -= 1000
    assert await rivet_node.runtime.reap_idle() == 1
