"""``ActorRouter``: from an actor address to the runtime that hosts it.

The gateway hands the router a query (by id, get, get-or-create, create); the
router resolves it to an :class:`ActorRecord` (cached for hot keys) and sends
the call to the runtime that owns the actor. Today that is always this
process's runtime; multi-node routing slots in here.
"""

from __future__ import annotations

import builtins
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

from ..exceptions import ActorGone, ActorNotFound, InvalidRequest
from . import serde
from .host import compact
from .store import ActorRecord

if TYPE_CHECKING:
    from .conn import Conn
    from .host import ActorRuntime
    from .instance import ActorInstance

__all__ = ["ActorRouter"]

T = TypeVar("T")

_CACHE_SIZE = 100_000


class ActorRouter:
    """Resolves actor addresses and forwards calls to the owning runtime."""

    def __init__(self, runtime: ActorRuntime) -> None:
        self.runtime = runtime
        self.store = runtime.store
        self.registry = runtime.registry
        self.config = runtime.config
        # (namespace, name, key) -> actor id, for keys resolved before: the gateway's hot
        # path resolves without a query. Only ids are kept (memory); records are read fresh.
        # An actor's entry goes when it stops: a sleeping actor costs only its database row
        # (its next call resolves it with one query, next to the one that wakes it).
        self._ids: OrderedDict[tuple[str, str, tuple[str, ...]], str] = OrderedDict()
        runtime.stop_listeners.append(self._actor_stopped)
        runtime.trim_listeners.append(partial(compact, self._ids))

    # -- validation ----------------------------------------------------------------

    def check_name(self, name: str) -> None:
        if len(name) > self.config.max_name_length:
            raise InvalidRequest(f"Actor name is longer than {self.config.max_name_length} characters")
        if name not in self.registry:
            raise ActorNotFound(f"No actor named {name!r} is registered")

    def check_key(self, key: Sequence[str]) -> tuple[str, ...]:
        if not isinstance(key, (list, tuple)) or not all(isinstance(p, str) for p in key):
            raise InvalidRequest("An actor key is a list of strings")
        total = 0
        for part in key:
            # Stored as JSON text: PostgreSQL's jsonb has no NUL, and no encoding has a lone
            # surrogate. Refused on every database alike, so a key never works on one only.
            if "\x00" in part:
                raise InvalidRequest("An actor key part cannot contain a NUL character")
            try:
                size = len(part.encode())
            except UnicodeEncodeError:
                raise InvalidRequest("An actor key part must be valid Unicode text (no lone surrogates)") from None
            if size > self.config.max_key_part_size:
                raise InvalidRequest(f"A key part is {size} bytes; the limit is {self.config.max_key_part_size}")
            total += size
        if total > self.config.max_key_size:
            raise InvalidRequest(f"The key is {total} bytes; the limit is {self.config.max_key_size}")
        return tuple(key)

    # -- resolution ----------------------------------------------------------------

    def _remember(self, record: ActorRecord) -> ActorRecord:
        cache_key = (record.namespace, record.name, record.key)
        self._ids[cache_key] = record.actor_id
        self._ids.move_to_end(cache_key)
        if len(self._ids) > _CACHE_SIZE:
            self._ids.popitem(last=False)
        return record

    def forget(self, namespace: str, name: str, key: Sequence[str]) -> None:
        """Drop a cached address (the actor behind it may be gone)."""
        self._ids.pop((namespace, name, tuple(key)), None)

    def _actor_stopped(self, inst: ActorInstance) -> None:
        self._ids.pop((inst.namespace, inst.definition.name, inst.key), None)

    def _cached_id(self, namespace: str, name: str, key: tuple[str, ...]) -> str | None:
        return self._ids.get((namespace, name, key))

    async def get(self, namespace: str, name: str, key: Sequence[str]) -> ActorRecord | None:
        """The live actor with this key, or None (read from storage: timestamps are current)."""
        self.check_name(name)
        key = self.check_key(key)
        record = await self.store.get_by_key(namespace, name, key)
        return None if record is None else self._remember(record)

    async def get_or_create(
        self, namespace: str, name: str, key: Sequence[str], input: Any = None, *, wake: bool = True
    ) -> tuple[ActorRecord, bool]:
        """The actor with this key, created if missing; a new actor wakes here at once
        unless ``wake`` is false (the gateway wakes it where placement puts it)."""
        self.check_name(name)
        key = self.check_key(key)
        record, created = await self.store.get_or_create(namespace, name, key, _input_bytes(input))
        self._remember(record)
        if created and wake:
            await self.runtime.instance(record.actor_id)
        return record, created

    async def create(self, namespace: str, name: str, key: Sequence[str], input: Any = None) -> ActorRecord:
        self.check_name(name)
        key = self.check_key(key)
        record = await self.store.create(namespace, name, key, _input_bytes(input))
        self._remember(record)
        await self.runtime.instance(record.actor_id)
        return record

    async def get_by_id(self, actor_id: str) -> ActorRecord | None:
        record = await self.store.get_by_id(actor_id)
        if record is None or record.destroyed:
            return None
        return record

    async def list(self, namespace: str, name: str, limit: int = 1000) -> builtins.list[ActorRecord]:
        return await self.store.list_by_name(namespace, name, limit)

    async def resolve(
        self,
        *,
        namespace: str,
        method: str,
        name: str | None = None,
        key: Sequence[str] | None = None,
        actor_id: str | None = None,
        input: Any = None,
        wake: bool = True,
    ) -> str:
        """The actor id a gateway query names (``id``, ``get``, ``getOrCreate``)."""
        if method == "id":
            if not actor_id:
                raise InvalidRequest("Missing actor id")
            return actor_id
        if name is None:
            raise InvalidRequest("Missing actor name")
        if method not in ("get", "getOrCreate"):
            raise InvalidRequest(f"Unknown query method {method!r}")
        self.check_name(name)
        checked = self.check_key(key or ())
        cached = self._cached_id(namespace, name, checked)
        if cached is not None:
            return cached
        if method == "get":
            record = await self.get(namespace, name, checked)
            if record is None:
                raise ActorNotFound(f"Actor {name!r} with key {list(checked)!r} not found")
            return record.actor_id
        record, _ = await self.get_or_create(namespace, name, checked, input, wake=wake)
        return record.actor_id

    async def with_actor(self, target: Any, call: Callable[[str], Awaitable[T]]) -> tuple[str, T]:
        """Resolve a gateway target and run ``call(actor_id)`` on it.

        A key may name an actor that was destroyed since it was resolved (here
        or by another process): when the runtime finds it gone, the key is
        resolved afresh once (a ``getOrCreate`` creates its successor), never for
        a direct id. ``ActorNotFound`` raised by actor code is never retried: the
        call ran.
        """
        actor_id = await target.resolve(self)
        try:
            return actor_id, await call(actor_id)
        except ActorGone:
            if target.method == "id":
                raise
            self.forget(target.namespace, target.name or "", target.key)
            actor_id = await target.resolve(self)
            return actor_id, await call(actor_id)

    # -- calls ----------------------------------------------------------------------

    async def call_action(
        self,
        actor_id: str,
        name: str,
        args: builtins.list[Any] | tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
        *,
        params: Any = None,
        request: Any = None,
        conn: Conn | None = None,
    ) -> Any:
        return await self.runtime.call_action(actor_id, name, args, kwargs, params=params, request=request, conn=conn)

    async def destroy(self, actor_id: str) -> bool:
        record = await self.store.get_by_id(actor_id)
        if record is None or record.destroyed:
            raise ActorNotFound(f"Actor {actor_id} not found")
        self.forget(record.namespace, record.name, record.key)
        destroyed = await self.runtime.destroy_actor(actor_id)
        self.forget(record.namespace, record.name, record.key)
        return destroyed


def _input_bytes(input: Any) -> bytes | None:
    return None if input is None else serde.dumps(input)
