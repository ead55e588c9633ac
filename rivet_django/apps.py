"""App config: wires settings signals, SQLite pragmas, system checks and actor discovery."""

from __future__ import annotations

from typing import Any

from django.apps import AppConfig
from django.db.backends.signals import connection_created


class RivetDjangoConfig(AppConfig):
    name = "rivet_django"
    verbose_name = "Rivet actors"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import checks  # noqa: F401  (registers the system checks)
        from .conf import connect_signals
        from .registry import autodiscover

        connect_signals()
        connection_created.connect(_configure_sqlite, dispatch_uid="rivet_django.sqlite")
        autodiscover()


def _configure_sqlite(sender: Any, connection: Any, **kwargs: Any) -> None:
    """WAL lets readers run beside the single writer; synchronous is a setting."""
    if connection.vendor != "sqlite":
        return
    from .conf import rivet_settings

    synchronous = str(rivet_settings.SQLITE_SYNCHRONOUS).upper()
    if synchronous not in {"OFF", "NORMAL", "FULL", "EXTRA"}:
        synchronous = "FULL"
    with connection.cursor() as cursor:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA synchronous={synchronous}")
        cursor.execute("PRAGMA busy_timeout=5000")
