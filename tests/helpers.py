"""Small helpers shared by the in-process runtime tests."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

__all__ = ["eventually", "make"]


async def make(node: Any, name: str, key: Sequence[str], input: Any = None) -> str:
    """Get or create actor ``name`` at ``key`` on ``node``; its id."""
    record, _ = await node.router.get_or_create("default", name, key, input)
    return str(record.actor_id)


async def eventually(check: Callable[[], Awaitable[Any]], timeout: float = 10.0) -> Any:
    """Poll ``check`` until it returns something truthy (returned), or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s (last value {value!r})")
        await asyncio.sleep(0.02)
