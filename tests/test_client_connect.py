"""Stateful client connections (``handle.connect()``), over every transport.

- Against a small fake RivetKit server written here with ``websockets`` (it
  speaks PROTOCOL.md section 8 and can refuse, drop and close on demand): the
  connection logic and the wire shape (URL, subprotocols, frames) of the HTTP
  transport, in all three encodings.
- In-process through ``LocalTransport`` with the test project's actors.
- End to end against ``runactors`` of the demo project (skipped while its
  ``.../connect`` route does not answer yet).

Every wait is bounded; every server started here is stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any
from urllib.parse import parse_qsl, unquote

import pytest
from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response
from websockets.typing import Subprotocol

from rivet_django import protocol
from rivet_django.client import (
    ActorConnection,
    ActorError,
    AsyncClient,
    Client,
    ConnectionDisposedError,
    ConnectionLostError,
    ConnectionStatus,
)
from rivet_django.client.channel import parse_close_reason
from rivet_django.client.transport import connection_subprotocols
from rivet_django.protocol import (
    ActionRequest,
    ActionResponse,
    ErrorMessage,
    Event,
    Init,
    SubscriptionRequest,
)

ACTOR_ID = "actor-0001"


async def eventually(predicate: Callable[[], bool], timeout: float = 5.0, what: str = "condition") -> None:
    """Poll ``predicate`` until it is true; fail after ``timeout`` seconds."""
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)
    assert predicate(), what


# -- the fake server --------------------------------------------------------------


class FakeConn:
    """One accepted socket of the fake server."""

    def __init__(self, server: FakeServer, ws: ServerConnection, index: int) -> None:
        self.server = server
        self.ws = ws
        self.index = index
        assert ws.request is not None
        self.path = ws.request.path
        self.headers = ws.request.headers
        offered = [p.strip() for p in self.headers.get("Sec-WebSocket-Protocol", "").split(",") if p.strip()]
        self.subprotocols = offered
        values = {p.partition(".")[0]: p.partition(".")[2] for p in offered}
        self.encoding: protocol.Encoding = protocol.parse_encoding(values.get("rivet_encoding") or "json")
        raw_params = values.get("rivet_conn_params")
        self.params = json.loads(unquote(raw_params)) if raw_params else None
        self.received: list[protocol.ToServer] = []
        self.subscriptions: set[str] = set()
        self.close_code: int | None = None
        self.close_reason: str | None = None

    async def send(self, message: protocol.ToClient) -> None:
        frame = protocol.encode_to_client(self.encoding, message, self.server.bare_version)
        await self.ws.send(frame)

    async def close(self, code: int, reason: str) -> None:
        await self.ws.close(code, reason)


class FakeServer:
    """A RivetKit-like connection endpoint with a counter actor and scripted misbehaviour.

    ``plan`` holds what the next connections do, one entry per connection
    (then "ok"): ``"ok"``, ``("refuse", group, code)`` (Error then close
    1011), ``("close", code, reason)`` before Init, ``"silent"`` (never send
    Init), ``"drop"`` (abort the TCP connection).
    """

    def __init__(self, bare_version: int = 4) -> None:
        self.bare_version = bare_version
        self.conns: list[FakeConn] = []
        self.plan: list[Any] = []
        self.count = 0
        self.port = 0
        self.http_refusal: tuple[int, dict[str, Any]] | None = None
        self.refused_requests = 0
        self._server: Any = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/rivet"

    @property
    def live(self) -> list[FakeConn]:
        return [c for c in self.conns if c.close_code is None]

    def received(self, kind: type[Any]) -> list[Any]:
        return [m for c in self.conns for m in c.received if isinstance(m, kind)]

    async def start(self) -> FakeServer:
        self._server = await serve(
            self._handle,
            "127.0.0.1",
            0,
            subprotocols=[Subprotocol("rivet")],
            process_request=self._process_request,
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        self._server.close()
        async with asyncio.timeout(10):
            await self._server.wait_closed()

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        if self.http_refusal is None:
            return None
        self.refused_requests += 1
        status, body = self.http_refusal
        return Response(
            status,
            "Refused",
            Headers({"Content-Type": "application/json", "Content-Length": str(len(json.dumps(body)))}),
            json.dumps(body).encode(),
        )

    async def _handle(self, ws: ServerConnection) -> None:
        conn = FakeConn(self, ws, len(self.conns))
        self.conns.append(conn)
        step = self.plan.pop(0) if self.plan else "ok"
        try:
            if step == "silent":
                await ws.wait_closed()
                return
            if step == "drop":
                assert ws.transport is not None
                ws.transport.abort()
                return
            if isinstance(step, tuple) and step[0] == "refuse":
                _, group, code = step
                await conn.send(ErrorMessage(group, code, f"refused: {code}", {"why": "plan"}, None))
                await conn.close(1011, f"{group}.{code}")
                return
            if isinstance(step, tuple) and step[0] == "close":
                await conn.close(step[1], step[2])
                return
            await conn.send(Init(ACTOR_ID, f"conn-{conn.index}"))
            async for data in ws:
                message = protocol.decode_to_server(conn.encoding, data)
                conn.received.append(message)
                if isinstance(message, SubscriptionRequest):
                    if message.subscribe:
                        conn.subscriptions.add(message.event_name)
                    else:
                        conn.subscriptions.discard(message.event_name)
                else:
                    asyncio.get_running_loop().create_task(self._answer(conn, message))
        except Exception:
            pass
        finally:
            conn.close_code = ws.close_code if ws.close_code is not None else 1006
            conn.close_reason = ws.close_reason or ""

    async def broadcast(self, name: str, *args: Any) -> None:
        for conn in self.live:
            if name in conn.subscriptions:
                with contextlib.suppress(Exception):
                    await conn.send(Event(name, list(args)))

    async def _answer(self, conn: FakeConn, request: ActionRequest) -> None:
        name, args = request.name, request.args
        try:
            if name == "increment":
                self.count += args[0] if args else 1
                await self.broadcast("count", self.count)
                await conn.send(ActionResponse(request.id, self.count))
            elif name == "echo":
                await conn.send(ActionResponse(request.id, args))
            elif name == "fail":
                await conn.send(ErrorMessage("user", "boom", "Boom", {"count": self.count}, request.id))
            elif name == "slow":
                await asyncio.sleep(args[0])
                await conn.send(ActionResponse(request.id, "slept"))
            elif name == "hang":
                pass
            elif name == "conn_error":
                await conn.send(ErrorMessage("auth", "forbidden", "no secrets for you", None, None))
                await conn.send(ActionResponse(request.id, "still here"))
            elif name == "close_me":
                await conn.close(args[0], args[1])
            elif name == "garbage":
                await conn.ws.send(b"\xff\xfe not a frame" if conn.encoding != "json" else "{not json")
                await conn.send(ActionResponse(request.id, "after garbage"))
            else:
                await conn.send(ErrorMessage("actor", "action_not_found", f"no {name}", None, request.id))
        except Exception:
            pass


@pytest.fixture
async def server() -> AsyncIterator[FakeServer]:
    fake = await FakeServer().start()
    try:
        yield fake
    finally:
        await fake.stop()


@contextlib.asynccontextmanager
async def async_client(server: FakeServer, encoding: str = "json") -> AsyncIterator[AsyncClient]:
    client = AsyncClient(server.endpoint, encoding=encoding)
    try:
        yield client
    finally:
        await client.aclose()


def fast(conn: ActorConnection) -> ActorConnection:
    """Shorter reconnect backoff for tests."""
    conn._reconnect_delay = 0.02
    conn._max_reconnect_delay = 0.1
    return conn


# -- wire shape -------------------------------------------------------------------


def test_subprotocols_match_the_js_client() -> None:
    assert connection_subprotocols("bare") == ["rivet", "rivet_encoding.bare"]
    # Params are sent when truthy in JavaScript's sense, as encodeURIComponent(JSON.stringify(params)).
    for falsy in (None, False, 0, 0.0, ""):
        assert connection_subprotocols("json", falsy) == ["rivet", "rivet_encoding.json"]
    assert connection_subprotocols("cbor", {}) == ["rivet", "rivet_encoding.cbor", "rivet_conn_params.%7B%7D"]
    assert connection_subprotocols("cbor", [])[-1] == "rivet_conn_params.%5B%5D"
    assert connection_subprotocols("json", {"user": "ann é", "n": [1, 2]})[-1] == (
        "rivet_conn_params.%7B%22user%22%3A%22ann%20%C3%A9%22%2C%22n%22%3A%5B1%2C2%5D%7D"
    )
    # Unlike encodeURIComponent, "(" and ")" are escaped: a subprotocol must be an HTTP token.
    assert connection_subprotocols("json", "it's (ok)!*~")[-1] == "rivet_conn_params.%22it's%20%28ok%29!*~%22"


def test_close_reasons_parse_like_the_js_client() -> None:
    parsed = parse_close_reason("actor.stopping")
    assert parsed is not None and (parsed.group, parsed.code, parsed.ray_id) == ("actor", "stopping", None)
    parsed = parse_close_reason("guard.service_unavailable#ray-1")
    assert parsed is not None and (parsed.group, parsed.code, parsed.ray_id) == (
        "guard",
        "service_unavailable",
        "ray-1",
    )
    assert parse_close_reason("") is None
    assert parse_close_reason("Disposed") is None
    assert parse_close_reason(".x") is None


async def test_connect_url_subprotocols_and_init(server: FakeServer) -> None:
    async with async_client(server, "json") as client:
        handle = client.counter.get_or_create(["a", "b"], params={"user": "ann"})
        conn = handle.connect()
        assert conn.status == "connecting"
        await conn.wait_open(timeout=5)
        assert conn.status == "connected" and conn.is_connected
        assert conn.actor_id == ACTOR_ID and conn.connection_id == "conn-0"
        fake = server.conns[0]
        path, _, query = fake.path.partition("?")
        assert path == "/api/rivet/gateway/counter/connect"
        assert parse_qsl(query) == [
            ("rvt-namespace", "default"),
            ("rvt-method", "getOrCreate"),
            ("rvt-runner", "default"),
            ("rvt-key", "a,b"),
            ("rvt-crash-policy", "sleep"),
        ]
        assert fake.subprotocols[:2] == ["rivet", "rivet_encoding.json"]
        assert fake.params == {"user": "ann"}
        channel = conn._channel
        assert channel is not None and getattr(channel, "subprotocol", None) == "rivet"

        # get: no getOrCreate-only params; connect(params=...) replaces the handle's params.
        conn2 = client.counter.get("k").connect(params={"other": True})
        await conn2.wait_open(timeout=5)
        path, _, query = server.conns[1].path.partition("?")
        assert path == "/api/rivet/gateway/counter/connect"
        assert parse_qsl(query) == [("rvt-namespace", "default"), ("rvt-method", "get"), ("rvt-key", "k")]
        assert server.conns[1].params == {"other": True}

        # by id: the direct gateway form, no query
        conn3 = client.counter.get_for_id("id/with slash").connect()
        await conn3.wait_open(timeout=5)
        assert server.conns[2].path == "/api/rivet/gateway/id%2Fwith%20slash/connect"
        assert server.conns[2].params is None
        assert server.conns[2].subprotocols == ["rivet", "rivet_encoding.json"]


@pytest.mark.parametrize(
    ("encoding", "bare_version"), [("json", 4), ("cbor", 4), ("bare", 4), ("bare", 3), ("bare", 2)]
)
async def test_actions_and_events(server: FakeServer, encoding: str, bare_version: int) -> None:
    server.bare_version = bare_version
    async with async_client(server, encoding) as client:
        conn = client.counter.get_or_create("c").connect()
        counts: list[int] = []
        unsubscribe = conn.on("count", counts.append)
        # A call made before the connection is open waits for it.
        assert await conn.increment(5) == 5
        assert await conn.action("increment", 2) == 7
        assert await conn.echo(1, "two", [3], {"four": 4}, None, b"\x00\x01") == [
            1,
            "two",
            [3],
            {"four": 4},
            None,
            b"\x00\x01",
        ]
        await eventually(lambda: counts == [5, 7])
        fake = server.conns[0]
        # The subscription went out before the first call; ids count up from 0.
        assert fake.received[0] == SubscriptionRequest("count", True)
        assert [m.id for m in fake.received if isinstance(m, ActionRequest)] == [0, 1, 2]
        assert fake.received[1] == ActionRequest(0, "increment", [5])

        with pytest.raises(ActorError) as info:
            await conn.fail()
        assert (info.value.group, info.value.code, info.value.message) == ("user", "boom", "Boom")
        assert info.value.metadata == {"count": 7}
        with pytest.raises(ActorError) as info:
            await conn.missing_action()
        assert info.value.code == "action_not_found"

        unsubscribe()
        unsubscribe()  # idempotent
        await eventually(lambda: SubscriptionRequest("count", False) in fake.received)
        assert fake.received.count(SubscriptionRequest("count", False)) == 1
        assert await conn.increment(1) == 8
        await asyncio.sleep(0.05)
        assert counts == [5, 7]
        await conn.dispose()
        assert conn.status == "idle"


async def test_status_callbacks_open_close_and_dispose(server: FakeServer) -> None:
    async with async_client(server) as client:
        conn = client.counter.get_or_create("c").connect()
        statuses: list[str] = []
        opened: list[str] = []
        closed: list[str] = []
        conn.on_status_change(statuses.append)
        conn.on_open(lambda: opened.append("open"))
        conn.on_close(lambda: closed.append("close"))
        await conn.wait_open(timeout=5)
        assert statuses == ["connected"]  # connect() already moved idle -> connecting
        assert opened == ["open"]

        # on_open after the fact runs soon, once
        late: list[str] = []
        conn.on_open(lambda: late.append("late"))
        await eventually(lambda: late == ["late"])

        pending = asyncio.ensure_future(conn.hang())
        await eventually(lambda: len(server.received(ActionRequest)) == 1)
        await conn.dispose()
        assert conn.status == ConnectionStatus.IDLE and conn.disposed
        assert statuses == ["connected", "idle"]
        assert closed == ["close"]
        with pytest.raises(ConnectionDisposedError):
            await pending
        with pytest.raises(ConnectionDisposedError):
            await conn.increment(1)
        await eventually(lambda: server.conns[0].close_code is not None)
        assert (server.conns[0].close_code, server.conns[0].close_reason) == (1000, "Disposed")
        await conn.dispose()  # idempotent
        await asyncio.sleep(0.1)
        assert len(server.conns) == 1  # no reconnect after dispose


async def test_reconnects_after_close_and_resubscribes(server: FakeServer) -> None:
    async with async_client(server, "bare") as client:
        conn = fast(client.counter.get_or_create("c").connect())
        counts: list[int] = []
        errors: list[ActorError] = []
        closes: list[str] = []
        statuses: list[str] = []
        conn.on("count", counts.append)
        conn.on_error(errors.append)
        conn.on_close(lambda: closes.append("x"))
        conn.on_status_change(statuses.append)
        assert await conn.increment(1) == 1

        in_flight = asyncio.ensure_future(conn.hang())
        await eventually(lambda: any(m.name == "hang" for m in server.received(ActionRequest)))
        # The actor goes to sleep: the server closes with a group.code reason.
        await server.conns[0].close(1011, "actor.stopping")
        with pytest.raises(ActorError) as info:
            await in_flight
        assert (info.value.group, info.value.code) == ("actor", "stopping")
        await eventually(lambda: len(server.conns) == 2 and conn.is_connected)
        assert conn.connection_id == "conn-1"
        assert [(e.group, e.code) for e in errors] == [("actor", "stopping")]
        assert closes == ["x"]
        assert statuses[-3:] == ["disconnected", "connecting", "connected"]
        # Subscriptions are sent again on the new socket, and events flow again.
        await eventually(lambda: SubscriptionRequest("count", True) in server.conns[1].received)
        assert await conn.increment(1) == 2
        await eventually(lambda: counts == [1, 2])
        # ids keep counting across reconnects
        assert [m.id for m in server.conns[1].received if isinstance(m, ActionRequest)] == [2]


async def test_connection_lost_without_reason(server: FakeServer) -> None:
    async with async_client(server, "cbor") as client:
        conn = fast(client.counter.get_or_create("c").connect())
        errors: list[ActorError] = []
        conn.on_error(errors.append)
        await conn.wait_open(timeout=5)
        in_flight = asyncio.ensure_future(conn.hang())
        await eventually(lambda: len(server.received(ActionRequest)) == 1)
        transport = server.conns[0].ws.transport
        assert transport is not None
        transport.abort()
        with pytest.raises(ConnectionLostError) as info:
            await in_flight
        assert info.value.code == 1006
        await eventually(lambda: len(server.conns) == 2 and conn.is_connected)
        assert errors == []  # not an ActorError: on_error is for protocol errors
        assert await conn.echo("back") == ["back"]


async def test_refused_connection_gives_up(server: FakeServer) -> None:
    server.plan = [("refuse", "auth", "forbidden")]
    async with async_client(server, "bare") as client:
        conn = fast(client.counter.get_or_create("c").connect())
        errors: list[ActorError] = []
        conn.on_error(errors.append)
        waiting = asyncio.ensure_future(conn.increment(1))
        with pytest.raises(ActorError) as info:
            await conn.wait_open(timeout=5)
        assert (info.value.group, info.value.code, info.value.message) == ("auth", "forbidden", "refused: forbidden")
        assert info.value.metadata == {"why": "plan"}
        with pytest.raises(ActorError) as info:
            await waiting
        assert info.value.code == "forbidden"
        with pytest.raises(ActorError):
            await conn.increment(1)
        assert conn.status == "idle"
        assert [(e.group, e.code) for e in errors] == [("auth", "forbidden")]
        await asyncio.sleep(0.2)
        assert len(server.conns) == 1  # no retries


async def test_transient_refusals_and_drops_are_retried(server: FakeServer) -> None:
    server.plan = [("refuse", "actor", "stopping"), "drop", ("close", 1011, "ws.going_away"), "ok"]
    async with async_client(server) as client:
        conn = fast(client.counter.get_or_create("c").connect())
        statuses: list[str] = []
        conn.on_status_change(statuses.append)
        assert await conn.echo("hi") == ["hi"]
        assert len(server.conns) == 4
        assert statuses.count("connected") == 1
        assert statuses[-1] == "connected" and "disconnected" in statuses


async def test_close_before_init_with_a_final_reason_gives_up(server: FakeServer) -> None:
    server.plan = [("close", 1011, "actor.invalid_request")]
    async with async_client(server) as client:
        conn = fast(client.counter.get_or_create("c").connect())
        with pytest.raises(ActorError) as info:
            await conn.wait_open(timeout=5)
        assert (info.value.group, info.value.code) == ("actor", "invalid_request")
        assert info.value.message == "Connection closed: actor.invalid_request"


async def test_stale_actor_is_retried_only_for_get_or_create(server: FakeServer) -> None:
    server.plan = [("refuse", "actor", "not_found"), "ok"]
    async with async_client(server) as client:
        conn = fast(client.counter.get_or_create("c").connect())
        await conn.wait_open(timeout=5)
        assert len(server.conns) == 2
        server.plan = [("refuse", "actor", "not_found"), "ok"]
        conn2 = fast(client.counter.get("c").connect())
        with pytest.raises(ActorError) as info:
            await conn2.wait_open(timeout=5)
        assert info.value.code == "not_found"
        assert len(server.conns) == 3


async def test_upgrade_refused_over_http(server: FakeServer) -> None:
    server.http_refusal = (404, {"group": "actor", "code": "not_found", "message": "Actor not found"})
    async with async_client(server) as client:
        conn = fast(client.counter.get("nope").connect())
        with pytest.raises(ActorError) as info:
            await conn.wait_open(timeout=5)
        assert (info.value.group, info.value.code, info.value.status_code) == ("actor", "not_found", 404)
        assert server.refused_requests == 1


async def test_server_down_keeps_retrying_until_the_call_times_out() -> None:
    fake = await FakeServer().start()
    endpoint = fake.endpoint
    await fake.stop()  # nothing listens on the port any more
    client = AsyncClient(endpoint)
    try:
        conn = fast(client.counter.get_or_create("c").connect(call_timeout=0.5))
        with pytest.raises(TimeoutError):
            await conn.increment(1)
        with pytest.raises(TimeoutError):
            await conn.wait_open(timeout=0.2)
        assert conn.status in ("connecting", "disconnected")
    finally:
        await client.aclose()
    assert conn.status == "idle" and conn.disposed  # the client disposed it


async def test_no_init_times_out_the_attempt(server: FakeServer) -> None:
    server.plan = ["silent", "ok"]
    async with async_client(server) as client:
        conn = fast(client.counter.get_or_create("c").connect())
        conn._open_timeout = 0.3
        assert await conn.action("echo", 1, timeout=5) == [1]
        assert len(server.conns) == 2
        assert server.conns[0].close_code is not None


async def test_per_call_timeout(server: FakeServer) -> None:
    async with async_client(server) as client:
        conn = client.counter.get_or_create("c").connect()
        with pytest.raises(TimeoutError, match="hang"):
            await conn.action("hang", timeout=0.2)
        assert conn._in_flight == {}
        assert await conn.action("slow", 0.1, timeout=None) == "slept"


async def test_once_off_and_async_callbacks(server: FakeServer) -> None:
    async with async_client(server, "cbor") as client:
        conn = client.counter.get_or_create("c").connect()
        once: list[int] = []
        every: list[int] = []
        async_seen: list[int] = []

        async def async_listener(count: int) -> None:
            await asyncio.sleep(0)
            async_seen.append(count)

        def broken(count: int) -> None:
            raise RuntimeError("listener bug")

        conn.once("count", once.append)
        conn.on("count", every.append)
        conn.on("count", async_listener)
        conn.on("count", broken)  # its exception is logged, the others still run
        await conn.wait_open(timeout=5)
        await conn.increment(1)
        await conn.increment(1)
        await eventually(lambda: every == [1, 2] and async_seen == [1, 2])
        assert once == [1]
        conn.off("count", every.append)
        conn.off("count", broken)
        await conn.increment(1)
        await eventually(lambda: async_seen == [1, 2, 3])
        assert every == [1, 2]
        fake = server.conns[0]
        assert fake.received.count(SubscriptionRequest("count", True)) == 1
        conn.off("count")
        await eventually(lambda: SubscriptionRequest("count", False) in fake.received)
        assert fake.subscriptions == set()


async def test_last_once_listener_unsubscribes(server: FakeServer) -> None:
    async with async_client(server) as client:
        conn = client.counter.get_or_create("c").connect()
        seen: list[int] = []
        conn.once("count", seen.append)
        await conn.increment(3)
        await eventually(lambda: SubscriptionRequest("count", False) in server.conns[0].received)
        assert seen == [3]


async def test_connection_level_error_goes_to_on_error(server: FakeServer) -> None:
    async with async_client(server) as client:
        conn = client.counter.get_or_create("c").connect()
        errors: list[ActorError] = []
        conn.on_error(errors.append)
        slow = asyncio.ensure_future(conn.slow(0.2))
        assert await conn.conn_error() == "still here"
        assert await slow == "slept"  # an error for the connection does not fail other calls
        assert [(e.group, e.code, e.message) for e in errors] == [("auth", "forbidden", "no secrets for you")]
        assert conn.is_connected


@pytest.mark.parametrize("encoding", ["json", "bare"])
async def test_undecodable_frames_are_skipped(server: FakeServer, encoding: str) -> None:
    async with async_client(server, encoding) as client:
        conn = client.counter.get_or_create("c").connect()
        assert await conn.garbage() == "after garbage"
        assert conn.is_connected


async def test_unencodable_arguments_fail_only_that_call(server: FakeServer) -> None:
    async with async_client(server) as client:
        conn = client.counter.get_or_create("c").connect()
        with pytest.raises(TypeError):
            await conn.echo(object())
        assert await conn.echo(1) == [1]


async def test_async_context_manager_and_client_close(server: FakeServer) -> None:
    async with async_client(server) as client:
        async with client.counter.get_or_create("c").connect() as conn:
            assert await conn.echo("x") == ["x"]
        assert conn.status == "idle" and conn.disposed
        assert client.transport.connections == set()
        other = client.counter.get_or_create("d").connect()
        await other.wait_open(timeout=5)
        assert client.transport.connections == {other}
    assert other.disposed
    await eventually(lambda: all(c.close_code == 1000 for c in server.conns))


async def test_server_initiated_normal_close_reconnects(server: FakeServer) -> None:
    async with async_client(server) as client:
        conn = fast(client.counter.get_or_create("c").connect())
        errors: list[ActorError] = []
        conn.on_error(errors.append)
        with pytest.raises(ConnectionLostError, match="Connection closed"):
            await conn.close_me(1000, "bye")
        await eventually(lambda: len(server.conns) == 2 and conn.is_connected)
        assert errors == []
        # A kick with a group.code reason reaches on_error, then it reconnects.
        with pytest.raises(ActorError) as info:
            await conn.close_me(1011, "room.kicked")
        assert (info.value.group, info.value.code) == ("room", "kicked")
        await eventually(lambda: len(server.conns) == 3 and conn.is_connected)
        assert [(e.group, e.code) for e in errors] == [("room", "kicked")]


def test_connect_without_a_running_loop_starts_on_first_use() -> None:
    async def main(conn: ActorConnection) -> Any:
        try:
            return await conn.echo("late")
        finally:
            await conn.dispose()

    async def scenario() -> Any:
        fake = await FakeServer().start()
        try:
            return await asyncio.to_thread(build_and_run, fake.endpoint)
        finally:
            await fake.stop()

    def build_and_run(endpoint: str) -> Any:
        client = AsyncClient(endpoint, encoding="json")
        conn = client.counter.get_or_create("c").connect()  # no loop here yet
        assert conn.status == "idle"

        async def run() -> Any:
            try:
                return await main(conn)
            finally:
                await client.aclose()

        return asyncio.run(run())

    assert asyncio.run(scenario()) == ["late"]


# -- the blocking client ----------------------------------------------------------------


def test_sync_client_connection() -> None:
    loop = asyncio.new_event_loop()
    stop = threading.Event()
    ready = threading.Event()
    holder: dict[str, Any] = {}

    async def serve_forever() -> None:
        fake = await FakeServer().start()
        holder["server"] = fake
        ready.set()
        try:
            while not stop.is_set():
                await asyncio.sleep(0.02)
        finally:
            await fake.stop()

    thread = threading.Thread(target=loop.run_until_complete, args=(serve_forever(),), daemon=True)
    thread.start()
    try:
        assert ready.wait(10)
        fake: FakeServer = holder["server"]
        with Client(fake.endpoint, encoding="cbor") as client:
            conn = client.counter.get_or_create("c").connect()
            counts: list[int] = []
            threads: list[str] = []
            closes: list[str] = []

            def on_count(count: int) -> None:
                counts.append(count)
                threads.append(threading.current_thread().name)
                if count >= 2:
                    # Removing listeners from inside a callback (on the loop thread) works.
                    conn.off("count")

            conn.on("count", on_count)
            conn.on_close(lambda: closes.append("closed"))
            conn.wait_open(timeout=5)
            assert conn.status == "connected" and conn.actor_id == ACTOR_ID
            assert conn.increment(1) == 1
            assert conn.action("increment", 1) == 2
            assert conn.increment(1) == 3
            deadline = threading.Event()
            for _ in range(200):
                if len(counts) >= 2:
                    break
                deadline.wait(0.01)
            assert counts == [1, 2]
            assert set(threads) == {"rivet-client-loop"}
            with pytest.raises(ActorError) as info:
                conn.fail()
            assert info.value.code == "boom"
            with client.counter.get_or_create("d").connect() as other:
                assert other.echo("x") == ["x"]
            assert other.status == "idle"
            conn.dispose()
            assert conn.status == "idle" and closes == ["closed"]
            with pytest.raises(ConnectionDisposedError):
                conn.increment(1)
            leftover = client.counter.get_or_create("e").connect()
            leftover.wait_open(timeout=5)
        assert leftover.status == "idle"  # Client.close() disposed it
    finally:
        stop.set()
        thread.join(10)
        loop.close()


# -- in-process (LocalTransport) ------------------------------------------------------


@pytest.fixture
def room_events() -> Iterator[list[tuple[str, str]]]:
    from tests.testapp.actors import EVENTS

    EVENTS.clear()
    yield EVENTS
    EVENTS.clear()


async def test_local_connection_actions_and_events(rivet_client: AsyncClient, room_events: Any) -> None:
    async with rivet_client.room.get_or_create(["local"], params={"name": "ann"}).connect() as conn:
        messages: list[tuple[str, str]] = []
        conn.on("message", lambda who, text: messages.append((who, text)))
        assert await conn.send("hello") == 1
        await eventually(lambda: messages == [("ann", "hello")])
        me = await conn.whoami()
        assert me["name"] == "ann" and me["id"] == conn.connection_id
        assert conn.actor_id == await rivet_client.room.get(["local"]).resolve()

        # a targeted event
        private: list[str] = []
        conn.on("private", private.append)
        await conn.whisper(conn.connection_id, "psst")
        await eventually(lambda: private == ["psst"])

        with pytest.raises(ActorError) as info:
            await conn.action("no_such_action")
        assert info.value.code == "action_not_found"

        # another connection gets broadcasts only once subscribed
        async with rivet_client.room.get_or_create(["local"], params={"name": "bob"}).connect() as bob:
            heard: list[str] = []
            bob.on("message", lambda who, text: heard.append(f"{who}:{text}"))
            await bob.wait_open(timeout=5)
            await eventually(lambda: True)
            assert await bob.send("hi ann") == 2
            await eventually(lambda: heard == ["bob:hi ann"] and ("bob", "hi ann") in messages)
            names = (await conn.whoami())["conns"]
            assert names == ["ann", "bob"]
    await eventually(lambda: ("local", "on_disconnect:ann") in room_events)


async def test_local_values_are_copies(rivet_client: AsyncClient, room_events: Any) -> None:
    async with rivet_client.room.get_or_create(["copies"]).connect() as conn:
        got: list[Any] = []
        conn.on("message", got.append)
        await conn.big_event(3)
        await eventually(lambda: got == ["xxx"])
    # Lifecycle.info returns its live state dict: the caller gets a copy, as over the wire.
    async with rivet_client.lifecycle.get_or_create(["copies"]).connect() as conn:
        info = await conn.info()
        info["state"]["wakes"] = 999
        assert (await conn.info())["state"]["wakes"] == 1


async def test_local_refusal_and_subscription_refusal(rivet_client: AsyncClient) -> None:
    refused = rivet_client.room.get_or_create(["refuse"], params={"refuse": True}).connect()
    errors: list[ActorError] = []
    refused.on_error(errors.append)
    with pytest.raises(ActorError) as info:
        await refused.wait_open(timeout=5)
    assert (info.value.group, info.value.code, info.value.message) == ("user", "refused", "go away")
    assert info.value.metadata == {"reason": "test"}
    assert refused.status == "idle"
    assert [e.code for e in errors] == ["refused"]

    crashed = rivet_client.room.get_or_create(["refuse"], params={"crash": True}).connect()
    with pytest.raises(ActorError) as info:
        await crashed.wait_open(timeout=5)
    assert (info.value.group, info.value.code) == ("rivetkit", "internal_error")
    assert "secret" not in info.value.message

    async with rivet_client.room.get_or_create(["refuse"], params={"name": "eve"}).connect() as conn:
        errors = []
        conn.on_error(errors.append)
        secrets: list[str] = []
        conn.on("secret", secrets.append)
        await eventually(lambda: len(errors) == 1)
        assert (errors[0].group, errors[0].code) == ("auth", "forbidden")
        await conn.reveal("the cake")
        await asyncio.sleep(0.05)
        assert secrets == []
        assert conn.is_connected


async def test_local_kick_and_sleep_reconnect(rivet_client: AsyncClient, rivet_node: Any) -> None:
    conn = fast(rivet_client.room.get_or_create(["kick"], params={"name": "ann"}).connect())
    try:
        messages: list[str] = []
        errors: list[ActorError] = []
        conn.on("message", lambda who, text: messages.append(text))
        conn.on_error(errors.append)
        await conn.wait_open(timeout=5)
        first_id = conn.connection_id
        await rivet_client.room.get(["kick"]).kick(first_id)
        await eventually(lambda: [e.code for e in errors] == ["kicked"])
        await eventually(lambda: conn.is_connected and conn.connection_id != first_id)
        await conn.send("after kick")
        await eventually(lambda: messages == ["after kick"])

        # The actor goes to sleep: the connection hibernates (stays open, same id), and its
        # next call wakes the actor.
        second_id = conn.connection_id
        actor_id = await rivet_client.room.get(["kick"]).resolve()
        await conn.go_to_sleep()
        await eventually(lambda: actor_id not in rivet_node.runtime.instances, timeout=10)
        assert conn.is_connected and conn.connection_id == second_id
        await conn.send("after sleep")
        await eventually(lambda: messages == ["after kick", "after sleep"])
        assert [e.code for e in errors] == ["kicked"] and conn.connection_id == second_id
    finally:
        await conn.dispose()


async def test_local_get_of_missing_actor_is_refused(rivet_client: AsyncClient) -> None:
    conn = rivet_client.room.get(["never-created"]).connect()
    with pytest.raises(ActorError) as info:
        await conn.wait_open(timeout=5)
    assert info.value.code == "not_found"


async def test_local_sync_client_hops_loops(rivet_node: Any) -> None:
    def run() -> tuple[Any, list[str]]:
        seen: list[str] = []
        with Client.local() as client:
            conn = client.room.get_or_create(["sync"], params={"name": "sam"}).connect()
            conn.on("message", lambda who, text: seen.append(text))
            result = conn.send("from a thread")
            for _ in range(300):
                if seen:
                    break
                threading.Event().wait(0.01)
            conn.dispose()
            return result, seen

    result, seen = await asyncio.wait_for(asyncio.to_thread(run), 30)
    assert result == 1
    assert seen == ["from a thread"]


# -- end to end against runactors ---------------------------------------------------------


def _connect_route_served(endpoint: str) -> bool:
    """Whether the server answers a WebSocket on ``.../connect`` (the consumer is wired)."""
    from websockets.sync.client import connect

    url = (
        "ws"
        + endpoint.removeprefix("http")
        + "/gateway/counter/connect?rvt-namespace=default&rvt-method=getOrCreate&rvt-runner=default&rvt-key=probe&rvt-crash-policy=sleep"
    )
    try:
        with connect(
            url, subprotocols=[Subprotocol("rivet"), Subprotocol("rivet_encoding.json")], open_timeout=5
        ) as ws:
            ws.recv(timeout=5)
            return True
    except Exception:
        return False


@pytest.fixture(scope="module")
def actor_server() -> Iterator[Any]:
    from tests.server import LiveServer

    server = LiveServer(node_id="connect-node")
    try:
        server.start()
        if not _connect_route_served(server.endpoint):
            pytest.skip("runactors does not serve .../connect yet")
        yield server
    finally:
        try:
            server.stop()
        finally:
            server.kill()


@pytest.mark.parametrize("encoding", ["json", "cbor", "bare"])
async def test_live_counter_connection(actor_server: Any, encoding: str) -> None:
    async with AsyncClient(actor_server.endpoint, encoding=encoding) as client:
        key = f"live-{encoding}"
        async with client.counter.get_or_create([key]).connect() as conn:
            counts: list[int] = []
            conn.on("count", counts.append)
            assert await conn.increment(5) == 5
            assert await conn.increment(2) == 7
            await eventually(lambda: counts == [5, 7])
            channel = conn._channel
            assert channel is not None and getattr(channel, "subprotocol", None) == "rivet"
            assert conn.actor_id == await client.counter.get([key]).resolve()
            with pytest.raises(ActorError) as info:
                await conn.fail("nope")
            assert (info.value.group, info.value.code, info.value.metadata) == ("user", "nope", {"count": 7})
            with pytest.raises(ActorError) as info:
                await conn.crash()
            assert (info.value.group, info.value.code) == ("rivetkit", "internal_error")
            assert await conn.echo(1, "x", None, b"\x01") == [1, "x", None, b"\x01"]
            # Another client's stateless call reaches this connection as an event.
            assert await client.counter.get([key]).increment(1) == 8
            await eventually(lambda: counts == [5, 7, 8])


async def test_live_by_id_and_missing_actor(actor_server: Any) -> None:
    async with AsyncClient(actor_server.endpoint) as client:
        actor_id = await client.counter.get_or_create(["live-id"]).resolve()
        async with client.counter.get_for_id(actor_id).connect() as conn:
            assert await conn.getCount() == 0
            assert conn.actor_id == actor_id
        missing = client.counter.get(["live-never-created"]).connect()
        with pytest.raises(ActorError) as info:
            await missing.wait_open(timeout=10)
        assert (info.value.group, info.value.code) == ("actor", "not_found")
        assert missing.status == "idle"


@pytest.mark.parametrize("encoding", ["json", "bare"])
async def test_live_chat_room_params_presence_and_refusal(actor_server: Any, encoding: str) -> None:
    async with AsyncClient(actor_server.endpoint, encoding=encoding) as client:
        room = f"room-{encoding}"
        nameless = client.chatRoom.get_or_create([room]).connect()
        with pytest.raises(ActorError) as info:
            await nameless.wait_open(timeout=10)
        assert (info.value.group, info.value.code) == ("user", "name_required")
        assert info.value.message == "A name is required to join the room"
        assert nameless.status == "idle"

        # Params travel percent-encoded in a subprotocol, non-ASCII included.
        async with client.chatRoom.get_or_create([room], params={"name": "Adä (1)"}).connect() as ada:
            presence: list[list[str]] = []
            messages: list[dict[str, Any]] = []
            ada.on("presence", presence.append)
            ada.on("message", messages.append)
            await ada.wait_open(timeout=10)
            assert await ada.members() == ["Adä (1)"]
            async with client.chatRoom.get_or_create([room], params={"name": "Bob"}).connect() as bob:
                await bob.wait_open(timeout=10)
                await eventually(lambda: ["Adä (1)", "Bob"] in presence)
                sent = await bob.sendMessage("hello")
                assert sent["name"] == "Bob"
                await eventually(lambda: [m["text"] for m in messages] == ["hello"])
            await eventually(lambda: presence[-1] == ["Adä (1)"])


def test_live_sync_client(actor_server: Any) -> None:
    with Client(actor_server.endpoint) as client:
        conn = client.counter.get_or_create(["live-sync"]).connect()
        counts: list[int] = []
        conn.on("count", counts.append)
        assert conn.increment(3) == 3
        for _ in range(300):
            if counts:
                break
            threading.Event().wait(0.01)
        assert counts == [3]
        conn.dispose()


async def test_live_reconnects_across_a_server_restart(monkeypatch: pytest.MonkeyPatch) -> None:
    import tests.server
    from tests.server import LiveServer

    server = LiveServer(node_id="restart-node")
    try:
        await asyncio.to_thread(server.start)
        if not await asyncio.to_thread(_connect_route_served, server.endpoint):
            pytest.skip("runactors does not serve .../connect yet")
        async with AsyncClient(server.endpoint, encoding="bare") as client:
            conn = fast(client.counter.get_or_create(["restart"]).connect())
            counts: list[int] = []
            errors: list[ActorError] = []
            statuses: list[str] = []
            conn.on("count", counts.append)
            conn.on_error(errors.append)
            conn.on_status_change(statuses.append)
            assert await conn.increment(1) == 1
            first_id = conn.connection_id

            await asyncio.to_thread(server.stop)
            await eventually(lambda: not conn.is_connected, timeout=10)
            # Same port again: the connection keeps retrying until it is back.
            monkeypatch.setattr(tests.server, "free_port", lambda: server.port)
            await asyncio.to_thread(server.start)
            await eventually(lambda: conn.is_connected, timeout=20)
            assert conn.connection_id != first_id
            assert await conn.increment(1) == 2  # state survived; the subscription was renewed
            await eventually(lambda: counts == [1, 2])
            assert "disconnected" in statuses
            # The close the server sent when it stopped (see the report): any ActorError lands here.
            print("restart close errors:", [(e.group, e.code) for e in errors])
    finally:
        try:
            await asyncio.to_thread(server.stop)
        finally:
            server.kill()


def test_the_client_works_in_a_process_without_django_settings(actor_server: Any) -> None:
    """The Python client is usable outside a Django project: no DJANGO_SETTINGS_MODULE,
    settings never configured (a script, a worker of another framework)."""
    import os
    import subprocess
    import sys

    script = f"""
import asyncio
from django.conf import settings
from rivet_django.client import AsyncClient

async def main():
    async with AsyncClient({actor_server.endpoint!r}) as client:
        handle = client.counter.get_or_create(["no-settings"])
        assert await handle.increment(2) == 2
        async with handle.connect() as conn:
            assert await conn.increment(3) == 5
    assert not settings.configured
    print("ok")

asyncio.run(main())
"""
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-3000:]
