"""The chat page and its three static assets.

``runactors`` serves HTTP through Django's ASGI handler, which serves no static
files when ``DEBUG`` is off; the page's assets (the pre-built official client
bundle, the page script and its stylesheet) are small and few, so a view serves
them from the app's ``static/chat/`` folder instead. They stay in ``static/``
so ``collectstatic`` and a real static server work as usual in production.

Asset URLs carry a content hash (``?v=``): a request with the current hash is
cached for a year, anything else revalidates with the ETag.
"""

from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from pathlib import Path

from django.http import FileResponse, Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.utils.safestring import SafeString, mark_safe
from django.views.decorators.http import condition, require_safe

from .actors import MAX_NAME_LENGTH, MAX_TEXT_LENGTH

__all__ = ["asset", "asset_url", "asset_version", "import_map", "room"]

ASSET_DIR = Path(__file__).resolve().parent / "static" / "chat"

#: The only files the asset view serves, with their content types.
ASSETS = {
    "rivetkit-client.js": "text/javascript; charset=utf-8",
    "chat.js": "text/javascript; charset=utf-8",
    "chat.css": "text/css; charset=utf-8",
}

DEFAULT_ROOM = "lobby"


@lru_cache(maxsize=32)
def _digest(path: Path, mtime_ns: int, size: int) -> str:
    # Keyed on mtime and size so an edited file gets a new version without a restart.
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def _asset_path(name: str) -> Path:
    if name not in ASSETS:
        raise Http404("No such asset")
    path = ASSET_DIR / name
    if not path.is_file():
        raise Http404(f"{name} is missing: run scripts/build-chat-bundle.sh")
    return path


def asset_version(name: str) -> str:
    """Content hash of one asset (16 hex digits)."""
    path = _asset_path(name)
    stat = path.stat()
    return _digest(path, stat.st_mtime_ns, stat.st_size)


def asset_url(name: str) -> str:
    """The versioned URL of one asset."""
    return f"{reverse('chat:asset', args=[name])}?v={asset_version(name)}"


@require_safe
@condition(etag_func=lambda request, name: asset_version(name))
def asset(request: HttpRequest, name: str) -> FileResponse:
    """Serve one of :data:`ASSETS` with its content type and caching headers."""
    path = _asset_path(name)
    response = FileResponse(path.open("rb"), content_type=ASSETS[name])
    if request.GET.get("v") == asset_version(name):
        response["Cache-Control"] = "public, max-age=31536000, immutable"
    else:
        response["Cache-Control"] = "no-cache"
    response["X-Content-Type-Options"] = "nosniff"
    return response


def import_map() -> SafeString:
    """The page's import map: the bundled official client under its npm name, ``rivetkit/client``."""
    text = json.dumps({"imports": {"rivetkit/client": asset_url("rivetkit-client.js")}})
    # Inside <script> nothing is HTML-decoded: only "<" could end the element early.
    return mark_safe(text.replace("<", "\\u003c"))


@require_safe
def room(request: HttpRequest, room: str = DEFAULT_ROOM) -> HttpResponse:
    """The chat page; ``room`` pre-fills the room to join."""
    return render(
        request,
        "chat/room.html",
        {
            "room": room,
            "import_map": import_map(),
            "script_url": asset_url("chat.js"),
            "style_url": asset_url("chat.css"),
            "max_name_length": MAX_NAME_LENGTH,
            "max_text_length": MAX_TEXT_LENGTH,
        },
    )
