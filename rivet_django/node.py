"""This process's actor node: the runtime, its store and router, created once per loop.

``runactors`` builds and starts it explicitly; any other ASGI or in-process use
(``Client.local()``, tests through the ASGI app) gets one lazily, bound to the
event loop that first asks for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from typing import Any

from .conf import rivet_settings
from .registry import actors
from .runtime.config import Clock, RuntimeConfig
from .runtime.host import ActorRuntime
from .runtime.router import ActorRouter

__all__ = ["LocalNode", "default_node_id", "get_node", "own_node_id", "server_loop", "set_node", "started_node"]

#: Seconds a dead node's row stays (``rivet_nodes`` shows it as dead) before a starting node prunes it.
NODE_ROWS_KEPT = 3600.0


def default_node_id(port: int | None = None) -> str:
    """``RIVET["NODE_ID"]``, else ``host:port`` (stable across restarts) or ``host-pid``."""
    if rivet_settings.NODE_ID:
        return str(rivet_settings.NODE_ID)
    host = socket.gethostname()
    return f"{host}:{port}" if port is not None else f"{host}-{os.getpid()}"


class LocalNode:
    """The runtime and router of this process."""

    def __init__(self, *, node_id: str | None = None, address: str = "", clock: Clock | None = None) -> None:
        from . import __version__
        from .broadcast import make_publisher
        from .storage.store import DjangoActorStore

        config = RuntimeConfig.from_settings(rivet_settings)
        self.store = DjangoActorStore(threads=int(rivet_settings.DB_THREADS))
        self.runtime = ActorRuntime(
            self.store,
            actors,
            node_id=node_id or default_node_id(),
            config=config,
            clock=clock,
            client_factory=_local_client,
            publisher=make_publisher(),
            version=__version__,
            address=address,
        )
        from .storage.schedules import make_scheduler

        self.runtime.scheduler = make_scheduler(self.runtime, self.store.executor)
        self.router = ActorRouter(self.runtime)
        self.loop: asyncio.AbstractEventLoop | None = None
        #: Serving nodes (runactors) have an address other processes forward to.
        self.serving = bool(address)
        from .cluster import Gateway

        self.gateway = Gateway(self)
        if self.runtime.scheduler is not None:
            self.runtime.scheduler.gateway = self.gateway
        self._start_lock: asyncio.Lock | None = None

    async def start(self) -> LocalNode:
        if not self.runtime.started:
            if self._start_lock is None:
                self._start_lock = asyncio.Lock()
            async with self._start_lock:
                if not self.runtime.started:
                    self.loop = self.gateway.loop = asyncio.get_running_loop()
                    await self.runtime.start()
                    from .metrics import install_collector

                    install_collector(self.runtime)
                    if self.serving:
                        # Rows of nodes silent for an hour are litter of dead processes.
                        with contextlib.suppress(Exception):
                            await self.store.prune_nodes(older_than=NODE_ROWS_KEPT)
        return self

    async def stop(self, timeout: float | None = None) -> None:
        await self.runtime.stop(timeout)
        await self.gateway.close()
        await self.store.close()


def _local_client(runtime: ActorRuntime, namespace: str) -> Any:
    from .client import AsyncClient
    from .client.local import LocalTransport

    return AsyncClient(transport=LocalTransport(namespace=namespace, node=_node))


_node: LocalNode | None = None


def get_node() -> LocalNode | None:
    return _node


def set_node(node: LocalNode | None) -> None:
    """Install ``node`` as this process's node (runactors, test fixtures)."""
    global _node
    _node = node


async def started_node() -> LocalNode:
    """This process's node, started on the running loop (created on first use)."""
    global _node
    loop = asyncio.get_running_loop()
    node = _node
    if node is None or (node.loop is not None and (node.loop is not loop or node.loop.is_closed())):
        node_id, address = _runserver_identity()
        node = _node = LocalNode(node_id=node_id, address=address)
    return await node.start()


def _runserver_identity() -> tuple[str | None, str]:
    """Under ``manage.py runserver`` (hosting because no node runs): a node id that
    survives autoreloads (the restarted process takes its leases back at once) and the
    address it serves the actor API at, so other processes forward to it."""
    import sys

    argv = sys.argv
    if len(argv) < 2 or argv[1] != "runserver" or rivet_settings.NODE_ID:
        return None, ""
    addrport = next((a for a in argv[2:] if not a.startswith("-")), "8000")
    host, _, port = addrport.rpartition(":")
    host = (host or "127.0.0.1").strip("[]")
    if host in ("0", "0.0.0.0", "::"):
        host = socket.gethostname()
    from .cluster.peers import api_base

    return f"{socket.gethostname()}:runserver:{port}", f"http://{host}:{port}{api_base().rstrip('/')}"


def server_loop() -> asyncio.AbstractEventLoop | None:
    """Under ``manage.py runserver`` (daphne), the server's running event loop: this
    process's node lives there, so the actor API and ``Client.local()`` share it."""
    if _runserver_identity()[0] is None or "twisted.internet.reactor" not in __import__("sys").modules:
        return None
    from twisted.internet import reactor

    loop = getattr(reactor, "_asyncioEventloop", None)
    return loop if loop is not None and loop.is_running() else None


def own_node_id() -> str | None:
    """The id this process takes if it hosts actors and it is stable (runserver), else None."""
    return _runserver_identity()[0]
