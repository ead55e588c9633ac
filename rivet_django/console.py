"""The admin as a console: views that look inside actors and operate them.

Everything goes through the runtime, wherever the actor lives: each view calls an
inspector operation (:mod:`rivet_django.runtime.inspector`) through this process's
gateway (``Gateway.inspect``), so a web worker's admin reaches actors held by a
``runactors`` node. Looking needs the view permission on actors; operating (edit
the state, call an action, sleep, wake, destroy) needs the change permission,
``rivet_django.change_actor``. User-facing errors (a bad argument, an action's
``UserError``) are shown; internal ones arrive masked (the node that ran them
logged them). The actor list's connection counts are only read from the nodes
holding the actors (:func:`connection_texts`): listing wakes nothing.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Iterable
from typing import Any

from asgiref.sync import async_to_sync
from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone

from .client.errors import ActorError
from .runtime.inspector import state_fingerprint

__all__ = [
    "can_operate",
    "connection_texts",
    "database_view",
    "destroy_view",
    "inspect",
    "lease_live",
    "operate_view",
]

#: Rows per page of the database browser.
ROWS_PER_PAGE = 50

#: Seconds the actor list waits for a node's connection counts (then shows "?" for its actors).
COUNTS_TIMEOUT = 1.0


def inspect(actor_id: str, op: str, **args: Any) -> Any:
    """Run an inspector operation on the actor, through this process's gateway."""
    from .client.local import LocalTransport

    return async_to_sync(LocalTransport().operate)(lambda gateway: gateway.inspect(actor_id, op, **args))


def can_operate(request: HttpRequest) -> bool:
    return bool(request.user.has_perm("rivet_django.change_actor"))


def _actor(model_admin: Any, request: HttpRequest, object_id: str) -> Any:
    obj = model_admin.get_object(request, object_id)
    if obj is None:
        raise Http404("No such actor")
    if not model_admin.has_view_permission(request, obj):
        raise PermissionDenied
    return obj


def _context(model_admin: Any, request: HttpRequest, obj: Any, title: str) -> dict[str, Any]:
    return {
        **model_admin.admin_site.each_context(request),
        "opts": model_admin.opts,
        "original": obj,
        "title": title,
        "can_operate": can_operate(request),
    }


def _error_text(exc: ActorError) -> str:
    return f"{exc.group}.{exc.code}: {exc.message}"


def pretty(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False)


# -- the actor list's connections column --------------------------------------------------


def lease_live(actor: Any, now: datetime.datetime | None = None) -> bool:
    """Whether a node holds the actor's lease now (awake there, or asleep with connections
    hibernating there): a dead node's actors are held by nobody."""
    expires = actor.lease_expires_at
    return bool(actor.node) and expires is not None and expires >= (now or timezone.now())


def connection_texts(actors: Iterable[Any]) -> dict[str, str]:
    """The "connections" cell of each actor of a page of the actor list, by id.

    Awake: its live connections; asleep with connections hibernating on its node: "N
    hibernating"; otherwise "—", without asking anyone. The nodes holding the others
    are asked once each, all at once, for as long as :data:`COUNTS_TIMEOUT`; a node
    that does not answer shows "?". Nothing is woken, and no node is started here.
    """
    from .cluster.gateway import connection_counts

    rows = list(actors)
    now = timezone.now()
    owners: dict[str, list[str]] = {}
    for actor in rows:
        if actor.status in ("awake", "sleeping") and lease_live(actor, now):
            owners.setdefault(actor.node, []).append(actor.pk)
    counts = async_to_sync(connection_counts)(owners, timeout=COUNTS_TIMEOUT) if owners else {}
    asked = {actor_id for ids in owners.values() for actor_id in ids}
    return {actor.pk: _count_text(counts, actor.pk) if actor.pk in asked else "—" for actor in rows}


def _count_text(counts: dict[str, dict[str, Any] | None], actor_id: str) -> str:
    if actor_id not in counts:
        return "—"  # its node does not hold it (any more)
    count = counts[actor_id]
    if count is None:
        return "?"  # its node did not answer
    if count["awake"]:
        return str(count["live"])
    return f"{count['hibernated']} hibernating"


# -- the operate page ------------------------------------------------------------------------


def workflow_rows(history: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The inspector's workflow history (RivetKit's JSON) as table rows: each entry's path
    of names (``task-loop/3/process``), kind, status, attempts, error, and whether a
    replay can start from it (steps only)."""
    if not history:
        return []
    names = history["nameRegistry"]
    rows = []
    for entry in history["entries"]:
        path = "/".join(
            names[seg["val"]] if seg["tag"] == "WorkflowNameIndex" else str(seg["val"]["iteration"])
            for seg in entry["location"]
        )
        meta = history["entryMetadata"].get(entry["id"], {})
        tag = entry["kind"]["tag"]
        rows.append(
            {
                "id": entry["id"],
                "path": path,
                "kind": tag.removeprefix("Workflow").removesuffix("Entry").lower(),
                "status": meta.get("status", ""),
                "attempts": meta.get("attempts", 0),
                "error": meta.get("error"),
                "replayable": tag == "WorkflowStepEntry",
            }
        )
    return rows


def operate_view(model_admin: Any, request: HttpRequest, object_id: str) -> HttpResponse:
    """The actor live (state, connections, schedules, actions, queue, workflow) and, for users
    who may change actors, forms to edit its state, call an action, close a connection,
    cancel a schedule, put it to sleep or wake it."""
    obj = _actor(model_admin, request, object_id)
    here = reverse("admin:rivet_django_actor_operate", args=[obj.pk])
    if request.method == "POST":
        if not can_operate(request):
            raise PermissionDenied
        _operate(request, obj.pk)
        return HttpResponseRedirect(here)
    context = _context(model_admin, request, obj, f"Operate {obj}")
    try:
        summary = inspect(obj.pk, "summary")
    except ActorError as exc:
        context["error"] = _error_text(exc)
    else:
        context["summary"] = summary
        context["state_json"] = pretty(summary["state"])
        context["state_fingerprint"] = state_fingerprint(summary["state"])
        context["workflow"] = workflow_rows(summary.get("workflowHistory"))
        context["connections"] = [
            {"id": c["id"], "params": pretty(c["details"]["params"]), "subscriptions": c["details"]["subscriptions"]}
            for c in summary["connections"]
        ]
        try:
            context["schedules"] = inspect(obj.pk, "schedules")["schedules"]
        except ActorError as exc:
            context["error"] = _error_text(exc)
    return TemplateResponse(request, "admin/rivet_django/actor/operate.html", context)


def _operate(request: HttpRequest, actor_id: str) -> None:
    op = request.POST.get("op")
    try:
        if op == "state":
            try:
                state = json.loads(request.POST.get("state", ""))
            except ValueError as exc:
                messages.error(request, f"The state is not valid JSON: {exc}. Nothing was changed.")
                return
            # Only over the state the form showed: a change made since is not overwritten.
            inspect(actor_id, "patch_state", state=state, expected=request.POST.get("expected") or None)
            messages.success(request, "State replaced and committed.")
        elif op == "action":
            name = request.POST.get("action", "")
            try:
                args = json.loads(request.POST.get("args") or "[]")
            except ValueError as exc:
                messages.error(request, f"The arguments are not valid JSON: {exc}. Nothing was called.")
                return
            if not isinstance(args, list):
                args = [args]
            output = inspect(actor_id, "action", name=name, args=args)["output"]
            messages.success(request, f"{name}(...) returned: {json.dumps(output, ensure_ascii=False)}")
        elif op == "disconnect":
            inspect(actor_id, "disconnect", conn_id=request.POST.get("conn", ""))
            messages.success(request, "Connection closed.")
        elif op == "cancel_schedule":
            found = inspect(actor_id, "cancel_schedule", schedule_id=request.POST.get("schedule", ""))["ok"]
            messages.success(request, "Schedule cancelled." if found else "No such schedule (it ran or was cancelled).")
        elif op == "replay":
            entry = request.POST.get("entry") or None
            inspect(actor_id, "workflow_replay", entry_id=entry)
            messages.success(
                request, f"Workflow replayed from entry {entry}." if entry else "Workflow replayed from the start."
            )
        elif op in ("sleep", "wake"):
            inspect(actor_id, op)
            messages.success(request, "Put to sleep." if op == "sleep" else "Awake.")
        else:
            messages.error(request, f"Unknown operation {op!r}.")
    except ActorError as exc:
        messages.error(request, f"{_error_text(exc)}. Nothing was changed.")


# -- destroy ---------------------------------------------------------------------------------


def destroy_view(model_admin: Any, request: HttpRequest, object_id: str) -> HttpResponse:
    """A confirmation page, then the actor's destruction (``on_destroy``, then its data)."""
    obj = _actor(model_admin, request, object_id)
    if not can_operate(request):
        raise PermissionDenied
    if request.method == "POST":
        try:
            inspect(obj.pk, "destroy")
        except ActorError as exc:
            messages.error(request, _error_text(exc))
            return HttpResponseRedirect(reverse("admin:rivet_django_actor_operate", args=[obj.pk]))
        messages.success(request, f"Destroyed {obj}.")
        return HttpResponseRedirect(reverse("admin:rivet_django_actor_changelist"))
    context = _context(model_admin, request, obj, f"Destroy {obj}?")
    return TemplateResponse(request, "admin/rivet_django/actor/destroy.html", context)


def destroy_many(model_admin: Any, request: HttpRequest, queryset: Any) -> HttpResponse | None:
    """The admin action: a confirmation page listing the actors, then each destroyed."""
    if not can_operate(request):
        raise PermissionDenied
    actors = list(queryset.filter(destroyed_at__isnull=True))
    if request.POST.get("confirmed") == "yes":
        done = failed = 0
        for actor in actors:
            try:
                inspect(actor.pk, "destroy")
                done += 1
            except ActorError as exc:
                failed += 1
                messages.error(request, f"{actor}: {_error_text(exc)}")
        messages.success(request, f"Destroyed {done} actor(s)." + (f" {failed} failed." if failed else ""))
        return None
    context = {
        **model_admin.admin_site.each_context(request),
        "opts": model_admin.opts,
        "title": "Destroy these actors?",
        "actors": actors,
        "action_checkbox_name": "_selected_action",
    }
    return TemplateResponse(request, "admin/rivet_django/actor/destroy_many.html", context)


def sleep_many(model_admin: Any, request: HttpRequest, queryset: Any) -> None:
    """The admin action: put the selected actors to sleep (those asleep stay asleep)."""
    if not can_operate(request):
        raise PermissionDenied
    done = 0
    for actor in queryset.filter(destroyed_at__isnull=True):
        try:
            inspect(actor.pk, "sleep")
            done += 1
        except ActorError as exc:
            messages.error(request, f"{actor}: {_error_text(exc)}")
    messages.success(request, f"Put {done} actor(s) to sleep.")


# -- the database browser --------------------------------------------------------------------


def database_view(model_admin: Any, request: HttpRequest, object_id: str) -> HttpResponse:
    """Its tables with row counts, or (``?table=``) a page of one table's rows. Read-only."""
    obj = _actor(model_admin, request, object_id)
    table = request.GET.get("table") or None
    try:
        page = max(1, int(request.GET.get("page", "1")))
    except ValueError:
        page = 1
    context = _context(model_admin, request, obj, f"Database of {obj}")
    context.update(table=table, page=page)
    try:
        if table is None:
            context["tables"] = [
                {"name": t["table"]["name"], "rows": t["records"], "columns": [c["name"] for c in t["columns"]]}
                for t in inspect(obj.pk, "database_schema")["schema"]["tables"]
            ]
        else:
            offset = (page - 1) * ROWS_PER_PAGE
            view = inspect(obj.pk, "database_page", table=table, limit=ROWS_PER_PAGE, offset=offset)
            context["view"] = view
            context["cells"] = [[_cell_text(value) for value in row] for row in view["rows"]]
            context["previous_page"] = page - 1 if page > 1 else None
            context["next_page"] = page + 1 if page * ROWS_PER_PAGE < view["total"] else None
    except ActorError as exc:
        context["error"] = _error_text(exc)
    return TemplateResponse(request, "admin/rivet_django/actor/database.html", context)


def _cell_text(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, dict) and "$bytes" in value:
        return f"<{len(value['$bytes']) // 2} bytes>"
    text = str(value)
    return text if len(text) <= 200 else text[:200] + "…"
