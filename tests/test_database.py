"""``self.db``: an actor's own SQLite file (local backend), migrated on every wake, durable,
closed at sleep, deleted at destroy."""

from __future__ import annotations

import os
import sqlite3

import pytest

from rivet_django.client import ActorError
from rivet_django.exceptions import DatabaseClosed
from tests.testapp import actors as testactors

pytestmark = pytest.mark.django_db(transaction=True)


async def _sleep_all(node) -> None:
    for inst in list(node.runtime.instances.values()):
        await inst.stop()


async def test_on_migrate_runs_first_and_statements_are_on_disk_when_the_call_returns(rivet_node, rivet_client):
    notes = rivet_client.notes.get_or_create(["first"])
    assert await notes.add("hello") == 1
    assert testactors.NOTES_ORDER["first"] == ["on_migrate", "create_state", "create_vars"]
    path = await notes.keep()
    # Named after the actor id only, in DB_DIR; readable by another connection right away.
    assert os.path.basename(path) == f"{await notes.resolve()}.sqlite3"
    with sqlite3.connect(path) as other:
        assert other.execute("SELECT text FROM notes").fetchall() == [("hello",)]
        assert other.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    assert await notes.version() == 2


async def test_the_database_survives_sleep_and_is_migrated_again_idempotently(rivet_node, rivet_client):
    notes = rivet_client.notes.get_or_create(["sleepy"])
    await notes.add("one")
    await _sleep_all(rivet_node)
    assert await notes.texts() == ["one", "written in on_sleep"]
    assert testactors.NOTES_ORDER["sleepy"] == ["on_migrate", "create_state", "create_vars", "on_migrate", "create_vars"]
    assert await notes.version() == 2


async def test_transactions_commit_or_roll_back_and_do_not_nest(rivet_node, rivet_client):
    notes = rivet_client.notes.get_or_create(["tx"])
    assert await notes.add_all(["a", "b"]) == 2
    with pytest.raises(ActorError) as raised:
        await notes.add_all(["c", "boom"])
    assert raised.value.code == "boom"
    assert await notes.texts() == ["a", "b"]  # "c" rolled back
    with pytest.raises(ActorError) as nested:
        await notes.nested()
    assert (nested.value.group, nested.value.code) == ("actor", "invalid_request")
    assert "nested" in nested.value.message


async def test_a_kept_handle_is_closed_after_the_stop_and_destroy_deletes_the_file(rivet_node, rivet_client):
    notes = rivet_client.notes.get_or_create(["kept"])
    path = await notes.keep()
    kept = testactors.KEPT_DBS["kept"]
    await _sleep_all(rivet_node)
    with pytest.raises(DatabaseClosed) as closed:
        await kept.execute("INSERT INTO notes (text) VALUES ('late')")
    assert "closed" in str(closed.value) and "notes" in str(closed.value)
    assert "late" not in await notes.texts()
    await notes.destroy()
    assert not os.path.exists(path) and not os.path.exists(path + "-wal")


async def test_an_actor_without_on_migrate_has_no_database(rivet_node, rivet_client):
    with pytest.raises(ActorError) as raised:
        await rivet_client.noDatabase.get_or_create(["x"]).use()
    assert (raised.value.group, raised.value.code) == ("actor", "database_not_enabled")
    assert "database" in raised.value.message


async def test_a_database_stops_growing_at_its_size_limit_and_changes_nothing(tmp_path):
    from rivet_django.exceptions import DatabaseFull
    from rivet_django.runtime.database import ActorDatabase

    db = ActorDatabase(tmp_path / "limited.sqlite3", "notes limited", max_bytes=64 * 1024)
    await db.open()
    try:
        await db.execute("CREATE TABLE blobs (data BLOB)")
        await db.execute("INSERT INTO blobs VALUES (zeroblob(1000))")
        with pytest.raises(DatabaseFull) as full:
            await db.execute("INSERT INTO blobs VALUES (zeroblob(200000))")
        assert full.value.code == "database_full" and "size limit" in full.value.message
        assert (await db.query_one("SELECT count(*) AS n FROM blobs"))["n"] == 1
    finally:
        await db.close()


async def test_a_statement_whose_call_gives_up_is_interrupted(tmp_path):
    import asyncio
    import time

    from rivet_django.runtime.database import ActorDatabase

    db = ActorDatabase(tmp_path / "slow.sqlite3", "notes slow")
    await db.open()
    try:
        endless = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) SELECT count(*) FROM n"
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(db.execute(endless), 0.3)
        # Interrupted, not left running on the database's thread: the next statement runs now.
        assert await db.execute("SELECT 1 AS one") == [{"one": 1}]
        assert time.monotonic() - started < 5
    finally:
        await db.close()


async def test_database_files_are_named_from_plain_actor_ids_only(tmp_path):
    from rivet_django.runtime.database import database_path

    assert database_path(tmp_path, "abc123_-X").name == "abc123_-X.sqlite3"
    for bad in ("../etc/passwd", "a/b", "", "a b", "x" * 200):
        with pytest.raises(ValueError):
            database_path(tmp_path, bad)


async def test_workflow_steps_use_the_database_and_the_body_outside_them_cannot(rivet_node, caplog):
    import asyncio
    import logging

    record, _ = await rivet_node.router.get_or_create("default", "wfNotes", ["wf"])
    with caplog.at_level(logging.ERROR, logger="rivet_django.actor"):
        for _ in range(100):
            await asyncio.sleep(0.02)
            if "only available inside workflow steps" in caplog.text:
                break
    assert "db is only available inside workflow steps" in caplog.text
    assert await rivet_node.router.call_action(record.actor_id, "lines") == ["from a step"]
