"""The nodes of the cluster as the ``Node`` table shows them.

A node's heartbeat is written with its lease renewals (every ``LEASE_SECONDS / 3``);
a node is live while its heartbeat is younger than ``LEASE_SECONDS``. Reads are
cached for a second: routing asks on every forwarded call, the table changes when
nodes come and go.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..storage.store import DjangoActorStore, NodeInfo

__all__ = ["NodeDirectory", "node_table"]

#: How long a read of the table is reused (seconds).
CACHE_SECONDS = 1.0


class NodeDirectory:
    """Live nodes, cached briefly; ``self_id`` is this process's node (never a peer)."""

    def __init__(self, store: DjangoActorStore, lease_seconds: float, self_id: str | None = None) -> None:
        self.store = store
        self.lease_seconds = lease_seconds
        self.self_id = self_id
        self._nodes: dict[str, NodeInfo] = {}
        self._read_at = float("-inf")
        self._lock = asyncio.Lock()
        #: Actors placed on each node since the last read (so placements between two
        #: reads do not all pick the same "least loaded" node).
        self._placed: dict[str, int] = {}

    async def live(self) -> dict[str, NodeInfo]:
        """Every live node by id, this one included."""
        if time.monotonic() - self._read_at < CACHE_SECONDS:
            return self._nodes
        async with self._lock:
            if time.monotonic() - self._read_at >= CACHE_SECONDS:
                nodes = await self.store.live_nodes(self.lease_seconds)
                self._nodes = {info.node_id: info for info in nodes}
                self._placed.clear()
                self._read_at = time.monotonic()
        return self._nodes

    async def loads(self) -> list[NodeInfo]:
        """Live serving nodes (this one included) with their actor counts, placements
        made here since the last read added."""
        from dataclasses import replace

        return [
            replace(info, actors=info.actors + self._placed.get(info.node_id, 0))
            for info in (await self.live()).values()
            if info.address or info.node_id == self.self_id
        ]

    def placed(self, node_id: str) -> None:
        self._placed[node_id] = self._placed.get(node_id, 0) + 1

    async def serving(self) -> list[NodeInfo]:
        """Live nodes other than this one that serve the actor API (a node to forward to)."""
        return [info for info in (await self.live()).values() if info.address and info.node_id != self.self_id]

    async def address(self, node_id: str) -> str | None:
        """The API endpoint of a live node, or None (dead, or hosting without serving)."""
        info = (await self.live()).get(node_id)
        return info.address if info is not None and info.address else None

    def invalidate(self) -> None:
        """Read the table again on the next ask (a peer did not answer)."""
        self._read_at = float("-inf")


def node_table() -> list[dict[str, Any]]:
    """Every ``Node`` row with its health (synchronous ORM; for ``rivet_nodes`` and the admin).

    ``live``: heartbeat younger than ``LEASE_SECONDS``. ``actors``: live leases it holds;
    ``expired``: actors still marked as its own whose lease ran out (it died holding them;
    the next call places them elsewhere).
    """
    from datetime import timedelta

    from django.db.models import Count, Q
    from django.utils import timezone

    from ..conf import rivet_settings
    from ..models import Actor, Node

    now = timezone.now()
    lease = timedelta(seconds=float(rivet_settings.LEASE_SECONDS))
    held = {
        row["node"]: row
        for row in Actor.objects.filter(node__isnull=False)
        .values("node")
        .annotate(
            live=Count("id", filter=Q(lease_expires_at__gte=now)),
            expired=Count("id", filter=Q(lease_expires_at__lt=now)),
        )
    }
    table = []
    for node in Node.objects.order_by("id"):
        counts: dict[str, Any] = dict(held.get(node.id) or {})
        table.append(
            {
                "id": node.id,
                "address": node.address,
                "version": node.version,
                "started_at": node.started_at.isoformat() if node.started_at else None,
                "heartbeat_at": node.heartbeat_at.isoformat() if node.heartbeat_at else None,
                "heartbeat_age": round((now - node.heartbeat_at).total_seconds(), 1) if node.heartbeat_at else None,
                "live": bool(node.heartbeat_at and now - node.heartbeat_at <= lease),
                "serving": bool(node.address),
                "actors": counts.get("live", 0),
                "expired": counts.get("expired", 0),
            }
        )
    return table
