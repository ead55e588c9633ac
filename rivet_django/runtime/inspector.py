"""The inspector: looking inside one awake actor (PROTOCOL.md section 11).

Each operation runs on the node that holds the actor (the HTTP routes in
``api/inspector.py`` go through the gateway like any call), on the awake instance
(woken if it sleeps). Answers have RivetKit 2.3.19's field names; values are made
JSON-safe (bytes as ``{"$bytes": hex}``).

Auth is checked here, on the owner: a per-actor token (``Actor.inspector_token``,
made when the actor is created) or ``RIVET["INSPECTOR_TOKEN"]``, compared in
constant time; open only with ``DEBUG`` on and no global token.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import orjson

from ..exceptions import (
    ActionNotFound,
    ActorElsewhere,
    DatabaseNotEnabled,
    InvalidRequest,
    PublicError,
    StateConflict,
)
from . import serde

if TYPE_CHECKING:
    from .host import ActorRuntime
    from .instance import ActorInstance

__all__ = ["InspectorUnauthorized", "inspect", "inspector_open"]


class InspectorUnauthorized(PublicError):
    group = "inspector"
    code = "unauthorized"
    status_code = 401
    default_message = "Inspector token missing or wrong"


def inspector_open() -> bool:
    """Whether the inspector needs no token (DEBUG on, no global token configured)."""
    from django.conf import settings

    from ..conf import rivet_settings

    return bool(settings.DEBUG) and not rivet_settings.INSPECTOR_TOKEN


def global_token_matches(token: str | None) -> bool:
    """Whether ``token`` is ``RIVET["INSPECTOR_TOKEN"]`` (constant time; False if none is set)."""
    from ..conf import rivet_settings

    expected = rivet_settings.INSPECTOR_TOKEN
    return bool(token and expected and hmac.compare_digest(token.encode(), str(expected).encode()))


async def authorize(runtime: ActorRuntime, actor_id: str, token: str | None) -> None:
    if inspector_open() or global_token_matches(token):
        return
    if token:
        own = await runtime.store.inspector_token(actor_id)  # type: ignore[attr-defined]
        if own and hmac.compare_digest(token.encode(), own.encode()):
            return
    raise InspectorUnauthorized()


async def inspect(
    runtime: ActorRuntime, actor_id: str, op: str, token: str | None, *, trusted: bool = False, **args: Any
) -> Any:
    """Run inspector operation ``op`` on the actor, after checking ``token`` (``trusted``:
    the caller was authorized already, e.g. a staff user of the admin, on any node)."""
    if not trusted:
        await authorize(runtime, actor_id, token)
    if op in _WITHOUT_WAKING:
        return await _WITHOUT_WAKING[op](runtime, actor_id, **args)
    operation = _OPERATIONS.get(op)
    if operation is None:
        raise InvalidRequest(f"Unknown inspector operation {op!r}")
    inst = await runtime.instance(actor_id)
    return await operation(inst, **args)


async def _sleep(runtime: ActorRuntime, actor_id: str) -> dict[str, Any]:
    """Put the actor to sleep now (its stop sequence, final flush included); asleep already: nothing.

    Not held here but leased by another node: :class:`ActorElsewhere`, so the gateway
    sends the operation there (a sleep claims nothing, so no claim would tell it)."""
    inst = runtime.instances.get(actor_id)
    if inst is not None:
        await inst.stop()
        return {"ok": True}
    owner = await runtime.store.owner_of(actor_id)  # type: ignore[attr-defined]
    if owner is not None and owner != runtime.node_id:
        raise ActorElsewhere(actor_id, owner)
    return {"ok": True}


async def _destroy(runtime: ActorRuntime, actor_id: str) -> dict[str, Any]:
    """Destroy the actor (``on_destroy``, then its state, KV, schedules and database are gone)."""
    from ..node import get_node
    from .router import ActorRouter

    node = get_node()
    router = node.router if node is not None and node.runtime is runtime else ActorRouter(runtime)
    await router.destroy(actor_id)
    return {"ok": True}


async def _wake(runtime: ActorRuntime, actor_id: str) -> dict[str, Any]:
    await runtime.instance(actor_id)
    return {"ok": True}


# -- operations --------------------------------------------------------------------------


async def _summary(inst: ActorInstance) -> dict[str, Any]:
    queue = await _queue(inst, limit=0)
    workflow = await _workflow_history(inst)
    return {
        "state": _state_value(inst),
        "isStateEnabled": inst.definition.has_state,
        "connections": _connections(inst),
        "rpcs": _rpcs(inst),
        "queueSize": queue["size"],
        "isDatabaseEnabled": inst.db is not None,
        "isWorkflowEnabled": workflow["isWorkflowEnabled"],
        "workflowState": workflow["workflowState"],
        "workflowHistory": workflow["history"],
    }


async def _state(inst: ActorInstance) -> dict[str, Any]:
    return {"state": _state_value(inst), "isStateEnabled": inst.definition.has_state}


async def _patch_state(inst: ActorInstance, state: Any, expected: str | None = None) -> dict[str, Any]:
    """Replace the state; with ``expected`` (the :func:`state_fingerprint` of the state the
    editor read) only if it is still that state, else :class:`StateConflict`."""
    if expected is not None and state_fingerprint(_state_value(inst)) != expected:
        raise StateConflict()
    await inst.replace_state(state)  # no await between the check and the replacement
    return {"ok": True}


async def _connections_op(inst: ActorInstance) -> dict[str, Any]:
    return {"connections": _connections(inst)}


async def _rpcs_op(inst: ActorInstance) -> dict[str, Any]:
    return {"rpcs": _rpcs(inst)}


async def _action(inst: ActorInstance, name: str, args: list[Any]) -> dict[str, Any]:
    if name not in inst.definition.actions:
        raise ActionNotFound(f"Action `{name}` was not found.")
    # As a schedule runs it: the actor's own call, no connection, no connect hooks.
    output = await inst.runtime.run_internal(inst.actor_id, name, args)
    return {"output": json_safe(output)}


async def _queue(inst: ActorInstance, limit: int = 100) -> dict[str, Any]:
    stored = await inst.runtime.queues.store.load(inst.actor_id)
    limit = limit if limit > 0 else 0
    return {
        "size": len(stored),
        "maxSize": _queue_max_size(inst),
        "truncated": len(stored) > limit,
        "messages": [
            {"id": str(m.id), "name": m.name, "createdAtMs": int(m.created_at.timestamp() * 1000)}
            for m in stored[:limit]
        ],
    }


async def _queue_send(inst: ActorInstance, name: str, body: Any) -> dict[str, Any]:
    """Put a message in one of the actor's queues, as the actor itself would (no
    ``can_publish``: the caller holds the inspector token); RivetKit's ``POST queue``."""
    message_id = await inst.queue.send(name, body)
    return {"id": str(message_id), "name": name, "createdAtMs": int(time.time() * 1000)}


async def _workflow_history(inst: ActorInstance) -> dict[str, Any]:
    from .. import workflow_history

    return await workflow_history.history(inst)


async def _workflow_replay(inst: ActorInstance, entry_id: str | None = None) -> dict[str, Any]:
    from .. import workflow_history

    return await workflow_history.replay(inst, entry_id)


async def _queue_reset(inst: ActorInstance) -> dict[str, Any]:
    """Delete the queued messages no handler holds (RivetKit's ``DELETE queue``)."""
    await inst.queue.reset()
    return {}


async def _metrics(inst: ActorInstance) -> dict[str, Any]:
    """What this wake of the actor did (RivetKit's ``inspector/metrics``; :mod:`.stats`)."""
    return inst.stats.snapshot()


async def _traces(
    inst: ActorInstance, start_ms: int | None = None, end_ms: int | None = None, limit: int = 1000
) -> dict[str, Any]:
    """The actor's recent spans (``RIVET["TRACING"]``), as OTLP JSON span objects."""
    from .. import tracing

    if not tracing.enabled():
        return {"otlp": [], "clamped": False}
    spans, clamped = tracing.recent_spans(inst.actor_id, start_ms, end_ms, limit)
    return {"otlp": spans, "clamped": clamped}


async def _database_schema(inst: ActorInstance) -> dict[str, Any]:
    db = _database(inst)
    tables = await db.tables()
    return {
        "schema": {
            "tables": [
                {
                    "table": {"schema": "main", "name": t["name"], "type": "table"},
                    "columns": t["info"],
                    "foreignKeys": t["foreign_keys"],
                    "records": t["rows"],
                }
                for t in tables
            ]
        }
    }


async def _database_rows(inst: ActorInstance, table: str, limit: int = 100, offset: int = 0) -> dict[str, Any]:
    page = await _database(inst).rows(table, limit=min(max(limit, 0), 500), offset=max(offset, 0), count=False)
    return {"rows": [dict(zip(page["columns"], row, strict=True)) for row in page["rows"]]}


async def _database_page(inst: ActorInstance, table: str, limit: int = 50, offset: int = 0) -> dict[str, Any]:
    """A page of a table with its columns and row count (the admin's browser; not a RivetKit route)."""
    return await _database(inst).rows(table, limit=limit, offset=offset)  # type: ignore[no-any-return]


async def _database_execute(inst: ActorInstance, sql: str, args: Any = None, readonly: bool = True) -> dict[str, Any]:
    rows = await _database(inst).inspect_execute(sql, args, readonly=readonly)
    return {"rows": json_safe(rows)}


async def _schedules(inst: ActorInstance) -> dict[str, Any]:
    """The actor's schedules (not a RivetKit route: the admin console's)."""
    return {"schedules": [json_safe(s.as_dict()) for s in await inst.schedule.list()]}


async def _cancel_schedule(inst: ActorInstance, schedule_id: str) -> dict[str, Any]:
    return {"ok": await inst.schedule.cancel(str(schedule_id))}


async def _disconnect(inst: ActorInstance, conn_id: str) -> dict[str, Any]:
    """Close one of the actor's connections (its disconnect hooks run)."""
    conn = inst.conns.get(str(conn_id))
    if conn is None:
        raise InvalidRequest(f"The actor has no connection {conn_id!r}")
    await conn.disconnect("Disconnected by an operator")
    return {"ok": True}


_OPERATIONS: dict[str, Callable[..., Awaitable[Any]]] = {
    "schedules": _schedules,
    "cancel_schedule": _cancel_schedule,
    "disconnect": _disconnect,
    "summary": _summary,
    "state": _state,
    "patch_state": _patch_state,
    "connections": _connections_op,
    "rpcs": _rpcs_op,
    "action": _action,
    "queue": _queue,
    "queue_send": _queue_send,
    "workflow_history": _workflow_history,
    "workflow_replay": _workflow_replay,
    "queue_reset": _queue_reset,
    "traces": _traces,
    "metrics": _metrics,
    "database_schema": _database_schema,
    "database_rows": _database_rows,
    "database_page": _database_page,
    "database_execute": _database_execute,
}


#: Operations on the actor wherever it is in its life (they wake it only if they must).
_WITHOUT_WAKING: dict[str, Callable[..., Awaitable[Any]]] = {"sleep": _sleep, "destroy": _destroy, "wake": _wake}


# -- helpers -------------------------------------------------------------------------------


def _state_value(inst: ActorInstance) -> Any:
    if not inst.definition.has_state:
        return None
    return json_safe(serde.loads(serde.dumps(inst.state)))  # a plain copy (observed containers unwrapped)


def _connections(inst: ActorInstance) -> list[dict[str, Any]]:
    return [
        {
            "type": None,
            "id": conn.id,
            "details": {
                "type": None,
                "params": json_safe(conn.params),
                "stateEnabled": True,
                "state": json_safe(conn.state),
                "subscriptions": len(conn.subscriptions),
                "isHibernatable": conn.transport == "websocket",
            },
        }
        for conn in inst.conns.values()
    ]


def _rpcs(inst: ActorInstance) -> list[str]:
    """The actor's own actions: not the runtime's internal ones (a workflow's durable-sleep wake-up)."""
    return sorted(name for name in inst.definition.actions if not name.startswith(_INTERNAL_ACTION_PREFIX))


#: Actions the runtime adds to actors (``rivet_django.workflow.WAKE_ACTION``).
_INTERNAL_ACTION_PREFIX = "_rivet_"


def _queue_max_size(inst: ActorInstance) -> int | None:
    sizes = [spec.max_size for spec in (getattr(inst.definition, "queues", None) or {}).values()]
    known = [size for size in sizes if size is not None]
    return sum(known) if known and len(known) == len(sizes) else None


def _database(inst: ActorInstance) -> Any:
    if inst.db is None:
        raise DatabaseNotEnabled()
    return inst.db


def state_fingerprint(value: Any) -> str:
    """A digest of a JSON-safe state (as :func:`json_safe` makes it), to detect a change."""
    return hashlib.sha256(orjson.dumps(value, option=orjson.OPT_SORT_KEYS)).hexdigest()


def json_safe(value: Any) -> Any:
    """``value`` with only JSON types: bytes as ``{"$bytes": hex}``, dates as ISO strings,
    sets as lists, anything else as its ``repr``."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [json_safe(v) for v in value]
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"$bytes": bytes(value).hex()}
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return value.isoformat()
    return repr(value)
