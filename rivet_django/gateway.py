"""The gateway: which actor a request is for, whatever the transport.

Three forms (PROTOCOL.md section 3) name an actor: the direct id in the path
(``/gateway/{id}[@{token}]/...``), the query form (``/gateway/{name}/...?rvt-*``)
and the header form (``x-rivet-target: actor`` + ``x-rivet-actor``). HTTP views
and WebSocket consumers both parse their request into a :class:`GatewayTarget`
and ask the router to resolve it, so routing is by actor, not by transport.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlencode

from . import protocol
from .exceptions import GuardError, IncomingTooLong, InvalidRequest

__all__ = ["GatewayTarget", "parse_conn_params", "parse_gateway_target", "strip_rvt_params"]

RVT_PREFIX = "rvt-"
_COMMON_PARAMS = {"rvt-namespace", "rvt-method", "rvt-key", "rvt-token", "rvt-skip-ready-wait"}
_GET_OR_CREATE_PARAMS = {"rvt-runner", "rvt-pool", "rvt-input", "rvt-crash-policy", "rvt-region"}
_KNOWN_PARAMS = _COMMON_PARAMS | _GET_OR_CREATE_PARAMS


@dataclass(frozen=True)
class GatewayTarget:
    """An actor address as a request names it."""

    method: Literal["id", "get", "getOrCreate"]
    namespace: str
    actor_id: str | None = None
    name: str | None = None
    key: tuple[str, ...] = ()
    input: Any = None
    token: str | None = None

    async def resolve(self, router: Any, *, wake: bool = True) -> str:
        """The actor id, creating the actor for ``getOrCreate`` (and waking it here, unless
        ``wake`` is false: the gateway then wakes it where placement puts it)."""
        return str(
            await router.resolve(
                namespace=self.namespace,
                method=self.method,
                name=self.name,
                key=self.key,
                actor_id=self.actor_id,
                input=self.input,
                wake=wake,
            )
        )


def parse_gateway_target(
    segment: str | None,
    query: Iterable[tuple[str, str]],
    headers: Mapping[str, str],
    default_namespace: str,
) -> GatewayTarget:
    """Parse the path segment after ``/gateway/`` (None: header form), query and headers."""
    rvt: dict[str, str] = {}
    for name, value in query:
        if not name.startswith(RVT_PREFIX):
            continue
        if name not in _KNOWN_PARAMS:
            raise GuardError(f"Unknown gateway query parameter {name!r}", code="unknown_query_param")
        if name in rvt:
            raise GuardError(f"Duplicate gateway query parameter {name!r}", code="duplicate_query_param")
        rvt[name] = value

    if segment is None:
        if headers.get("x-rivet-target", "").lower() != "actor":
            raise InvalidRequest("Missing x-rivet-target: actor header")
        actor_id = headers.get("x-rivet-actor", "")
        if not actor_id:
            raise GuardError("Missing x-rivet-actor header", code="missing_actor")
        return GatewayTarget("id", default_namespace, actor_id=actor_id, token=headers.get("x-rivet-token"))

    if not rvt:
        actor_id, _, token = segment.partition("@")
        if not actor_id:
            raise GuardError("Missing actor id", code="missing_actor")
        return GatewayTarget("id", default_namespace, actor_id=actor_id, token=token or None)

    method = rvt.get("rvt-method")
    if method not in ("get", "getOrCreate"):
        raise GuardError(
            f"rvt-method must be 'get' or 'getOrCreate', not {method!r}", code="invalid_query_param"
        )
    if method == "get":
        extra = sorted(set(rvt) & _GET_OR_CREATE_PARAMS)
        if extra:
            raise GuardError(
                f"Query parameter(s) {', '.join(extra)} only apply to rvt-method=getOrCreate",
                code="invalid_query_param",
            )
    namespace = rvt.get("rvt-namespace") or default_namespace
    key = protocol.parse_query_key(rvt.get("rvt-key"))
    input_value = None
    if "rvt-input" in rvt:
        try:
            input_value = protocol.decode_query_input(rvt["rvt-input"])
        except Exception as exc:
            raise GuardError(f"Invalid rvt-input: {exc}", code="invalid_query_param") from None
    return GatewayTarget(
        method,  # type: ignore[arg-type]
        namespace,
        name=segment,
        key=tuple(key),
        input=input_value,
        token=rvt.get("rvt-token"),
    )


def strip_rvt_params(query: Iterable[tuple[str, str]]) -> str:
    """The query string the actor sees: every ``rvt-*`` parameter removed."""
    return urlencode([(k, v) for k, v in query if not k.startswith(RVT_PREFIX)])


def parse_conn_params(raw: str | None, max_size: int) -> Any:
    """Connection params from the ``x-rivet-conn-params`` header (JSON)."""
    if raw is None or raw == "":
        return None
    if len(raw.encode()) > max_size:
        raise IncomingTooLong(f"Connection params are larger than {max_size} bytes")
    try:
        return protocol.json_loads(raw)
    except Exception:
        raise InvalidRequest("Connection params are not valid JSON") from None
