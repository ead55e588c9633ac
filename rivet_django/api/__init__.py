"""The HTTP API (django-ninja): manager REST routes and the actor gateway.

One :class:`~ninja.NinjaAPI` (``api``) with a router per concept; OpenAPI docs
at ``<mount>/docs``. Errors of every route are encoded by :mod:`.responses`.
"""

from .main import api

__all__ = ["api"]
