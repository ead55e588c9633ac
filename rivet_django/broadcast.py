"""Broadcasts that cross processes: the actor's Channels group.

Connections held by the actor's own node get events directly from the runtime
(no serialization, no capacity limits). When the channel layer reaches other
processes (channels-redis), every broadcast is also published to the group
``rivet.actor.<actor id>``, where consumers in other processes listen, in the
order the actor produced them. The in-memory layer cannot cross processes, so
nothing is published there.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from .runtime.conn import OutgoingEvent
from .runtime.serde import dumps

__all__ = ["ChannelLayerPublisher", "actor_group", "make_publisher"]

logger = logging.getLogger("rivet_django.broadcast")

#: ``type`` of the channel-layer messages (handled by ``rivet_event`` on consumers).
EVENT_MESSAGE_TYPE = "rivet.event"


def actor_group(actor_id: str) -> str:
    """The Channels group of an actor's broadcasts."""
    return f"rivet.actor.{actor_id}"


class ChannelLayerPublisher:
    """Publishes broadcasts to actor groups from one task, so their order is kept."""

    def __init__(self, layer: Any) -> None:
        self.layer = layer
        self._queue: asyncio.Queue[tuple[str, dict[str, Any]]] | None = None
        self._task: asyncio.Task[None] | None = None

    def __call__(self, actor_id: str, event: OutgoingEvent) -> None:
        if self._queue is None:
            self._queue = asyncio.Queue()
            self._task = asyncio.get_running_loop().create_task(self._run(), name="rivet-broadcast-publisher")
        message = {"type": EVENT_MESSAGE_TYPE, "actor_id": actor_id, "name": event.name, "args": dumps(list(event.args))}
        self._queue.put_nowait((actor_group(actor_id), message))

    async def _run(self) -> None:
        assert self._queue is not None
        while True:
            group, message = await self._queue.get()
            try:
                await self.layer.group_send(group, message)
            except Exception:
                logger.exception("Publishing a broadcast to %s failed", group)

    async def flush(self, timeout: float = 5.0) -> None:
        """Wait until queued broadcasts are handed to the layer (tests, shutdown)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while self._queue is not None and not self._queue.empty():
            if asyncio.get_running_loop().time() > deadline:
                return
            await asyncio.sleep(0.01)


def make_publisher() -> ChannelLayerPublisher | None:
    """A publisher for the default channel layer, or None if it cannot cross processes."""
    from channels.layers import InMemoryChannelLayer, get_channel_layer

    layer = get_channel_layer()
    if layer is None or isinstance(layer, InMemoryChannelLayer):
        return None
    return ChannelLayerPublisher(layer)
