"""One settings object for rivet_django: ``RIVET = {...}`` with every key defaulted.

Read values as attributes of :data:`rivet_settings` (``rivet_settings.NAMESPACE``).
The object re-reads Django settings when ``RIVET`` changes (``setting_changed``),
so ``override_settings(RIVET=...)`` works in tests.
"""

from __future__ import annotations

from typing import Any

__all__ = ["DEFAULTS", "RivetSettings", "rivet_settings"]

DEFAULTS: dict[str, Any] = {
    # Namespace used when a request does not name one.
    "NAMESPACE": "default",
    # Folder for per-actor SQLite databases (``self.db``); None: BASE_DIR / "rivet_actors".
    "DB_DIR": None,
    # Largest an actor's own database (self.db) may grow, in bytes; None: no limit.
    "DB_MAX_SIZE": 1024**3,
    # Where actors' own databases are durable: "local" (a file on the node's disk),
    # "shared" (the file is a cache; committed WAL frames are stored in the Django
    # database before a call returns, so the actor finds them on any node), or None:
    # "shared" when the Django database is not SQLite (a setup for several nodes).
    "DB_BACKEND": None,
    # Django apps whose models live in actors' own databases (``await self.db.run(fn)``);
    # needs "rivet_django.routers.ActorDatabaseRouter" in DATABASE_ROUTERS.
    "DB_APPS": [],
    # Count calls, commits and schedule lag for Prometheus ({api}/metrics).
    "METRICS": True,
    # OpenTelemetry spans for action calls, scheduled runs, workflow steps and queue
    # messages (off: nothing on the hot path). Export with your own SDK setup (OTLP).
    "TRACING": False,
    # Global inspector token; per-actor tokens are accepted too.
    "INSPECTOR_TOKEN": None,
    # "embedded" (runactors fires schedules) or "celery".
    "SCHEDULER": "embedded",
    # Most schedules one actor may hold (``self.schedule``).
    "MAX_SCHEDULES_PER_ACTOR": 1000,
    # Embedded driver: how often a node looks in the database for due schedules it
    # has no timer for (made by other processes), in seconds.
    "SCHEDULE_POLL_INTERVAL": 1.0,
    # Attempts of a failing scheduled run (per schedule: ``max_attempts=``), and the
    # exponential backoff between them: BACKOFF * 2**(attempt - 1), at most BACKOFF_MAX.
    "SCHEDULE_MAX_ATTEMPTS": 5,
    "SCHEDULE_RETRY_BACKOFF": 1.0,
    "SCHEDULE_RETRY_BACKOFF_MAX": 300.0,
    # A run that starts more than this many seconds after its due time was missed
    # (misfire policy "skip" drops it).
    "SCHEDULE_MISFIRE_GRACE": 10.0,
    # Misfire policy "run_all": most missed runs of one schedule caught up after downtime.
    "SCHEDULE_RUN_ALL_LIMIT": 10,
    # Longest time a dirty state waits to join a group commit (seconds). 0: commit
    # as soon as the previous commit finishes (batches form while one is in flight).
    "COMMIT_INTERVAL": 0.0,
    # Most actor states written in one group-commit transaction.
    "COMMIT_BATCH_SIZE": 512,
    # How long a node's claim on an actor lasts without renewal (seconds).
    "LEASE_SECONDS": 30.0,
    # This process's node id; None: derived from host name and port/pid.
    "NODE_ID": None,
    # The URL other processes reach this node's actor API at (``http://10.0.0.5:8000/api/rivet``);
    # None: from runactors' --host/--port (a wildcard host becomes this machine's name).
    "NODE_ADDRESS": None,
    # Authenticates the links between nodes; None: derived from SECRET_KEY.
    "CLUSTER_SECRET": None,
    # Where an actor that no live node holds wakes up: "local" (the node the call
    # arrived on), "least_loaded", or the dotted path of a placement class.
    "PLACEMENT": "local",
    # Origins allowed for browsers (CORS and WebSocket upgrade).
    "ALLOWED_ORIGINS": [],
    # SQLite PRAGMA synchronous for the Django database when it is SQLite (WAL mode
    # is always on). FULL survives power loss; NORMAL survives process crashes.
    "SQLITE_SYNCHRONOUS": "FULL",
    # Threads that run ORM work for the runtime. SQLite has one writer: keep 1.
    "DB_THREADS": 1,
    # How often the runtime looks for idle actors to put to sleep (seconds).
    # Limits (PROTOCOL.md section 10).
    "MAX_INCOMING_MESSAGE_SIZE": 64 * 1024,
    "MAX_OUTGOING_MESSAGE_SIZE": 1024 * 1024,
    "MAX_CONN_PARAMS_SIZE": 4 * 1024,
    "MAX_KEY_PART_SIZE": 128,
    "MAX_KEY_SIZE": 1024,
    "MAX_NAME_LENGTH": 64,
    "MAX_KV_KEY_SIZE": 2 * 1024,
    "MAX_KV_VALUE_SIZE": 128 * 1024,
    "HOOK_TIMEOUT": 5.0,
    # Seconds runactors waits for actors to sleep on SIGINT/SIGTERM.
    "SHUTDOWN_TIMEOUT": 15.0,
}


class RivetSettings:
    """Attribute access to ``settings.RIVET`` merged over :data:`DEFAULTS`."""

    def __init__(self) -> None:
        self._cache: dict[str, Any] | None = None

    def _load(self) -> dict[str, Any]:
        from django.conf import settings

        user = getattr(settings, "RIVET", None) or {}
        merged = dict(DEFAULTS)
        merged.update(user)
        return merged

    @property
    def user_keys(self) -> set[str]:
        """Keys the project set in ``RIVET`` (for system checks)."""
        from django.conf import settings

        return set((getattr(settings, "RIVET", None) or {}).keys())

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        if self._cache is None:
            self._cache = self._load()
        try:
            return self._cache[name]
        except KeyError:
            raise AttributeError(f"Invalid rivet_django setting: {name!r}") from None

    def reload(self) -> None:
        """Forget cached values; the next read sees the current Django settings."""
        self._cache = None


rivet_settings = RivetSettings()


def _on_setting_changed(*, setting: str, **kwargs: Any) -> None:
    if setting == "RIVET":
        rivet_settings.reload()
        from . import metrics, tracing

        metrics.reset_enabled()
        tracing.reset_enabled()


def connect_signals() -> None:
    """Reload on ``setting_changed`` (called from ``AppConfig.ready``)."""
    from django.core.signals import setting_changed

    setting_changed.connect(_on_setting_changed, dispatch_uid="rivet_django.conf")
