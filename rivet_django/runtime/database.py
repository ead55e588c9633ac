"""``self.db``: an actor's own SQLite database (the local backend).

One file per actor, ``<DB_DIR>/<actor id>.sqlite3``, named from the actor id only (never
from key parts a caller chose), in WAL mode with ``synchronous=FULL``. It is opened when
an actor that defines ``on_migrate`` wakes, closed when it sleeps and deleted when it is
destroyed. Every statement runs on the database's own worker thread, never on the event
loop; a sleeping actor holds no file and no thread.

Outside ``transaction()`` each statement commits on its own before its call returns, so a
reply sent after it (commit durability) follows a write that is on disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import os
import re
import sqlite3
from collections.abc import AsyncIterator, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from ..exceptions import DatabaseClosed, DatabaseFull, InvalidRequest

__all__ = ["ActorDatabase", "database_path"]

_SAFE_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")

#: The database whose transaction the current task is inside (statements of that task join it).
_in_transaction: contextvars.ContextVar[ActorDatabase | None] = contextvars.ContextVar(
    "rivet_db_transaction", default=None
)


def database_path(folder: Path, actor_id: str) -> Path:
    """The file of an actor's database: its id only, checked to be a plain name."""
    if not _SAFE_ID.match(actor_id):
        raise ValueError(f"not a safe actor id for a file name: {actor_id!r}")
    return folder / f"{actor_id}.sqlite3"


class ActorDatabase:
    """One actor's SQLite database, used from the actor's event loop."""

    def __init__(self, path: Path, label: str, *, max_bytes: int | None = None) -> None:
        self.path = path
        self.label = label
        self.max_bytes = max_bytes
        self._conn: sqlite3.Connection | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._lock = asyncio.Lock()
        self.closed = False

    # -- lifecycle (the runtime) ----------------------------------------------------

    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rivet-actor-db")
        self._conn = await asyncio.get_running_loop().run_in_executor(self._pool, self._connect)

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
        if self.max_bytes:
            page_size = int(conn.execute("PRAGMA page_size").fetchone()[0])
            conn.execute(f"PRAGMA max_page_count = {max(1, int(self.max_bytes) // page_size)}")
        return conn

    async def close(self) -> None:
        """Close it (the actor sleeps or lost its lease); later use raises ``DatabaseClosed``."""
        if self.closed:
            return
        self.closed = True
        conn, self._conn = self._conn, None
        pool, self._pool = self._pool, None
        if pool is None:
            return
        if conn is not None:
            with contextlib.suppress(Exception):
                await asyncio.get_running_loop().run_in_executor(pool, _close, conn)
        pool.shutdown(wait=False)

    def close_soon(self) -> None:
        """Close without waiting (the actor was dropped); later use raises ``DatabaseClosed``."""
        if self.closed:
            return
        self.closed = True
        conn, self._conn = self._conn, None
        pool, self._pool = self._pool, None
        if pool is not None:
            if conn is not None:
                pool.submit(_close, conn)
            pool.shutdown(wait=False)

    async def delete(self) -> None:
        """Close it and remove its files (the actor was destroyed)."""
        await self.close()
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.remove(f"{self.path}{suffix}")

    # -- the API (``self.db``) ------------------------------------------------------------

    async def execute(self, sql: str, *params: Any) -> list[dict[str, Any]]:
        """Run one statement; its rows as dicts. Parameters positional (``?``), or one dict (``:name``)."""
        args: Any = params[0] if len(params) == 1 and isinstance(params[0], dict) else params
        return await self._statement(_execute, sql, args)

    async def query_one(self, sql: str, *params: Any) -> dict[str, Any] | None:
        """The first row of a query, or None."""
        rows = await self.execute(sql, *params)
        return rows[0] if rows else None

    async def execute_many(self, sql: str, seq: Iterable[Sequence[Any] | dict[str, Any]]) -> int:
        """Run one statement for each parameter set; the number of rows changed."""
        return await self._statement(_execute_many, sql, list(seq))

    async def executescript(self, sql: str) -> None:
        """Run several statements (no parameters). Not inside ``transaction()``: a script commits."""
        if _in_transaction.get() is self:
            raise InvalidRequest("executescript() commits: it cannot run inside db.transaction()")
        await self._statement(_executescript, sql, None)

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[ActorDatabase]:
        """``async with self.db.transaction():`` commit on exit, roll back on an exception.

        Statements of the same task inside it join it; other tasks of the actor wait for
        it to end. Nesting is an error (``actor.invalid_request``), not a savepoint.
        """
        if _in_transaction.get() is self:
            raise InvalidRequest("db.transaction() is already open in this task (nested transactions are not supported)")
        async with self._lock:
            await self._run(_execute, "BEGIN IMMEDIATE", ())
            token = _in_transaction.set(self)
            try:
                yield self
            except BaseException:
                with contextlib.suppress(Exception):
                    await self._run(_execute, "ROLLBACK", ())
                raise
            else:
                await self._run(_execute, "COMMIT", ())
            finally:
                _in_transaction.reset(token)

    async def migrate(self, versions: Sequence[str]) -> int:
        """Apply the scripts past ``PRAGMA user_version`` in order, each with its version bump in
        one transaction; the version now. Idempotent across wakes."""
        current = int((await self.execute("PRAGMA user_version"))[0]["user_version"])
        for number, script in enumerate(versions[current:], start=current + 1):
            await self._statement(_migrate_one, script, number)
        return max(current, len(versions))

    # -- plumbing -------------------------------------------------------------------------

    async def _statement(self, fn: Any, sql: str, args: Any) -> Any:
        if _in_transaction.get() is self:
            return await self._run(fn, sql, args)
        async with self._lock:
            return await self._run(fn, sql, args)

    async def _run(self, fn: Any, *args: Any) -> Any:
        pool = self._pool
        conn = self._conn
        if self.closed or pool is None or conn is None:
            raise DatabaseClosed(f"The database of {self.label} is closed: the actor stopped")
        future = asyncio.get_running_loop().run_in_executor(pool, fn, conn, *args)
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            # The call gave up (its action timed out, the actor stops): stop the statement
            # too, rather than let it run on, and wait until it has.
            conn.interrupt()
            with contextlib.suppress(Exception):
                await future
            raise
        except sqlite3.OperationalError as exc:
            if "full" in str(exc):
                raise DatabaseFull(
                    f"The database of {self.label} reached its size limit ({self.max_bytes} bytes) or the disk is full"
                ) from exc
            raise


def _execute(conn: sqlite3.Connection, sql: str, args: Any) -> list[dict[str, Any]]:
    cursor = conn.execute(sql, args)
    try:
        if cursor.description is None:
            return []
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
    finally:
        cursor.close()


def _execute_many(conn: sqlite3.Connection, sql: str, seq: list[Any]) -> int:
    cursor = conn.executemany(sql, seq)
    try:
        return int(cursor.rowcount)
    finally:
        cursor.close()


def _executescript(conn: sqlite3.Connection, sql: str, _: Any) -> None:
    conn.executescript(sql)


def _migrate_one(conn: sqlite3.Connection, script: str, number: int) -> None:
    try:
        conn.execute("BEGIN IMMEDIATE")
        for statement in _statements(script):
            conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {int(number)}")
        conn.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(Exception):
            conn.execute("ROLLBACK")
        raise


def _statements(script: str) -> list[str]:
    """Split a script into complete statements (``sqlite3.complete_statement`` knows about
    semicolons inside strings, comments and triggers)."""
    out: list[str] = []
    buffer = ""
    for part in script.split(";"):
        buffer += part + ";"
        if sqlite3.complete_statement(buffer):
            if buffer.strip(" \t\r\n;"):
                out.append(buffer)
            buffer = ""
    return out


def _close(conn: sqlite3.Connection) -> None:
    conn.close()
