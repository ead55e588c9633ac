"""``self.db``: an actor's own SQLite file (local backend), migrated on every wake, durable,
closed at sleep, deleted at destroy."""

from __future__ import annotations

import asyncio
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
    assert testactors.NOTES_ORDER["sleepy"] == [
        "on_migrate",
        "create_state",
        "create_vars",
        "on_migrate",
        "create_vars",
    ]
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


# -- Django models on an actor's database (demo_project/notes) -------------------------


def _project_tables() -> list[str]:
    from django.db import connections

    own = connections.create_connection("default")  # this thread's own connection
    try:
        return own.introspection.table_names()
    finally:
        own.close()


async def test_django_models_live_in_each_actors_own_database(rivet_node, rivet_client):
    alice = rivet_client.notebook.get_or_create(["alice"])
    bob = rivet_client.notebook.get_or_create(["bob"])
    first = await alice.add("buy milk", ["shop"])
    assert first["id"] == 1 and first["done"] is False and first["text"] == "buy milk"
    await alice.add("call mum", ["family", "phone"])
    await bob.add("bob's only note")
    assert [(n["text"], n["tags"]) for n in await alice.notes()] == [
        ("buy milk", ["shop"]),
        ("call mum", ["family", "phone"]),
    ]
    assert [n["text"] for n in await alice.notes("phone")] == ["call mum"]
    assert [n["text"] for n in await bob.notes()] == ["bob's only note"]  # his own file, his own ids
    assert (await alice.complete(2))["done"] is True
    assert await alice.stats() == {"total": 2, "done": 1}
    assert await alice.search("milk") == ["buy milk"]  # raw SQL on the same connection

    # The rows are in alice's file, committed when the call returned; none in the project's database.
    path = rivet_node.runtime.instances[await alice.resolve()].db.path
    with sqlite3.connect(path) as other:
        assert other.execute("SELECT text, done FROM notes_note ORDER BY id").fetchall() == [
            ("buy milk", 0),
            ("call mum", 1),
        ]
        assert ("notes", "0001_initial") in other.execute("SELECT app, name FROM django_migrations").fetchall()
    tables = await asyncio.to_thread(_project_tables)
    assert "rivet_django_actor" in tables and "notes_note" not in tables

    # Asleep and awake again: the migrations are not run twice, the rows are there.
    await _sleep_all(rivet_node)
    assert await alice.stats() == {"total": 2, "done": 1}
    assert (await alice.add("after a nap"))["id"] == 3


async def test_model_errors_reach_the_caller_and_change_nothing(rivet_node, rivet_client):
    alice = rivet_client.notebook.get_or_create(["errors"])
    with pytest.raises(ActorError) as empty:
        await alice.add("   ")
    assert (empty.value.group, empty.value.code) == ("user", "empty_note")
    # A duplicate tag breaks the unique constraint: the whole run (note included) is undone.
    with pytest.raises(ActorError) as duplicate:
        await alice.add("twice tagged", ["a", "a"])
    assert (duplicate.value.group, duplicate.value.code) == ("actor", "database_error")
    assert "UNIQUE constraint failed" in duplicate.value.message
    assert await alice.notes() == []
    with pytest.raises(ActorError) as missing:
        await alice.complete(42)
    assert missing.value.code == "no_such_note"


async def test_the_orm_outside_db_run_is_a_clear_error(rivet_node):
    from notes.models import Note

    with pytest.raises(RuntimeError, match=r"notes\.Note lives in actors' own databases.*self\.db\.run"):
        await Note.objects.acount()


async def test_bad_sql_is_a_user_visible_error_and_changes_nothing(rivet_node, rivet_client):
    notes = rivet_client.notes.get_or_create(["bad-sql"])
    await notes.add("kept")
    with pytest.raises(ActorError) as syntax:
        await notes.run_sql("INSERT INTO notes (text VALUES ('x')")
    assert (syntax.value.group, syntax.value.code) == ("actor", "database_error")
    assert "syntax error" in syntax.value.message
    with pytest.raises(ActorError) as constraint:
        await notes.run_sql("INSERT INTO notes (text) VALUES (NULL)")
    assert "NOT NULL constraint failed: notes.text" in constraint.value.message
    # Caught in the actor as the driver's own exception class.
    assert await notes.add_unique("kept") == "refused: UNIQUE constraint failed: notes.text"
    assert await notes.add_unique("new") == "added"
    assert await notes.texts() == ["kept", "new"]


async def test_the_database_in_a_run_loop_a_scheduled_run_and_on_destroy(transactional_db):
    from asgiref.sync import sync_to_async
    from django.db import connections

    from rivet_django.testing import ManualClock, fire_schedules, running_node

    async with running_node(clock=ManualClock()) as node:
        record, _ = await node.router.get_or_create("default", "dbChores", ["chores"])
        actor_id = record.actor_id
        await node.runtime.queues.send(actor_id, "lines", "first")
        await node.router.call_action(actor_id, "later", [30, "reminder"])
        assert await fire_schedules(node, advance=31) == 1
        for _ in range(100):  # the run loop takes the queued message in its own time
            lines = await node.router.call_action(actor_id, "lines", [])
            if "queued first" in lines:
                break
            await asyncio.sleep(0.02)
        assert lines == ["run started", "queued first", "scheduled reminder"]
        path = node.runtime.instances[actor_id].db.path
        await node.router.destroy(actor_id)
        assert testactors.DB_CHORES_LAST["chores"] == ["run started", "queued first", "scheduled reminder"]
        assert not path.exists()
    await sync_to_async(connections.close_all)()


async def test_executescript_runs_several_statements_but_not_inside_a_transaction(rivet_node, rivet_client):
    notes = rivet_client.notes.get_or_create(["script"])
    await notes.script(
        "CREATE TABLE tags (name TEXT); INSERT INTO tags VALUES ('a; still a'); INSERT INTO tags VALUES ('b');"
    )
    assert await notes.run_sql("SELECT name FROM tags ORDER BY name") == [{"name": "a; still a"}, {"name": "b"}]
    with pytest.raises(ActorError) as inside:
        await notes.script_in_transaction()
    assert inside.value.code == "invalid_request" and "executescript" in inside.value.message


async def test_a_key_that_looks_like_a_path_never_leaves_db_dir(rivet_node, rivet_client):
    from pathlib import Path

    db_dir = Path(rivet_node.runtime.config.db_dir).resolve()
    for key in (["../../../tmp/escape"], ["..", "etc", "passwd"], ["/abs", "C:\\x"]):
        notes = rivet_client.notes.get_or_create(key)
        await notes.add("inside")
        path = Path(await notes.keep()).resolve()
        assert path.parent == db_dir and path.name == f"{await notes.resolve()}.sqlite3"
    assert not Path("/tmp/escape.sqlite3").exists()
    # NUL bytes and lone surrogates are no key at all, on every database (jsonb cannot hold NUL).
    for bad in ("nul\x00byte", "\ud800"):
        with pytest.raises(ActorError) as refused:
            await rivet_client.notes.get_or_create([bad]).add("x")
        assert (refused.value.group, refused.value.code) == ("actor", "invalid_request")
