"""Gateway routes: one actor's HTTP routes, reached by id, query or header form.

``/gateway/{target}/action/{name}`` and friends. The body of an action call (or
a queue send) is read raw, so the three encodings share one path: decode ->
router -> encode.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl

from django.conf import settings
from django.http import HttpRequest, HttpResponse, QueryDict
from django.http.response import HttpResponseBase
from ninja import Router

from .. import protocol, tracing
from ..cluster import current_gateway
from ..conf import rivet_settings
from ..exceptions import (
    ActorNotFound,
    IncomingTooLong,
    InvalidRequest,
    MethodNotAllowed,
    NoRequestHandler,
    OutgoingTooLong,
    RivetError,
)
from ..gateway import GatewayTarget, parse_conn_params, parse_gateway_target, strip_rvt_params
from ..headers import RequestHeaders, header
from . import schemas
from .forward import Forwarded, forwarder, hops
from .responses import encoded_response, json_response

__all__ = ["header_form_route", "router"]

logger = logging.getLogger("rivet_django.api")

router = Router(tags=["gateway"])

_ALL_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]

_ACTION_DOC: dict[str, Any] = {
    "requestBody": {
        "content": {
            "application/json": {"schema": schemas.ActionRequest.model_json_schema()},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        },
        "required": True,
    },
    "parameters": [
        {
            "in": "header",
            "name": "x-rivet-encoding",
            "schema": {"type": "string", "enum": ["json", "cbor", "bare"], "default": "json"},
        },
        {"in": "header", "name": "x-rivet-conn-params", "schema": {"type": "string"}, "required": False},
    ],
}


_QUEUE_DOC: dict[str, Any] = {
    "requestBody": {
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "body": {},
                        "name": {"type": "string"},
                        "wait": {"type": "boolean", "default": False},
                        "timeout": {"type": "integer", "minimum": 0, "description": "milliseconds"},
                    },
                    "required": ["body"],
                }
            },
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        },
        "required": True,
    },
    "parameters": _ACTION_DOC["parameters"],
}


def _target(request: HttpRequest, segment: str | None) -> GatewayTarget:
    return parse_gateway_target(segment, _query_pairs(request), RequestHeaders(request), rivet_settings.NAMESPACE)


def _query_pairs(request: HttpRequest) -> list[tuple[str, str]]:
    """The query string's pairs, parsed as Django's ``request.GET`` would (same limit on
    their number) without building a QueryDict nothing else reads."""
    query = request.META.get("QUERY_STRING")
    if not query:
        return []
    try:
        return parse_qsl(
            query,
            keep_blank_values=True,
            encoding=request.encoding or settings.DEFAULT_CHARSET,
            max_num_fields=settings.DATA_UPLOAD_MAX_NUMBER_FIELDS,
        )
    except ValueError:
        raise InvalidRequest("Too many query parameters") from None


def _read_body(request: HttpRequest) -> bytes:
    limit = int(rivet_settings.MAX_INCOMING_MESSAGE_SIZE)
    declared = header(request, "content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise IncomingTooLong(f"Request body is larger than {limit} bytes")
    body = request.body
    if len(body) > limit:
        raise IncomingTooLong(f"Request body is larger than {limit} bytes")
    return body


async def _dispatch(
    request: HttpRequest, target: GatewayTarget, local: Callable[[Any, str], Any]
) -> tuple[str | None, Any]:
    """``local(runtime, actor_id)`` where the actor lives here, else a :class:`Forwarded` answer from its node."""
    gateway = await current_gateway()
    if tracing.enabled() and "traceparent" in request.headers:
        # The caller's trace continues in the actor's spans.
        from opentelemetry import context

        token = context.attach(tracing.extract(request.headers))
        try:
            return await gateway.dispatch(target, local, forwarder(request), hops=hops(request))
        finally:
            context.detach(token)
    return await gateway.dispatch(target, local, forwarder(request), hops=hops(request))


async def call_action(request: HttpRequest, segment: str | None, name: str) -> HttpResponse:
    """Decode an action call, run it on its actor, encode the output."""
    encoding = protocol.parse_encoding(header(request, "x-rivet-encoding"))
    target = _target(request, segment)
    body = _read_body(request)
    args, version = protocol.decode_action_request(encoding, body)
    request.rivet_version = version  # type: ignore[attr-defined]
    params = parse_conn_params(header(request, "x-rivet-conn-params"), int(rivet_settings.MAX_CONN_PARAMS_SIZE))

    async def run(runtime: Any, actor_id: str) -> Any:
        return await runtime.call_action(actor_id, name, args, None, params=params, request=request)

    actor_id, output = await _dispatch(request, target, run)
    if isinstance(output, Forwarded):
        return output.response
    data = _encode_reply(
        lambda: protocol.encode_action_response(encoding, output, version), f"Output of action {name!r}"
    )
    return encoded_response(request, data, headers={"x-rivet-actor": str(actor_id)})


def _encode_reply(encode: Callable[[], bytes], what: str) -> bytes:
    """Encode a reply within the outgoing limit; a value with no wire form is an internal error."""
    try:
        data = encode()
    except Exception as exc:
        logger.error("%s is not serializable: %s", what, exc)
        raise RivetError(f"{what} is not serializable") from exc
    limit = int(rivet_settings.MAX_OUTGOING_MESSAGE_SIZE)
    if len(data) > limit:
        raise OutgoingTooLong(f"Response is {len(data)} bytes; the limit is {limit}")
    return data


async def send_queue(request: HttpRequest, segment: str | None, name: str) -> HttpResponse:
    """Decode a queue send, store it in the actor's queue (waiting if asked), encode ``{"status", "response"?}``."""
    encoding = protocol.parse_encoding(header(request, "x-rivet-encoding"))
    target = _target(request, segment)
    body = _read_body(request)
    message, version = protocol.decode_queue_send_request(encoding, body)
    request.rivet_version = version  # type: ignore[attr-defined]
    params = parse_conn_params(header(request, "x-rivet-conn-params"), int(rivet_settings.MAX_CONN_PARAMS_SIZE))
    timeout = None if message.timeout_ms is None else message.timeout_ms / 1000

    async def send(runtime: Any, actor_id: str) -> dict[str, Any]:
        return await runtime.queues.send(  # type: ignore[no-any-return]
            actor_id, name, message.body, wait=message.wait, timeout=timeout, params=params, request=request
        )

    actor_id, result = await _dispatch(request, target, send)
    if isinstance(result, Forwarded):
        return result.response
    data = _encode_reply(
        lambda: protocol.encode_queue_send_response(
            encoding, result["status"], result.get("response"), "response" in result, version
        ),
        f"Response to a message of queue {name!r}",
    )
    return encoded_response(request, data, headers={"x-rivet-actor": str(actor_id)})


def _actor_request(request: HttpRequest, path: str) -> HttpRequest:
    """The request as the actor sees it: path without ``/request``, ``rvt-*`` stripped."""
    _ = request.body  # read now so the copy shares the body, not the stream
    actor_request = copy.copy(request)
    query = strip_rvt_params(_query_pairs(request))
    actor_request.path = actor_request.path_info = "/" + path.lstrip("/")
    actor_request.META = {**request.META, "QUERY_STRING": query, "PATH_INFO": actor_request.path}
    actor_request.GET = QueryDict(query)
    return actor_request


async def raw_request(request: HttpRequest, segment: str | None, path: str) -> HttpResponseBase:
    """``.../request/{path}``: the actor's ``on_request`` answers, on a short-lived connection
    (connect hooks with ``x-rivet-conn-params``, then ``on_disconnect``). Any method."""
    target = _target(request, segment)
    params = parse_conn_params(header(request, "x-rivet-conn-params"), int(rivet_settings.MAX_CONN_PARAMS_SIZE))
    actor_request = _actor_request(request, path)

    async def run(runtime: Any, actor_id: str) -> Any:
        return await runtime.handle_request(actor_id, actor_request, params)

    try:
        _, response = await _dispatch(request, target, run)
    except NoRequestHandler:
        # RivetKit: a bare 404 (an actor.not_found body would make the official client
        # resolve the key again and retry, as for a missing actor).
        return HttpResponse(status=404)
    if isinstance(response, Forwarded):
        return response.response
    if not isinstance(response, HttpResponseBase):
        raise RivetError(f"on_request returned {type(response).__name__}, not an HttpResponse")
    return response


async def actor_metadata(request: HttpRequest, segment: str | None) -> HttpResponse:
    from .manager import metadata

    actor_id = await _resolve(request, segment)
    if isinstance(actor_id, HttpResponse):
        return actor_id
    return json_response({**metadata(), "actorId": actor_id})


async def actor_health(request: HttpRequest, segment: str | None) -> HttpResponse:
    resolved = await _resolve(request, segment)
    if isinstance(resolved, HttpResponse):
        return resolved
    return HttpResponse(b"ok", content_type="text/plain")


async def _resolve(request: HttpRequest, segment: str | None) -> str | HttpResponse:
    """The actor id a request names (a forwarding process asks a node, and serves its answer)."""
    gateway = await current_gateway()
    target = _target(request, segment)
    if gateway.node is None:
        return (await gateway.forward_anywhere(forwarder(request), hops(request))).response
    return await target.resolve(gateway.node.router)


async def header_form_route(request: HttpRequest, route: str) -> HttpResponse:
    """Dispatch a header-form request (``x-rivet-target: actor``) by its route."""
    parts = route.strip("/").split("/", 1)
    if parts[0] == "action" and len(parts) == 2:
        if request.method != "POST":
            raise MethodNotAllowed()
        return await call_action(request, None, parts[1])
    if parts[0] == "queue" and len(parts) == 2:
        if request.method != "POST":
            raise MethodNotAllowed()
        return await send_queue(request, None, parts[1])
    if parts[0] == "inspector":
        from .inspector import inspector_route

        return await inspector_route(request, None, parts[1] if len(parts) == 2 else "")
    if parts[0] == "request":
        return await raw_request(request, None, parts[1] if len(parts) == 2 else "")  # type: ignore[return-value]
    if parts[0] == "metadata" and len(parts) == 1:
        return await actor_metadata(request, None)
    if parts[0] == "health" and len(parts) == 1:
        return await actor_health(request, None)
    raise ActorNotFound(f"Unknown actor route /{route}")


# -- direct and query forms ----------------------------------------------------


@router.post(
    "/gateway/{target}/action/{name}",
    response={200: schemas.ActionResponse, 400: schemas.ErrorOut, 404: schemas.ErrorOut, 500: schemas.ErrorOut},
    summary="Call an action (stateless)",
    openapi_extra=_ACTION_DOC,
)
async def action(request: HttpRequest, target: str, name: str) -> HttpResponse:
    return await call_action(request, target, name)


@router.api_operation(["GET", "PUT", "PATCH", "DELETE"], "/gateway/{target}/action/{name}", include_in_schema=False)
async def action_wrong_method(request: HttpRequest, target: str, name: str) -> HttpResponse:
    raise MethodNotAllowed(f"Actions are called with POST, not {request.method}")


@router.post(
    "/gateway/{target}/queue/{name}",
    response={400: schemas.ErrorOut, 403: schemas.ErrorOut, 404: schemas.ErrorOut, 500: schemas.ErrorOut},
    summary="Send a message to a durable queue (optionally wait for its completion)",
    openapi_extra=_QUEUE_DOC,
)
async def queue_send(request: HttpRequest, target: str, name: str) -> HttpResponse:
    return await send_queue(request, target, name)


@router.api_operation(["GET", "PUT", "PATCH", "DELETE"], "/gateway/{target}/queue/{name}", include_in_schema=False)
async def queue_wrong_method(request: HttpRequest, target: str, name: str) -> HttpResponse:
    raise MethodNotAllowed(f"Queue messages are sent with POST, not {request.method}")


@router.get("/gateway/{target}/metadata", summary="Actor metadata")
async def gateway_metadata(request: HttpRequest, target: str) -> HttpResponse:
    return await actor_metadata(request, target)


@router.get("/gateway/{target}/health", summary="Actor health")
async def gateway_health(request: HttpRequest, target: str) -> HttpResponse:
    return await actor_health(request, target)


@router.api_operation(_ALL_METHODS, "/gateway/{target}/request", summary="Raw HTTP to the actor's on_request")
async def gateway_request_root(request: HttpRequest, target: str) -> HttpResponseBase:
    return await raw_request(request, target, "")


@router.api_operation(
    _ALL_METHODS, "/gateway/{target}/request/{path:rest}", summary="Raw HTTP to the actor's on_request"
)
async def gateway_request(request: HttpRequest, target: str, rest: str) -> HttpResponseBase:
    return await raw_request(request, target, rest)


@router.api_operation(_ALL_METHODS, "/gateway/{target}/{path:rest}", include_in_schema=False)
async def gateway_unknown(request: HttpRequest, target: str, rest: str) -> HttpResponse:
    raise ActorNotFound(f"Unknown actor route /{rest}")


# -- header form ---------------------------------------------------------------


@router.api_operation(_ALL_METHODS, "/{path:route}", include_in_schema=False)
async def header_form(request: HttpRequest, route: str) -> HttpResponse:
    if header(request, "x-rivet-target") != "actor":
        raise ActorNotFound(f"Unknown route /{route}")
    return await header_form_route(request, route)
