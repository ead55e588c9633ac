"""``self.db``: an actor's own SQLite database (the local backend).

One file per actor, ``<DB_DIR>/<actor id>.sqlite3``, named from the actor id only (never
from key parts a caller chose), in WAL mode with ``synchronous=FULL``. It is opened when
an actor that defines ``on_migrate`` wakes, closed when it sleeps and deleted when it is
destroyed. Every statement runs on the database's own worker thread, never on the event
loop; a sleeping actor holds no file and no thread.

Outside ``transaction()`` each statement commits on its own before its call returns, so a
reply sent after it (commit durability) follows a write that is on disk.

The connection is Django's: the worker thread holds a ``DatabaseWrapper`` for the alias
:attr:`ActorDatabase.alias` (in ``django.db.connections`` for that thread only, while the
database is open), so raw SQL and the ORM (``await db.run(fn)``, models of ``RIVET["DB_APPS"]``
routed by :class:`rivet_django.routers.ActorDatabaseRouter`) share one SQLite
connection and one transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import re
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from django.db import DatabaseError as DjangoDatabaseError

from ..exceptions import DatabaseClosed, DatabaseError, DatabaseFull, InvalidRequest
from .replica import DatabaseReplica, committed_tail, remove_files
from .stats import ActorStats

__all__ = ["ALIAS_PREFIX", "ActorDatabase", "current_alias", "database_path"]

T = TypeVar("T")

#: Django database aliases of actor databases start with this.
ALIAS_PREFIX = "rivet_actor_"

#: In a database's worker thread: the alias of that database (for the router).
_thread = threading.local()


def current_alias() -> str | None:
    """The alias of the actor database whose worker thread this is (inside ``db.run``), or None."""
    return getattr(_thread, "alias", None)


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

    def __init__(
        self,
        path: Path,
        label: str,
        *,
        max_bytes: int | None = None,
        replica: DatabaseReplica | None = None,
        stats: ActorStats | None = None,
    ) -> None:
        self.path = path
        #: Where statements are counted (the actor's, for the inspector's metrics).
        self.stats = stats
        self.label = label
        #: The shared backend (None: the file is the database).
        self.replica = replica
        #: Its Django database alias while open (``Model.objects.using(db.alias)`` inside ``run``).
        self.alias = ALIAS_PREFIX + path.stem
        self.max_bytes = max_bytes
        self._conn: sqlite3.Connection | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._lock = asyncio.Lock()
        self.closed = False

    # -- lifecycle (the runtime) ----------------------------------------------------

    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rivet-actor-db")
        if self.replica is not None:
            await self.replica.restore(self.path, self._thread)
        self._conn = await self._thread(self._connect)
        if self.replica is not None:
            await self.replica.opened(self.path, self._thread)

    async def _thread(self, fn: Callable[..., T], *args: Any) -> T:
        """Run file work on the database's thread (no connection involved)."""
        pool = self._pool
        if pool is None:
            raise DatabaseClosed(f"The database of {self.label} is closed: the actor stopped")
        return await asyncio.get_running_loop().run_in_executor(pool, fn, *args)

    def _connect(self) -> sqlite3.Connection:
        """(Worker thread) Django's connection for this database's alias, set up."""
        from django.db import connections
        from django.db.utils import load_backend

        # Bound to this thread only (``connections`` keeps wrappers per thread): not in
        # ``connections.settings``, so no other thread, request or test sees the alias.
        settings_dict = _alias_settings(self.path)
        wrapper = load_backend(settings_dict["ENGINE"]).DatabaseWrapper(settings_dict, self.alias)
        connections[self.alias] = wrapper
        wrapper.ensure_connection()
        conn: sqlite3.Connection = wrapper.connection
        conn.execute("PRAGMA journal_mode=WAL")
        if self.replica is None:
            conn.execute("PRAGMA synchronous=FULL")
        else:
            # The stored segments are what is durable; the file is a cache, trusted after a
            # clean close only (the marker is written after an fsync), so no fsync per commit.
            conn.execute("PRAGMA synchronous=OFF")
            conn.execute("PRAGMA wal_autocheckpoint=0")  # the WAL is shipped, then compacted by snapshots
        if self.max_bytes:
            page_size = int(conn.execute("PRAGMA page_size").fetchone()[0])
            conn.execute(f"PRAGMA max_page_count = {max(1, int(self.max_bytes) // page_size)}")
        _thread.alias = self.alias
        return conn

    async def close(self) -> None:
        """Close it (the actor sleeps or lost its lease); later use raises ``DatabaseClosed``."""
        if self.closed:
            return
        replica = self.replica
        if replica is not None and not replica.broken and self._conn is not None:
            # Anything committed but not stored yet (a script that failed half-way).
            with contextlib.suppress(Exception):
                async with self._lock:
                    await replica.ship(self.path, self._thread, self._run)
        self.closed = True
        conn, self._conn = self._conn, None
        pool = self._pool
        if pool is None:
            return
        try:
            if conn is not None:
                with contextlib.suppress(Exception):
                    await asyncio.get_running_loop().run_in_executor(pool, _close, self.alias)
                if replica is not None:
                    with contextlib.suppress(Exception):
                        await replica.closed(self.path, self._thread)
        finally:
            self._pool = None
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
                pool.submit(_close, self.alias)
            pool.shutdown(wait=False)

    async def delete(self) -> None:
        """Close it and remove its files (the actor was destroyed)."""
        await self.close()
        remove_files(self.path)
        if self.replica is not None:
            await self.replica.drop()

    # -- the API (``self.db``) ------------------------------------------------------------

    async def execute(self, sql: str, *params: Any) -> list[dict[str, Any]]:
        """Run one statement; its rows as dicts. Parameters positional (``?``), or one dict (``:name``)."""
        args: Any = params[0] if len(params) == 1 and isinstance(params[0], dict) else params
        return await self._counted(_execute, sql, args)  # type: ignore[no-any-return]

    async def query_one(self, sql: str, *params: Any) -> dict[str, Any] | None:
        """The first row of a query, or None."""
        rows = await self.execute(sql, *params)
        return rows[0] if rows else None

    async def execute_many(self, sql: str, seq: Iterable[Sequence[Any] | dict[str, Any]]) -> int:
        """Run one statement for each parameter set; the number of rows changed."""
        return await self._counted(_execute_many, sql, list(seq))  # type: ignore[no-any-return]

    async def executescript(self, sql: str) -> None:
        """Run several statements (no parameters). Not inside ``transaction()``: a script commits."""
        if _in_transaction.get() is self:
            raise InvalidRequest("executescript() commits: it cannot run inside db.transaction()")
        await self._counted(_executescript, sql, None)

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[ActorDatabase]:
        """``async with self.db.transaction():`` commit on exit, roll back on an exception.

        Statements of the same task inside it join it; other tasks of the actor wait for
        it to end. Nesting is an error (``actor.invalid_request``), not a savepoint.
        """
        if _in_transaction.get() is self:
            raise InvalidRequest(
                "db.transaction() is already open in this task (nested transactions are not supported)"
            )
        async with self._lock:
            # Django's atomic block on the worker thread, so ``run()`` inside joins it
            # (the ORM's own atomic blocks become savepoints). BEGIN IMMEDIATE.
            from django.db import transaction

            block = transaction.atomic(using=self.alias)
            await self._run(_call, block.__enter__)
            token = _in_transaction.set(self)
            try:
                yield self
            except BaseException as exc:
                with contextlib.suppress(Exception):
                    await self._run(_call, block.__exit__, type(exc), exc, exc.__traceback__)
                raise
            else:
                await self._run(_call, block.__exit__, None, None, None)
                if self.replica is not None:
                    await self.replica.ship(self.path, self._thread, self._run)
            finally:
                _in_transaction.reset(token)

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``fn(*args, **kwargs)`` on the database's thread, in one transaction; its result.

        The ORM lives here: inside ``fn``, models of ``RIVET["DB_APPS"]`` read and write this
        database (``Note.objects.create(...)``; ``.using(db.alias)`` is implied). Inside
        ``transaction()`` it joins that transaction (as a savepoint); otherwise ``fn``
        commits on its own before ``run`` returns. If ``fn`` raises, its writes are undone. Keep ``fn`` short and
        synchronous: it holds the database while it runs.
        """
        call: Callable[[], T] = functools.partial(fn, *args, **kwargs)
        if self.stats is None:
            return await self._statement(_run_atomic, self.alias, call)  # type: ignore[no-any-return]
        # The ORM's queries, collected on the database thread, counted here once it is done.
        queries: list[tuple[str, float]] = []
        try:
            return await self._statement(
                _run_atomic, self.alias, functools.partial(_collecting, self.alias, queries, call)
            )  # type: ignore[no-any-return]
        finally:
            for sql, seconds in queries:
                self.stats.statement(sql, seconds)

    async def migrate_models(self, *app_labels: str) -> int:
        """Bring the tables of Django apps' models up to date in this database (default: every
        app of ``RIVET["DB_APPS"]``) by their migrations, or from the models for an app
        without migrations; the number of migrations applied (0 when up to date: one query)."""
        if not app_labels:
            from ..conf import rivet_settings

            app_labels = tuple(rivet_settings.DB_APPS)
        return await self._statement(_migrate_models, self.alias, tuple(app_labels))

    async def migrate(self, versions: Sequence[str]) -> int:
        """Apply the scripts past ``PRAGMA user_version`` in order, each with its version bump in
        one transaction; the version now. Idempotent across wakes."""
        current = int((await self.execute("PRAGMA user_version"))[0]["user_version"])
        for number, script in enumerate(versions[current:], start=current + 1):
            await self._statement(_migrate_one, script, number)
        return max(current, len(versions))

    # -- looking inside (admin, inspector) ---------------------------------------------------

    async def tables(self) -> list[dict[str, Any]]:
        """Its tables by name: ``{"name", "info" (PRAGMA table_info rows), "foreign_keys", "rows"}``
        (``rows``: the row count)."""
        return await self._statement(_tables, "", None)  # type: ignore[no-any-return]

    async def rows(self, table: str, *, limit: int = 50, offset: int = 0, count: bool = True) -> dict[str, Any]:
        """A page of a table's rows: ``{"columns", "rows", "total"}`` (``total`` None unless
        ``count``: it scans the table); values made JSON-safe (bytes as ``{"$bytes": hex}``).
        ``actor.invalid_request`` for no such table."""
        limit = max(0, min(int(limit), 1000))
        return await self._statement(_rows, table, (limit, max(0, int(offset)), count))  # type: ignore[no-any-return]

    async def inspect_execute(self, sql: str, args: Any = None, *, readonly: bool = True) -> list[dict[str, Any]]:
        """One statement from the inspector (``args``: a list for ``?``, a dict for ``:name``);
        ``readonly`` (the default) makes SQLite refuse writes (``PRAGMA query_only``)."""
        if not isinstance(sql, str) or not sql.strip():
            raise InvalidRequest("sql is required")
        if args is None:
            args = ()
        elif not isinstance(args, (list, dict)):
            raise InvalidRequest("args is a list (positional parameters) or an object (named parameters)")
        return await self._counted(_inspect_execute, sql, (args, readonly))  # type: ignore[no-any-return]

    # -- plumbing -------------------------------------------------------------------------

    async def _counted(self, fn: Any, sql: str, args: Any) -> Any:
        """A statement of the actor's SQL, counted by kind and timed in its stats."""
        stats = self.stats
        if stats is None:
            return await self._statement(fn, sql, args)
        started = time.perf_counter()
        try:
            return await self._statement(fn, sql, args)
        finally:
            stats.statement(sql, time.perf_counter() - started)

    async def _statement(self, fn: Any, sql: str, args: Any) -> Any:
        if _in_transaction.get() is self:
            return await self._run(fn, sql, args)
        async with self._lock:
            replica = self.replica
            if replica is None:
                return await self._run(fn, sql, args)
            # The statement and the read of the WAL it appended in one thread job; the
            # frames are stored before the call returns.
            result, (data, end, salt, restarted) = await self._run(
                _and_tail, fn, sql, args, f"{self.path}-wal", replica.offset, replica.salt
            )
            await replica.ship_tail(data, end, salt, restarted, self.path, self._run)
            return result

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
        except (sqlite3.Error, DjangoDatabaseError) as exc:
            if isinstance(exc, (sqlite3.OperationalError, DjangoDatabaseError)) and "full" in str(exc):
                raise DatabaseFull(
                    f"The database of {self.label} reached its size limit ({self.max_bytes} bytes) or the disk is full"
                ) from exc
            if isinstance(exc, sqlite3.OperationalError) and "interrupted" in str(exc):
                raise
            raise _public(type(exc))(str(exc)) from exc


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


_PUBLIC: dict[type[Exception], type[DatabaseError]] = {}


def _public(kind: type[Exception]) -> type[DatabaseError]:
    """``DatabaseError`` that is also a ``kind`` (``sqlite3.IntegrityError``...), so callers
    see SQLite's message and ``except kind`` in actor code still catches it."""
    public = _PUBLIC.get(kind)
    if public is None:
        public = _PUBLIC[kind] = type(f"Database{kind.__name__}", (DatabaseError, kind), {"__module__": __name__})
    return public


def _and_tail(
    conn: sqlite3.Connection, fn: Any, sql: Any, args: Any, wal_path: str, offset: int, salt: Any
) -> tuple[Any, tuple[bytes, int, Any, bool]]:
    result = fn(conn, sql, args)
    return result, committed_tail(wal_path, offset, salt)


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _table_names(conn: sqlite3.Connection) -> list[str]:
    rows = conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name"
    )
    return [row[0] for row in rows]


def _tables(conn: sqlite3.Connection, _sql: str, _args: Any) -> list[dict[str, Any]]:
    out = []
    for name in _table_names(conn):
        info = _execute(conn, f"PRAGMA table_info({_quoted(name)})", ())
        foreign_keys = _execute(conn, f"PRAGMA foreign_key_list({_quoted(name)})", ())
        (count,) = conn.execute(f"SELECT count(*) FROM {_quoted(name)}").fetchone()
        out.append({"name": name, "info": info, "foreign_keys": foreign_keys, "rows": int(count)})
    return out


def _inspect_execute(conn: sqlite3.Connection, sql: str, options: tuple[Any, bool]) -> list[dict[str, Any]]:
    """One statement for the inspector; with ``readonly`` SQLite refuses any write."""
    args, readonly = options
    if readonly:
        conn.execute("PRAGMA query_only = ON")
    try:
        rows = _execute(conn, sql, args)
    finally:
        if readonly:
            conn.execute("PRAGMA query_only = OFF")
    return [{key: _cell(value) for key, value in row.items()} for row in rows]


def _rows(conn: sqlite3.Connection, table: str, page: tuple[int, int, bool]) -> dict[str, Any]:
    # Only a name SQLite lists: nothing a caller sends becomes SQL.
    if table not in _table_names(conn):
        raise InvalidRequest(f"The actor's database has no table {table!r}")
    limit, offset, count = page
    total = conn.execute(f"SELECT count(*) FROM {_quoted(table)}").fetchone()[0] if count else None
    cursor = conn.execute(f"SELECT * FROM {_quoted(table)} LIMIT ? OFFSET ?", (limit, offset))
    try:
        columns = [d[0] for d in cursor.description or ()]
        rows = [[_cell(value) for value in row] for row in cursor.fetchall()]
    finally:
        cursor.close()
    return {"columns": columns, "rows": rows, "total": None if total is None else int(total)}


def _cell(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"$bytes": bytes(value).hex()}
    return value


def _call(conn: sqlite3.Connection, fn: Callable[..., Any], *args: Any) -> Any:
    return fn(*args)


def _run_atomic(conn: sqlite3.Connection, alias: str, fn: Callable[[], T]) -> T:
    from django.db import transaction

    # Inside db.transaction() this is a savepoint: fn's failure undoes only fn's writes.
    with transaction.atomic(using=alias):
        return fn()


def _collecting(alias: str, queries: list[tuple[str, float]], fn: Callable[[], T]) -> T:
    """``fn()`` with each query Django runs on ``alias`` appended to ``queries`` (SQL, seconds)."""
    from django.db import connections

    def timed(execute: Callable[..., Any], sql: str, params: Any, many: bool, context: Any) -> Any:
        started = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            queries.append((sql, time.perf_counter() - started))

    with connections[alias].execute_wrapper(timed):
        return fn()


def _alias_settings(path: Path) -> dict[str, Any]:
    """Django's settings of an actor database's alias (``DATABASES``-style, defaults filled in)."""
    from django.db import DEFAULT_DB_ALIAS, connections

    alias = {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": str(path),
        # Raw SQL sees what SQLite stores (no type detection); BEGIN IMMEDIATE takes the
        # write lock at once, so a transaction never fails half-way on "database is locked".
        "OPTIONS": {"detect_types": 0, "transaction_mode": "IMMEDIATE"},
    }
    return connections.configure_settings({DEFAULT_DB_ALIAS: {"ENGINE": "django.db.backends.dummy"}, "x": alias})["x"]


@functools.cache
def _app_migrations(app_labels: tuple[str, ...]) -> tuple[frozenset[tuple[str, str]], frozenset[str]]:
    """The migrations on disk of these apps, and those of them that have none (built once)."""
    from django.db.migrations.loader import MigrationLoader

    loader = MigrationLoader(None, ignore_no_migrations=True)
    known = frozenset(key for key in loader.disk_migrations if key[0] in app_labels)
    return known, frozenset(label for label in app_labels if label in loader.unmigrated_apps)


def _migrate_models(conn: sqlite3.Connection, alias: str, app_labels: tuple[str, ...]) -> int:
    from django.apps import apps
    from django.db import connections
    from django.db.migrations.executor import MigrationExecutor

    known, unmigrated = _app_migrations(app_labels)
    wrapper = connections[alias]
    applied = 0
    if known:
        try:
            done = {
                (app, name)
                for app, name in conn.execute(
                    f"SELECT app, name FROM django_migrations WHERE app IN ({','.join('?' * len(app_labels))})",
                    app_labels,
                )
            }
        except sqlite3.OperationalError:  # no django_migrations table yet
            done = set()
        if not known <= done:
            executor = MigrationExecutor(wrapper)
            targets = [key for key in executor.loader.graph.leaf_nodes() if key[0] in app_labels]
            plan = executor.migration_plan(targets)
            executor.migrate(targets, plan=plan)
            applied = len(plan)
    if unmigrated:
        tables = set(wrapper.introspection.table_names())
        with wrapper.schema_editor() as editor:
            for label in unmigrated:
                for model in apps.get_app_config(label).get_models():
                    if model._meta.managed and model._meta.db_table not in tables:
                        editor.create_model(model)
    return applied


def _close(alias: str) -> None:
    """(Worker thread) Close the alias's connection and forget the alias."""
    from django.db import connections

    with contextlib.suppress(Exception):
        connections[alias].close()
    with contextlib.suppress(Exception):
        del connections[alias]
    _thread.alias = None
