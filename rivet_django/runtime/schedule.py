"""``self.schedule``: durable schedules of an actor, and the embedded scheduler driver.

(Being written: see issue 5. The API is in API.md.)
"""

from __future__ import annotations

from typing import Any

__all__ = ["ActorScheduleAPI"]


class ActorScheduleAPI:
    """``self.schedule`` (not implemented yet)."""

    def __init__(self, instance: Any) -> None:
        self._instance = instance

    def __getattr__(self, name: str) -> Any:
        raise NotImplementedError("Schedules are not implemented yet")
