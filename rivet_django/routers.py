"""``ActorDatabaseRouter``: the models of ``RIVET["DB_APPS"]`` live in actors' own databases.

Add it to ``DATABASE_ROUTERS``. Inside ``await self.db.run(fn)`` (the actor database's
worker thread) those models read and write that actor's database; anywhere else using
them is an error that says so, rather than a query against the project's database.
Their tables are created in each actor's database (``await db.migrate_models()`` in
``on_migrate``), never in the project's, and the project's apps are never migrated
into an actor's database.
"""

from __future__ import annotations

from typing import Any

from .conf import rivet_settings
from .runtime.database import ALIAS_PREFIX, current_alias

__all__ = ["ActorDatabaseRouter"]


def _actor_model(model: Any) -> bool:
    return model._meta.app_label in rivet_settings.DB_APPS


class ActorDatabaseRouter:
    def db_for_read(self, model: Any, **hints: Any) -> str | None:
        if not _actor_model(model):
            return None
        alias = current_alias()
        if alias is None:
            raise RuntimeError(
                f"{model._meta.label} lives in actors' own databases (RIVET['DB_APPS']): "
                "use it inside `await self.db.run(fn)` of an actor"
            )
        return alias

    db_for_write = db_for_read

    def allow_relation(self, obj1: Any, obj2: Any, **hints: Any) -> bool | None:
        if _actor_model(type(obj1)) or _actor_model(type(obj2)):
            return bool(obj1._state.db == obj2._state.db)
        return None

    def allow_migrate(self, db: str, app_label: str, **hints: Any) -> bool | None:
        in_actor_db = db.startswith(ALIAS_PREFIX)
        if app_label in rivet_settings.DB_APPS:
            return in_actor_db
        if in_actor_db:
            return False
        return None
