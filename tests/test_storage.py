"""The ORM store on its own (run on SQLite and PostgreSQL): ids, keys, claims, fencing, KV."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from django.db import connections
from django.utils import timezone

from rivet_django.exceptions import ActorStopping, DuplicateKey, LostOwnership
from rivet_django.models import Actor, ActorKV, ActorStatus, Node
from rivet_django.runtime.store import StateWrite
from rivet_django.storage.store import DjangoActorStore, key_hash

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
async def store():
    s = DjangoActorStore(threads=2)
    yield s
    await s.close()
    # This module's own sync_to_async queries ran on asgiref's thread: close its connection.
    await sync_to_async(connections.close_all)()


async def test_create_get_and_duplicate_keys(store):
    record = await store.create("ns", "counter", ["a", "b/c"], b"\xa0")
    assert record.key == ("a", "b/c") and record.namespace == "ns" and record.created_ms > 0
    assert await store.get_by_key("ns", "counter", ["a", "b/c"]) == record
    assert await store.get_by_id(record.actor_id) == record
    assert await store.get_by_key("other", "counter", ["a", "b/c"]) is None
    assert await store.get_by_key("ns", "counter", ["a", "b", "c"]) is None
    with pytest.raises(DuplicateKey):
        await store.create("ns", "counter", ["a", "b/c"], None)
    again, created = await store.get_or_create("ns", "counter", ["a", "b/c"], None)
    assert again.actor_id == record.actor_id and created is False
    assert [r.actor_id for r in await store.list_by_name("ns", "counter")] == [record.actor_id]


async def test_concurrent_get_or_create_makes_one_actor(store):
    results = await asyncio.gather(*(store.get_or_create("ns", "counter", ["race"], None) for _ in range(10)))
    assert len({r.actor_id for r, _ in results}) == 1
    assert sum(created for _, created in results) == 1


async def test_claim_bumps_generation_and_respects_live_leases(store):
    record = await store.create("ns", "counter", ["claim"], None)
    first = await store.claim(record.actor_id, "node-a", 30)
    assert first is not None and first.generation == 1 and not first.initialized
    # The same node may claim again (a restart); the generation moves on.
    again = await store.claim(record.actor_id, "node-a", 30)
    assert again is not None and again.generation == 2
    with pytest.raises(ActorStopping):
        await store.claim(record.actor_id, "node-b", 30)
    await sync_to_async(
        lambda: Actor.objects.filter(pk=record.actor_id).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    )()
    taken = await store.claim(record.actor_id, "node-b", 30)
    assert taken is not None and taken.generation == 3
    assert await store.claim("no-such-actor", "node-a", 30) is None


async def test_commit_is_fenced_by_generation(store):
    a = await store.create("ns", "counter", ["fa"], None)
    b = await store.create("ns", "counter", ["fb"], None)
    ca = await store.claim(a.actor_id, "n", 30)
    cb = await store.claim(b.actor_id, "n", 30)
    fenced = await store.commit([
        StateWrite(a.actor_id, ca.generation, b"\x01", initialized=True),
        StateWrite(b.actor_id, cb.generation - 1, b"\x02"),  # stale
    ])
    assert fenced == {b.actor_id}
    row_a = await sync_to_async(Actor.objects.get)(pk=a.actor_id)
    row_b = await sync_to_async(Actor.objects.get)(pk=b.actor_id)
    assert bytes(row_a.state) == b"\x01" and row_a.initialized
    assert row_b.state is None
    # Release on sleep: status, owner and lease go in the same write.
    assert await store.commit([StateWrite(a.actor_id, ca.generation, b"\x03", release=True)]) == set()
    row_a = await sync_to_async(Actor.objects.get)(pk=a.actor_id)
    assert (row_a.status, row_a.node, row_a.lease_expires_at) == (ActorStatus.SLEEPING, None, None)
    assert row_a.slept_at is not None


@pytest.mark.parametrize("size", [1, 3, 64, 70])
async def test_batched_state_writes_store_each_state_and_fence_only_stale_ones(store, size):
    """The group commit's plain state changes go in one statement per 64 actors (padded
    to a power of two): every actor gets its own state; a stale generation is fenced alone."""
    records = [await store.create("ns", "counter", [f"batch{size}-{i}"], None) for i in range(size)]
    claims = [await store.claim(r.actor_id, "n", 30) for r in records]
    stale = {records[i].actor_id for i in range(0, size, 3)}
    writes = [
        StateWrite(r.actor_id, c.generation - (r.actor_id in stale), f"state-{i}".encode())
        for i, (r, c) in enumerate(zip(records, claims, strict=True))
    ]
    assert await store.commit(writes) == stale
    rows = await sync_to_async(lambda: {a.pk: a for a in Actor.objects.filter(pk__in=[r.actor_id for r in records])})()
    for i, r in enumerate(records):
        row = rows[r.actor_id]
        if r.actor_id in stale:
            assert row.state is None
        else:
            assert bytes(row.state) == f"state-{i}".encode() and row.last_active_at is not None


async def test_destroy_frees_key_and_deletes_kv(store):
    record = await store.create("ns", "counter", ["gone"], None)
    claimed = await store.claim(record.actor_id, "n", 30)
    await store.kv_put_many(record.actor_id, claimed.generation, [(b"k", b"v")])
    assert not await store.destroy(record.actor_id, claimed.generation - 1)
    assert await store.destroy(record.actor_id, claimed.generation)
    assert await sync_to_async(ActorKV.objects.count)() == 0
    row = await sync_to_async(Actor.objects.get)(pk=record.actor_id)
    assert row.key_hash is None and row.status == ActorStatus.DESTROYED
    assert (await store.get_by_id(record.actor_id)).destroyed
    assert await store.claim(record.actor_id, "n", 30) is None
    fresh = await store.create("ns", "counter", ["gone"], None)
    assert fresh.actor_id != record.actor_id
    assert key_hash("ns", "counter", ["gone"]) == (await sync_to_async(Actor.objects.get)(pk=fresh.actor_id)).key_hash


async def test_kv_byte_order_ranges_and_fencing(store):
    record = await store.create("ns", "counter", ["kv"], None)
    gen = (await store.claim(record.actor_id, "n", 30)).generation
    await store.kv_put_many(record.actor_id, gen, [(b"b", b"2"), (b"a", b"1"), (b"\xff", b"3"), (b"a\x00", b"4")])
    await store.kv_put_many(record.actor_id, gen, [(b"a", b"one")])  # upsert
    assert await store.kv_get_many(record.actor_id, [b"a", b"zz", b"\xff"]) == [b"one", None, b"3"]
    assert [k for k, _ in await store.kv_list_range(record.actor_id, b"", None)] == [b"a", b"a\x00", b"b", b"\xff"]
    assert [k for k, _ in await store.kv_list_range(record.actor_id, b"a", b"b")] == [b"a", b"a\x00"]
    assert len(await store.kv_list_range(record.actor_id, b"", None, limit=2)) == 2
    await store.kv_delete_range(record.actor_id, gen, b"a", b"b")
    assert [k for k, _ in await store.kv_list_range(record.actor_id, b"", None)] == [b"b", b"\xff"]
    await store.kv_delete_many(record.actor_id, gen, [b"b"])
    with pytest.raises(LostOwnership):
        await store.kv_put_many(record.actor_id, gen + 5, [(b"x", b"y")])
    assert await store.kv_get_many(record.actor_id, [b"x"]) == [None]


async def test_lease_renewal_and_node_release(store):
    a = await store.create("ns", "counter", ["ra"], None)
    b = await store.create("ns", "counter", ["rb"], None)
    await store.register_node("n", "127.0.0.1:1", "test")
    await store.claim(a.actor_id, "n", 1)
    await store.claim(b.actor_id, "n", 1)
    await sync_to_async(lambda: Actor.objects.filter(pk=b.actor_id).update(node="other"))()
    lost = await store.renew_leases("n", [a.actor_id, b.actor_id], 60)
    assert lost == {b.actor_id}
    row = await sync_to_async(Actor.objects.get)(pk=a.actor_id)
    assert row.lease_expires_at > timezone.now() + timedelta(seconds=30)
    await store.release_node("n")
    row = await sync_to_async(Actor.objects.get)(pk=a.actor_id)
    assert row.node is None and row.status == ActorStatus.SLEEPING
    assert not await sync_to_async(Node.objects.filter(pk="n").exists)()
