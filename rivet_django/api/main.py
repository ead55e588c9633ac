"""The ``NinjaAPI`` object and its error handlers."""

from __future__ import annotations

from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse
from ninja import NinjaAPI
from ninja.errors import HttpError, ValidationError

from ..exceptions import IncomingTooLong, InvalidRequest, RivetError
from ..headers import header
from .gateway import router as gateway_router
from .inspector import router as inspector_router
from .manager import router as manager_router
from .responses import error_response

__all__ = ["api"]

api = NinjaAPI(
    title="rivet_django",
    description="Rivet actors over HTTP: the RivetKit client protocol.",
    urls_namespace="rivet",
    docs_url="/docs",
)
api.add_router("", manager_router)
api.add_router("", inspector_router)  # before the gateway's catch-all route
api.add_router("", gateway_router)


def _is_gateway(request: HttpRequest) -> bool:
    # Gateway routes answer in the request's encoding; manager routes always in JSON.
    return "/gateway/" in request.path or header(request, "x-rivet-target") == "actor"


@api.exception_handler(RivetError)
def _rivet_error(request: HttpRequest, exc: RivetError) -> HttpResponse:
    return error_response(request, exc, encoded=_is_gateway(request))


@api.exception_handler(ValidationError)
def _validation_error(request: HttpRequest, exc: ValidationError) -> HttpResponse:
    detail = "; ".join(f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', '')}" for e in exc.errors)
    return error_response(request, InvalidRequest(f"Invalid request: {detail}"), encoded=_is_gateway(request))


@api.exception_handler(RequestDataTooBig)
def _too_big(request: HttpRequest, exc: RequestDataTooBig) -> HttpResponse:
    return error_response(request, IncomingTooLong(), encoded=_is_gateway(request))


@api.exception_handler(HttpError)
def _http_error(request: HttpRequest, exc: HttpError) -> HttpResponse:
    status = exc.status_code
    error: RivetError = InvalidRequest(str(exc), status_code=status)
    return error_response(request, error, encoded=_is_gateway(request))


@api.exception_handler(Exception)
def _internal_error(request: HttpRequest, exc: Exception) -> HttpResponse:
    return error_response(request, exc, encoded=_is_gateway(request))
