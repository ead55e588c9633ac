"""Runtime configuration as a plain dataclass (built from ``RIVET`` settings)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Clock", "RuntimeConfig"]


@dataclass(frozen=True)
class RuntimeConfig:
    namespace: str = "default"
    commit_interval: float = 0.0
    commit_batch_size: int = 512
    lease_seconds: float = 30.0
    hook_timeout: float = 5.0
    max_kv_key_size: int = 2 * 1024
    max_kv_value_size: int = 128 * 1024
    max_key_part_size: int = 128
    max_key_size: int = 1024
    max_name_length: int = 64
    shutdown_timeout: float = 15.0
    #: Where actors' own SQLite databases live (``self.db``, local backend).
    db_dir: Path = field(default_factory=lambda: Path("rivet_actors"))
    db_max_size: int | None = 1024**3
    #: "local" or "shared" (``RIVET["DB_BACKEND"]``, resolved).
    db_backend: str = "local"

    @classmethod
    def from_settings(cls, settings: Any) -> RuntimeConfig:
        """Build from a settings object with upper-case attributes (``rivet_settings``)."""
        return cls(
            namespace=settings.NAMESPACE,
            commit_interval=float(settings.COMMIT_INTERVAL),
            commit_batch_size=int(settings.COMMIT_BATCH_SIZE),
            lease_seconds=float(settings.LEASE_SECONDS),
            hook_timeout=float(settings.HOOK_TIMEOUT),
            max_kv_key_size=int(settings.MAX_KV_KEY_SIZE),
            max_kv_value_size=int(settings.MAX_KV_VALUE_SIZE),
            max_key_part_size=int(settings.MAX_KEY_PART_SIZE),
            max_key_size=int(settings.MAX_KEY_SIZE),
            max_name_length=int(settings.MAX_NAME_LENGTH),
            shutdown_timeout=float(settings.SHUTDOWN_TIMEOUT),
            db_dir=_db_dir(settings.DB_DIR),
            db_max_size=int(settings.DB_MAX_SIZE) if settings.DB_MAX_SIZE else None,
            db_backend=_db_backend(settings.DB_BACKEND),
        )


def _db_backend(configured: Any) -> str:
    """``RIVET["DB_BACKEND"]``; by default "shared" when the Django database is not SQLite."""
    if configured:
        return str(configured)
    from django.db import connections

    return "local" if connections["default"].vendor == "sqlite" else "shared"


def _db_dir(configured: Any) -> Path:
    """``RIVET["DB_DIR"]``, else ``BASE_DIR / "rivet_actors"`` (else the working directory's)."""
    if configured:
        return Path(configured)
    from django.conf import settings

    base = getattr(settings, "BASE_DIR", None)
    return Path(base) / "rivet_actors" if base else Path("rivet_actors")


class Clock:
    """Time source of the runtime; tests substitute a controllable one."""

    def monotonic(self) -> float:
        return time.monotonic()

    def time(self) -> float:
        return time.time()
