"""The runtime in-process against the real database: lifecycle, durability, fencing, sleep, KV."""

from __future__ import annotations

import asyncio
import gc
import sys
import weakref
from collections import OrderedDict

import pytest
from asgiref.sync import sync_to_async

from rivet_django.exceptions import (
    ActionNotFound,
    ActionTimedOut,
    ActorNotFound,
    DuplicateKey,
    Forbidden,
    InvalidRequest,
    LostOwnership,
    StateNotEnabled,
    StateNotSerializable,
    UserError,
)
from rivet_django.models import Actor as ActorRow
from rivet_django.models import ActorKV, ActorStatus
from rivet_django.runtime import serde
from rivet_django.runtime.host import compact
from rivet_django.runtime.instance import InstanceStatus
from rivet_django.runtime.store import StateWrite
from rivet_django.testing import crash_node, running_node
from tests.helpers import eventually, make
from tests.testapp.actors import EVENTS

pytestmark = pytest.mark.django_db(transaction=True)


@sync_to_async
def row(actor_id: str) -> ActorRow:
    return ActorRow.objects.get(pk=actor_id)


async def stored_state(actor_id: str):
    r = await row(actor_id)
    return None if r.state is None else serde.loads(bytes(r.state))


async def test_action_result_and_state_committed_before_reply(rivet_node):
    actor_id = await make(rivet_node, "counter", ["c1"])
    assert await rivet_node.router.call_action(actor_id, "increment", [5]) == 5
    # Commit durability: the reply came after the commit, so storage already has it.
    assert await stored_state(actor_id) == {"count": 5}
    assert await rivet_node.router.call_action(actor_id, "getCount") == 5
    assert await rivet_node.router.call_action(actor_id, "add_kw", [1], {"b": 2}) == 8


async def test_group_commit_batches_concurrent_calls(rivet_node):
    ids = [await make(rivet_node, "counter", [f"g{i}"]) for i in range(20)]
    before = rivet_node.runtime.committer.transactions
    results = await asyncio.gather(*(rivet_node.router.call_action(a, "increment", [1]) for a in ids * 5))
    assert sorted(results) == sorted([1, 2, 3, 4, 5] * 20)
    transactions = rivet_node.runtime.committer.transactions - before
    # 100 acknowledged writes, far fewer transactions.
    assert transactions < 100
    for a in ids:
        assert await stored_state(a) == {"count": 5}


async def test_committed_writes_are_not_kept_after_their_commit(rivet_node):
    """Nothing of a committed batch stays referenced (a sleeping actor's last state included)."""
    actor_id = await make(rivet_node, "counter", ["kept"])
    await rivet_node.router.call_action(actor_id, "increment", [1])
    inst = rivet_node.runtime.instances[actor_id]
    future = rivet_node.runtime.committer.submit(StateWrite(actor_id, inst.generation, b"\xa0"))
    await asyncio.wait_for(future, 5)
    gone = weakref.ref(future)
    del future
    gc.collect()
    assert gone() is None


async def test_trim_shrinks_what_indexed_actors_that_went_to_sleep(rivet_node):
    runtime, router = rivet_node.runtime, rivet_node.router
    ids = [await make(rivet_node, "counter", [f"trim{i}"]) for i in range(400)]
    for actor_id in ids:
        await router.call_action(actor_id, "increment", [1])
    keep = ids[0]
    for actor_id in ids[1:]:
        runtime.instances[actor_id].last_activity -= 100
    assert await runtime.reap_idle() == 399

    async def asleep() -> bool:
        return list(runtime.instances) == [keep]

    await eventually(asleep)
    assert len(router._ids) == 1
    big_instances, big_ids = sys.getsizeof(runtime.instances), sys.getsizeof(router._ids)

    runtime.trim()

    assert sys.getsizeof(runtime.instances) < big_instances / 4
    assert sys.getsizeof(router._ids) < big_ids / 4
    # Same contents: the awake actor is still found, and the sleeping ones wake.
    assert list(runtime.instances) == [keep] and len(router._ids) == 1
    assert await router.call_action(keep, "increment", [1]) == 2
    assert await router.call_action(ids[7], "increment", [1]) == 2


def test_compact_keeps_contents_and_order():
    table = OrderedDict((i, str(i)) for i in range(5000))
    for i in range(10, 5000):
        del table[i]
    table.move_to_end(3)
    before = sys.getsizeof(table)
    compact(table)
    assert list(table.items()) == [(i, str(i)) for i in (0, 1, 2, 4, 5, 6, 7, 8, 9, 3)]
    assert sys.getsizeof(table) < before / 10


async def test_lifecycle_order_on_create_wake_sleep(rivet_node):
    EVENTS.clear()
    actor_id = await make(rivet_node, "lifecycle", ["order"], input={"x": 1})
    info = await rivet_node.router.call_action(actor_id, "info")
    assert info["state"] == {"input": {"x": 1}, "wakes": 1}
    assert info["vars"] == {"ephemeral": 1}
    assert info["name"] == "lifecycle" and info["key"] == ["order"] and info["id"] == actor_id
    assert info["namespace"] == "default"
    hooks = [h for k, h in EVENTS if k == "order"]
    assert hooks == ["create_state", "on_create", "create_vars", "on_wake", "on_state_change"]
    EVENTS.clear()
    await rivet_node.runtime.sleep_actor(actor_id)
    assert actor_id not in rivet_node.runtime.instances
    r = await row(actor_id)
    assert r.status == ActorStatus.SLEEPING and r.node is None
    info = await rivet_node.router.call_action(actor_id, "info")
    assert info["state"]["wakes"] == 2
    # No create_state/on_create on wake.
    assert [h for k, h in EVENTS if k == "order"] == ["on_sleep", "create_vars", "on_wake", "on_state_change"]


async def test_idle_actor_sleeps_and_wakes_on_next_call(rivet_node):
    actor_id = await make(rivet_node, "lifecycle", ["idle"])
    await rivet_node.router.call_action(actor_id, "touch")
    inst = rivet_node.runtime.instances[actor_id]
    inst.last_activity -= 10
    assert await rivet_node.runtime.reap_idle() == 1
    await asyncio.wait_for(inst.stopped, 5)
    assert actor_id not in rivet_node.runtime.instances
    assert (await row(actor_id)).status == ActorStatus.SLEEPING
    assert await rivet_node.router.call_action(actor_id, "touch") == 2


async def test_real_idle_timer_puts_actor_to_sleep(transactional_db):
    async with running_node() as node:
        actor_id = await make(node, "lifecycle", ["timer"])
        await node.router.call_action(actor_id, "touch")
        for _ in range(100):
            if actor_id not in node.runtime.instances:
                break
            await asyncio.sleep(0.05)
        assert actor_id not in node.runtime.instances


async def test_no_sleep_actor_stays_awake(rivet_node):
    actor_id = await make(rivet_node, "noSleep", ["ns"])
    await rivet_node.router.call_action(actor_id, "bump")
    rivet_node.runtime.instances[actor_id].last_activity -= 100
    assert await rivet_node.runtime.reap_idle() == 0
    assert actor_id in rivet_node.runtime.instances


async def test_sleep_requested_by_actor(rivet_node):
    actor_id = await make(rivet_node, "lifecycle", ["selfsleep"])
    assert await rivet_node.router.call_action(actor_id, "go_to_sleep") == "ok"
    inst = rivet_node.runtime.instances.get(actor_id)
    if inst is not None:
        await asyncio.wait_for(inst.stopped, 5)
    assert (await row(actor_id)).status == ActorStatus.SLEEPING


async def test_calls_during_stopping_wait_and_wake_again(rivet_node):
    actor_id = await make(rivet_node, "counter", ["stopping"])
    await rivet_node.router.call_action(actor_id, "increment", [1])
    slow = asyncio.ensure_future(rivet_node.router.call_action(actor_id, "slow_increment", [10, 0.2]))
    await asyncio.sleep(0.05)
    inst = rivet_node.runtime.instances[actor_id]
    inst.stop()
    assert inst.status is InstanceStatus.STOPPING
    # Arrives while stopping: waits for the stop, then wakes a new instance.
    assert await rivet_node.router.call_action(actor_id, "increment", [100]) == 111
    assert await slow == 11
    assert rivet_node.runtime.instances[actor_id] is not inst


async def test_destroy_deletes_state_kv_and_frees_key(rivet_node):
    actor_id = await make(rivet_node, "storage", ["d"])
    await rivet_node.router.call_action(actor_id, "set_state", ["v"])
    await rivet_node.router.call_action(actor_id, "kv_put", ["k", "v"])
    assert await sync_to_async(ActorKV.objects.filter(actor_id=actor_id).count)() == 1
    assert await rivet_node.router.destroy(actor_id)
    r = await row(actor_id)
    assert r.status == ActorStatus.DESTROYED and r.state is None and r.key_hash is None
    assert await sync_to_async(ActorKV.objects.filter(actor_id=actor_id).count)() == 0
    with pytest.raises(ActorNotFound):
        await rivet_node.router.call_action(actor_id, "get_state")
    assert await rivet_node.router.get("default", "storage", ["d"]) is None
    fresh = await make(rivet_node, "storage", ["d"])
    assert fresh != actor_id
    assert await rivet_node.router.call_action(fresh, "get_state") is None


async def test_destroy_requested_by_actor(rivet_node):
    EVENTS.clear()
    actor_id = await make(rivet_node, "lifecycle", ["boom"])
    assert await rivet_node.router.call_action(actor_id, "self_destruct") == "bye"
    inst = rivet_node.runtime.instances.get(actor_id)
    if inst is not None:
        await asyncio.wait_for(inst.stopped, 5)
    assert (await row(actor_id)).status == ActorStatus.DESTROYED
    assert ("boom", "on_destroy") in EVENTS


async def test_create_duplicate_and_get_missing(rivet_node):
    await rivet_node.router.create("default", "counter", ["dup"])
    with pytest.raises(DuplicateKey):
        await rivet_node.router.create("default", "counter", ["dup"])
    assert await rivet_node.router.get("default", "counter", ["missing"]) is None
    with pytest.raises(ActorNotFound):
        await rivet_node.router.resolve(namespace="default", method="get", name="counter", key=["missing"])
    with pytest.raises(ActorNotFound):
        await rivet_node.router.get_or_create("default", "nope", ["x"])


async def test_namespaces_isolate_actors(rivet_node):
    a, _ = await rivet_node.router.get_or_create("ns-a", "counter", ["same"])
    b, _ = await rivet_node.router.get_or_create("ns-b", "counter", ["same"])
    assert a.actor_id != b.actor_id


async def test_errors_reach_caller_and_state_stays(rivet_node):
    actor_id = await make(rivet_node, "errors", ["e"])
    with pytest.raises(UserError) as info:
        await rivet_node.router.call_action(actor_id, "user_error")
    assert info.value.code == "custom_code" and info.value.metadata == {"why": "because"}
    with pytest.raises(Forbidden):
        await rivet_node.router.call_action(actor_id, "forbidden")
    with pytest.raises(ValueError):
        await rivet_node.router.call_action(actor_id, "internal")
    with pytest.raises(ActionNotFound):
        await rivet_node.router.call_action(actor_id, "no_such_action")
    with pytest.raises(InvalidRequest):
        await rivet_node.router.call_action(actor_id, "slow", [1, 2, 3])
    with pytest.raises(ActionTimedOut):
        await rivet_node.router.call_action(actor_id, "slow", [5])
    assert await rivet_node.router.call_action(actor_id, "value") == 1


async def test_non_serializable_state_keeps_last_good_state(rivet_node):
    actor_id = await make(rivet_node, "errors", ["ser"])
    with pytest.raises(StateNotSerializable) as info:
        await rivet_node.router.call_action(actor_id, "bad_state")
    message = str(info.value)
    assert "errors" in message and actor_id in message and "'object'" in message
    # The partial mutation was rolled back with the bad value.
    assert await rivet_node.router.call_action(actor_id, "value") == 1
    assert await stored_state(actor_id) == {"value": 1}


async def test_state_not_enabled(rivet_node):
    actor_id = await make(rivet_node, "stateless", ["s"])
    assert await rivet_node.router.call_action(actor_id, "ping") == "pong"
    with pytest.raises(StateNotEnabled):
        await rivet_node.router.call_action(actor_id, "read_state")


async def test_async_actions_interleave_only_at_awaits(rivet_node):
    actor_id = await make(rivet_node, "counter", ["inter"])
    # Two slow increments read, await, write: the second overwrites (lost update),
    # which proves they interleave at the await; sync increments never interleave.
    results = await asyncio.gather(
        rivet_node.router.call_action(actor_id, "slow_increment", [1, 0.05]),
        rivet_node.router.call_action(actor_id, "slow_increment", [2, 0.05]),
    )
    assert results == [1, 2]
    results = await asyncio.gather(*(rivet_node.router.call_action(actor_id, "increment", [1]) for _ in range(50)))
    assert sorted(results) == list(range(3, 53))


async def test_throttled_durability_saves_in_batches(rivet_node):
    actor_id = await make(rivet_node, "throttled", ["t"])
    for _ in range(5):
        await rivet_node.router.call_action(actor_id, "bump")
    # Replies came before any save; the batched save follows within the interval.
    assert (await stored_state(actor_id)) == {"n": 0}
    for _ in range(40):
        await asyncio.sleep(0.05)
        if (await stored_state(actor_id)) == {"n": 5}:
            break
    assert (await stored_state(actor_id)) == {"n": 5}


async def test_fencing_stale_generation_never_overwrites(rivet_node):
    actor_id = await make(rivet_node, "counter", ["fence"])
    await rivet_node.router.call_action(actor_id, "increment", [1])
    # Another node claims the actor: the generation moves on and it writes its own state.
    await sync_to_async(
        lambda: ActorRow.objects.filter(pk=actor_id).update(
            generation=ActorRow.objects.get(pk=actor_id).generation + 1,
            node="other-node",
            state=serde.dumps({"count": 1000}),
        )
    )()
    with pytest.raises(LostOwnership):
        await rivet_node.router.call_action(actor_id, "increment", [1])
    assert await stored_state(actor_id) == {"count": 1000}
    # The stale instance was dropped, and KV writes are fenced the same way.
    assert actor_id not in rivet_node.runtime.instances


async def test_fenced_kv_write(rivet_node):
    actor_id = await make(rivet_node, "storage", ["fkv"])
    await rivet_node.router.call_action(actor_id, "kv_put", ["a", 1])
    await sync_to_async(lambda: ActorRow.objects.filter(pk=actor_id).update(generation=999))()
    with pytest.raises(LostOwnership):
        await rivet_node.router.call_action(actor_id, "kv_put", ["a", 2])
    assert await sync_to_async(lambda: serde.loads(bytes(ActorKV.objects.get(actor_id=actor_id).value)))() == 1


async def test_kv_operations(rivet_node):
    actor_id = await make(rivet_node, "storage", ["kv"])
    call = rivet_node.router.call_action
    await call(actor_id, "kv_put", ["user:2", {"n": 2}])
    await call(actor_id, "kv_put", ["user:1", b"\x00bytes"])
    await call(actor_id, "kv_put", ["other", "x"])
    assert await call(actor_id, "kv_get", ["user:1"]) == b"\x00bytes"
    assert await call(actor_id, "kv_get", ["nope"]) is None
    assert await call(actor_id, "kv_list", ["user:"]) == [("user:1", b"\x00bytes"), ("user:2", {"n": 2})]
    await call(actor_id, "kv_delete", ["user:1"])
    assert await call(actor_id, "kv_list", ["user:"]) == [("user:2", {"n": 2})]
    inst = rivet_node.runtime.instances[actor_id]
    await inst.kv.put_many({b"\x01a": 1, b"\x01b": 2, b"\x02": 3})
    assert await inst.kv.get_many([b"\x01a", b"\x02", b"zz"]) == [1, 3, None]
    assert [k for k, _ in await inst.kv.list_range(b"\x01", b"\x02")] == [b"\x01a", b"\x01b"]
    await inst.kv.delete_range(b"\x01", b"\x02")
    assert await inst.kv.list(b"\x01") == []
    with pytest.raises(InvalidRequest):
        await inst.kv.put("k" * 5000, 1)


async def test_state_roundtrips_bytes_bigints_nested(rivet_node):
    actor_id = await make(rivet_node, "storage", ["types"])
    value = {"big": 2**100, "neg": -(2**70), "raw": b"\x00\xff", "nested": [{"a": [1, 2, {"b": None}]}], "f": 1.5}
    await rivet_node.router.call_action(actor_id, "set_state", [value])
    await rivet_node.runtime.sleep_actor(actor_id)
    assert await stored_state(actor_id) == {"value": value}
    assert await rivet_node.router.call_action(actor_id, "get_state") == value


async def test_crash_and_restart_keeps_acknowledged_state(transactional_db):
    async with running_node(node_id="crashy") as node:
        actor_id = await make(node, "counter", ["crash"])
        for _ in range(10):
            await node.router.call_action(actor_id, "increment", [1])
        await crash_node(node)
    async with running_node(node_id="crashy") as node:
        assert await node.router.call_action(actor_id, "getCount") == 10
        r = await row(actor_id)
        assert r.generation >= 2


async def test_shutdown_sleeps_every_actor_with_final_flush(transactional_db):
    async with running_node() as node:
        thr = await make(node, "throttled", ["flush"])
        for _ in range(3):
            await node.router.call_action(thr, "bump")
    # The throttled interval never passed; the final flush at shutdown wrote it.
    assert await stored_state(thr) == {"n": 3}
    assert (await row(thr)).status == ActorStatus.SLEEPING


async def test_connect_hooks_run_on_stateless_calls(rivet_node):
    actor_id = await make(rivet_node, "connecting", ["c"])
    out = await rivet_node.router.call_action(actor_id, "whoami", params={"user": "ann"})
    assert out == {"user": "ann", "conns": 1, "params": {"user": "ann"}}
    assert await rivet_node.router.call_action(actor_id, "counts") == {"connects": 2, "disconnects": 1}
    with pytest.raises(Forbidden):
        await rivet_node.router.call_action(actor_id, "whoami", params={"deny": True})
    assert rivet_node.runtime.instances[actor_id].conns == {}


def test_connection_id_is_made_once_when_first_asked_for():
    from rivet_django.runtime.conn import Conn

    conn = Conn()
    first = conn.id
    assert len(first) == 16 and conn.id == first
    assert Conn().id != first
    assert Conn(conn_id="given").id == "given"
