"""``/``: what is running and where each demo is."""

from __future__ import annotations

from django.conf import settings
from django.db import connection
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from rivet_django.conf import rivet_settings
from rivet_django.registry import actors

#: The demo apps, in the order a newcomer should try them.
DEMOS = [
    {
        "actor": "counter",
        "title": "Counter",
        "what": "State, actions and a broadcast on every increment.",
        "page": "/counter/my-counter/",
        "try": "curl -X POST {host}/counter/my-counter/increment",
    },
    {
        "actor": "chatRoom",
        "title": "Chat",
        "what": "Connections, presence and typing events, in the browser with the official JS client.",
        "page": "/chat/",
        "try": "Open {host}/chat/ in two windows.",
    },
    {
        "actor": "notebook",
        "title": "Notes",
        "what": "Each user's notebook keeps its notes in its own SQLite database, as Django models.",
        "page": None,
        "try": "Client.local().notebook.get_or_create(['alice']).add('buy milk')",
    },
    {
        "actor": "reminder",
        "title": "Reminder",
        "what": "Schedules: one-shots and cron, fired even while the actor sleeps.",
        "page": None,
        "try": "Client.local().reminder.get_or_create(['ann']).remind_in(5, 'stretch')",
    },
    {
        "actor": "taskWorker",
        "title": "Worker",
        "what": "A durable workflow over a queue of tasks that survives restarts.",
        "page": None,
        "try": "Client.local().taskWorker.get_or_create(['w1']).add_task({'text': 'hello'})",
    },
    {
        "actor": "agent",
        "title": "Agent",
        "what": "A run loop streaming tokens as events for prompts waiting in a durable queue.",
        "page": None,
        "try": "Client.local().agent.get_or_create(['helper']).ask('hi')",
    },
]

DOCS = [
    ("docs/tutorial.md", "add rivet_django to your own project"),
    ("docs/realtime.md", "connections and events"),
    ("docs/database.md", "each actor's own database"),
    ("docs/site.md", "calling actors from views, tasks and commands"),
    ("docs/running.md", "runactors, several nodes, failure modes"),
    ("docs/architecture.md", "how a call travels"),
]


def index(request: HttpRequest) -> HttpResponse:
    registered = set(actors.names())
    host = f"{request.scheme}://{request.get_host()}"
    context = {
        "demos": [
            {**demo, "try": demo["try"].replace("{host}", host), "registered": demo["actor"] in registered}
            for demo in DEMOS
        ],
        "actor_names": sorted(registered),
        "database": connection.vendor,
        "layer": (settings.CHANNEL_LAYERS.get("default") or {}).get("BACKEND", "none").rsplit(".", 1)[-1],
        "scheduler": rivet_settings.SCHEDULER,
        "db_backend": rivet_settings.DB_BACKEND or ("local" if connection.vendor == "sqlite" else "shared"),
        "debug": settings.DEBUG,
        "docs": DOCS,
    }
    return render(request, "home/index.html", context)
