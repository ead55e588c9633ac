"""Inspector routes: ``/gateway/{target}/inspector/...`` (PROTOCOL.md section 11), JSON.

Each route parses its request into an operation of :mod:`rivet_django.runtime.inspector`
and sends it through the gateway like any call: it runs on the node that holds the
actor (the request is forwarded there whole, ``Authorization`` included), where the
token is checked. The header form (``x-rivet-target: actor``, route ``inspector/...``)
reaches the same table.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
from django.http import HttpRequest, HttpResponse
from ninja import Router

from ..exceptions import InvalidRequest, MethodNotAllowed, PublicError
from ..headers import bearer_token
from ..runtime.inspector import inspect
from .forward import Forwarded
from .responses import json_response

__all__ = ["inspector_route", "router"]

router = Router(tags=["inspector"])


class InspectorNotFound(PublicError):
    """An unknown inspector route: RivetKit answers it as ``actor.not_found``, with this text."""

    group = "actor"
    code = "not_found"
    status_code = 404
    default_message = "Inspector route was not found"


def _body(request: HttpRequest) -> dict[str, Any]:
    if not request.body:
        return {}
    try:
        body = orjson.loads(request.body)
    except orjson.JSONDecodeError:
        raise InvalidRequest("Invalid inspector JSON body") from None
    if not isinstance(body, dict):
        raise InvalidRequest("The inspector's request body is a JSON object")
    return body


def _int(request: HttpRequest, name: str, default: int) -> int:
    try:
        value = int(request.GET.get(name, default))
    except (TypeError, ValueError):
        return default
    return value if value >= 0 else default


def _no_args(request: HttpRequest) -> dict[str, Any]:
    return {}


def _patch_state(request: HttpRequest) -> dict[str, Any]:
    body = _body(request)
    if "state" not in body:
        raise InvalidRequest('PATCH inspector/state takes {"state": ...}')
    return {"state": body["state"]}


def _queue(request: HttpRequest) -> dict[str, Any]:
    limit = _int(request, "limit", 100)
    return {"limit": limit if limit > 0 else 100}


def _traces(request: HttpRequest) -> dict[str, Any]:
    def optional(name: str) -> int | None:
        value = request.GET.get(name)
        return int(value) if value is not None and value.lstrip("-").isdigit() else None

    limit = _int(request, "limit", 1000)
    return {"start_ms": optional("startMs"), "end_ms": optional("endMs"), "limit": min(limit, 10_000)}


def _queue_send(request: HttpRequest) -> dict[str, Any]:
    body = _body(request)
    name = body.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidRequest("Queue message name must not be empty")
    return {"name": name, "body": body.get("body")}


def _replay(request: HttpRequest) -> dict[str, Any]:
    entry_id = _body(request).get("entryId")
    if entry_id is not None and not isinstance(entry_id, str):
        raise InvalidRequest("entryId is a string")
    return {"entry_id": entry_id}


def _rows(request: HttpRequest) -> dict[str, Any]:
    table = request.GET.get("table")
    if not table:
        raise InvalidRequest("Missing required table query parameter")
    return {"table": table, "limit": _int(request, "limit", 100), "offset": _int(request, "offset", 0)}


def _parameters(body: dict[str, Any]) -> Any:
    """``args`` (a list, or one value) or ``properties`` (an object), not both."""
    if body.get("args") is not None and body.get("properties") is not None:
        raise InvalidRequest("use either args or properties, not both")
    properties = body.get("properties")
    if properties is not None:
        if not isinstance(properties, dict):
            raise InvalidRequest("properties must be an object")
        return properties
    args = body.get("args")
    if args is None:
        return []
    return args if isinstance(args, list) else [args]


def _execute(request: HttpRequest) -> dict[str, Any]:
    body = _body(request)
    sql = body.get("sql")
    if not isinstance(sql, str) or not sql.strip():
        raise InvalidRequest("sql is required")
    readonly = body.get("readonly", True)
    if not isinstance(readonly, bool):
        raise InvalidRequest("readonly is true or false")
    return {"sql": sql, "args": _parameters(body), "readonly": readonly}


#: (method, route after ``inspector/``) -> (operation, its arguments from the request).
ROUTES: dict[tuple[str, str], tuple[str, Callable[[HttpRequest], dict[str, Any]]]] = {
    ("GET", "summary"): ("summary", _no_args),
    ("GET", "state"): ("state", _no_args),
    ("PATCH", "state"): ("patch_state", _patch_state),
    ("GET", "connections"): ("connections", _no_args),
    ("GET", "rpcs"): ("rpcs", _no_args),
    ("GET", "queue"): ("queue", _queue),
    ("POST", "queue"): ("queue_send", _queue_send),
    ("DELETE", "queue"): ("queue_reset", _no_args),
    ("GET", "workflow-history"): ("workflow_history", _no_args),
    ("POST", "workflow/replay"): ("workflow_replay", _replay),
    ("GET", "traces"): ("traces", _traces),
    ("GET", "metrics"): ("metrics", _no_args),
    ("GET", "database/schema"): ("database_schema", _no_args),
    ("GET", "database/rows"): ("database_rows", _rows),
    ("POST", "database/execute"): ("database_execute", _execute),
}


async def inspector_route(request: HttpRequest, segment: str | None, route: str) -> HttpResponse:
    """Run the inspector route ``route`` (after ``inspector/``) on the actor the request names."""
    route = route.strip("/")
    method = request.method or "GET"
    if route.startswith("action/") and len(route) > len("action/"):
        if method != "POST":
            raise MethodNotAllowed()
        body = _body(request)
        if body.get("properties") is not None:
            args: Any = [_parameters(body)]
        else:
            args = _parameters(body)
        return await _run(request, segment, "action", {"name": route[len("action/") :], "args": args})
    spec = ROUTES.get((method, route))
    if spec is None:
        if any(path == route for _, path in ROUTES):
            raise MethodNotAllowed()
        raise InspectorNotFound()
    op, parse = spec
    return await _run(request, segment, op, parse(request))


async def _run(request: HttpRequest, segment: str | None, op: str, args: dict[str, Any]) -> HttpResponse:
    from .gateway import _dispatch, _target

    token = bearer_token(request)

    async def run(runtime: Any, actor_id: str) -> Any:
        return await inspect(runtime, actor_id, op, token, **args)

    actor_id, result = await _dispatch(request, _target(request, segment), run)
    if isinstance(result, Forwarded):
        return result.response
    response = json_response(result)
    response["x-rivet-actor"] = str(actor_id)
    return response


def _view(route: str) -> Callable[..., Any]:
    async def view(request: HttpRequest, target: str) -> HttpResponse:
        return await inspector_route(request, target, route)

    return view


_SUMMARIES = {
    "summary": "Everything about the actor at once",
    "state": "The actor's state (PATCH: replace it)",
    "connections": "Open connections",
    "rpcs": "Action names",
    "queue": "Queued messages (?limit=); POST {name, body}: send one; DELETE: remove those not being handled",
    "workflow-history": "Workflow history",
    "workflow/replay": "Replay the workflow from a step ({entryId}; none: from the start); refused while it runs",
    "traces": "Recent spans (OTLP JSON)",
    "metrics": "What this wake of the actor did: actions, connections, SQL, KV, start-up",
    "database/schema": "Tables of the actor's database",
    "database/rows": "Rows of a table (?table=&limit=&offset=)",
    "database/execute": "Run one SQL statement (read-only unless readonly: false)",
}

for _route in dict.fromkeys(path for _, path in ROUTES):
    _methods = [method for method, path in ROUTES if path == _route]
    router.api_operation(
        _methods,
        f"/gateway/{{target}}/inspector/{_route}",
        summary=_SUMMARIES[_route],
        operation_id="inspector_" + _route.replace("/", "_").replace("-", "_"),
    )(_view(_route))


@router.post("/gateway/{target}/inspector/action/{name}", summary="Call an action (args or properties)")
async def inspector_action(request: HttpRequest, target: str, name: str) -> HttpResponse:
    return await inspector_route(request, target, f"action/{name}")


@router.api_operation(
    ["GET", "POST", "PUT", "PATCH", "DELETE"], "/gateway/{target}/inspector/{path:rest}", include_in_schema=False
)
async def inspector_unknown(request: HttpRequest, target: str, rest: str) -> HttpResponse:
    return await inspector_route(request, target, rest)
