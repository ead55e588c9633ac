"""Per-actor counters: the inspector's ``metrics`` route (RivetKit 2.3.19's ``ActorMetrics``).

One :class:`ActorStats` per awake instance, so they count one wake cycle and start
from zero on the next (as RivetKit's do); they live in memory only. The snapshot has
RivetKit's shape: each metric is ``{"type", "help", "value"}`` (``counter``,
``gauge``) or ``{"type", "help", "values"}`` (``labeled_counter``,
``labeled_timing`` with ``{calls, totalMs, keys}``). Metrics RivetKit has that we
do not measure (its native SQLite VFS phases, its KV preload) are left out rather
than reported as zeros.

Node-wide Prometheus metrics are :mod:`rivet_django.metrics`; these cost a few
integer additions per call and are always on.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ActorStats", "sql_kind"]

#: Hooks timed at start-up, with RivetKit's metric names.
_STARTUP_HOOKS = {
    "create_state": ("startup_user_create_state_ms", "Time in user createState callback"),
    "on_create": ("startup_user_on_create_ms", "Time in user onCreate callback"),
    "on_wake": ("startup_user_on_wake_ms", "Time in user onWake callback"),
    "create_vars": ("startup_user_create_vars_ms", "Time in user createVars callback"),
    "on_migrate": ("startup_user_db_migrate_ms", "Time in user database migration"),
}

_KV_OPERATIONS = ("get", "getBatch", "put", "putBatch", "deleteBatch", "list")


def sql_kind(sql: str) -> str:
    """The statement's kind as RivetKit counts it: select (also PRAGMA, WITH), insert, update, delete, other."""
    token = sql.lstrip()[:8].upper()
    if token.startswith(("SELECT", "PRAGMA", "WITH")):
        return "select"
    for kind in ("INSERT", "UPDATE", "DELETE"):
        if token.startswith(kind):
            return kind.lower()
    return "other"


class ActorStats:
    """What one wake of one actor did."""

    __slots__ = (
        "action_calls",
        "action_errors",
        "action_seconds",
        "connections_closed",
        "connections_opened",
        "hook_seconds",
        "is_new",
        "kv",
        "restored_connections",
        "sql",
        "sql_seconds",
        "startup_seconds",
    )

    def __init__(self) -> None:
        self.action_calls = 0
        self.action_errors = 0
        self.action_seconds = 0.0
        self.connections_opened = 0
        self.connections_closed = 0
        self.sql = {"select": 0, "insert": 0, "update": 0, "delete": 0, "other": 0}
        self.sql_seconds = 0.0
        #: KV operation -> [calls, keys, seconds].
        self.kv: dict[str, list[float]] = {op: [0, 0, 0.0] for op in _KV_OPERATIONS}
        self.is_new = False
        self.startup_seconds = 0.0
        self.hook_seconds: dict[str, float] = {}
        self.restored_connections = 0

    def action(self, ok: bool, seconds: float) -> None:
        self.action_calls += 1
        self.action_seconds += seconds
        if not ok:
            self.action_errors += 1

    def statement(self, sql: str, seconds: float) -> None:
        self.sql[sql_kind(sql)] += 1
        self.sql_seconds += seconds

    def kv_operation(self, op: str, keys: int, seconds: float) -> None:
        counts = self.kv[op]
        counts[0] += 1
        counts[1] += keys
        counts[2] += seconds

    def snapshot(self) -> dict[str, Any]:
        """RivetKit's ``MetricsSnapshot``: metric name -> metric."""
        snapshot: dict[str, Any] = {
            "kv_operations": {
                "type": "labeled_timing",
                "help": "KV round trips by operation type",
                "values": {
                    op: {"calls": int(calls), "totalMs": seconds * 1000, "keys": int(keys)}
                    for op, (calls, keys, seconds) in self.kv.items()
                },
            },
            "sql_statements": {
                "type": "labeled_counter",
                "help": "SQL statements executed by type",
                "values": dict(self.sql),
            },
            "sql_duration_ms": _metric("counter", "Total SQL execution time in milliseconds", self.sql_seconds * 1000),
            "action_calls": _metric("counter", "Total action invocations", self.action_calls),
            "action_errors": _metric("counter", "Total action errors", self.action_errors),
            "action_duration_ms": _metric(
                "counter", "Total action execution time in milliseconds", self.action_seconds * 1000
            ),
            "connections_opened": _metric("counter", "Total WebSocket connections opened", self.connections_opened),
            "connections_closed": _metric("counter", "Total WebSocket connections closed", self.connections_closed),
            "startup_total_ms": _metric(
                "gauge", "Total actor startup time in milliseconds", self.startup_seconds * 1000
            ),
            "startup_is_new": _metric("gauge", "1 if new actor, 0 if existing", 1 if self.is_new else 0),
            "startup_internal_restore_connections_count": _metric(
                "gauge", "Number of connections restored", self.restored_connections
            ),
        }
        for hook, (name, help_text) in _STARTUP_HOOKS.items():
            snapshot[name] = _metric("gauge", help_text, self.hook_seconds.get(hook, 0.0) * 1000)
        return snapshot


def _metric(kind: str, help_text: str, value: float) -> dict[str, Any]:
    return {"type": kind, "help": help_text, "value": value}
