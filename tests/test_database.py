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
