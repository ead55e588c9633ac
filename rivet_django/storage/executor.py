"""A small pool of threads that run the runtime's ORM work.

Django's ORM is synchronous and its connections are per thread. Running all of
the runtime's queries on a few dedicated threads keeps connections warm, keeps
the event loop free, and (with one thread, the SQLite default) serializes
writers so SQLite never answers "database is locked".
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from django.db import InterfaceError, OperationalError, close_old_connections, connections

__all__ = ["DatabaseExecutor"]

T = TypeVar("T")


class DatabaseExecutor:
    """Run sync ORM callables on dedicated threads and await them."""

    def __init__(self, threads: int = 1) -> None:
        self._threads = max(1, threads)
        self._pool = ThreadPoolExecutor(max_workers=self._threads, thread_name_prefix="rivet-db")
        self._closed = False

    async def run(self, func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, functools.partial(_call, func, args, kwargs))

    async def shutdown(self) -> None:
        """Close the threads' database connections and stop the threads (idempotent)."""
        if self._closed:
            return
        self._closed = True
        loop = asyncio.get_running_loop()
        # Connections belong to their threads: a barrier makes each worker close its own.
        barrier = threading.Barrier(self._threads)
        await asyncio.gather(
            *(loop.run_in_executor(self._pool, _close_connections, barrier) for _ in range(self._threads))
        )
        self._pool.shutdown(wait=False)


def _call(func: Callable[..., T], args: tuple[Any, ...], kwargs: dict[str, Any]) -> T:
    try:
        return func(*args, **kwargs)
    except (InterfaceError, OperationalError) as exc:
        # A dropped connection (database restart, idle timeout) is retried once on
        # a fresh one; "database is locked" and real errors propagate.
        if "locked" in str(exc):
            raise
        close_old_connections()
        for conn in connections.all(initialized_only=True):
            if conn.connection is not None and not conn.is_usable():
                conn.close()
        return func(*args, **kwargs)


def _close_connections(barrier: threading.Barrier) -> None:
    try:
        barrier.wait(timeout=10)
    except threading.BrokenBarrierError:
        pass
    for conn in connections.all(initialized_only=True):
        conn.close()
