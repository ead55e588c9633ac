"""Which browser origins may call the actor API (CORS) or open WebSockets.

``RIVET["ALLOWED_ORIGINS"]`` lists origins (``"https://app.example.com"``);
``"*"`` allows any origin, but responses still name the caller's origin, never
``*``, because credentials are allowed. Requests without an ``Origin`` header
(non-browser clients) and same-origin requests are always allowed.
"""

from __future__ import annotations

from .conf import rivet_settings

__all__ = ["cors_origin", "origin_allowed"]


def _configured() -> list[str]:
    return [str(o).rstrip("/") for o in (rivet_settings.ALLOWED_ORIGINS or [])]


def origin_allowed(origin: str | None, host: str | None, scheme: str = "http") -> bool:
    """Whether a request from ``origin`` to ``host`` may proceed."""
    if not origin:
        return True
    origin = origin.rstrip("/")
    if host:
        same_scheme = {"ws": "http", "wss": "https"}.get(scheme, scheme)
        if origin in (f"{same_scheme}://{host}", f"http://{host}", f"https://{host}"):
            return True
    allowed = _configured()
    return "*" in allowed or origin in allowed


def cors_origin(origin: str | None) -> str | None:
    """The value for ``Access-Control-Allow-Origin``: the caller's origin if configured, else None."""
    if not origin:
        return None
    origin = origin.rstrip("/")
    allowed = _configured()
    if "*" in allowed or origin in allowed:
        return origin
    return None
