"""Who is calling: the Django session and user on the requests actors see.

The actor API skips the project's middleware (see :mod:`rivet_django.routing`), so
the requests hooks get (``self.request`` in ``on_before_connect``, ``on_request``,
a stateless action) carry ``session``, ``user`` and ``auser()`` computed on first
use instead: nothing is read from the session store unless a hook asks.

In hooks, which run on the event loop, use ``await self.request.auser()`` (the
synchronous ``request.user`` reads the database, which Django forbids on the loop,
unless ``auser()`` already ran). Same-site browser calls carry the session cookie
(WebSockets too); the official client sends cookies only from a browser.
"""

from __future__ import annotations

from functools import cached_property
from http.cookies import CookieError
from typing import Any

__all__ = ["CallerMixin"]


class CallerMixin:
    """``session``, ``user`` and ``auser()`` from the request's session cookie."""

    COOKIES: dict[str, str]

    @cached_property
    def session(self) -> Any:
        from importlib import import_module

        from django.conf import settings

        engine = import_module(settings.SESSION_ENGINE)
        return engine.SessionStore(self.COOKIES.get(settings.SESSION_COOKIE_NAME))

    @cached_property
    def user(self) -> Any:
        from django.contrib.auth import get_user
        from django.utils.functional import SimpleLazyObject

        cached = self.__dict__.get("_acached_user")
        if cached is not None:
            return cached
        return SimpleLazyObject(lambda: get_user(self))  # type: ignore[arg-type]

    async def auser(self) -> Any:
        """The authenticated user, or ``AnonymousUser`` (reads the session once)."""
        cached = self.__dict__.get("_acached_user")
        if cached is None:
            from django.contrib.auth import aget_user

            cached = self.__dict__["_acached_user"] = await aget_user(self)  # type: ignore[arg-type]
        return cached


def parse_cookies(header: str | None) -> dict[str, str]:
    from django.http.cookie import parse_cookie

    if not header:
        return {}
    try:
        return parse_cookie(header)
    except CookieError:
        return {}
