"""Test helpers: run the real runtime in-process, control its clock, crash it.

With pytest (and pytest-django), add ``pytest_plugins = ["rivet_django.testing.fixtures"]``
to your ``conftest.py`` for the ``rivet_node`` and ``rivet_client`` fixtures.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from ..node import LocalNode, set_node
from ..runtime.config import Clock

__all__ = ["ManualClock", "crash_node", "fire_schedules", "running_node"]


class ManualClock(Clock):
    """A clock that only moves when told to (``advance``)."""

    def __init__(self, start: float = 1_000_000.0, wall: float = 1_700_000_000.0) -> None:
        self._now = start
        self._wall = wall

    def monotonic(self) -> float:
        return self._now

    def time(self) -> float:
        return self._wall + (self._now - 1_000_000.0)

    def advance(self, seconds: float) -> None:
        self._now += seconds


@contextlib.asynccontextmanager
async def running_node(*, node_id: str = "test-node", clock: Clock | None = None) -> AsyncIterator[LocalNode]:
    """A started :class:`LocalNode` installed as this process's node; stopped on exit."""
    node = LocalNode(node_id=node_id, clock=clock)
    set_node(node)
    await node.start()
    try:
        yield node
    finally:
        if node.runtime.started:
            await node.stop(timeout=5)
        else:
            await node.store.close()
        set_node(None)


async def crash_node(node: LocalNode) -> None:
    """Simulate ``kill -9``: drop every instance and background task, write nothing."""
    runtime = node.runtime
    for inst in list(runtime.instances.values()):
        inst.abandon()
    runtime.instances.clear()
    for task in runtime._tasks:
        task.cancel()
    if runtime.scheduler is not None:
        runtime.scheduler.abandon()
    committer_task: Any = runtime.committer._task
    if committer_task is not None:
        committer_task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await committer_task
    runtime.started = False
    await node.store.close()
    set_node(None)


async def fire_schedules(node: LocalNode, advance: float = 0.0) -> int:
    """Move the node's :class:`ManualClock` on by ``advance`` seconds, then run every schedule due.

    Returns how many runs were claimed (skipped misfires count too). The runs have
    finished when it returns, retries and ``run_all`` catch-ups included as far as
    they are due, so a test can assert right after, without waiting in real time.
    """
    if advance:
        clock = node.runtime.clock
        if not isinstance(clock, ManualClock):
            raise TypeError("fire_schedules(advance=...) needs a node started with clock=ManualClock()")
        clock.advance(advance)
    return await node.runtime.scheduler.fire_due()
