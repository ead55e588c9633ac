"""ASGI routing: the actor API on a lean path, everything else through Django as usual.

``application = rivet_django.routing.application(django_asgi_app)`` in a
project's ``asgi.py`` gives a Channels ``ProtocolTypeRouter``:

- HTTP under the rivet prefix (``/api/rivet/`` by default) goes to
  :class:`ActorHTTPHandler`: Django's ASGI handler and URL resolution (so the
  ninja API serves it) but without the project's middleware and per-request
  signals. Those run synchronous code through a fresh thread on every request,
  which costs more than a whole action call; the actor protocol needs neither
  sessions, CSRF nor messages, and the runtime manages its own DB connections.
- Any other HTTP request goes to the project's Django application unchanged.
- WebSocket routes of the actor gateway are added by the realtime layer.
"""

from __future__ import annotations

import re
from typing import Any

from django.core.exceptions import RequestAborted
from django.core.handlers.asgi import ASGIHandler, ASGIRequest, get_script_prefix
from django.core.handlers.exception import convert_exception_to_response
from django.http import HttpResponse
from django.urls import include, path, set_script_prefix

from .headers import header
from .origins import cors_origin
from .users import CallerMixin

__all__ = ["ActorHTTPHandler", "application", "websocket_urlpatterns"]

_CORS_ALLOW_HEADERS = "content-type, x-rivet-encoding, x-rivet-conn-params, x-rivet-target, x-rivet-actor, x-rivet-token, authorization"
_CORS_ALLOW_METHODS = "GET, POST, PUT, PATCH, DELETE, OPTIONS"


def websocket_urlpatterns(prefix: str = "api/rivet/") -> list[Any]:
    """The actor gateway's WebSocket routes under ``prefix`` (all three gateway forms)."""
    from django.urls import re_path

    from .cluster.link import LINK_ROUTE, serve_peer
    from .consumers import ActorConnectConsumer, RawWebSocketConsumer

    base = prefix.strip("/") + "/"
    return [
        # Other nodes of the cluster (authenticated by the cluster token).
        path(f"{base}{LINK_ROUTE}", serve_peer),  # type: ignore[arg-type]  # an ASGI app
        path(f"{base}gateway/<str:target>/connect", ActorConnectConsumer.as_asgi()),
        re_path(rf"^{base}gateway/(?P<target>[^/]+)/websocket(?:/(?P<path>.*))?$", RawWebSocketConsumer.as_asgi()),
        # Header form: subprotocols rivet_target.actor + rivet_actor.{id}.
        path(f"{base}connect", ActorConnectConsumer.as_asgi()),
        re_path(rf"^{base}websocket(?:/(?P<path>.*))?$", RawWebSocketConsumer.as_asgi()),
    ]


class _ActorURLConf:
    """The actor API's routes alone, mounted at ``prefix``, gateway routes first.

    The handler resolves its requests against this rather than the project's URLconf:
    gateway routes (queue sends, metadata, raw requests) match first instead of after
    every manager route. They all start with ``gateway/``, so moving them ahead changes
    no match. (Action calls do not get here: see ``get_response_async``.)
    """

    def __init__(self, prefix: str) -> None:
        from .urls import app_name, urlpatterns

        ordered = sorted(urlpatterns, key=lambda p: not str(p.pattern).startswith("gateway/"))
        self.urlpatterns = [path(prefix.strip("/") + "/", include((ordered, app_name), namespace=app_name))]


class ActorRequest(CallerMixin, ASGIRequest):  # type: ignore[override]
    """A request to the actor API: ``session``, ``user`` and ``auser()`` on first use
    (:mod:`rivet_django.users`), as the session and auth middleware would set them."""


class ActorHTTPHandler(ASGIHandler):
    """Django's ASGI handler for the actor API: no middleware, no request signals."""

    request_class = ActorRequest

    def __init__(self, prefix: str = "api/rivet/") -> None:
        super().__init__()
        self.urlconf = _ActorURLConf(prefix)
        base = "/" + prefix.strip("/") + "/"
        #: The hottest route, a stateless action call, goes straight to the gateway.
        self._action_route = re.compile(rf"^{re.escape(base)}gateway/(?P<target>[^/]+)/action/(?P<name>[^/]+)$")
        #: Raw HTTP takes every method, HEAD and extension methods included (RivetKit), which
        #: a routed view cannot declare: direct/query form, then the header form.
        self._raw_route = re.compile(rf"^{re.escape(base)}gateway/(?P<target>[^/]+)/request(?:/(?P<path>.*))?$")
        self._raw_header_route = re.compile(rf"^{re.escape(base)}request(?:/(?P<path>.*))?$")

    async def _respond(self, request: Any) -> Any:
        """The view step of the handler. Action calls and raw requests go straight to the
        gateway, with the API's error handling (their routes and errors are the same as
        through it); every other request is resolved and served by Django and django-ninja."""
        path = request.path_info
        if request.method == "POST" and (match := self._action_route.match(path)) is not None:
            from .api.gateway import call_action

            return await self._serve(request, call_action(request, match["target"], match["name"]))
        if "/request" in path:
            from .api.gateway import raw_request

            if (match := self._raw_route.match(path)) is not None:
                return await self._serve(request, raw_request(request, match["target"], match["path"] or ""))
            if (match := self._raw_header_route.match(path)) is not None and header(request, "x-rivet-target") == "actor":
                return await self._serve(request, raw_request(request, None, match["path"] or ""))
        return await self._get_response_async(request)  # type: ignore[attr-defined]

    @staticmethod
    async def _serve(request: Any, response: Any) -> Any:
        from .api.main import api

        try:
            return await response
        except Exception as exc:
            return api.on_exception(request, exc)

    def load_middleware(self, is_async: bool = False) -> None:
        self._view_middleware: list[Any] = []
        self._template_response_middleware: list[Any] = []
        self._exception_middleware: list[Any] = []
        self._middleware_chain = convert_exception_to_response(self._respond)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        try:
            body_file = await self.read_body(receive)
        except RequestAborted:
            return
        try:
            set_script_prefix(get_script_prefix(scope))
            request, error_response = self.create_request(scope, body_file)
            if request is not None:
                request.urlconf = self.urlconf  # type: ignore[assignment]  # a module-like object
            origin = header(request, "origin") if request is not None else None
            allow_origin = cors_origin(origin)
            if request is not None and request.method == "OPTIONS" and (origin or "/gateway/" in request.path_info):
                # Preflights, and (as RivetKit's gateway) every OPTIONS to an actor: never on_request.
                response: Any = HttpResponse(status=204 if allow_origin or not origin else 403)
                if allow_origin:
                    requested = header(request, "access-control-request-headers")
                    response["Access-Control-Allow-Methods"] = _CORS_ALLOW_METHODS
                    response["Access-Control-Allow-Headers"] = requested or _CORS_ALLOW_HEADERS
                    response["Access-Control-Max-Age"] = "600"
            else:
                response = error_response if request is None else await self.get_response_async(request)
            assert response is not None
            if allow_origin:
                # Mirror the origin, never "*": credentials are allowed.
                response["Access-Control-Allow-Origin"] = allow_origin
                response["Access-Control-Allow-Credentials"] = "true"
                response["Access-Control-Expose-Headers"] = "x-rivet-actor, x-rivet-actor-key, x-rivet-ray-id"
                response["Vary"] = "Origin"
            await self.send_response(response, send)
        finally:
            body_file.close()


class _PrefixRouter:
    """Sends HTTP requests under ``prefix`` to the actor handler, others to Django."""

    def __init__(self, prefix: str, actor_app: Any, django_app: Any) -> None:
        self.prefix = "/" + prefix.strip("/") + "/"
        self.actor_app = actor_app
        self.django_app = django_app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        path = scope.get("path", "")
        if path.startswith(self.prefix) or path + "/" == self.prefix:
            await self.actor_app(scope, receive, send)
        else:
            await self.django_app(scope, receive, send)


def application(http_app: Any = None, prefix: str = "api/rivet/") -> Any:
    """A ``ProtocolTypeRouter`` for HTTP (actor API + Django) and WebSocket (actor routes)."""
    from channels.routing import ProtocolTypeRouter, URLRouter
    from django.core.asgi import get_asgi_application

    from .compat import patch_daphne_close_reason

    patch_daphne_close_reason()
    django_app = http_app or get_asgi_application()
    return ProtocolTypeRouter(
        {
            "http": _PrefixRouter(prefix, ActorHTTPHandler(prefix), django_app),
            "websocket": URLRouter(websocket_urlpatterns(prefix)),
        }
    )
