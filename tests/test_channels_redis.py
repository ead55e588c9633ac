"""Broadcasts cross processes through the actor's group on a real Redis channel layer."""

from __future__ import annotations

import asyncio
import os
import uuid

import pytest
from channels_redis.core import RedisChannelLayer

from rivet_django.broadcast import actor_group
from rivet_django.runtime import serde
from rivet_django.testing import running_node

pytestmark = pytest.mark.django_db(transaction=True)

REDIS = os.environ.get("RIVET_TEST_REDIS", "redis://127.0.0.1:6379")


@pytest.fixture
def redis_layer(settings):
    prefix = f"rivet-test-{uuid.uuid4().hex[:8]}"
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [{"address": REDIS, "socket_timeout": None}], "prefix": prefix},
        }
    }
    return prefix


async def test_broadcast_reaches_a_group_member_in_another_layer_client(redis_layer):
    # A second layer client: what a consumer in another process would use.
    remote = RedisChannelLayer(hosts=[{"address": REDIS, "socket_timeout": None}], prefix=redis_layer)
    async with running_node() as node:
        assert node.runtime.publisher is not None
        record, _ = await node.router.get_or_create("default", "room", ["redis"])
        channel = await remote.new_channel()
        await remote.group_add(actor_group(record.actor_id), channel)
        conn = await node.runtime.connect(record.actor_id, {"name": "ann"}, transport="local")
        for i in range(5):
            await node.runtime.call_action(record.actor_id, "send", [f"m{i}"], conn=conn)
        received = []
        for _ in range(5):
            message = await asyncio.wait_for(remote.receive(channel), 5)
            received.append(message)
        assert [m["name"] for m in received] == ["message"] * 5
        assert [serde.loads(m["args"]) for m in received] == [["ann", f"m{i}"] for i in range(5)]
        assert all(m["actor_id"] == record.actor_id for m in received)
        await node.runtime.disconnect(conn)
    await remote.flush()


async def test_in_memory_layer_publishes_nothing(settings):
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    from rivet_django.node import LocalNode

    node = LocalNode()
    try:
        assert node.runtime.publisher is None
    finally:
        await node.store.close()
