"""Group commit: many actors' dirty states written in one transaction.

An action in ``"commit"`` durability submits its actor's new state and waits
for the returned future before its reply is sent. Submissions that arrive while
a transaction is in flight form the next batch, so under load one fsync covers
many replies; under no load a write starts at once (``COMMIT_INTERVAL`` can add
a short gathering window). A write whose fencing generation is stale fails with
:class:`~rivet_django.exceptions.LostOwnership` and never touches the row.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from .. import metrics
from ..exceptions import LostOwnership
from .store import ActorStore, StateWrite

__all__ = ["GroupCommitter"]

logger = logging.getLogger("rivet_django.runtime")


@dataclass
class _Pending:
    write: StateWrite
    futures: list[asyncio.Future[None]] = field(default_factory=list)


class GroupCommitter:
    """Batches :class:`StateWrite`\\ s into transactions on one background task."""

    def __init__(
        self,
        store: ActorStore,
        *,
        interval: float = 0.0,
        batch_size: int = 512,
        on_fenced: Callable[[str, int], None] | None = None,
    ) -> None:
        self._store = store
        self._interval = interval
        self._batch_size = batch_size
        self._on_fenced = on_fenced
        self._pending: dict[str, _Pending] = {}
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        #: Transactions and writes committed so far (for tests and benchmarks).
        self.transactions = 0
        self.writes = 0

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="rivet-group-commit")

    def submit(self, write: StateWrite) -> asyncio.Future[None]:
        """Queue a write; the future resolves once it is durable.

        A second write for the same actor before the batch leaves replaces the
        first (the newest state wins) and both callers wait for the same commit.
        """
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        pending = self._pending.get(write.actor_id)
        if pending is None or pending.write.generation != write.generation:
            if pending is not None:
                # A new generation supersedes an old one's unsent write.
                self._fail([pending], LostOwnership())
            self._pending[write.actor_id] = _Pending(write, [future])
        else:
            old = pending.write
            pending.write = StateWrite(
                actor_id=write.actor_id,
                generation=write.generation,
                state=write.state if write.state is not None else old.state,
                initialized=old.initialized or write.initialized,
                release=old.release or write.release,
                asleep=old.asleep or write.asleep,
                extra={**old.extra, **write.extra},
            )
            pending.futures.append(future)
        self._idle.clear()
        self._wakeup.set()
        return future

    async def flush(self) -> None:
        """Wait until everything submitted so far is committed (or failed)."""
        await self._idle.wait()

    async def stop(self) -> None:
        await self.flush()
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            if self._interval > 0:
                await asyncio.sleep(self._interval)
            while self._pending:
                await self._commit(self._take_batch())
            self._idle.set()

    def _take_batch(self) -> list[_Pending]:
        batch: list[_Pending] = []
        for actor_id in list(self._pending)[: self._batch_size]:
            batch.append(self._pending.pop(actor_id))
        return batch

    async def _commit(self, batch: list[_Pending]) -> None:
        started = time.perf_counter()
        try:
            fenced = await self._store.commit([p.write for p in batch])
        except asyncio.CancelledError:
            self._fail(batch, LostOwnership("The runtime stopped before the state was committed"))
            raise
        except Exception as exc:
            logger.exception("Group commit of %d actor states failed", len(batch))
            self._fail(batch, exc)
            return
        self.transactions += 1
        self.writes += len(batch)
        if metrics.enabled():
            metrics.commit_finished(len(batch), time.perf_counter() - started)
        for pending in batch:
            if pending.write.actor_id in fenced:
                self._fail([pending], LostOwnership())
                if self._on_fenced is not None:
                    self._on_fenced(pending.write.actor_id, pending.write.generation)
            else:
                for future in pending.futures:
                    if not future.done():
                        future.set_result(None)

    @staticmethod
    def _fail(batch: list[_Pending], exc: BaseException) -> None:
        for pending in batch:
            for future in pending.futures:
                if not future.done():
                    future.set_exception(exc)
                    # Callers may have gone away (throttled saves); don't warn about it.
                    future.exception()
