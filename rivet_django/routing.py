"""ASGI routing: Django HTTP plus (from the realtime issue) WebSocket consumers.

``application = rivet_django.routing.application()`` in a project's ``asgi.py``
gives a Channels ``ProtocolTypeRouter`` serving Django's HTTP views and the
actor WebSocket routes under the same prefix.
"""

from __future__ import annotations

from typing import Any

__all__ = ["application", "websocket_urlpatterns"]

websocket_urlpatterns: list[Any] = []


def application(http_app: Any = None, prefix: str = "api/rivet/") -> Any:
    """A ``ProtocolTypeRouter`` for HTTP (Django) and WebSocket (actor routes)."""
    from channels.routing import ProtocolTypeRouter, URLRouter
    from django.core.asgi import get_asgi_application

    http = http_app or get_asgi_application()
    return ProtocolTypeRouter(
        {
            "http": http,
            "websocket": URLRouter(list(websocket_urlpatterns)),
        }
    )
