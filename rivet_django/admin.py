"""Django admin: actors (read-only here), their KV entries, their own databases, and nodes.

State is shown as pretty JSON. Changing actors goes through the runtime, never
behind its back, so these admins do not allow adding, editing or deleting rows.
Looking inside a live actor and operating it (its database, its state, its
actions, sleep, wake, destroy) goes through the runtime wherever the actor lives:
:mod:`rivet_django.console` has those views.
"""

from __future__ import annotations

import json
from typing import Any

from django.contrib import admin
from django.db.models import Count, Q
from django.http import HttpRequest, HttpResponse
from django.urls import path, reverse
from django.utils.html import format_html

from . import console
from .models import Actor, ActorKV, ActorQueueMessage, ActorSchedule, Node, WorkflowEntry
from .runtime import serde


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


class _ReadOnlyInline(admin.TabularInline):  # type: ignore[type-arg]
    extra = 0
    max_num = 0
    can_delete = False
    show_change_link = False

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return self.fields


class ScheduleInline(_ReadOnlyInline):
    model = ActorSchedule
    fields = ("name", "kind", "action", "due_at", "cron", "interval", "attempts", "last_error", "last_run_at")
    ordering = ("due_at",)


class QueueMessageInline(_ReadOnlyInline):
    model = ActorQueueMessage
    verbose_name_plural = "queue messages (not completed)"
    fields = ("id", "name", "body_pretty", "created_at", "attempts", "waiting")
    ordering = ("id",)

    def get_queryset(self, request: HttpRequest) -> Any:
        return super().get_queryset(request).filter(completed_at__isnull=True)

    @admin.display(description="body")
    def body_pretty(self, obj: ActorQueueMessage) -> str:
        return format_html("<pre>{}</pre>", _pretty(obj.body))


class WorkflowEntryInline(_ReadOnlyInline):
    model = WorkflowEntry
    verbose_name_plural = "workflow history"
    fields = ("location", "kind", "status", "attempts", "error")
    ordering = ("id",)


#: Where each row of a changelist page keeps its page's :class:`_PageConnections`.
_PAGE_ATTRIBUTE = "_rivet_page_connections"


class _PageConnections:
    """The connections column of one changelist page: its nodes are asked on the first
    cell shown, once for the whole page (a POST of an admin action shows none)."""

    def __init__(self, rows: list[Actor]) -> None:
        self.rows = rows
        self._texts: dict[str, str] | None = None

    def text(self, actor: Actor) -> str:
        if self._texts is None:
            self._texts = console.connection_texts(self.rows)
        return self._texts.get(actor.pk, "—")


@admin.register(Actor)
class ActorAdmin(ReadOnlyAdmin):
    list_display = (
        "name",
        "key",
        "namespace",
        "status_now",
        "node",
        "connections",
        "queue_size",
        "schedule_count",
        "last_active_at",
        "state_bytes",
        "id",
    )
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
        "operate_link",
        "database_link",
    )
    fields = readonly_fields
    inlines = [ActorKVInline, ScheduleInline, QueueMessageInline, WorkflowEntryInline]

    actions = ["sleep_actors", "destroy_actors"]

    def get_queryset(self, request: HttpRequest) -> Any:
        return (
            super()
            .get_queryset(request)
            .annotate(
                queued=Count("queue_messages", filter=Q(queue_messages__completed_at__isnull=True), distinct=True),
                scheduled=Count("schedules", distinct=True),
            )
        )

    def get_changelist_instance(self, request: HttpRequest) -> Any:
        """The changelist, its page's rows sharing one :class:`_PageConnections`."""
        changelist = super().get_changelist_instance(request)
        rows = list(changelist.result_list)  # evaluated (and cached) here: the page renders these rows
        page = _PageConnections(rows)
        for row in rows:
            setattr(row, _PAGE_ATTRIBUTE, page)
        return changelist

    def get_urls(self) -> list[Any]:
        info = self.opts.app_label, self.opts.model_name
        views = [
            ("database", console.database_view),
            ("operate", console.operate_view),
            ("destroy", console.destroy_view),
        ]
        urls = [
            path(
                f"<str:object_id>/{name}/",
                self.admin_site.admin_view(self._bound(view)),
                name="{}_{}_{}".format(*info, name),
            )
            for name, view in views
        ]
        return [*urls, *super().get_urls()]

    def _bound(self, view: Any) -> Any:
        def bound(request: HttpRequest, object_id: str) -> HttpResponse:
            return view(self, request, object_id)  # type: ignore[no-any-return]

        return bound

    def get_actions(self, request: HttpRequest) -> dict[str, Any]:
        actions = super().get_actions(request)
        if not console.can_operate(request):
            actions.pop("sleep_actors", None)
            actions.pop("destroy_actors", None)
        return actions

    @admin.action(description="Put the selected actors to sleep")
    def sleep_actors(self, request: HttpRequest, queryset: Any) -> None:
        console.sleep_many(self, request, queryset)

    @admin.action(description="Destroy the selected actors…")
    def destroy_actors(self, request: HttpRequest, queryset: Any) -> HttpResponse | None:
        return console.destroy_many(self, request, queryset)

    @admin.display(description="connections")
    def connections(self, obj: Actor) -> str:
        """Live connections of an awake actor, asked of its node (never woken to count them)."""
        page: _PageConnections | None = getattr(obj, _PAGE_ATTRIBUTE, None)
        return page.text(obj) if page is not None else "—"

    @admin.display(description="queued", ordering="queued")
    def queue_size(self, obj: Actor) -> int:
        return int(getattr(obj, "queued", 0))

    @admin.display(description="schedules", ordering="scheduled")
    def schedule_count(self, obj: Actor) -> int:
        return int(getattr(obj, "scheduled", 0))

    @admin.display(description="live")
    def operate_link(self, obj: Actor) -> str:
        if obj.destroyed_at is not None:
            return "— (destroyed)"
        url = reverse("admin:rivet_django_actor_operate", args=[obj.pk])
        return format_html('<a href="{}">Open the console</a> (state, connections, actions; wakes the actor)', url)

    @admin.display(description="database")
    def database_link(self, obj: Actor) -> str:
        from .registry import actors

        definition = actors.get(obj.name) if obj.name in actors.names() else None
        if definition is None or definition.hook("on_migrate") is None:
            return "— (no on_migrate: the actor has no database)"
        url = reverse("admin:rivet_django_actor_database", args=[obj.pk])
        return format_html('<a href="{}">Browse its tables</a> (wakes the actor)', url)

    @admin.display(description="status", ordering="status")
    def status_now(self, obj: Actor) -> str:
        """Awake only while a node's lease on it lasts (a dead node's actors are not awake)."""
        if obj.status == "awake" and not console.lease_live(obj):
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
