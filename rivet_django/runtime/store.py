"""What the runtime needs from durable storage, as plain data and an interface.

The runtime is plain asyncio; it talks to storage only through
:class:`ActorStore`. The Django implementation is
:class:`rivet_django.storage.store.DjangoActorStore`.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ActorRecord", "ActorStore", "ClaimedActor", "StateWrite"]


@dataclass(frozen=True)
class ActorRecord:
    """An actor's identity as stored (what the manager API answers with)."""

    actor_id: str
    namespace: str
    name: str
    key: tuple[str, ...]
    created_ms: int
    started_ms: int | None = None
    slept_ms: int | None = None
    destroyed_ms: int | None = None

    @property
    def destroyed(self) -> bool:
        return self.destroyed_ms is not None


@dataclass(frozen=True)
class ClaimedActor:
    """An actor this node now owns: its record, generation and durable contents."""

    record: ActorRecord
    generation: int
    initialized: bool
    state: bytes | None
    input: bytes | None


@dataclass
class StateWrite:
    """One actor's part of a group commit, fenced by ``generation``."""

    actor_id: str
    generation: int
    #: CBOR of the state, or None to leave the stored state as is.
    state: bytes | None
    #: Mark the actor initialized (first commit after create_state/on_create).
    initialized: bool = False
    #: Release ownership (the actor went to sleep) in the same write.
    release: bool = False
    #: The actor went to sleep but this node keeps its lease: connections hibernate here,
    #: so its next wake must happen here too (calls elsewhere are forwarded to this node).
    asleep: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


class ActorStore(abc.ABC):
    """Durable storage of actors; every method is a coroutine safe to await on the loop."""

    @abc.abstractmethod
    async def get_by_id(self, actor_id: str) -> ActorRecord | None: ...

    @abc.abstractmethod
    async def get_by_key(self, namespace: str, name: str, key: Sequence[str]) -> ActorRecord | None: ...

    @abc.abstractmethod
    async def list_by_name(self, namespace: str, name: str, limit: int = 1000) -> list[ActorRecord]: ...

    @abc.abstractmethod
    async def create(self, namespace: str, name: str, key: Sequence[str], input: bytes | None) -> ActorRecord:
        """Insert a new actor; :class:`~rivet_django.exceptions.DuplicateKey` if the key is taken."""

    @abc.abstractmethod
    async def get_or_create(
        self, namespace: str, name: str, key: Sequence[str], input: bytes | None
    ) -> tuple[ActorRecord, bool]: ...

    @abc.abstractmethod
    async def claim(self, actor_id: str, node_id: str, lease_seconds: float) -> ClaimedActor | None:
        """Take ownership if free, expired or already ours; bump the generation.

        None if the actor does not exist or is destroyed. Raises
        :class:`~rivet_django.exceptions.ActorStopping` if another node holds a live lease.
        """

    @abc.abstractmethod
    async def commit(self, writes: Sequence[StateWrite]) -> set[str]:
        """Write many actors' states in one transaction; return ids whose generation was stale."""

    @abc.abstractmethod
    async def destroy(self, actor_id: str, generation: int | None) -> bool:
        """Delete state and KV, free the key; fenced unless generation is None."""

    @abc.abstractmethod
    async def renew_leases(self, node_id: str, actor_ids: Sequence[str], lease_seconds: float) -> set[str]:
        """Extend this node's leases; return the ids this node no longer owns."""

    @abc.abstractmethod
    async def register_node(self, node_id: str, address: str, version: str) -> None: ...

    @abc.abstractmethod
    async def release_node(self, node_id: str) -> None:
        """Forget a stopping node and free any lease it still holds."""

    async def inspector_token(self, actor_id: str) -> str | None:
        """The actor's own inspector token (made when it was created)."""
        raise NotImplementedError("this store keeps no inspector tokens")

    # -- actor databases, shared backend (fenced by generation) -------------------

    async def db_latest(self, actor_id: str) -> tuple[int, int] | None:
        """Where an actor's stored database ends: (epoch, end of its WAL bytes; 0 for a
        snapshot alone), or None if nothing is stored."""
        raise NotImplementedError("this store keeps no actor databases")

    async def db_load(self, actor_id: str) -> tuple[bytes, list[tuple[int, bytes]]]:
        """An actor's stored database: its newest snapshot, and the WAL bytes of each epoch
        since (oldest first)."""
        raise NotImplementedError("this store keeps no actor databases")

    async def db_append(
        self,
        actor_id: str,
        generation: int,
        segments: Sequence[tuple[str, int, int, bytes]],
        *,
        drop_before: int | None,
    ) -> None:
        """Store ``(kind, epoch, offset, data)`` segments in one transaction (after dropping
        every segment of epochs before ``drop_before``: a snapshot replaces them).
        ``LostOwnership`` if the generation moved on."""
        raise NotImplementedError("this store keeps no actor databases")

    async def db_drop(self, actor_id: str) -> None:
        """Forget an actor's stored database (the actor was destroyed)."""
        raise NotImplementedError("this store keeps no actor databases")

    # -- KV (fenced by generation) ---------------------------------------------

    @abc.abstractmethod
    async def kv_get_many(self, actor_id: str, keys: Sequence[bytes]) -> list[bytes | None]: ...

    @abc.abstractmethod
    async def kv_put_many(self, actor_id: str, generation: int, items: Sequence[tuple[bytes, bytes]]) -> None: ...

    @abc.abstractmethod
    async def kv_delete_many(self, actor_id: str, generation: int, keys: Sequence[bytes]) -> None: ...

    @abc.abstractmethod
    async def kv_list_range(
        self, actor_id: str, start: bytes, end: bytes | None, limit: int | None = None
    ) -> list[tuple[bytes, bytes]]: ...

    @abc.abstractmethod
    async def kv_delete_range(self, actor_id: str, generation: int, start: bytes, end: bytes | None) -> None: ...

    async def close(self) -> None:
        """Release resources (threads, connections)."""
