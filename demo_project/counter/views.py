"""Ordinary Django views calling the ``counter`` actor, in a sync and an async flavour.

One client for the whole site, made at import: it is safe to share between threads
(sync views under WSGI or runserver) and tasks (async views). In ``runactors`` it
calls the actors in-process; in any other process (``runserver``, gunicorn, a Celery
worker) it forwards to a running ``runactors`` node.
"""

from __future__ import annotations

from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from rivet_django.client import AsyncClient, Client

counters = Client.local()
async_counters = AsyncClient.local()


def count(request: HttpRequest, key: str) -> JsonResponse:
    """``GET /counter/<key>/``: the count (a sync view)."""
    return JsonResponse({"key": key, "count": counters.counter.get_or_create([key]).getCount()})


@csrf_exempt
@require_POST
async def increment(request: HttpRequest, key: str) -> JsonResponse:
    """``POST /counter/<key>/increment``: add one (an async view)."""
    value = await async_counters.counter.get_or_create([key]).increment(1)
    return JsonResponse({"key": key, "count": value})
