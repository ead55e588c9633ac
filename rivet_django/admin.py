"""Django admin: actors (read-only here), their KV entries, and nodes.

State is shown as pretty JSON. Changing actors goes through the runtime, never
behind its back, so these admins do not allow adding, editing or deleting rows.
"""

from __future__ import annotations

import json
from typing import Any

from django.contrib import admin
from django.http import HttpRequest
from django.utils.html import format_html

from .models import Actor, ActorKV, Node
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


@admin.register(Actor)
class ActorAdmin(ReadOnlyAdmin):
    list_display = ("name", "key", "namespace", "status_now", "node", "last_active_at", "state_bytes", "id")
    list_filter = ("status", "name", "namespace")
    search_fields = ("name", "key", "id")
    ordering = ("-last_active_at",)
    readonly_fields = (
        "id", "namespace", "name", "key", "status", "node", "generation", "lease_expires_at",
        "created_at", "started_at", "last_active_at", "slept_at", "destroyed_at", "state_pretty", "input_pretty",
    )
    fields = readonly_fields
    inlines = [ActorKVInline]

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
