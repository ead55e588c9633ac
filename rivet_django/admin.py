"""Django admin: actors (read-only here), their KV entries, their own databases, and nodes.

State is shown as pretty JSON. Changing actors goes through the runtime, never
behind its back, so these admins do not allow adding, editing or deleting rows.
An actor's own database (``self.db``) is read through the runtime too, wherever
the actor lives (``Gateway.database_view``): its tables with row counts, and their
rows a page at a time.
"""

from __future__ import annotations

import json
from typing import Any

from asgiref.sync import async_to_sync
from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html

from .client.errors import ActorError
from .models import Actor, ActorKV, Node
from .runtime import serde


def _database_view(actor_id: str, what: str, **view: Any) -> Any:
    """The runtime's look inside an actor's database, through this process's gateway."""
    from .client.local import LocalTransport

    return async_to_sync(LocalTransport().operate)(lambda gateway: gateway.database_view(actor_id, what, **view))


def _cell_text(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, dict) and "$bytes" in value:
        return f"<{len(value['$bytes']) // 2} bytes>"
    text = str(value)
    return text if len(text) <= 200 else text[:200] + "…"


def _pretty(data: bytes | memoryview | None) -> str:
    if data is None:
        return "—"
    try:
        value = serde.loads(bytes(data))
    except Exception:
        return f"<{len(bytes(data))} bytes, not CBOR>"
    return json.dumps(value, indent=2, sort_keys=True, default=_json_default, ensure_ascii=False)


def _json_default(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray)):
        return {"$bytes": bytes(value).hex()}
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=repr)
    return repr(value)


class ReadOnlyAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class ActorKVInline(admin.TabularInline):  # type: ignore[type-arg]
    model = ActorKV
    fields = ("key_display", "value_display")
    readonly_fields = fields
    extra = 0
    max_num = 0
    can_delete = False

    @admin.display(description="key")
    def key_display(self, obj: ActorKV) -> str:
        raw = bytes(obj.key)
        try:
            return raw.decode()
        except UnicodeDecodeError:
            return raw.hex()

    @admin.display(description="value")
    def value_display(self, obj: ActorKV) -> str:
        return format_html("<pre>{}</pre>", _pretty(obj.value))


@admin.register(Actor)
class ActorAdmin(ReadOnlyAdmin):
    list_display = ("name", "key", "namespace", "status_now", "node", "last_active_at", "state_bytes", "id")
    list_filter = ("status", "name", "namespace")
    search_fields = ("name", "key", "id")
    ordering = ("-last_active_at",)
    readonly_fields = (
        "id",
        "namespace",
        "name",
        "key",
        "status",
        "node",
        "generation",
        "lease_expires_at",
        "created_at",
        "started_at",
        "last_active_at",
        "slept_at",
        "destroyed_at",
        "state_pretty",
        "input_pretty",
        "database_link",
    )
    fields = readonly_fields
    inlines = [ActorKVInline]

    #: Rows per page of the database browser.
    rows_per_page = 50

    def get_urls(self) -> list[Any]:
        view = self.admin_site.admin_view(self.database_view)
        info = self.opts.app_label, self.opts.model_name
        return [path("<str:object_id>/database/", view, name="{}_{}_database".format(*info)), *super().get_urls()]

    @admin.display(description="database")
    def database_link(self, obj: Actor) -> str:
        from .registry import actors

        definition = actors.get(obj.name)
        if definition is None or definition.hook("on_migrate") is None:
            return "— (no on_migrate: the actor has no database)"
        url = reverse("admin:rivet_django_actor_database", args=[obj.pk])
        return format_html('<a href="{}">Browse its tables</a> (wakes the actor)', url)

    def database_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """Its tables with row counts, or (``?table=``) a page of one table's rows. Read-only."""
        obj = self.get_object(request, object_id)
        if obj is None:
            raise Http404("No such actor")
        if not self.has_view_permission(request, obj):
            raise PermissionDenied
        table = request.GET.get("table") or None
        try:
            page = max(1, int(request.GET.get("page", "1")))
        except ValueError:
            page = 1
        context: dict[str, Any] = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "original": obj,
            "title": f"Database of {obj}",
            "table": table,
            "page": page,
        }
        try:
            if table is None:
                context["tables"] = _database_view(obj.pk, "tables")
            else:
                limit = self.rows_per_page
                view = _database_view(obj.pk, "rows", table=table, limit=limit, offset=(page - 1) * limit)
                context["view"] = view
                context["cells"] = [[_cell_text(value) for value in row] for row in view["rows"]]
                context["previous_page"] = page - 1 if page > 1 else None
                context["next_page"] = page + 1 if page * limit < view["total"] else None
        except ActorError as exc:
            # A user-facing error (no such table, the actor is gone or moving); internal
            # ones reach here masked (the node that ran them logged them).
            context["error"] = f"{exc.group}.{exc.code}: {exc.message}"
        return TemplateResponse(request, "admin/rivet_django/actor/database.html", context)

    @admin.display(description="status", ordering="status")
    def status_now(self, obj: Actor) -> str:
        """Awake only while a node's lease on it lasts (a dead node's actors are not awake)."""
        from django.utils import timezone

        if obj.status == "awake" and (obj.lease_expires_at is None or obj.lease_expires_at < timezone.now()):
            return "asleep (its node stopped renewing)"
        return str(obj.get_status_display())

    @admin.display(description="state size", ordering="state")
    def state_bytes(self, obj: Actor) -> int:
        return obj.state_size

    @admin.display(description="state")
    def state_pretty(self, obj: Actor) -> str:
        return format_html("<pre>{}</pre>", _pretty(obj.state))

    @admin.display(description="input")
    def input_pretty(self, obj: Actor) -> str:
        return format_html("<pre>{}</pre>", _pretty(obj.input))


@admin.register(Node)
class NodeAdmin(ReadOnlyAdmin):
    list_display = ("id", "address", "live", "version", "started_at", "heartbeat_at")

    @admin.display(description="live", boolean=True)
    def live(self, obj: Node) -> bool:
        """Heartbeat younger than LEASE_SECONDS (``manage.py rivet_nodes`` shows the same)."""
        from datetime import timedelta

        from django.utils import timezone

        from .conf import rivet_settings

        lease = timedelta(seconds=float(rivet_settings.LEASE_SECONDS))
        return bool(obj.heartbeat_at and timezone.now() - obj.heartbeat_at <= lease)
