"""``self.queue``: an actor's durable queues.

(Being written: see issue 5. The API is in API.md.)
"""

from __future__ import annotations

from typing import Any

__all__ = ["ActorQueueAPI"]


class ActorQueueAPI:
    """``self.queue`` (not implemented yet)."""

    def __init__(self, instance: Any) -> None:
        self._instance = instance

    def __getattr__(self, name: str) -> Any:
        raise NotImplementedError("Queues are not implemented yet")
