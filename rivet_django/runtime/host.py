"""``ActorRuntime``: the one asyncio host of a process's awake actors.

It wakes actors on demand (claiming their lease and generation), keeps them in
memory while they are in use (each puts itself to sleep from its idle check on
the shared :class:`~.idle.IdleTimers`),
renews their leases in batches, keeps the connections of sleeping actors open
(hibernation), and owns the :class:`GroupCommitter` that makes their state
durable.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from ..exceptions import ActorGone, ActorNotFound, ActorStopping
from .committer import GroupCommitter
from .config import Clock, RuntimeConfig
from .conn import Conn, ConnSink, OutgoingEvent
from .idle import IdleTimers
from .instance import ActorInstance, InstanceStatus, NotAwake
from .queue import QueueHub
from .store import ActorStore

if TYPE_CHECKING:
    from ..definition import ActorDefinition
    from ..registry import ActorRegistry

__all__ = ["ActorRuntime"]

logger = logging.getLogger("rivet_django.runtime")

#: How often a call retries when the instance it found was stopping.
_WAKE_ATTEMPTS = 5

#: Actors gone to sleep since the last memory trim that make another one worthwhile.
_TRIM_AFTER_SLEEPS = 1000

#: Seconds after the trim condition is met before trimming (a burst of sleeps ends first).
_TRIM_DELAY = 1.0


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
        client_factory: Callable[[ActorRuntime, str], Any] | None = None,
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
        #: Connections of sleeping actors, kept open (RivetKit's hibernation): the next
        #: instance adopts them, and a call or subscription on one wakes the actor.
        self.hibernated: dict[str, dict[str, Conn]] = {}
        #: When each awake actor next checks whether it may sleep.
        self.idle_timers = IdleTimers()
        #: Most actors awake at once since the last memory trim.
        self._peak = 0
        #: When the last lease renewal that reached the database was sent (monotonic).
        self._renewed_at = time.monotonic()
        self._trim_handle: asyncio.TimerHandle | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._client_factory = client_factory
        #: Publishes broadcasts for connections held by other processes (channel layer).
        self.publisher = publisher
        #: One in-process client per namespace, made on first use (``self.client()``).
        self._clients: dict[str, Any] = {}
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
        self._tasks = [self.loop.create_task(self._renew_leases_forever(), name="rivet-lease-renewal")]
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
        # The process goes away: connections kept open for sleeping actors close now, with
        # a reason the official client reconnects on.
        hibernated, self.hibernated = self.hibernated, {}
        for conns in hibernated.values():
            for conn in conns.values():
                with contextlib.suppress(Exception):
                    await conn.disconnect("actor.stopping")
        if self._trim_handle is not None:
            self._trim_handle.cancel()
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
                    if time.monotonic() < max(inst.leased_at, self._renewed_at) + self.config.lease_seconds:
                        return inst
                    # No renewal reached the database for a whole lease (this process was
                    # paused or cut off): another node may own the actor now. Serve nothing
                    # from this copy, not even a read; claim it again (or learn its owner).
                    self._lapse(inst)
                    continue
                if inst.status is InstanceStatus.STOPPING:
                    # Requests that arrive while stopping wait, then wake it again.
                    await asyncio.shield(inst.stopped)
                    continue
            task = self._waking.get(actor_id)
            if task is None:
                if self.stopping:
                    raise ActorStopping("The runtime is shutting down")
                # A fresh context: the actor's hooks and run() must not inherit the caller's
                # (its connection, a workflow step of another actor...).
                task = asyncio.get_running_loop().create_task(
                    self._wake(actor_id), name=f"rivet-wake-{actor_id}", context=contextvars.Context()
                )
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

    def _lapse(self, inst: ActorInstance) -> None:
        logger.warning(
            "Lease of actor %s lapsed on node %s without renewal; dropping this copy", inst.actor_id, self.node_id
        )
        if self.instances.get(inst.actor_id) is inst:
            del self.instances[inst.actor_id]
        inst.abandon()

    async def _wake(self, actor_id: str) -> ActorInstance:
        leased_at = time.monotonic()  # before the claim: the lease runs from no earlier than this
        claimed = await self.store.claim(actor_id, self.node_id, self.config.lease_seconds)
        if claimed is None:
            raise ActorGone()
        if claimed.record.name not in self.registry:
            raise ActorNotFound(f"Actor {actor_id} is a {claimed.record.name!r}, which is not registered here")
        definition = self.registry.get(claimed.record.name)
        inst = ActorInstance(self, definition, claimed)
        inst.leased_at = leased_at
        self.instances[actor_id] = inst
        if len(self.instances) > self._peak:
            self._peak = len(self.instances)
        try:
            await inst.start()
        except BaseException:
            self.instances.pop(actor_id, None)
            inst.give_back_connections()
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
            # After many actors went to sleep, hand the freed memory back to the OS (once
            # the burst is over): a sleeping actor should cost nothing but its database row.
            if self._peak - len(self.instances) >= _TRIM_AFTER_SLEEPS and self._trim_handle is None and self.loop:
                self._trim_handle = self.loop.call_later(_TRIM_DELAY, self._trim_soon)

    def _trim_soon(self) -> None:
        self._trim_handle = None
        self._peak = len(self.instances)
        self.trim()

    # -- hibernated connections -------------------------------------------------

    def hibernate(self, inst: ActorInstance, conns: list[Conn]) -> None:
        """Keep ``conns`` of a stopping actor open while it sleeps (no ``on_disconnect``, no close)."""
        kept = self.hibernated.setdefault(inst.actor_id, {})
        for conn in conns:
            conn.owner = None
            conn.definition = inst.definition
            kept[conn.id] = conn

    def take_hibernated(self, actor_id: str) -> list[Conn]:
        """The connections a waking actor adopts (its earlier instance hibernated them)."""
        kept = self.hibernated.pop(actor_id, None)
        return list(kept.values()) if kept else []

    def _unhibernate(self, conn: Conn) -> ActorDefinition | None:
        """Forget a hibernated connection; the definition of its actor, or None if it was not one."""
        kept = self.hibernated.get(conn.actor_id)
        if not kept or kept.pop(conn.id, None) is None:
            return None
        if not kept:
            del self.hibernated[conn.actor_id]
        return conn.definition

    def _is_hibernated(self, conn: Conn) -> bool:
        return conn.id in self.hibernated.get(conn.actor_id, ())

    def connection_counts(self, actor_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        """How many connections those of ``actor_ids`` held here have, by actor id.

        ``awake``: an instance runs here; ``live``: its connections; ``hibernated``: those
        kept open here while it sleeps. Only reads: an actor this runtime does not hold is
        left out, never woken (the admin's actor list asks this of every page).
        """
        counts: dict[str, dict[str, Any]] = {}
        for actor_id in actor_ids:
            inst = self.instances.get(actor_id)
            awake = inst is not None and inst.status is not InstanceStatus.STOPPED
            kept = len(self.hibernated.get(actor_id) or ())
            if awake or kept:
                live = len(inst._conns or ()) if inst is not None and awake else 0
                counts[actor_id] = {"awake": awake, "live": live, "hibernated": kept}
        return counts

    def schedule_stop(self, inst: ActorInstance, *, destroy: bool) -> None:
        """Stop an instance after its current calls finish (``self.sleep()``/``destroy()``)."""
        inst.stop(destroy=destroy)

    def _on_fenced(self, actor_id: str, generation: int) -> None:
        inst = self.instances.get(actor_id)
        if inst is not None and inst.generation == generation:
            inst.log.warning("lost ownership (generation %d is stale); dropping it", generation)
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

    async def run_internal(self, actor_id: str, name: str, args: list[Any] | tuple[Any, ...] = ()) -> Any:
        """Run an action as the actor's own internal call: no connection, no connect hooks
        (scheduled runs). Raises ``LostOwnership`` if the actor moves meanwhile."""
        for attempt in range(_WAKE_ATTEMPTS):
            inst = await self.instance(actor_id)
            try:
                return await inst.call_action(name, args, None, conn=None)
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
        async with inst.short_lived_conn(params, request) as conn:
            return await inst.call_action(name, args, kwargs, conn=conn)

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
        """Open a stateful connection (connect hooks run; refusals raise).

        While the actor is stopping, new connections are refused with ``actor.stopping``
        (the official client retries it, and reaches the next instance).
        """
        self._refuse_while_stopping(actor_id)
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

    def _refuse_while_stopping(self, actor_id: str) -> None:
        """New connections are refused while the actor stops (calls wait instead)."""
        current = self.instances.get(actor_id)
        if current is not None and current.status is InstanceStatus.STOPPING:
            raise ActorStopping("Actor is stopping.")

    async def disconnect(self, conn: Conn) -> None:
        """The client went away: forget the connection and run ``on_disconnect``.

        A connection that closes while its actor sleeps wakes the actor for its
        ``on_disconnect`` (only if the actor has one).
        """
        inst = self.instances.get(conn.actor_id)
        if inst is not None and conn.id in inst.conns:
            await inst.close_conn(conn)
            return
        definition = self._unhibernate(conn)
        if definition is not None and definition.hook("on_disconnect") is not None:
            with contextlib.suppress(ActorNotFound):
                woken = await self.instance(conn.actor_id)
                await woken.run_disconnect_hook(conn)

    async def subscribe(self, conn: Conn, event: str, subscribe: bool = True) -> None:
        inst = self.instances.get(conn.actor_id)
        if (inst is None or conn.id not in inst.conns) and self._is_hibernated(conn):
            inst = await self.instance(conn.actor_id)  # a hibernated connection wakes its actor
        if inst is None or conn.id not in inst.conns:
            raise ActorStopping("The connection's actor is not awake")
        await inst.subscribe(conn, event, subscribe)

    async def handle_request(self, actor_id: str, request: Any, params: Any = None) -> Any:
        """Raw HTTP: the actor's ``on_request``, on a short-lived connection whose connect
        hooks run first and whose ``on_disconnect`` runs after (RivetKit)."""
        for attempt in range(_WAKE_ATTEMPTS):
            inst = await self.instance(actor_id)
            try:
                if inst.definition.hook("on_request") is None or not inst.definition.has_connect_hooks:
                    return await inst.handle_request(request)
                async with inst.short_lived_conn(params, request) as conn:
                    return await inst.handle_request(request, conn)
            except NotAwake:
                if attempt == _WAKE_ATTEMPTS - 1:
                    raise
        raise NotAwake()

    async def open_raw_websocket(self, actor_id: str, params: Any, request: Any) -> tuple[ActorInstance, Conn | None]:
        """Raw WebSocket, before it is accepted: wake the actor and run the connect hooks
        (refusals raise). New raw sockets are refused while the actor is stopping."""
        self._refuse_while_stopping(actor_id)
        inst = await self.instance(actor_id)
        if not inst.definition.has_connect_hooks:
            return inst, None
        inst._begin_turn()
        try:
            return inst, await inst.open_conn(params, request=request)
        finally:
            inst._end_turn()

    async def run_websocket(self, inst: ActorInstance, ws: Any, request: Any, conn: Conn | None = None) -> None:
        """Raw WebSocket: the actor's ``on_websocket`` for as long as it runs, then the
        connection's ``on_disconnect``."""
        try:
            await inst.run_websocket(ws, request, conn)
        finally:
            if conn is not None:
                await inst.close_conn(conn)

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

    def client(self, namespace: str) -> Any:
        """The in-process async client addressing actors in ``namespace`` (``self.client()``)."""
        client = self._clients.get(namespace)
        if client is None:
            if self._client_factory is None:
                raise RuntimeError("This runtime has no client factory")
            client = self._clients[namespace] = self._client_factory(self, namespace)
        return client

    # -- background work ---------------------------------------------------------

    async def reap_idle(self) -> int:
        """Put every idle actor to sleep now; return how many were stopped.

        Actors sleep on their own timers; this is for tests and tools that move a
        manual clock."""
        now = self.clock.monotonic()
        idle = [inst for inst in list(self.instances.values()) if inst.is_idle(now)]
        for inst in idle:
            inst.stop()
        return len(idle)

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
        # Sleeping actors with connections hibernating here keep their lease too.
        ids.extend(a for a in self.hibernated if a not in self.instances)
        sent = time.monotonic()
        lost = await self.store.renew_leases(self.node_id, ids, self.config.lease_seconds)
        self._renewed_at = sent
        for actor_id in lost:
            inst = self.instances.get(actor_id)
            if inst is not None and inst.status is not InstanceStatus.STARTING:
                inst.log.warning("its lease was taken by another node; dropping it")
                self.instances.pop(actor_id, None)
                inst.abandon()
            elif inst is None and actor_id in self.hibernated:
                # It woke elsewhere: these clients reconnect to it there.
                for conn in list(self.hibernated.pop(actor_id, {}).values()):
                    with contextlib.suppress(Exception):
                        await conn.disconnect("actor.stopping")

    async def _renew_leases_forever(self) -> None:
        while True:
            await asyncio.sleep(self.config.lease_seconds / 3)
            try:
                await self.renew_leases()
            except Exception:
                logger.exception("Lease renewal failed")
