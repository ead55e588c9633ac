"""A workflow's history as the inspector shows it, and its replay (PROTOCOL.md section 11).

The JSON is RivetKit 2.3.19's (``serializeWorkflowHistoryForJson``), so its inspector UI
could read ours: a ``nameRegistry`` of entry names, ``entries`` whose ``location`` is a
list of name indexes and loop iteration markers and whose ``kind`` is a tagged union
(``WorkflowStepEntry``, ``WorkflowLoopEntry``...), and ``entryMetadata`` by entry id.
Our locations are paths (``"task-loop/3/process"``): a segment after a loop's name is
its iteration. Entry ids are the rows' ids, so they change when an entry is recorded
afresh (a loop's next iteration, a replay).

Replay (``POST inspector/workflow/replay``) deletes a step's entry and every entry
recorded after it (the whole history without ``entryId``; a step inside a loop
replays from the loop's entry, as RivetKit's engine does), then starts the workflow
again: it replays what is left and runs the rest anew. It is refused with
``actor.workflow_in_flight`` (409) while the workflow runs: only a workflow that waits
(a durable sleep, a queue wait), has ended, or has not started can be replayed.
Messages that deleted queue entries consumed stay consumed: their waits wait again.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from .exceptions import InvalidRequest, WorkflowInFlight
from .runtime import serde
from .storage.workflows import DjangoWorkflowStore, EntryRow

if TYPE_CHECKING:
    from .runtime.instance import ActorInstance

__all__ = ["history", "replay"]

#: Our entry statuses as RivetKit's ``WorkflowEntryStatus``.
_STATUS = {
    "completed": "COMPLETED",
    "running": "RUNNING",
    "sleeping": "RUNNING",
    "retrying": "FAILED",
}


async def history(inst: ActorInstance) -> dict[str, Any]:
    """``{history, workflowState, isWorkflowEnabled}``: the ``workflow-history`` route's answer."""
    if not _enabled(inst):
        return {"history": None, "workflowState": None, "isWorkflowEnabled": False}
    rows = await _store(inst).rows(inst.actor_id)
    return {"history": _history_json(rows), "workflowState": _state(inst, rows), "isWorkflowEnabled": True}


async def replay(inst: ActorInstance, entry_id: str | None) -> dict[str, Any]:
    """Replay the workflow from the step ``entry_id`` (from the start if None); the new history."""
    if not _enabled(inst):
        return await history(inst)
    store = _store(inst)
    rows = await store.rows(inst.actor_id)
    if _state(inst, rows) in ("pending", "running"):
        raise WorkflowInFlight()
    doomed = _from(rows, entry_id)
    async with inst.run_stopped():
        if _in_flight(inst):  # a step started while we looked (cannot happen: nothing awaited)
            raise WorkflowInFlight()
        await store.delete(inst.actor_id, inst.generation, [row.record.location for row in doomed])
    inst.log.info("workflow replayed from %s", f"entry {entry_id}" if entry_id else "the start")
    return await history(inst)


# -- replay --------------------------------------------------------------------------------


def _from(rows: list[EntryRow], entry_id: str | None) -> list[EntryRow]:
    """The entries a replay from ``entry_id`` deletes: it and every later one (the end included)."""
    if entry_id is None:
        return rows
    target = next((row for row in rows if str(row.id) == str(entry_id)), None)
    if target is None:
        raise InvalidRequest(f"Workflow step not found: {entry_id}")
    if target.record.kind != "step":
        raise InvalidRequest("Workflow replay target must be a step")
    # Inside a loop iteration: from the innermost loop holding it (its iteration's entries go with it).
    location = target.record.location
    loops = [row for row in rows if row.record.kind == "loop" and location.startswith(row.record.location + "/")]
    boundary = max(loops, key=lambda row: len(row.record.location), default=target)
    return [row for row in rows if row.id >= boundary.id]


# -- state ---------------------------------------------------------------------------------


def _state(inst: ActorInstance, rows: list[EntryRow]) -> str:
    """RivetKit's ``WorkflowState``: pending, running, sleeping, completed or failed."""
    from .workflow import END_LOCATION

    end = next((row for row in rows if row.record.location == END_LOCATION), None)
    if end is not None:
        return "failed" if end.record.status == "failed" else "completed"
    if _in_flight(inst):
        return "running"
    if inst.run_running():
        return "sleeping"  # it waits for a timer or a message
    # Awake, yet its body returned without an end: it raised, or diverged from its history.
    return "failed" if rows else "pending"


def _in_flight(inst: ActorInstance) -> bool:
    """Whether the workflow runs now: its body is not parked in a wait, or a step runs."""
    from .workflow import _ENGINE_ATTR

    if not inst.run_running():
        return False
    engine = getattr(inst.actor, _ENGINE_ATTR, None)
    return not inst.run_waiting() or (engine is not None and engine.steps_running > 0)


# -- JSON ----------------------------------------------------------------------------------


def _history_json(rows: list[EntryRow]) -> dict[str, Any]:
    from .runtime.inspector import json_safe
    from .workflow import END_LOCATION

    names: dict[str, int] = {}
    kinds = {row.record.location: row.record.kind for row in rows}
    entries = []
    metadata = {}
    for row in rows:
        record = row.record
        if record.location == END_LOCATION:
            continue
        data = _decode(record.output)
        entries.append(
            {
                "id": str(row.id),
                "location": _location(record.location, kinds, names),
                "kind": _kind(record.kind, record.status, record.error, data),
            }
        )
        metadata[str(row.id)] = {
            "status": _status(record.status, data),
            "error": record.error or None,
            "attempts": record.attempts,
            "lastAttemptAt": _ms(row.updated_at),
            "createdAt": _ms(row.created_at),
            "completedAt": _ms(row.updated_at) if record.status == "completed" else None,
            "rollbackCompletedAt": None,
            "rollbackError": None,
        }
    return json_safe({"nameRegistry": list(names), "entries": entries, "entryMetadata": metadata})


def _location(location: str, kinds: dict[str, str], names: dict[str, int]) -> list[dict[str, Any]]:
    """``"task-loop/3/process"`` as ``[name, {loop, iteration}, name]`` segments."""
    segments: list[dict[str, Any]] = []
    parts = location.split("/")
    for i, part in enumerate(parts):
        parent = "/".join(parts[:i])
        if i and kinds.get(parent) == "loop" and part.isdigit():
            loop = names.setdefault(parts[i - 1], len(names))
            segments.append({"tag": "WorkflowLoopIterationMarker", "val": {"loop": loop, "iteration": int(part)}})
        else:
            segments.append({"tag": "WorkflowNameIndex", "val": names.setdefault(part, len(names))})
    return segments


def _kind(kind: str, status: str, error: str, data: dict[str, Any]) -> dict[str, Any]:
    """One entry's kind as RivetKit's tagged union."""
    done = status == "completed"
    if kind == "loop":
        return {
            "tag": "WorkflowLoopEntry",
            "val": {"state": data.get("s"), "iteration": data.get("i", 0), "output": data.get("v") if done else None},
        }
    if kind == "sleep":
        deadline = data.get("until")
        return {
            "tag": "WorkflowSleepEntry",
            "val": {
                "deadline": round(deadline * 1000) if isinstance(deadline, (int, float)) else None,
                "state": "COMPLETED" if done else "PENDING",
            },
        }
    if kind == "queue":
        return {"tag": "WorkflowMessageEntry", "val": {"name": data.get("name"), "messageData": data.get("v")}}
    if kind in ("join", "race"):
        value = data.get("v")
        # A race keeps only its winner's output: the losers' entries were discarded with them.
        outputs = (value if isinstance(value, dict) else {}) if kind == "join" else {data.get("w"): value}
        branches = {
            str(name): {"status": "COMPLETED", "output": output, "error": None} for name, output in outputs.items()
        }
        val: dict[str, Any] = {"branches": branches}
        if kind == "race":
            val = {"winner": data.get("w"), **val}
        return {"tag": "WorkflowJoinEntry" if kind == "join" else "WorkflowRaceEntry", "val": val}
    if kind == "try":
        failure = data.get("f")
        error_info = failure.get("error") if isinstance(failure, dict) else None
        failed = error_info.get("message") if isinstance(error_info, dict) else None
        return {"tag": "WorkflowStepEntry", "val": {"output": data.get("v"), "error": failed or None}}
    return {"tag": "WorkflowStepEntry", "val": {"output": data.get("v") if done else None, "error": error or None}}


def _status(status: str, data: dict[str, Any]) -> str:
    if status == "failed":
        # Out of retries (or timed out on the last one) is RivetKit's EXHAUSTED; a critical error FAILED.
        return "FAILED" if data.get("k") == "critical" else "EXHAUSTED"
    return _STATUS.get(status, status.upper())


# -- helpers -------------------------------------------------------------------------------


def _enabled(inst: ActorInstance) -> bool:
    from .workflow import _WorkflowMethod

    return isinstance(inst.definition.hook("run"), _WorkflowMethod)


def _store(inst: ActorInstance) -> DjangoWorkflowStore:
    return DjangoWorkflowStore(inst.runtime.store.executor)  # type: ignore[attr-defined]


def _decode(output: bytes | None) -> dict[str, Any]:
    if output is None:
        return {}
    value = serde.loads(output)
    return value if isinstance(value, dict) else {}


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)
