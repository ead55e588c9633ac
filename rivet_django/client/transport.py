"""How client calls travel: the :class:`Transport` seam and its HTTP implementation.

Handles (:mod:`rivet_django.client.handle`) describe *what* to reach with an
:class:`ActorQuery` and *what* to do (action, queue send, raw request,
destroy); a :class:`Transport` decides *how* it gets there.
:class:`HttpTransport` speaks RivetKit's client protocol over HTTP exactly like
the official 2.3 JavaScript client, so it works against rivet_django and any
RivetKit server; ``LocalTransport`` (:mod:`rivet_django.client.local`) routes
the same calls in-process.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal, Self, cast
from urllib.parse import quote

import httpx

from rivet_django import tracing
from rivet_django.protocol import (
    Encoding,
    QueueSendRequest,
    content_type,
    decode_action_response,
    decode_error,
    decode_queue_send_response,
    encode_action_request,
    encode_input,
    encode_query_input,
    encode_queue_send_request,
    json_dumps,
    json_loads,
    serialize_key,
)

from .channel import ConnectionChannel, open_websocket_channel
from .errors import ActorError, HttpRequestError

__all__ = [
    "DEFAULT_TIMEOUT",
    "ActorQuery",
    "HttpTransport",
    "QueryMethod",
    "Transport",
    "connection_subprotocols",
]

QueryMethod = Literal["get", "getOrCreate", "id"]

# Longer than the server's 60 s action timeout, so its 408 reaches the caller
# instead of a client-side timeout.
DEFAULT_TIMEOUT = httpx.Timeout(90.0, connect=10.0)

HEADER_ENCODING = "x-rivet-encoding"
HEADER_CONN_PARAMS = "x-rivet-conn-params"

# What the official client uses for a getOrCreate created through a query or REST.
DEFAULT_RUNNER = "default"
DEFAULT_CRASH_POLICY = "sleep"

# The JS client refuses query inputs whose CBOR exceeds 4 KiB (``maxInputSize``);
# we fall back to PUT /actors + the direct gateway form instead. 5464 base64url
# characters (no padding) carry at most 4096 bytes.
MAX_QUERY_INPUT_CHARS = 5464

_ENCODINGS = ("json", "cbor", "bare")


@dataclass(frozen=True)
class ActorQuery:
    """What a handle points at: an actor by key (``get``/``getOrCreate``) or by id."""

    name: str
    key: tuple[str, ...] | None = None
    actor_id: str | None = None
    method: QueryMethod = "get"
    input: Any = None
    has_input: bool = False

    def __post_init__(self) -> None:
        if self.method == "id":
            if not self.actor_id:
                raise ValueError("an 'id' query needs an actor_id")
        elif self.method in ("get", "getOrCreate"):
            if self.key is None:
                raise ValueError(f"a {self.method!r} query needs a key (use () for the empty key)")
        else:
            raise ValueError(f"unknown query method {self.method!r}")


class Transport(ABC):
    """The seam between handles and how their calls reach an actor.

    Every method raises :class:`~rivet_django.client.errors.ActorError` for an
    error the server reports (``group.code``).
    """

    @abstractmethod
    async def create(
        self,
        name: str,
        key: Sequence[str],
        input: Any = None,
        has_input: bool = False,
    ) -> str:
        """Create a new actor and return its id (``actor.duplicate_key`` if the key is taken)."""

    @abstractmethod
    async def resolve(self, query: ActorQuery) -> str:
        """Return the id of the actor ``query`` points at (creating it for ``getOrCreate``)."""

    @abstractmethod
    async def call_action(
        self,
        query: ActorQuery,
        name: str,
        args: list[Any],
        params: Any = None,
    ) -> Any:
        """Run action ``name`` with ``args`` on a short-lived connection; return its output."""

    @abstractmethod
    async def send_queue(
        self,
        query: ActorQuery,
        name: str,
        body: Any,
        wait: bool,
        timeout: float | None,
        params: Any = None,
    ) -> dict[str, Any]:
        """Send ``body`` to queue ``name``; return ``{"status", "response"?}``.

        ``timeout`` is in seconds and only matters with ``wait=True``.
        """

    @abstractmethod
    async def destroy(self, actor_id: str) -> None:
        """Destroy the actor with id ``actor_id``."""

    @abstractmethod
    async def fetch(
        self,
        query: ActorQuery,
        path: str,
        method: str = "GET",
        headers: Mapping[str, str] | None = None,
        body: bytes | None = None,
        params: Any = None,
    ) -> httpx.Response:
        """Send a raw request to the actor's ``on_request`` (``/request/{path}``)."""

    @abstractmethod
    async def open_connection(self, query: ActorQuery, params: Any = None) -> ConnectionChannel:
        """Open one attempt of a stateful connection (``.../connect``) to the actor.

        Returns once the channel is open; the actor's ``Init`` (or a
        connection-level ``Error``) is its first message. Raises
        :class:`~rivet_django.client.errors.ActorError` if the server refuses
        with a protocol error and any other exception if it cannot be reached.
        """

    @abstractmethod
    async def close(self) -> None:
        """Release the transport's resources; it is unusable afterwards."""

    async def websocket_target(self, query: ActorQuery, path: str, params: Any = None) -> tuple[str, list[str]]:
        """URL and subprotocols of a raw WebSocket to the actor's ``on_websocket``."""
        raise ActorError("feature", "unsupported", "Raw WebSockets need the HTTP transport")

    @property
    def connections(self) -> set[Any]:
        """The stateful connections opened through this transport and not disposed yet.

        The client disposes them when it closes, like the JS client's ``dispose()``.
        """
        live: set[Any] | None = self.__dict__.get("_live_connections")
        if live is None:
            live = self.__dict__["_live_connections"] = set()
        return live

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


def coerce_encoding(encoding: object) -> Encoding:
    """Check an encoding (``json``, ``cbor``, ``bare``, or an ``Encoding``) and return it as an ``Encoding``."""
    value = str(getattr(encoding, "value", encoding))
    if value not in _ENCODINGS:
        raise ValueError(f"unknown encoding {encoding!r}; expected one of {', '.join(_ENCODINGS)}")
    # ``Encoding`` is either an Enum (callable with the value) or a Literal alias.
    if isinstance(Encoding, type):
        return cast(Encoding, Encoding(value))  # type: ignore[call-arg,redundant-cast,unused-ignore]
    return cast(Encoding, value)


def encode_uri_component(value: str) -> str:
    """Percent-encode like JavaScript's ``encodeURIComponent``."""
    return quote(value, safe="!~*'()")


def encode_conn_params(params: Any) -> str:
    """Connection params as the ``x-rivet-conn-params`` header value (``JSON.stringify``)."""
    # ASCII-only: header values must be bytes-safe; the server's JSON parser reads \\u escapes.
    return json.dumps(params, separators=(",", ":"), ensure_ascii=True)


def connection_subprotocols(encoding: str, params: Any = None) -> list[str]:
    """The WebSocket subprotocols of a stateful connection, as ``buildWebSocketProtocols`` builds them.

    Params travel as ``rivet_conn_params.`` + ``encodeURIComponent(JSON.stringify(params))``,
    and only when they are truthy in JavaScript's sense (``{}`` and ``[]`` are). One
    deliberate difference: ``(`` and ``)`` are percent-encoded too, because a
    subprotocol must be an HTTP token (the JS client's WebSocket throws on them);
    servers decode both spellings alike.
    """
    protocols = ["rivet", f"rivet_encoding.{encoding}"]
    if _js_truthy(params):
        text = json.dumps(params, separators=(",", ":"), ensure_ascii=False)
        protocols.append("rivet_conn_params." + quote(text, safe="!~*'"))
    return protocols


def _js_truthy(value: Any) -> bool:
    if value is None or value is False or value == "":
        return False
    if isinstance(value, int | float) and not isinstance(value, bool):
        return value == value and value != 0  # NaN and 0 are falsy
    return True


def _query_string(params: Sequence[tuple[str, str]]) -> str:
    """``URLSearchParams.toString()``: form-encoded pairs in order."""
    return "&".join(f"{quote(k, safe='')}={quote(v, safe='').replace('%20', '+')}" for k, v in params)


class HttpTransport(Transport):
    """Speaks RivetKit's client protocol over HTTP through one shared ``httpx.AsyncClient``.

    ``endpoint`` is the server's mount point (e.g. ``http://host:8000/api/rivet``).
    Manager calls (``/actors``) are JSON and carry ``?namespace=``; actor calls go
    through the gateway in the query form for key handles and the direct form
    for id handles, in ``encoding``. ``headers`` are sent with every request.
    Pass ``http_client`` to supply your own ``httpx.AsyncClient`` (it is then
    yours to close).
    """

    def __init__(
        self,
        endpoint: str,
        namespace: str = "default",
        encoding: str = "bare",
        headers: Mapping[str, str] | None = None,
        timeout: float | httpx.Timeout | None = DEFAULT_TIMEOUT,
        *,
        http_client: httpx.AsyncClient | None = None,
    ) -> None:
        if not endpoint.startswith(("http://", "https://")):
            raise ValueError(f"endpoint must be an http(s) URL, got {endpoint!r}")
        if not namespace:
            raise ValueError("namespace must not be empty")
        self.endpoint = endpoint.rstrip("/")
        self.namespace = namespace
        self.encoding: Encoding = coerce_encoding(encoding)
        self._encoding_name = str(getattr(self.encoding, "value", self.encoding))
        self.headers: dict[str, str] = dict(headers or {})
        self._owns_http = http_client is None
        if http_client is None:
            http_client = httpx.AsyncClient(timeout=timeout, headers={"user-agent": "rivet_django-client"})
        self._http = http_client
        self._timeout = self._http.timeout

    # -- manager REST (always JSON) ------------------------------------------

    async def create(
        self,
        name: str,
        key: Sequence[str],
        input: Any = None,
        has_input: bool = False,
    ) -> str:
        """``POST /actors``."""
        body = self._create_body(name, key, input, has_input)
        data = await self._rest("POST", "/actors", body=body)
        return self._actor_id_of(data.get("actor"))

    async def resolve(self, query: ActorQuery) -> str:
        """``GET /actors?name&key`` for get, ``PUT /actors`` for getOrCreate, ``GET /actors?actor_ids`` for ids."""
        if query.method == "id":
            assert query.actor_id is not None
            data = await self._rest("GET", "/actors", query=[("actor_ids", query.actor_id)])
            for actor in data.get("actors") or []:
                if (
                    isinstance(actor, dict)
                    and actor.get("actor_id") == query.actor_id
                    and actor.get("name") == query.name
                ):
                    return query.actor_id
            raise _not_found(f"Actor not found: {query.actor_id}")
        key = query.key or ()
        if query.method == "getOrCreate":
            body = self._create_body(query.name, key, query.input, query.has_input)
            data = await self._rest("PUT", "/actors", body=body)
            return self._actor_id_of(data.get("actor"))
        try:
            data = await self._rest(
                "GET",
                "/actors",
                query=[("name", query.name), ("key", serialize_key(list(key)))],
            )
        except ActorError as exc:
            if (exc.group, exc.code) != ("actor", "not_found"):
                raise
            data = {}
        actors = data.get("actors") or []
        if not actors:
            raise _not_found(f"Actor not found: {query.name}:{json.dumps(list(key))}")
        return self._actor_id_of(actors[0])

    async def destroy(self, actor_id: str) -> None:
        """``DELETE /actors/{id}``."""
        await self._rest("DELETE", f"/actors/{encode_uri_component(actor_id)}")

    def _create_body(self, name: str, key: Sequence[str], input: Any, has_input: bool) -> dict[str, Any]:
        """The body of ``PUT``/``POST /actors``, field for field what the JS client sends."""
        body: dict[str, Any] = {
            "name": name,
            "key": serialize_key(list(key)),
            "runner_name_selector": DEFAULT_RUNNER,
            "crash_policy": DEFAULT_CRASH_POLICY,
        }
        if has_input:
            body["input"] = encode_input(input)
        return body

    @staticmethod
    def _actor_id_of(actor: Any) -> str:
        if not isinstance(actor, dict) or not isinstance(actor.get("actor_id"), str):
            raise HttpRequestError(f"malformed actor in manager response: {actor!r}")
        return cast(str, actor["actor_id"])

    async def _rest(
        self,
        method: str,
        path: str,
        *,
        query: Sequence[tuple[str, str]] = (),
        body: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """One manager call: JSON in, JSON out, ``?namespace=`` appended last like the JS client."""
        pairs = [*query, ("namespace", self.namespace)]
        url = f"{self.endpoint}{path}?" + "&".join(
            f"{encode_uri_component(k)}={encode_uri_component(v)}" for k, v in pairs
        )
        headers = dict(self.headers)
        content: bytes | None = None
        if body is not None:
            headers["content-type"] = "application/json"
            content = _as_bytes(json_dumps(body))
        response = await self._send(method, url, headers=headers, content=content)
        if not response.is_success:
            raise self._error_of(response, "json")
        try:
            data = json_loads(response.content) if response.content else {}
        except Exception as exc:
            raise HttpRequestError(
                f"{method} {path}: could not parse the response: {exc}",
                status_code=response.status_code,
            ) from exc
        if not isinstance(data, dict):
            raise HttpRequestError(f"{method} {path}: expected a JSON object, got {data!r}")
        return data

    # -- gateway (actor routes) ---------------------------------------------

    async def call_action(
        self,
        query: ActorQuery,
        name: str,
        args: list[Any],
        params: Any = None,
    ) -> Any:
        """``POST /gateway/.../action/{name}``."""
        url = await self._gateway_url(query, f"/action/{encode_uri_component(name)}")
        content = encode_action_request(self.encoding, list(args))
        response = await self._send(
            "POST",
            url,
            headers=self._actor_headers(params, has_body=True),
            content=content,
        )
        if not response.is_success:
            raise self._error_of(response, self.encoding)
        try:
            return decode_action_response(self.encoding, response.content)
        except Exception as exc:
            raise HttpRequestError(f"action {name!r}: could not parse the response: {exc}") from exc

    async def send_queue(
        self,
        query: ActorQuery,
        name: str,
        body: Any,
        wait: bool,
        timeout: float | None,
        params: Any = None,
    ) -> dict[str, Any]:
        """``POST /gateway/.../queue/{name}``."""
        url = await self._gateway_url(query, f"/queue/{encode_uri_component(name)}")
        timeout_ms = None if timeout is None else max(0, round(timeout * 1000))
        request = QueueSendRequest(body=body, name=name, wait=wait, timeout_ms=timeout_ms)
        content = encode_queue_send_request(self.encoding, request)
        response = await self._send(
            "POST",
            url,
            headers=self._actor_headers(params, has_body=True),
            content=content,
            timeout=self._queue_timeout(wait, timeout),
        )
        if not response.is_success:
            raise self._error_of(response, self.encoding)
        try:
            status, value = decode_queue_send_response(self.encoding, response.content)
        except Exception as exc:
            raise HttpRequestError(f"queue {name!r}: could not parse the response: {exc}") from exc
        result: dict[str, Any] = {"status": status}
        if value is not None:
            result["response"] = value
        return result

    async def fetch(
        self,
        query: ActorQuery,
        path: str,
        method: str = "GET",
        headers: Mapping[str, str] | None = None,
        body: bytes | None = None,
        params: Any = None,
    ) -> httpx.Response:
        """Any method on ``/gateway/.../request/{path}``; the response comes back as is."""
        url = await self._gateway_url(query, "/request/" + path.removeprefix("/"))
        merged = dict(self.headers)
        merged.update(headers or {})
        if params is not None:
            merged[HEADER_CONN_PARAMS] = encode_conn_params(params)
        return await self._send(method.upper(), url, headers=merged, content=body)

    async def websocket_target(self, query: ActorQuery, path: str, params: Any = None) -> tuple[str, list[str]]:
        """``ws(s)://.../gateway/.../websocket/{path}`` and the JS client's subprotocols."""
        url = await self._gateway_url(query, "/websocket/" + path.removeprefix("/"))
        return "ws" + url.removeprefix("http"), connection_subprotocols("bare", params)

    async def open_connection(self, query: ActorQuery, params: Any = None) -> ConnectionChannel:
        """A WebSocket to ``/gateway/.../connect``, with the subprotocols of the JS client."""
        url = await self._gateway_url(query, "/connect")
        # http://host -> ws://host, https://host -> wss://host
        ws_url = "ws" + url.removeprefix("http")
        headers = self.headers
        if tracing.enabled():  # the connection's actions continue the opener's trace
            headers = dict(headers)
            tracing.inject(headers)
        return await open_websocket_channel(
            ws_url,
            self.encoding,
            connection_subprotocols(self._encoding_name, params),
            headers=headers,
            open_timeout=self._timeout.connect,
        )

    def _actor_headers(self, params: Any, *, has_body: bool) -> dict[str, str]:
        headers = dict(self.headers)
        headers[HEADER_ENCODING] = self._encoding_name
        if has_body:
            headers["content-type"] = content_type(self.encoding)
        if params is not None:
            headers[HEADER_CONN_PARAMS] = encode_conn_params(params)
        return headers

    async def _gateway_url(self, query: ActorQuery, path: str) -> str:
        """The gateway URL for an actor route ``path`` (``/action/x``, ``/request/y?z``).

        Key handles use the query form so the server resolves (and for
        getOrCreate creates) the actor per request, as the JS client does. Keys
        with a ``,`` (which ``rvt-key`` cannot carry) and inputs over the query
        limit are resolved through ``/actors`` first and use the direct form.
        """
        if query.method == "id":
            assert query.actor_id is not None
            return f"{self.endpoint}/gateway/{encode_uri_component(query.actor_id)}{path}"
        key = query.key or ()
        pairs: list[tuple[str, str]] = [
            ("rvt-namespace", self.namespace),
            ("rvt-method", query.method),
        ]
        # ``rvt-key`` is the parts joined by "," and split back on ","; a part
        # holding "," or the key [""] would come back as a different key.
        direct = key == ("",) or any("," in part for part in key)
        if query.method == "getOrCreate":
            pairs.append(("rvt-runner", DEFAULT_RUNNER))
        if key:
            pairs.append(("rvt-key", ",".join(key)))
        if query.method == "getOrCreate":
            if query.has_input:
                encoded = encode_query_input(query.input)
                direct = direct or len(encoded) > MAX_QUERY_INPUT_CHARS
                pairs.append(("rvt-input", encoded))
            pairs.append(("rvt-crash-policy", DEFAULT_CRASH_POLICY))
        if direct:
            actor_id = await self.resolve(query)
            return f"{self.endpoint}/gateway/{encode_uri_component(actor_id)}{path}"
        separator = "" if path.endswith(("?", "&")) else "&" if "?" in path else "?"
        return f"{self.endpoint}/gateway/{encode_uri_component(query.name)}{path}{separator}{_query_string(pairs)}"

    def _queue_timeout(self, wait: bool, timeout: float | None) -> httpx.Timeout:
        """Give a waiting queue send as long as the server may hold it, plus the usual margin."""
        if not wait:
            return self._timeout
        base = self._timeout
        read = None if timeout is None or base.read is None else base.read + timeout
        return httpx.Timeout(connect=base.connect, read=read, write=base.write, pool=base.pool)

    # -- plumbing -------------------------------------------------------------

    async def _send(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str],
        content: bytes | None = None,
        timeout: httpx.Timeout | None = None,
    ) -> httpx.Response:
        """Send one request; transport failures become :class:`HttpRequestError`."""
        if tracing.enabled():  # the caller's trace goes along (W3C traceparent)
            headers = dict(headers)
            tracing.inject(headers)
        try:
            return await self._http.request(
                method,
                url,
                headers=headers,
                content=content,
                timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT,
            )
        except httpx.TimeoutException as exc:
            raise HttpRequestError(f"{method} {_redact(url)} timed out: {exc!r}") from exc
        except httpx.HTTPError as exc:
            raise HttpRequestError(f"{method} {_redact(url)} failed: {exc!r}") from exc

    def _error_of(self, response: httpx.Response, encoding: object) -> Exception:
        """The exception for a non-2xx answer, decoded like the JS client.

        A JSON content type wins over the request's encoding (errors raised
        before the encoding is known are always JSON).
        """
        if "application/json" in response.headers.get("content-type", ""):
            encoding = "json"
        try:
            error = decode_error(coerce_encoding(encoding), response.content)
            return ActorError(
                str(error["group"]),
                str(error["code"]),
                str(error["message"]),
                error.get("metadata"),
                status_code=response.status_code,
            )
        except Exception:
            text = response.content.decode("utf-8", errors="replace")
            return HttpRequestError(
                f"{response.reason_phrase} ({response.status_code}): {text}",
                status_code=response.status_code,
            )

    async def close(self) -> None:
        """Close the shared ``httpx.AsyncClient`` if this transport created it."""
        if self._owns_http:
            await self._http.aclose()

    def __repr__(self) -> str:
        return f"HttpTransport({self.endpoint!r}, namespace={self.namespace!r}, encoding={self._encoding_name!r})"


def _not_found(message: str) -> ActorError:
    return ActorError("actor", "not_found", message, status_code=404)


def _as_bytes(value: str | bytes) -> bytes:
    return value.encode() if isinstance(value, str) else value


def _redact(url: str) -> str:
    """The URL without its query (which may hold an encoded input) for error messages."""
    return url.split("?", 1)[0]
