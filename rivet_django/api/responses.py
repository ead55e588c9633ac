"""Building HTTP responses in the request's encoding, errors included."""

from __future__ import annotations

import logging
from typing import Any

import orjson
from django.http import HttpRequest, HttpResponse

from .. import protocol
from ..exceptions import INTERNAL_ERROR_GROUP, INTERNAL_ERROR_MESSAGE, PublicError, RivetError
from ..headers import header

__all__ = ["encoded_response", "error_response", "json_response", "request_encoding"]

logger = logging.getLogger("rivet_django.api")


def json_response(data: Any, status: int = 200) -> HttpResponse:
    return HttpResponse(orjson.dumps(data), status=status, content_type="application/json")


def request_encoding(request: HttpRequest) -> protocol.Encoding:
    """The encoding asked for; errors about the encoding itself are answered in json."""
    try:
        return protocol.parse_encoding(header(request, "x-rivet-encoding"))
    except Exception:
        return "json"


def encoded_response(
    request: HttpRequest, body: bytes, *, status: int = 200, headers: dict[str, str] | None = None
) -> HttpResponse:
    encoding = getattr(request, "rivet_encoding", None) or request_encoding(request)
    return HttpResponse(body, status=status, content_type=protocol.content_type(encoding), headers=headers)


def error_response(request: HttpRequest, exc: BaseException, *, encoded: bool = True) -> HttpResponse:
    """The protocol error body for ``exc``; internal errors are logged and masked."""
    if isinstance(exc, PublicError):
        group, code, message, metadata, status = exc.group, exc.code, exc.message, exc.metadata, exc.status_code
    else:
        if not (isinstance(exc, RivetError) and exc.public):
            logger.error(
                "Internal error serving %s %s",
                request.method,
                request.path,
                exc_info=(type(exc), exc, exc.__traceback__),
            )
        group, code, message, metadata, status = (
            INTERNAL_ERROR_GROUP,
            "internal_error",
            INTERNAL_ERROR_MESSAGE,
            None,
            500,
        )
    encoding = request_encoding(request) if encoded else "json"
    version = getattr(request, "rivet_version", protocol.CURRENT_VERSION)
    try:
        body = protocol.encode_error(encoding, group, code, message, metadata, version)
    except Exception:
        logger.exception("Could not encode error metadata; sending it without metadata")
        body = protocol.encode_error(encoding, group, code, message, None, version)
    response = HttpResponse(body, status=status, content_type=protocol.content_type(encoding))
    if isinstance(exc, PublicError):
        # An answer, not a server fault (user errors are 500 as in RivetKit): Django's
        # "Internal Server Error" log line would be noise.
        response._has_been_logged = True  # type: ignore[attr-defined]
    return response
