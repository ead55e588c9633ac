"""``self.kv``: an actor's durable key-value store.

Keys are ``str`` (UTF-8) or ``bytes`` and sort in byte order; values are any
CBOR value (``str`` and ``bytes`` come back as they went in). Writes are fenced
by the actor's generation like state writes.
"""

from __future__ import annotations

import builtins
import time
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from ..exceptions import InvalidRequest
from . import serde

if TYPE_CHECKING:
    from .instance import ActorInstance

__all__ = ["ActorKV"]

Key = str | bytes


class ActorKV:
    """Async key-value access for one actor instance."""

    def __init__(self, instance: ActorInstance) -> None:
        self._instance = instance

    @property
    def _store(self) -> Any:
        return self._instance.runtime.store

    def _key(self, key: Key) -> bytes:
        raw = key.encode() if isinstance(key, str) else bytes(key) if isinstance(key, (bytes, bytearray)) else None
        if raw is None:
            raise InvalidRequest(f"KV keys are str or bytes, not {type(key).__name__}")
        if len(raw) > self._instance.runtime.config.max_kv_key_size:
            raise InvalidRequest(
                f"KV key is {len(raw)} bytes; the limit is {self._instance.runtime.config.max_kv_key_size}"
            )
        return raw

    def _value(self, value: Any) -> bytes:
        data = serde.dumps(value)
        if len(data) > self._instance.runtime.config.max_kv_value_size:
            raise InvalidRequest(
                f"KV value is {len(data)} bytes; the limit is {self._instance.runtime.config.max_kv_value_size}"
            )
        return data

    async def get(self, key: Key, default: Any = None) -> Any:
        (value,) = await self.get_many([key])
        return default if value is None else value

    async def get_many(self, keys: Sequence[Key]) -> builtins.list[Any]:
        encoded = [self._key(k) for k in keys]
        started = time.perf_counter()
        raw = await self._store.kv_get_many(self._instance.actor_id, encoded)
        self._count("get" if len(encoded) == 1 else "getBatch", len(encoded), started)
        return [None if v is None else serde.loads(v) for v in raw]

    async def put(self, key: Key, value: Any) -> None:
        await self.put_many([(key, value)])

    async def put_many(self, items: Iterable[tuple[Key, Any]] | dict[Key, Any]) -> None:
        pairs = items.items() if isinstance(items, dict) else items
        encoded = [(self._key(k), self._value(v)) for k, v in pairs]
        started = time.perf_counter()
        await self._store.kv_put_many(self._instance.actor_id, self._instance.generation, encoded)
        self._count("put" if len(encoded) == 1 else "putBatch", len(encoded), started)

    async def delete(self, key: Key) -> None:
        await self.delete_many([key])

    async def delete_many(self, keys: Sequence[Key]) -> None:
        encoded = [self._key(k) for k in keys]
        started = time.perf_counter()
        await self._store.kv_delete_many(self._instance.actor_id, self._instance.generation, encoded)
        self._count("deleteBatch", len(encoded), started)

    async def list(self, prefix: Key = b"", *, limit: int | None = None) -> builtins.list[tuple[Any, Any]]:
        """Entries whose key starts with ``prefix``, in byte order of their keys."""
        start = self._key(prefix)
        return await self._range(start, _prefix_end(start), limit, as_text=isinstance(prefix, str))

    async def list_range(self, start: Key, end: Key, *, limit: int | None = None) -> builtins.list[tuple[Any, Any]]:
        """Entries with ``start <= key < end``."""
        return await self._range(self._key(start), self._key(end), limit, as_text=isinstance(start, str))

    async def delete_range(self, start: Key, end: Key) -> None:
        started = time.perf_counter()
        await self._store.kv_delete_range(
            self._instance.actor_id, self._instance.generation, self._key(start), self._key(end)
        )
        self._count("deleteBatch", 0, started)

    async def _range(
        self, start: bytes, end: bytes | None, limit: int | None, *, as_text: bool
    ) -> builtins.list[tuple[Any, Any]]:
        started = time.perf_counter()
        rows = await self._store.kv_list_range(self._instance.actor_id, start, end, limit)
        self._count("list", len(rows), started)
        return [(_key_out(k, as_text), serde.loads(v)) for k, v in rows]

    def _count(self, op: str, keys: int, started: float) -> None:
        self._instance.stats.kv_operation(op, keys, time.perf_counter() - started)


def _key_out(key: bytes, as_text: bool) -> Key:
    if as_text:
        try:
            return key.decode()
        except UnicodeDecodeError:
            return key
    return key


def _prefix_end(prefix: bytes) -> bytes | None:
    """The smallest key greater than every key with this prefix (None: no bound)."""
    trimmed = prefix.rstrip(b"\xff")
    if not trimmed:
        return None
    return trimmed[:-1] + bytes([trimmed[-1] + 1])
