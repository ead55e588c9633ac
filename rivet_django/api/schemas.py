"""Request and response schemas of the HTTP API (for validation and OpenAPI docs)."""

from __future__ import annotations

from typing import Any

from ninja import Schema

__all__ = [
    "ActionRequest",
    "ActionResponse",
    "ActorListResponse",
    "ActorOut",
    "ActorResponse",
    "CreateActorRequest",
    "ErrorOut",
    "GetOrCreateActorRequest",
    "GetOrCreateActorResponse",
    "MetadataOut",
    "NamesResponse",
]


class ErrorOut(Schema):
    group: str
    code: str
    message: str
    metadata: Any = None


class MetadataOut(Schema):
    runtime: str
    version: str


class ActorOut(Schema):
    actor_id: str
    name: str
    key: str
    namespace_id: str
    runner_name_selector: str
    create_ts: int
    connectable_ts: int | None = None
    destroy_ts: int | None = None
    sleep_ts: int | None = None
    start_ts: int | None = None
    error: Any = None


class ActorListResponse(Schema):
    actors: list[ActorOut]


class ActorResponse(Schema):
    actor: ActorOut


class GetOrCreateActorResponse(Schema):
    actor: ActorOut
    created: bool


class CreateActorRequest(Schema):
    name: str
    key: str | None = None
    input: str | None = None
    runner_name_selector: str = "default"
    crash_policy: str = "sleep"
    datacenter: str | None = None


class GetOrCreateActorRequest(CreateActorRequest):
    key: str  # type: ignore[assignment]


class NamesResponse(Schema):
    names: dict[str, dict[str, Any]]


class ActionRequest(Schema):
    """JSON form of an action call (``x-rivet-encoding: json``); cbor/bare carry the same."""

    args: list[Any] = []


class ActionResponse(Schema):
    output: Any = None
