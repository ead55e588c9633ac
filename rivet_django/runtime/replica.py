"""The shared backend of ``self.db``: the local file is a cache, the database is durable
in the Django database, so an actor finds it on whichever node it wakes next.

While the actor is awake its node owns the file (WAL mode, automatic checkpoints off,
no fsync per commit: the stored segments are what is durable).
After every statement (or transaction) that commits, the WAL frames it appended are
read back up to the last commit frame and stored as a ``wal`` segment, fenced by the
actor's generation, before the call returns: an acknowledged write is in the shared
database, and a node that lost the actor cannot store anything.

The stored database is a snapshot of the file (``base``) and the WAL bytes of each
*epoch* since: an epoch is one WAL file from its header on (one wake, or the time
between two snapshots). A node restores it by writing the snapshot, then replaying
each epoch's WAL (SQLite's own recovery validates the frames and stops at the last
commit) with a checkpoint after each. When an epoch's WAL outgrows the database (at
least ``SNAPSHOT_AFTER``), the file is checkpointed and stored whole as the next
epoch's snapshot, and older segments are dropped in the same transaction.

A node that closed the database cleanly leaves a marker next to the file saying how
far the stored database went; if that is still where it ends at the next wake, the
file is reused as it is, otherwise (another node wrote since, or this one crashed)
it is restored from the stored segments. Unshipped commits of a crashed node were
never acknowledged, and are dropped by the restore.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from .store import ActorStore

__all__ = ["DatabaseReplica", "committed_tail"]

#: Segments are stored in pieces of at most this many bytes.
CHUNK = 1 << 20

#: An epoch's WAL is compacted into a snapshot once it is this large and larger than the file.
SNAPSHOT_AFTER = 16 << 20

_WAL_HEADER = 32
_FRAME_HEADER = 24
_HEADER = struct.Struct(">IIIIII")  # magic, version, page size, checkpoint seq, salt-1, salt-2
_FRAME = struct.Struct(">IIII")  # page number, db size after commit (0: not a commit), salt-1, salt-2

Thread = Callable[..., Awaitable[Any]]


def committed_tail(
    wal_path: str, offset: int, salt: tuple[int, int] | None
) -> tuple[bytes, int, tuple[int, int] | None, bool]:
    """(Database thread) The WAL bytes from ``offset`` through the last commit frame.

    Returns ``(data, new end, the WAL's salt, restarted)``; ``restarted`` when the WAL is
    not the one ``salt`` names any more (it was checkpointed and begun again): then
    ``data`` starts at its header (offset 0).
    """
    try:
        size = os.path.getsize(wal_path)
    except FileNotFoundError:
        return b"", offset, salt, False
    if size < _WAL_HEADER:
        return b"", offset, salt, False
    with open(wal_path, "rb") as wal:
        header = wal.read(_WAL_HEADER)
        _magic, _version, page_size, _seq, salt1, salt2 = _HEADER.unpack_from(header)
        current = (salt1, salt2)
        restarted = salt is not None and current != salt
        if restarted:
            offset = 0
        elif size <= offset:
            return b"", offset, current, False
        start = max(offset, _WAL_HEADER)
        wal.seek(start)
        frames = wal.read()
    frame_size = _FRAME_HEADER + page_size
    end = start
    position = 0
    while position + frame_size <= len(frames):
        _page, commit, frame_salt1, frame_salt2 = _FRAME.unpack_from(frames, position)
        if (frame_salt1, frame_salt2) != current:
            break  # left over from before the WAL began again
        position += frame_size
        if commit:
            end = start + position
    if end == start:
        return b"", offset, current, restarted
    data = (header if offset == 0 else b"")[:_WAL_HEADER] + frames[: end - start]
    return data, end, current, restarted


def _take_marker(path: Path) -> tuple[int, int] | None:
    marker = _marker(path)
    try:
        epoch, end = marker.read_text().split()
        return int(epoch), int(end)
    except (OSError, ValueError):
        return None
    finally:
        with contextlib.suppress(FileNotFoundError):
            marker.unlink()


def _put_marker(path: Path, latest: tuple[int, int]) -> None:
    """After a clean close: the file (written without fsyncs) is flushed to disk, then the
    marker says it holds the stored database up to ``latest``."""
    _fsync(path)
    marker = _marker(path)
    temporary = marker.with_name(marker.name + ".tmp")
    with open(temporary, "w") as out:
        out.write(f"{latest[0]} {latest[1]}")
        out.flush()
        os.fsync(out.fileno())
    os.replace(temporary, marker)
    _fsync(path.parent)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _marker(path: Path) -> Path:
    return path.with_name(path.name + ".shipped")


def remove_files(path: Path) -> None:
    """The database file, its WAL and shared memory, and the marker."""
    for suffix in ("", "-wal", "-shm", "-journal", ".shipped"):
        with contextlib.suppress(FileNotFoundError):
            os.remove(f"{path}{suffix}")


def _rebuild(path: Path, base: bytes, epochs: list[tuple[int, bytes]]) -> None:
    """Write the snapshot, then replay each epoch's WAL into it (SQLite's recovery)."""
    remove_files(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".restoring")
    remove_files(temporary)
    temporary.write_bytes(base)
    for _epoch, wal in epochs:
        Path(f"{temporary}-wal").write_bytes(wal)
        conn = sqlite3.connect(temporary, isolation_level=None)
        try:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            conn.close()
    for suffix in ("-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.remove(f"{temporary}{suffix}")
    os.replace(temporary, path)


def _file_size(conn: sqlite3.Connection, path: str) -> int:
    return os.path.getsize(path)


def _snapshot(conn: sqlite3.Connection, path: str) -> bytes:
    """(Database thread) Checkpoint everything into the file, empty the WAL, read the file."""
    busy, _log, _done = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    if busy:
        raise sqlite3.OperationalError("the checkpoint for a snapshot could not complete")
    with open(path, "rb") as file:
        return file.read()


def _chunks(kind: str, epoch: int, offset: int, data: bytes) -> list[tuple[str, int, int, bytes]]:
    return [(kind, epoch, offset + i, data[i : i + CHUNK]) for i in range(0, len(data), CHUNK)]


class DatabaseReplica:
    """The shared backend of one actor's database while it is open on this node."""

    def __init__(self, store: ActorStore, actor_id: str, generation: int) -> None:
        self.store = store
        self.actor_id = actor_id
        self.generation = generation
        #: The WAL epoch being shipped, how far, and the WAL's salt (None: not begun).
        self.epoch = 0
        self.offset = 0
        self.salt: tuple[int, int] | None = None
        #: Where the stored database ends (what a clean close records in the marker).
        self.latest: tuple[int, int] | None = None
        #: A write was refused or failed: the local file may differ from the stored one.
        self.broken = False
        self._fresh = False

    async def restore(self, path: Path, thread: Thread) -> None:
        """Before the file is opened: make it the stored database (or reuse it)."""
        marker = await thread(_take_marker, path)
        latest = await self.store.db_latest(self.actor_id)
        if latest is None:
            await thread(remove_files, path)
            self._fresh = True
            return
        if marker != latest or not await thread(path.exists):
            base, epochs = await self.store.db_load(self.actor_id)
            await thread(_rebuild, path, base, epochs)
        self.latest = latest
        self.epoch = latest[0] + 1  # this wake's WAL is a new epoch

    async def opened(self, path: Path, thread: Thread) -> None:
        """After the file is opened: a new database stores its first snapshot (the empty
        file in WAL mode), which every epoch's WAL applies to."""
        if not self._fresh:
            return
        data = await thread(Path.read_bytes, path)
        self.epoch = 1
        await self._append(_chunks("base", 1, 0, data), None)
        self.latest = (1, 0)
        self._fresh = False

    async def ship(self, path: Path, thread: Thread, run: Callable[..., Awaitable[Any]]) -> None:
        """After a commit: store the WAL frames it appended (and compact when due)."""
        data, end, salt, restarted = await thread(committed_tail, f"{path}-wal", self.offset, self.salt)
        await self.ship_tail(data, end, salt, restarted, path, run)

    async def ship_tail(
        self,
        data: bytes,
        end: int,
        salt: tuple[int, int] | None,
        restarted: bool,
        path: Path,
        run: Callable[..., Awaitable[Any]],
    ) -> None:
        """Store a tail :func:`committed_tail` read (in the same thread job as its statement)."""
        if restarted:
            self.epoch += 1
            self.offset = 0
        self.salt = salt
        if not data:
            return
        await self._append(_chunks("wal", self.epoch, self.offset, data), None)
        self.offset = end
        self.latest = (self.epoch, end)
        if end >= SNAPSHOT_AFTER and end > await run(_file_size, str(path)):
            await self.snapshot(path, run)

    async def snapshot(self, path: Path, run: Callable[..., Awaitable[Any]]) -> None:
        """Store the whole file as the next epoch's base and drop everything older."""
        data = await run(_snapshot, str(path))
        epoch = self.epoch + 1
        await self._append(_chunks("base", epoch, 0, data), epoch)
        self.epoch, self.offset, self.salt = epoch, 0, None
        self.latest = (epoch, 0)

    async def closed(self, path: Path, thread: Thread) -> None:
        """After a clean close: the file holds exactly the stored database."""
        if not self.broken and self.latest is not None:
            await thread(_put_marker, path, self.latest)

    async def drop(self) -> None:
        await self.store.db_drop(self.actor_id)

    async def _append(self, segments: list[tuple[str, int, int, bytes]], drop_before: int | None) -> None:
        try:
            await self.store.db_append(self.actor_id, self.generation, segments, drop_before=drop_before)
        except BaseException:
            self.broken = True
            raise
