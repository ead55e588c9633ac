"""Manager REST routes: metadata, find/create/destroy actors, list names (always JSON)."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse
from ninja import Router

from .. import protocol
from ..cluster import current_gateway
from ..conf import rivet_settings
from ..exceptions import ActorNotFound, InvalidRequest
from ..headers import header
from ..registry import actors
from ..runtime.store import ActorRecord
from . import schemas
from .forward import Forwarded, forwarder, hops
from .responses import json_response

__all__ = ["actor_json", "router"]

router = Router(tags=["manager"])

_ERRORS: dict[int, Any] = {400: schemas.ErrorOut, 404: schemas.ErrorOut, 500: schemas.ErrorOut}


def actor_json(record: ActorRecord) -> dict[str, Any]:
    """The ``Actor`` object of PROTOCOL.md section 2."""
    data: dict[str, Any] = {
        "actor_id": record.actor_id,
        "name": record.name,
        "key": protocol.serialize_key(record.key),
        "namespace_id": record.namespace,
        "runner_name_selector": "default",
        "create_ts": record.created_ms,
    }
    if record.started_ms is not None:
        data["start_ts"] = record.started_ms
        data["connectable_ts"] = record.started_ms
    if record.slept_ms is not None:
        data["sleep_ts"] = record.slept_ms
    if record.destroyed_ms is not None:
        data["destroy_ts"] = record.destroyed_ms
    return data


def metadata() -> dict[str, Any]:
    from .. import __version__

    # Never clientEndpoint/clientNamespace/clientToken: they redirect the client.
    return {"runtime": "rivetkit", "version": __version__, "actorNames": {n: {"metadata": {}} for n in actors.names()}}


def _namespace(namespace: str | None) -> str:
    return namespace or rivet_settings.NAMESPACE


def _decode_input(value: str | None) -> Any:
    if value is None:
        return None
    try:
        return protocol.decode_input(value)
    except Exception:
        raise InvalidRequest("input is not base64-encoded CBOR") from None


@router.get("/metadata", response={200: schemas.MetadataOut}, summary="Runtime metadata (client bootstrap)")
async def get_metadata(request: HttpRequest) -> HttpResponse:
    if header(request, "x-rivet-target") == "actor":
        from .gateway import header_form_route

        return await header_form_route(request, "metadata")
    return json_response(metadata())


@router.get(
    "/metrics", summary="Prometheus metrics of this node (bearer: RIVET['INSPECTOR_TOKEN'])", include_in_schema=True
)
def get_metrics(request: HttpRequest) -> HttpResponse:
    """This process's Prometheus metrics, protected like the inspector: the global
    inspector token as a bearer token (open only with DEBUG on and no such token)."""
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    from ..headers import bearer_token
    from ..runtime.inspector import InspectorUnauthorized, global_token_matches, inspector_open

    if not (inspector_open() or global_token_matches(bearer_token(request))):
        raise InspectorUnauthorized()
    return HttpResponse(generate_latest(), content_type=CONTENT_TYPE_LATEST)


@router.get("/actors", response={200: schemas.ActorListResponse, **_ERRORS}, summary="Find actors")
async def list_actors(
    request: HttpRequest,
    name: str | None = None,
    key: str | None = None,
    actor_ids: str | None = None,
    namespace: str | None = None,
) -> HttpResponse:
    gateway = await current_gateway()
    if gateway.node is None:
        return (await gateway.forward_anywhere(forwarder(request), hops(request))).response
    router_ = gateway.node.router
    records: list[ActorRecord] = []
    if actor_ids:
        for actor_id in [a for a in actor_ids.split(",") if a][:100]:
            record = await router_.get_by_id(actor_id)
            if record is not None:
                records.append(record)
    elif name is not None and key is not None:
        if name in actors:
            record = await router_.get(_namespace(namespace), name, protocol.deserialize_key(key))
            if record is not None:
                records.append(record)
    elif name is not None:
        records = await router_.list(_namespace(namespace), name)
    else:
        raise InvalidRequest("Give name (and optionally key) or actor_ids")
    return json_response({"actors": [actor_json(r) for r in records]})


@router.put("/actors", response={200: schemas.GetOrCreateActorResponse, **_ERRORS}, summary="Get or create an actor")
async def get_or_create_actor(
    request: HttpRequest, body: schemas.GetOrCreateActorRequest, namespace: str | None = None
) -> HttpResponse:
    gateway = await current_gateway()
    if gateway.node is None:
        return (await gateway.forward_anywhere(forwarder(request), hops(request))).response
    record, created = await gateway.node.router.get_or_create(
        _namespace(namespace), body.name, protocol.deserialize_key(body.key), _decode_input(body.input)
    )
    return json_response({"actor": actor_json(record), "created": created})


@router.post("/actors", response={200: schemas.ActorResponse, **_ERRORS}, summary="Create an actor")
async def create_actor(
    request: HttpRequest, body: schemas.CreateActorRequest, namespace: str | None = None
) -> HttpResponse:
    gateway = await current_gateway()
    if gateway.node is None:
        return (await gateway.forward_anywhere(forwarder(request), hops(request))).response
    key = protocol.deserialize_key(body.key) if body.key is not None else []
    record = await gateway.node.router.create(_namespace(namespace), body.name, key, _decode_input(body.input))
    return json_response({"actor": actor_json(record)})


@router.get("/actors/names", response={200: schemas.NamesResponse}, summary="Registered actor names")
async def actor_names(request: HttpRequest, namespace: str | None = None) -> HttpResponse:
    return json_response({"names": {name: {"metadata": {}} for name in actors.names()}})


@router.delete("/actors/{actor_id}", response={200: dict, **_ERRORS}, summary="Destroy an actor")
async def destroy_actor(request: HttpRequest, actor_id: str, namespace: str | None = None) -> HttpResponse:
    gateway = await current_gateway()
    if gateway.node is None:
        return (await gateway.forward_anywhere(forwarder(request), hops(request))).response
    router_ = gateway.node.router

    async def destroy(runtime: Any, actor_id: str) -> bool:
        return await router_.destroy(actor_id)

    destroyed = await gateway.on_actor(actor_id, destroy, forwarder(request), hops=hops(request))
    if isinstance(destroyed, Forwarded):
        return destroyed.response
    if not destroyed:
        raise ActorNotFound(f"Actor {actor_id} not found")
    return json_response({})
