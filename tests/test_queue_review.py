"""Durable queues: races and leaks found in review (waiting senders, consumers)."""

from __future__ import annotations

import asyncio

import pytest

from rivet_django.exceptions import ActorNotFound
from tests.helpers import make

pytestmark = pytest.mark.django_db(transaction=True)


async def test_destroy_ends_a_sender_waiting_without_timeout(rivet_node):
    actor_id = await make(rivet_node, "inbox", ["destroy-waiting"])
    hub = rivet_node.runtime.queues
    # Nobody consumes "q": the sender waits for a completion that can no longer come once the actor is gone.
    waiting = asyncio.ensure_future(hub.send(actor_id, "q", "hello", wait=True))
    await asyncio.sleep(0.1)
    assert not waiting.done()
    assert await rivet_node.runtime.destroy_actor(actor_id)
    with pytest.raises(ActorNotFound, match="destroyed"):
        await asyncio.wait_for(waiting, 2)
    assert hub._senders == {}


async def test_a_waiting_sender_is_answered_after_the_actor_slept_and_woke(rivet_node):
    actor_id = await make(rivet_node, "inbox", ["sleep-waiting"])
    hub = rivet_node.runtime.queues
    waiting = asyncio.ensure_future(hub.send(actor_id, "q", "hello", wait=True))
    await asyncio.sleep(0.1)
    await rivet_node.runtime.sleep_actor(actor_id)
    assert actor_id not in rivet_node.runtime.instances and not waiting.done()
    # A later wake consumes it (the action acknowledges it when it returns): the sender hears of it.
    assert (await rivet_node.router.call_action(actor_id, "try_next", []))["body"] == "hello"
    assert await asyncio.wait_for(waiting, 2) == {"status": "completed"}
    assert hub._senders == {} and hub._waited == {}


async def test_a_timed_out_sender_leaves_nothing_behind(rivet_node):
    actor_id = await make(rivet_node, "inbox", ["timeout-waiting"])
    hub = rivet_node.runtime.queues
    assert await hub.send(actor_id, "q", "x", wait=True, timeout=0.05) == {"status": "timedOut"}
    await asyncio.sleep(0)  # the index forgets it in a done callback
    assert hub._senders == {} and hub._waited == {}
    # Completing the message later answers nobody, and fails nothing.
    assert (await rivet_node.router.call_action(actor_id, "try_next", []))["body"] == "x"
