"""``ActorRuntime``: the one asyncio host of a process's awake actors.

It wakes actors on demand (claiming their lease and generation), keeps them in
memory while they are in use, renews their leases in batches, puts idle ones to
sleep, and owns the :class:`GroupCommitter` that makes their state durable.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..exceptions import ActorNotFound
from .committer import GroupCommitter
from .config import Clock, RuntimeConfig
from .conn import Conn, ConnSink, OutgoingEvent
from .instance import ActorInstance, InstanceStatus, NotAwake
from .queue import QueueHub
from .store import ActorStore

if TYPE_CHECKING:
    from ..registry import ActorRegistry

__all__ = ["ActorRuntime"]

logger = logging.getLogger("rivet_django.runtime")

#: How often a call retries when the instance it found was stopping.
_WAKE_ATTEMPTS = 5

#: Actors gone to sleep since the last memory trim that make another one worthwhile.
_TRIM_AFTER_SLEEPS = 1000


def compact(table: dict[Any, Any]) -> None:
    """Shrink ``table`` in place to fit what it holds.

    A dict keeps the slots of its largest size after entries are removed: the tables
    indexing 10,000 awake actors stay ~300 KB each once they sleep. Rebuilding frees them.
    """
    items = list(table.items())
    table.clear()
    table.update(items)


def _release_memory() -> None:
    """Collect cycles and return free heap pages to the OS (glibc ``malloc_trim``)."""
    import ctypes
    import ctypes.util
    import gc

    gc.collect()
    libc_name = ctypes.util.find_library("c")
    if libc_name is None:
        return
    try:
        ctypes.CDLL(libc_name).malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


class ActorRuntime:
    """Hosts :class:`ActorInstance`\\ s on the running event loop."""

    def __init__(
        self,
        store: ActorStore,
        registry: ActorRegistry,
        *,
        node_id: str,
        config: RuntimeConfig | None = None,
        clock: Clock | None = None,
        client_factory: Callable[[ActorRuntime], Any] | None = None,
        publisher: Callable[[str, OutgoingEvent], None] | None = None,
        version: str = "",
        address: str = "",
    ) -> None:
        self.store = store
        self.registry = registry
        self.node_id = node_id
        self.config = config or RuntimeConfig()
        self.clock = clock or Clock()
        self.version = version
        self.address = address
        self.instances: dict[str, ActorInstance] = {}
        #: Called with each instance that stopped (sleep, destroy, lost lease).
        self.stop_listeners: list[Callable[[ActorInstance], None]] = []
        #: Called after many actors went to sleep, to shrink what indexed them.
        self.trim_listeners: list[Callable[[], None]] = []
        self._waking: dict[str, asyncio.Task[ActorInstance]] = {}
        self._tasks: list[asyncio.Task[Any]] = []
        self._client_factory = client_factory
        #: Publishes broadcasts for connections held by other processes (channel layer).
        self.publisher = publisher
        self._client: Any = None
        self.committer = GroupCommitter(
            store,
            interval=self.config.commit_interval,
            batch_size=self.config.commit_batch_size,
            on_fenced=self._on_fenced,
        )
        self.started = False
        self.stopping = False
        self.loop: asyncio.AbstractEventLoop | None = None
        #: Fires due schedules (embedded driver); set by the node before start().
        self.scheduler: Any = None
        #: Client sends to actors' durable queues and the senders waiting for completions.
        self.queues = QueueHub(self)

    # -- process lifecycle ---------------------------------------------------

    async def start(self) -> None:
        """Register the node and start the committer, idle reaper and lease renewal."""
        if self.started:
            return
        self.loop = asyncio.get_running_loop()
        await self.store.register_node(self.node_id, self.address, self.version)
        self.committer.start()
        if self.scheduler is not None:
            await self.scheduler.start()
        self._tasks = [
            self.loop.create_task(self._reap_idle_forever(), name="rivet-idle-reaper"),
            self.loop.create_task(self._renew_leases_forever(), name="rivet-lease-renewal"),
        ]
        # Actors that were consuming queued messages when the process stopped or crashed resume.
        self._tasks.append(self.loop.create_task(self.queues.recover(), name="rivet-queue-recovery"))
        self.started = True
        logger.info("Actor runtime started on node %s", self.node_id)

    async def stop(self, timeout: float | None = None) -> None:
        """Sleep every actor (final flush), then stop background work and release the node."""
        if not self.started or self.stopping:
            return
        self.stopping = True
        if self.scheduler is not None:
            await self.scheduler.stop()
        timeout = self.config.shutdown_timeout if timeout is None else timeout
        stops = [inst.stop() for inst in list(self.instances.values())]
        if stops:
            _done, pending = await asyncio.wait(stops, timeout=timeout)
            if pending:
                logger.warning("%d actor(s) did not stop within %gs", len(pending), timeout)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.committer.stop()
        with contextlib.suppress(Exception):
            await self.store.release_node(self.node_id)
        self.started = False
        logger.info("Actor runtime on node %s stopped", self.node_id)

    # -- instances ---------------------------------------------------------------

    async def instance(self, actor_id: str) -> ActorInstance:
        """The awake instance of ``actor_id``, waking it if needed."""
        for _ in range(_WAKE_ATTEMPTS):
            inst = self.instances.get(actor_id)
            if inst is not None:
                if inst.status is InstanceStatus.AWAKE:
                    return inst
                if inst.status is InstanceStatus.STOPPING:
                    # Requests that arrive while stopping wait, then wake it again.
                    await asyncio.shield(inst.stopped)
                    continue
            task = self._waking.get(actor_id)
            if task is None:
                if self.stopping:
                    from ..exceptions import ActorStopping

                    raise ActorStopping("The runtime is shutting down")
                task = asyncio.get_running_loop().create_task(self._wake(actor_id), name=f"rivet-wake-{actor_id}")
                self._waking[actor_id] = task
                task.add_done_callback(self._forget_waking)
            inst = await asyncio.shield(task)
            if inst.status is InstanceStatus.AWAKE:
                return inst
        raise NotAwake()

    def _forget_waking(self, task: asyncio.Task[ActorInstance]) -> None:
        for actor_id, waking in list(self._waking.items()):
            if waking is task:
                del self._waking[actor_id]

    async def _wake(self, actor_id: str) -> ActorInstance:
        claimed = await self.store.claim(actor_id, self.node_id, self.config.lease_seconds)
        if claimed is None:
            raise ActorNotFound(f"Actor {actor_id} not found")
        if claimed.record.name not in self.registry:
            raise ActorNotFound(f"Actor {actor_id} is a {claimed.record.name!r}, which is not registered here")
        definition = self.registry.get(claimed.record.name)
        inst = ActorInstance(self, definition, claimed)
        self.instances[actor_id] = inst
        try:
            await inst.start()
        except BaseException:
            self.instances.pop(actor_id, None)
            inst.abandon()
            # Give the lease back so the next call can try again from storage.
            from .store import StateWrite

            with contextlib.suppress(Exception):
                await self.committer.submit(StateWrite(actor_id, claimed.generation, None, release=True))
            raise
        logger.debug("Woke %s %s (%s)", definition.name, list(claimed.record.key), actor_id)
        return inst

    def forget(self, inst: ActorInstance) -> None:
        """Called by an instance when it has stopped."""
        if self.instances.get(inst.actor_id) is inst:
            del self.instances[inst.actor_id]
            for listener in self.stop_listeners:
                listener(inst)

    def schedule_stop(self, inst: ActorInstance, *, destroy: bool) -> None:
        """Stop an instance after its current calls finish (``self.sleep()``/``destroy()``)."""
        inst.stop(destroy=destroy)

    def _on_fenced(self, actor_id: str, generation: int) -> None:
        inst = self.instances.get(actor_id)
        if inst is not None and inst.generation == generation:
            logger.warning("Actor %s lost ownership (generation %d is stale); dropping it", actor_id, generation)
            self.instances.pop(actor_id, None)
            inst.abandon()

    # -- calls -------------------------------------------------------------------

    async def call_action(
        self,
        actor_id: str,
        name: str,
        args: list[Any] | tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
        *,
        params: Any = None,
        request: Any = None,
        conn: Conn | None = None,
    ) -> Any:
        """Run an action on the actor (waking it), as a stateless call unless ``conn`` is given."""
        for attempt in range(_WAKE_ATTEMPTS):
            inst = await self.instance(actor_id)
            try:
                if conn is not None:
                    return await inst.call_action(name, args, kwargs, conn=conn)
                return await self._stateless_call(inst, name, args, kwargs, params, request)
            except NotAwake:
                if attempt == _WAKE_ATTEMPTS - 1:
                    raise
        raise NotAwake()

    async def _stateless_call(
        self,
        inst: ActorInstance,
        name: str,
        args: list[Any] | tuple[Any, ...],
        kwargs: dict[str, Any] | None,
        params: Any,
        request: Any,
    ) -> Any:
        if not inst.definition.has_connect_hooks:
            return await inst.call_action(name, args, kwargs, conn=Conn(params))
        # PROTOCOL.md section 6: a short-lived connection runs the connect hooks.
        inst._begin_turn()
        try:
            conn = await inst.open_conn(params, request=request)
            try:
                return await inst.call_action(name, args, kwargs, conn=conn)
            finally:
                await inst.close_conn(conn)
        finally:
            inst._end_turn()

    # -- connections ------------------------------------------------------------------

    async def connect(
        self,
        actor_id: str,
        params: Any = None,
        *,
        sink: ConnSink | None = None,
        request: Any = None,
        transport: str = "websocket",
    ) -> Conn:
        """Open a stateful connection (connect hooks run; refusals raise)."""
        for _attempt in range(_WAKE_ATTEMPTS):
            inst = await self.instance(actor_id)
            if inst.status is not InstanceStatus.AWAKE:
                continue
            conn = Conn(params, transport=transport, sink=sink, request=request, actor_id=actor_id)
            inst._begin_turn()
            try:
                return await inst.open_conn(params, request=request, conn=conn)
            finally:
                inst._end_turn()
        raise NotAwake()

    async def disconnect(self, conn: Conn) -> None:
        """The client went away: forget the connection and run ``on_disconnect``."""
        inst = self.instances.get(conn.actor_id)
        if inst is not None and conn.id in inst.conns:
            await inst.close_conn(conn)

    async def subscribe(self, conn: Conn, event: str, subscribe: bool = True) -> None:
        inst = self.instances.get(conn.actor_id)
        if inst is None or conn.id not in inst.conns:
            from ..exceptions import ActorStopping

            raise ActorStopping("The connection's actor is not awake")
        await inst.subscribe(conn, event, subscribe)

    async def handle_request(self, actor_id: str, request: Any) -> Any:
        """Raw HTTP: the actor's ``on_request``."""
        for attempt in range(_WAKE_ATTEMPTS):
            inst = await self.instance(actor_id)
            try:
                return await inst.handle_request(request)
            except NotAwake:
                if attempt == _WAKE_ATTEMPTS - 1:
                    raise
        raise NotAwake()

    async def run_websocket(self, actor_id: str, ws: Any, request: Any) -> None:
        """Raw WebSocket: the actor's ``on_websocket`` for as long as it runs."""
        inst = await self.instance(actor_id)
        await inst.run_websocket(ws, request)

    def publish(self, actor_id: str, event: OutgoingEvent) -> None:
        if self.publisher is not None:
            self.publisher(actor_id, event)

    async def sleep_actor(self, actor_id: str) -> None:
        inst = self.instances.get(actor_id)
        if inst is not None:
            await inst.stop()

    async def destroy_actor(self, actor_id: str) -> bool:
        """Destroy an actor, awake or not; False if it did not exist."""
        inst = self.instances.get(actor_id)
        if inst is None or inst.status is InstanceStatus.STOPPED:
            try:
                inst = await self.instance(actor_id)
            except ActorNotFound:
                return False
        await inst.stop(destroy=True)
        return True

    def client(self) -> Any:
        """The in-process async client actors get from ``self.client()``."""
        if self._client is None:
            if self._client_factory is None:
                raise RuntimeError("This runtime has no client factory")
            self._client = self._client_factory(self)
        return self._client

    # -- background work ---------------------------------------------------------

    async def reap_idle(self) -> int:
        """Put every idle actor to sleep now; return how many were stopped."""
        now = self.clock.monotonic()
        idle = [inst for inst in list(self.instances.values()) if inst.is_idle(now)]
        for inst in idle:
            inst.stop()
        return len(idle)

    async def _reap_idle_forever(self) -> None:
        peak = 0
        while True:
            await asyncio.sleep(self.config.idle_check_interval)
            try:
                await self.reap_idle()
            except Exception:
                logger.exception("Idle reaper failed")
            # After many actors went to sleep, hand the freed memory back to the OS:
            # a sleeping actor should cost (almost) nothing but its database row.
            peak = max(peak, len(self.instances))
            if peak - len(self.instances) >= _TRIM_AFTER_SLEEPS:
                peak = len(self.instances)
                self.trim()

    def trim(self) -> None:
        """Give back what indexed actors that went to sleep, then free heap pages."""
        compact(self.instances)
        compact(self._waking)
        for listener in self.trim_listeners:
            listener()
        _release_memory()

    async def renew_leases(self) -> None:
        """Extend the leases of every awake actor in one batch; drop the ones lost."""
        ids = [a for a, inst in self.instances.items() if inst.status is not InstanceStatus.STOPPED]
        lost = await self.store.renew_leases(self.node_id, ids, self.config.lease_seconds)
        for actor_id in lost:
            inst = self.instances.get(actor_id)
            if inst is not None and inst.status is not InstanceStatus.STARTING:
                logger.warning("Lease of actor %s was taken by another node; dropping it", actor_id)
                self.instances.pop(actor_id, None)
                inst.abandon()

    async def _renew_leases_forever(self) -> None:
        while True:
            await asyncio.sleep(self.config.lease_seconds / 3)
            try:
                await self.renew_leases()
            except Exception:
                logger.exception("Lease renewal failed")
