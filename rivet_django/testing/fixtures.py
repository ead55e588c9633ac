"""pytest fixtures: ``rivet_node`` (a started in-process node) and ``rivet_client``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest_asyncio

from . import ManualClock, running_node

__all__ = ["manual_clock", "rivet_client", "rivet_node"]


@pytest_asyncio.fixture
async def manual_clock() -> ManualClock:
    return ManualClock()


@pytest_asyncio.fixture
async def rivet_node(transactional_db: Any) -> AsyncIterator[Any]:
    from asgiref.sync import sync_to_async
    from django.db import connections

    async with running_node() as node:
        yield node
    # Test helpers' sync_to_async queries ran on asgiref's thread: close its connection too.
    await sync_to_async(connections.close_all)()


@pytest_asyncio.fixture
async def rivet_client(rivet_node: Any) -> AsyncIterator[Any]:
    from ..client import AsyncClient

    client = AsyncClient.local()
    try:
        yield client
    finally:
        await client.aclose()
