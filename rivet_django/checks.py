"""System checks (``rivet_django.E00x`` / ``W00x``); docs/reference/checks.md lists them."""

from __future__ import annotations

from typing import Any

from django.core.checks import Error, Tags, Warning, register

from .conf import DEFAULTS, rivet_settings
from .registry import actors

__all__ = ["check_actor_databases", "check_actors", "check_api_docs", "check_asgi_application", "check_settings"]


@register(Tags.compatibility)
def check_actors(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    errors: list[Any] = []
    for name, paths in sorted(actors.conflicts.items()):
        errors.append(
            Error(
                f"Actor name {name!r} is registered by several classes: {', '.join(paths)}.",
                hint="Give each class a distinct Meta.name.",
                id="rivet_django.E001",
            )
        )
    for definition in actors:
        if len(definition.name) > rivet_settings.MAX_NAME_LENGTH:
            errors.append(
                Error(
                    f"Actor name {definition.name!r} is longer than {rivet_settings.MAX_NAME_LENGTH} characters.",
                    hint="Set a shorter Meta.name.",
                    id="rivet_django.E002",
                )
            )
    return errors


@register(Tags.compatibility)
def check_actor_databases(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    """Actors' own databases: DB_APPS set up; local files where nodes may share the actors."""
    from django.apps import apps
    from django.conf import settings
    from django.db import connection

    from .registry import actors

    messages: list[Any] = []
    db_apps = list(rivet_settings.DB_APPS)
    missing = [label for label in db_apps if not apps.is_installed(label) and label not in apps.app_configs]
    if missing:
        messages.append(
            Error(
                f"RIVET['DB_APPS'] names app(s) that are not installed: {', '.join(missing)}.",
                hint="Use the app labels of installed apps whose models live in actors' databases.",
                id="rivet_django.E011",
            )
        )
    router = "rivet_django.routers.ActorDatabaseRouter"
    if db_apps and router not in [
        r if isinstance(r, str) else f"{type(r).__module__}.{type(r).__name__}" for r in settings.DATABASE_ROUTERS
    ]:
        messages.append(
            Error(
                "RIVET['DB_APPS'] is set but ActorDatabaseRouter is not in DATABASE_ROUTERS.",
                hint=f'Add DATABASE_ROUTERS = ["{router}"]: it sends those models to the actor database of '
                "`await self.db.run(fn)` and keeps their tables out of the project database.",
                id="rivet_django.E012",
            )
        )
    with_db = sorted(d.name for d in actors if d.hook("on_migrate") is not None)
    if with_db and connection.vendor != "sqlite" and rivet_settings.DB_BACKEND == "local":
        messages.append(
            Warning(
                f"Actors {', '.join(with_db)} keep their database (self.db) in a file on the node's disk.",
                hint="With several nodes, an actor that moves to another node does not find its database there. "
                'Leave RIVET["DB_BACKEND"] unset (or "shared") to keep actors\' databases in the shared database.',
                id="rivet_django.W003",
            )
        )
    return messages


@register(Tags.compatibility)
def check_settings(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    from django.conf import settings

    messages: list[Any] = []
    unknown = sorted(rivet_settings.user_keys - set(DEFAULTS))
    if unknown:
        messages.append(
            Error(
                f"Unknown RIVET setting(s): {', '.join(unknown)}.",
                hint=f"Known settings: {', '.join(sorted(DEFAULTS))}.",
                id="rivet_django.E003",
            )
        )
    if rivet_settings.SCHEDULER not in ("embedded", "celery"):
        messages.append(
            Error(
                f"RIVET['SCHEDULER'] is {rivet_settings.SCHEDULER!r}.",
                hint='Use "embedded" or "celery".',
                id="rivet_django.E004",
            )
        )
    if "channels" not in settings.INSTALLED_APPS:
        messages.append(
            Error(
                "rivet_django needs 'channels' in INSTALLED_APPS.",
                hint="Add 'daphne' (first) and 'channels' to INSTALLED_APPS.",
                id="rivet_django.E005",
            )
        )
    if not getattr(settings, "ASGI_APPLICATION", None):
        messages.append(
            Warning(
                "ASGI_APPLICATION is not set; runactors cannot serve WebSockets.",
                hint="Point it at an application built with rivet_django.routing.",
                id="rivet_django.W001",
            )
        )
    layers = getattr(settings, "CHANNEL_LAYERS", {}) or {}
    backend = (layers.get("default") or {}).get("BACKEND", "")
    if backend.endswith("InMemoryChannelLayer") and rivet_settings.NODE_ID:
        messages.append(
            Warning(
                "InMemoryChannelLayer with an explicit NODE_ID: the in-memory layer does not cross processes.",
                hint="Use channels_redis.core.RedisChannelLayer when running several nodes.",
                id="rivet_django.W002",
            )
        )
    if rivet_settings.SCHEDULER == "celery" and backend.endswith("InMemoryChannelLayer"):
        messages.append(
            Error(
                'RIVET["SCHEDULER"] is "celery" but the channel layer is InMemoryChannelLayer.',
                hint="The Celery dispatcher reaches nodes over the channel layer: use channels_redis.",
                id="rivet_django.E008",
            )
        )
    if backend.startswith("channels_redis"):
        import redis

        major = int(redis.__version__.split(".")[0])
        config = (layers.get("default") or {}).get("CONFIG", {}) or {}
        hosts = config.get("hosts") or []
        has_timeout_none = any(
            isinstance(h, dict) and "socket_timeout" in h and h["socket_timeout"] is None for h in hosts
        )
        if major >= 8 and not has_timeout_none:
            messages.append(
                Error(
                    "redis-py 8 defaults to a 5 s socket timeout that breaks channels-redis.",
                    hint='Give each channel layer host {"address": ..., "socket_timeout": None}, or pin redis<8.',
                    id="rivet_django.E006",
                )
            )
    if not isinstance(rivet_settings.COMMIT_INTERVAL, (int, float)) or rivet_settings.COMMIT_INTERVAL < 0:
        messages.append(
            Error(
                "RIVET['COMMIT_INTERVAL'] must be a number >= 0.", hint="Seconds, e.g. 0.002.", id="rivet_django.E007"
            )
        )
    lease = rivet_settings.LEASE_SECONDS
    if isinstance(lease, bool) or not isinstance(lease, (int, float)) or lease < 1:
        messages.append(
            Error(
                "RIVET['LEASE_SECONDS'] must be a number >= 1.",
                hint="Seconds; nodes renew every LEASE_SECONDS / 3. 3 to 30 suit most clusters.",
                id="rivet_django.E009",
            )
        )
    if rivet_settings.DB_BACKEND not in (None, "local", "shared"):
        messages.append(
            Error(
                f"RIVET['DB_BACKEND'] is {rivet_settings.DB_BACKEND!r}.",
                hint='Use "local", "shared" or None (shared when the Django database is not SQLite).',
                id="rivet_django.E013",
            )
        )
    placement = rivet_settings.PLACEMENT
    if placement not in ("local", "least_loaded"):
        try:
            from .cluster.placement import load_placement

            load_placement(str(placement))
        except Exception as exc:
            messages.append(
                Error(
                    f"RIVET['PLACEMENT'] = {placement!r} is neither a built-in policy nor an importable class ({exc}).",
                    hint='Use "local", "least_loaded" or the dotted path of a placement class.',
                    id="rivet_django.E010",
                )
            )
    return messages


@register(Tags.compatibility)
def check_asgi_application(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    """``ASGI_APPLICATION`` must send the actor WebSockets to rivet_django's consumers:
    otherwise HTTP works and every connection hangs until the client gives up."""
    from django.conf import settings
    from django.utils.module_loading import import_string

    path = getattr(settings, "ASGI_APPLICATION", None)
    hint = (
        "Use rivet_django.routing.application(get_asgi_application()) in your asgi.py, or include "
        'rivet_django.routing.websocket_urlpatterns() in the URLRouter of its "websocket" protocol.'
    )
    if not path:
        return [
            Error(
                "ASGI_APPLICATION is not set: actor WebSockets have nowhere to go.", hint=hint, id="rivet_django.E014"
            )
        ]
    try:
        application = import_string(path)
    except Exception as exc:
        return [Error(f"ASGI_APPLICATION {path!r} cannot be imported ({exc}).", hint=hint, id="rivet_django.E014")]
    mapping = getattr(application, "application_mapping", None)
    if not isinstance(mapping, dict) or "websocket" not in mapping:
        return [
            Error(
                f"ASGI_APPLICATION {path!r} does not route WebSockets: actor connections (/connect, raw "
                "WebSockets) would hang until the client's timeout.",
                hint=hint,
                id="rivet_django.E014",
            )
        ]
    if not _routes_actor_websockets(mapping["websocket"]):
        return [
            Warning(
                f"The WebSocket router of ASGI_APPLICATION {path!r} has no rivet_django routes.",
                hint=hint,
                id="rivet_django.W004",
            )
        ]
    return []


def _routes_actor_websockets(app: Any, depth: int = 0) -> bool:
    """Whether an ASGI app (a router, maybe under middleware) reaches rivet_django's consumers."""
    from .consumers import ActorConnectConsumer

    if app is None or depth > 12:
        return False
    if getattr(app, "consumer_class", None) is ActorConnectConsumer:
        return True
    for route in getattr(app, "routes", None) or ():
        if _routes_actor_websockets(getattr(route, "callback", None), depth + 1):
            return True
    # Middleware (AuthMiddlewareStack, OriginValidator...) wraps the router.
    return any(
        _routes_actor_websockets(getattr(app, name, None), depth + 1) for name in ("inner", "application", "app")
    )


@register(Tags.compatibility)
def check_api_docs(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    """The actor API's docs page (``/api/rivet/docs``) works offline only with ``ninja`` installed as an app."""
    from django.apps import apps

    if not apps.is_installed("ninja"):
        return [
            Warning(
                "The actor API's docs page (/api/rivet/docs) loads Swagger UI from a CDN: it is blank without internet.",
                hint='Add "ninja" to INSTALLED_APPS: django-ninja then serves Swagger UI from its own static files.',
                id="rivet_django.W005",
            )
        ]
    return []
