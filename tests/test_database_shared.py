"""``self.db`` on the shared backend: committed WAL frames are stored in the Django
database before a call returns, so the database survives the loss of the node's disk,
moves with its actor, and a node that lost the actor can store nothing.

These run in one process (a node, crashed and replaced by another with an empty disk);
tests/test_cluster.py moves a database between real ``runactors`` processes.
"""

from __future__ import annotations

import asyncio
import shutil
import sqlite3

import pytest
from asgiref.sync import sync_to_async
from django.db import connections

from rivet_django.client import ActorError, AsyncClient
from rivet_django.exceptions import LostOwnership
from rivet_django.models import Actor, ActorDatabaseSegment
from rivet_django.runtime import replica as replica_module
from rivet_django.storage.store import DjangoActorStore
from rivet_django.testing import crash_node, running_node

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def shared(settings, tmp_path):
    settings.RIVET = {**settings.RIVET, "DB_BACKEND": "shared", "DB_DIR": str(tmp_path / "node-a")}
    return tmp_path


@sync_to_async
def _segments(actor_id: str) -> list[tuple[str, int, int, int]]:
    rows = ActorDatabaseSegment.objects.filter(actor_id=actor_id).order_by("epoch", "kind", "offset")
    return list(rows.values_list("kind", "epoch", "offset", "end"))


async def _new_disk(settings, tmp_path, name: str) -> None:
    settings.RIVET = {**settings.RIVET, "DB_DIR": str(tmp_path / name)}


async def test_acknowledged_rows_survive_a_crash_and_the_loss_of_the_disk(shared, settings):
    tmp_path = shared
    async with running_node(node_id="a") as node:
        client = AsyncClient.local()
        notes = client.notes.get_or_create(["moving"])
        for i in range(20):
            await notes.add(f"note {i}")
        await notes.add_all(["t1", "t2"])  # a transaction: stored when it commits
        actor_id = await notes.resolve()
        segments = await _segments(actor_id)
        assert segments[0][:3] == ("base", 1, 0)  # the new database's first snapshot
        assert {kind for kind, *_ in segments} == {"base", "wal"}
        await client.aclose()
        await crash_node(node)  # kill -9: no close, no marker
    # And the disk is gone (the dropped database's thread may still be closing its file).
    for _ in range(50):
        shutil.rmtree(tmp_path / "node-a", ignore_errors=True)
        if not (tmp_path / "node-a").exists():
            break
        await asyncio.sleep(0.02)
    assert not (tmp_path / "node-a").exists()

    await _new_disk(settings, tmp_path, "node-b")
    async with running_node(node_id="a"):  # the same node id, a new disk (a rescheduled container)
        client = AsyncClient.local()
        notes = client.notes.get_or_create(["moving"])
        texts = await notes.texts()
        assert texts[:20] == [f"note {i}" for i in range(20)] and texts[20:22] == ["t1", "t2"]
        assert (tmp_path / "node-b").exists()
        await notes.add("on b")
        await client.aclose()
    await sync_to_async(connections.close_all)()


async def test_a_clean_sleep_reuses_the_file_and_a_stale_file_is_replaced(shared, settings, monkeypatch):
    loads: list[str] = []
    async with running_node(node_id="a") as node:
        original = type(node.store).db_load

        async def counting(self, actor_id):
            loads.append(actor_id)
            return await original(self, actor_id)

        monkeypatch.setattr(type(node.store), "db_load", counting)
        client = AsyncClient.local()
        notes = client.notes.get_or_create(["marker"])
        await notes.add("one")
        actor_id = await notes.resolve()
        path = node.runtime.instances[actor_id].db.path
        for inst in list(node.runtime.instances.values()):
            await inst.stop()  # a clean sleep: the marker says the file is current
        assert path.with_name(path.name + ".shipped").exists()
        assert await notes.texts() == ["one", "written in on_sleep"]
        assert loads == []  # reused, not restored

        # Another node writes meanwhile (here: the stored database moves on without this file).
        saved = path.read_bytes()
        await notes.add("two")
        for inst in list(node.runtime.instances.values()):
            await inst.stop()
        path.write_bytes(saved)  # an old copy, with a marker that no longer matches
        path.with_name(path.name + ".shipped").write_text("1 0")
        assert await notes.texts() == ["one", "written in on_sleep", "two", "written in on_sleep"]
        assert loads == [actor_id]
        await client.aclose()
    await sync_to_async(connections.close_all)()


async def test_a_long_wal_is_compacted_into_a_snapshot(shared, settings, monkeypatch):
    tmp_path = shared
    monkeypatch.setattr(replica_module, "SNAPSHOT_AFTER", 64 * 1024)
    async with running_node(node_id="a") as node:
        client = AsyncClient.local()
        notes = client.notes.get_or_create(["compact"])
        for i in range(60):
            await notes.add(f"note {i} " + "x" * 2000)
        actor_id = await notes.resolve()
        segments = await _segments(actor_id)
        bases = sorted({epoch for kind, epoch, *_ in segments if kind == "base"})
        assert len(bases) == 1 and bases[0] > 1  # one snapshot left, older epochs dropped
        assert all(epoch >= bases[0] for _, epoch, *_ in segments)
        await client.aclose()
        await crash_node(node)
    await _new_disk(settings, tmp_path, "node-b")
    async with running_node(node_id="a"):  # the same node id, a new disk (a rescheduled container)
        client = AsyncClient.local()
        texts = await client.notes.get_or_create(["compact"]).texts()
        assert [t.split(" x")[0] for t in texts] == [f"note {i}" for i in range(60)]
        await client.aclose()
    await sync_to_async(connections.close_all)()


async def test_a_node_that_lost_the_actor_stores_nothing(shared, settings):
    tmp_path = shared
    async with running_node(node_id="a") as node:
        client = AsyncClient.local()
        notes = client.notes.get_or_create(["fenced"])
        await notes.add("before")
        actor_id = await notes.resolve()
        inst = node.runtime.instances[actor_id]
        # Another node claimed the actor (its generation moved on).
        await sync_to_async(Actor.objects.filter(pk=actor_id).update)(generation=inst.generation + 5)
        with pytest.raises(LostOwnership):
            await inst.db.execute("INSERT INTO notes (text) VALUES ('after')")
        assert inst.db.replica.broken
        stored = await _segments(actor_id)
        await client.aclose()
        await crash_node(node)
    # The refused write is in no stored segment: a restore elsewhere has "before" only.
    await _new_disk(settings, tmp_path, "node-b")
    base_and_wal = await sync_to_async(DjangoActorStore._db_load)(actor_id)
    restored = tmp_path / "restored.sqlite3"
    replica_module._rebuild(restored, *base_and_wal)
    with sqlite3.connect(restored) as db:
        assert [row[0] for row in db.execute("SELECT text FROM notes ORDER BY id")] == ["before"]
    assert await _segments(actor_id) == stored
    await sync_to_async(connections.close_all)()


async def test_destroy_drops_the_stored_database(shared):
    async with running_node(node_id="a"):
        client = AsyncClient.local()
        notes = client.notes.get_or_create(["gone"])
        await notes.add("x")
        actor_id = await notes.resolve()
        assert await _segments(actor_id)
        await client.notes.get_for_id(actor_id).destroy()
        assert await _segments(actor_id) == []
        with pytest.raises(ActorError):
            await client.notes.get_for_id(actor_id).texts()
        await client.aclose()
    await sync_to_async(connections.close_all)()
