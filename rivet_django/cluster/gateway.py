"""The gateway: the one place an operation on an actor is sent to where the actor lives.

Every way in (HTTP action, queue send, raw request, ``/connect`` and raw WebSocket,
``Client.local()``, ``self.client()``, scheduled runs) calls :meth:`Gateway.dispatch` with the
operation in two forms:

- ``local(runtime, actor_id)``: run it on this process's runtime;
- ``remote(peer, actor_id, hops)``: send it to another node (``actor_id`` None: the
  peer resolves the target itself).

A hosting gateway (``runactors``, or a process that hosts its own actors because no
node was running) resolves the target, runs the operation here when the actor is
awake here or its lease can be claimed here, and otherwise sends it to the node
holding the lease (found in the ``Node`` table). A forwarding gateway (web workers,
shells, Celery workers while a node runs) hosts nothing: it sends every operation,
unresolved, to a live node.

While an actor moves (its node died, or shut down and released it), the gateway
waits for the lease to be claimable and claims it here, up to one lease; a caller
only sees ``actor.stopping`` (retryable) when that runs out.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import weakref
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from ..conf import rivet_settings
from ..exceptions import ActorElsewhere, ActorGone, ActorStopping
from .directory import NodeDirectory
from .peers import Peer, Peers, PeerUnreachable, unreachable
from .placement import load_placement

if TYPE_CHECKING:
    from ..gateway import GatewayTarget
    from ..node import LocalNode
    from ..runtime.host import ActorRuntime

__all__ = ["MAX_HOPS", "Gateway", "connection_counts", "current_gateway", "observing_gateway"]

logger = logging.getLogger("rivet_django.cluster")

T = TypeVar("T")

Local = Callable[["ActorRuntime", str], Awaitable[T]]
Remote = Callable[[Peer, "str | None", int], Awaitable[T]]

#: An operation is forwarded at most this many times (A -> B, B -> C when the actor
#: moved meanwhile); past that it fails with the retryable ``actor.stopping``.
MAX_HOPS = 2

#: How often a call waiting for a dead node's lease tries to claim it.
_RETRY_INTERVAL = 0.25

#: Actors whose owner a gateway remembers (the oldest are forgotten first).
_OWNERS_KEPT = 100_000


class Gateway:
    """Sends operations to the runtime that owns their actor: this one, or a peer's."""

    def __init__(self, node: LocalNode | None) -> None:
        self.node = node
        if node is not None:
            store = node.store
            self.node_id: str | None = node.runtime.node_id
            lease = node.runtime.config.lease_seconds
        else:
            from ..storage.store import DjangoActorStore

            store = DjangoActorStore(threads=1)
            self.node_id = None
            lease = float(rivet_settings.LEASE_SECONDS)
        self.lease_seconds = lease
        self.directory = NodeDirectory(store, lease, self.node_id)
        self.peers = Peers()
        self.placement = load_placement(str(rivet_settings.PLACEMENT))
        #: Actors last found on another node (id -> node id): their calls go straight there.
        self._owners: dict[str, str] = {}
        self.loop: asyncio.AbstractEventLoop | None = node.loop if node is not None else None

    async def dispatch(
        self, target: GatewayTarget, local: Local[T], remote: Remote[T], *, hops: int = 0
    ) -> tuple[str | None, T]:
        """Run an operation on the actor ``target`` names; its id (None if a peer resolved it) and result.

        A key may name an actor that was destroyed since it was resolved: when the
        runtime finds it gone, the key is resolved afresh once (``getOrCreate``
        creates its successor), never for a direct id.
        """
        if self.node is None:
            return None, await self.forward_anywhere(remote, hops)
        router = self.node.router
        # A new actor is not woken by its creation: the operation wakes it where placement says.
        wake = not self.placement.consults_nodes
        actor_id = await target.resolve(router, wake=wake)
        try:
            return actor_id, await self.on_actor(actor_id, local, remote, hops=hops)
        except ActorGone:
            if target.method == "id":
                raise
            router.forget(target.namespace, target.name or "", target.key)
            actor_id = await target.resolve(router, wake=wake)
            return actor_id, await self.on_actor(actor_id, local, remote, hops=hops)

    async def on_actor(self, actor_id: str, local: Local[T], remote: Remote[T], *, hops: int = 0) -> T:
        """Run an operation on a resolved actor, wherever it lives."""
        assert self.node is not None
        runtime = self.node.runtime
        owner: str | None = None
        if actor_id in runtime.instances:
            try:
                return await local(runtime, actor_id)
            except ActorElsewhere as exc:  # its lease lapsed here (a paused process) and moved
                owner = exc.node_id
        loop = asyncio.get_running_loop()
        deadline: float | None = None
        while True:
            if owner is None:
                owner = self._owners.get(actor_id) or await self._placed(actor_id, hops)
            if owner == self.node_id:
                try:
                    return await local(runtime, actor_id)
                except ActorElsewhere as exc:
                    owner = exc.node_id
            if hops >= MAX_HOPS:
                raise ActorStopping(f"Actor {actor_id} is moving to another node; try again")
            address = await self.directory.address(owner)
            if address is not None:
                self._remember_owner(actor_id, owner)
                try:
                    return await remote(self.peers.get(address), actor_id, hops + 1)
                except Exception as exc:
                    if not unreachable(exc):
                        raise
                    logger.warning("Node %s (%s) did not answer; waiting for its leases", owner, address)
            # The owner is dead, paused or hosts without an address: its lease runs out
            # within one lease time, then the claim here succeeds.
            self._owners.pop(actor_id, None)
            self.directory.invalidate()
            owner = None
            if deadline is None:
                deadline = loop.time() + self.lease_seconds + 1.0
            elif loop.time() >= deadline:
                raise ActorStopping(f"Actor {actor_id} is held by a node that does not answer")
            await asyncio.sleep(_RETRY_INTERVAL)

    async def run_action(self, actor_id: str, action: str, args: list[Any], *, hops: int = 0) -> Any:
        """Run an action as an internal call (no connection, no connect hooks), wherever
        the actor lives: how a scheduled run reaches its actor."""

        async def local(runtime: ActorRuntime, actor_id: str) -> Any:
            return await runtime.run_internal(actor_id, action, args)

        async def remote(peer: Peer, actor_id: str | None, hops: int) -> Any:
            assert actor_id is not None
            return await peer.operate("run_action", {"a": actor_id, "n": action, "hops": hops}, args)

        return await self.on_actor(actor_id, local, remote, hops=hops)

    async def inspect(self, actor_id: str, op: str, *, hops: int = 0, **args: Any) -> Any:
        """An inspector operation (:mod:`rivet_django.runtime.inspector`) on the actor where it
        lives, for a caller authorized already (the admin's staff user): no token."""

        async def local(runtime: ActorRuntime, actor_id: str) -> Any:
            from ..runtime.inspector import inspect

            return await inspect(runtime, actor_id, op, None, trusted=True, **args)

        async def remote(peer: Peer, _: str | None, hops: int) -> Any:
            return await peer.operate("inspect", {"a": actor_id, "hops": hops}, {"op": op, **args})

        if self.node is None:
            return await self.forward_anywhere(remote, hops)
        return await self.on_actor(actor_id, local, remote, hops=hops)

    async def connection_counts(
        self, owners: Mapping[str, Sequence[str]], *, timeout: float
    ) -> dict[str, dict[str, Any] | None]:
        """Connection counts of actors held by the nodes ``owners`` names (node id -> actor
        ids), never waking one: :meth:`ActorRuntime.connection_counts` on each node, all
        asked at once, each once.

        An actor its node does not hold (any more) is missing from the answer; the actors
        of a node that does not answer within ``timeout`` (dead, paused, no address) map
        to None.
        """
        nodes = list(owners.items())
        answers = await asyncio.gather(*(self._counts_on(node_id, ids, timeout) for node_id, ids in nodes))
        counts: dict[str, dict[str, Any] | None] = {}
        for answer in answers:
            counts.update(answer)
        return counts

    async def _counts_on(self, node_id: str, actor_ids: Sequence[str], timeout: float) -> dict[str, Any]:
        """One node's answer for ``actor_ids``, or None for each when it does not give one in time."""
        try:
            return await asyncio.wait_for(self._ask_counts(node_id, actor_ids), timeout)
        except Exception as exc:
            logger.info("Node %s gave no connection counts: %r", node_id, exc)
            return dict.fromkeys(actor_ids)

    async def _ask_counts(self, node_id: str, actor_ids: Sequence[str]) -> dict[str, Any]:
        if self.node is not None and node_id == self.node_id:
            return self.node.runtime.connection_counts(actor_ids)
        address = await self.directory.address(node_id)
        if address is None:
            raise PeerUnreachable(f"Node {node_id} is not live or serves no API")
        answer = await self.peers.get(address).operate("connection_counts", {}, {"ids": list(actor_ids)})
        return {actor_id: answer[actor_id] for actor_id in actor_ids if actor_id in answer}

    async def _placed(self, actor_id: str, hops: int) -> str:
        """Where an actor not known to live elsewhere should run: here unless the policy says otherwise."""
        assert self.node_id is not None
        if hops or not self.placement.consults_nodes:
            return self.node_id
        owner = await self.directory.store.owner_of(actor_id)
        if owner is not None:
            return owner
        chosen = self.placement.choose(actor_id, self.node_id, await self.directory.loads())
        self.directory.placed(chosen)
        return chosen

    async def forward_anywhere(self, remote: Remote[T], hops: int = 0) -> T:
        """A forwarding gateway: send the operation to any live node (another one if it does not answer)."""
        if hops >= MAX_HOPS:
            raise ActorStopping("The operation was forwarded too many times; try again")
        tried: set[str] = set()
        for _ in range(4):
            nodes = [info for info in await self.directory.serving() if info.address not in tried]
            if not nodes:
                break
            address = random.choice(nodes).address
            try:
                return await remote(self.peers.get(address), None, hops + 1)
            except Exception as exc:
                if not unreachable(exc):
                    raise
                tried.add(address)
                self.directory.invalidate()
        raise ActorStopping("No actor node answers; is runactors running?")

    def _remember_owner(self, actor_id: str, owner: str) -> None:
        if self._owners.get(actor_id) != owner:
            self._owners.pop(actor_id, None)
            self._owners[actor_id] = owner
            if len(self._owners) > _OWNERS_KEPT:
                del self._owners[next(iter(self._owners))]

    async def has_peers(self) -> bool:
        return bool(await self.directory.serving())

    async def close(self) -> None:
        await self.peers.close()


_forwarders: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Gateway] = weakref.WeakKeyDictionary()


async def current_gateway(host: Callable[[], Awaitable[LocalNode]] | None = None, *, shared: bool = False) -> Gateway:
    """This process's gateway.

    ``runactors`` (and a process already hosting actors) answers with its node's
    gateway. Any other process forwards while a node is live, and otherwise hosts
    its actors itself on the node ``host()`` starts (by default: on this loop).
    A forwarding gateway is bound to the running loop (a server's transports), or
    with ``shared`` is the process's one on a background loop thread (the local
    client, whose callers' loops may live for one call: ``async_to_sync``).
    """
    from ..node import get_node, started_node

    node = get_node()
    if node is not None and (node.serving or _running(node)):
        return node.gateway
    forwarder = _shared_forwarder() if shared else _forwarder_for(asyncio.get_running_loop())
    if await _on_loop(forwarder, forwarder.has_peers()):
        return forwarder
    return (await (host or started_node)()).gateway


def observing_gateway() -> Gateway:
    """This process's gateway for looking at actors without hosting any: its node's when
    it runs one (``runactors``, ``runserver``, a process hosting its own actors),
    otherwise the shared forwarding gateway. Never starts a node (unlike :func:`current_gateway`)."""
    from ..node import get_node

    node = get_node()
    if node is not None and (node.serving or _running(node)):
        return node.gateway
    return _shared_forwarder()


async def connection_counts(owners: Mapping[str, Sequence[str]], *, timeout: float) -> dict[str, dict[str, Any] | None]:
    """:meth:`Gateway.connection_counts` on :func:`observing_gateway`, from any loop."""
    gateway = observing_gateway()
    return await _on_loop(gateway, gateway.connection_counts(owners, timeout=timeout))


def _new_forwarder(loop: asyncio.AbstractEventLoop) -> Gateway:
    from ..node import own_node_id

    forwarder = Gateway(None)
    forwarder.loop = loop
    # Never forward to the node this process itself would be (a runserver restarted
    # by its autoreloader finds its previous self still "live" in the table).
    forwarder.directory.self_id = own_node_id()
    return forwarder


def _forwarder_for(loop: asyncio.AbstractEventLoop) -> Gateway:
    forwarder = _forwarders.get(loop)
    if forwarder is None:
        forwarder = _forwarders[loop] = _new_forwarder(loop)
    return forwarder


_shared: Gateway | None = None
_shared_lock = threading.Lock()


def _shared_forwarder() -> Gateway:
    global _shared
    with _shared_lock:
        if _shared is None or _shared.loop is None or _shared.loop.is_closed():
            from ..client.loop import LoopThread

            _shared = _new_forwarder(LoopThread(name="rivet-forwarder").loop)
        return _shared


async def _on_loop(gateway: Gateway, coro: Awaitable[T]) -> T:
    """Await ``coro`` on the gateway's loop (hopping there from another one)."""
    if gateway.loop is None or gateway.loop is asyncio.get_running_loop():
        return await coro
    return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, gateway.loop))  # type: ignore[arg-type]


def _running(node: Any) -> bool:
    return bool(node.runtime.started and node.loop is not None and not node.loop.is_closed())
