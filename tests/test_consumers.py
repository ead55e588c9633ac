"""WebSocket connections through the Channels consumer (WebsocketCommunicator, in-process)."""

from __future__ import annotations

import asyncio
import json
from urllib.parse import quote

import pytest
from channels.testing import WebsocketCommunicator

from rivet_django import protocol
from tests.asgi import application
from tests.helpers import eventually
from tests.testapp.actors import EVENTS

pytestmark = pytest.mark.django_db(transaction=True)

QUERY = "rvt-namespace=default&rvt-method=getOrCreate&rvt-runner=default&rvt-crash-policy=sleep&rvt-key="


class Client:
    """A protocol-speaking test client over a WebsocketCommunicator."""

    def __init__(self, key: str, encoding: str = "json", params=None, *, path: str | None = None, origin: str | None = None):
        self.encoding = encoding
        protocols = ["rivet", f"rivet_encoding.{encoding}"]
        if params is not None:
            protocols.append("rivet_conn_params." + quote(json.dumps(params)))
        headers = [(b"origin", origin.encode())] if origin else []
        self.comm = WebsocketCommunicator(
            application, path or f"/api/rivet/gateway/room/connect?{QUERY}{key}", subprotocols=protocols, headers=headers
        )
        self.next_id = 1

    async def open(self):
        connected, subprotocol = await self.comm.connect(timeout=5)
        assert connected and subprotocol == "rivet"
        return await self.recv()

    async def recv(self, timeout: float = 5):
        message = await self.comm.receive_output(timeout)
        if message["type"] == "websocket.close":
            return ("close", message.get("code"), message.get("reason"))
        data = message.get("text") if message.get("text") is not None else message.get("bytes")
        if self.encoding == "json":
            assert isinstance(data, str)
        else:
            assert isinstance(data, bytes)
        return protocol.decode_to_client(self.encoding, data)

    async def send(self, message):
        data = protocol.encode_to_server(self.encoding, message)
        if isinstance(data, str):
            await self.comm.send_to(text_data=data)
        else:
            await self.comm.send_to(bytes_data=data)

    async def call(self, name, *args):
        action_id = self.next_id
        self.next_id += 1
        await self.send(protocol.ActionRequest(action_id, name, list(args)))
        while True:
            message = await self.recv()
            if isinstance(message, (protocol.ActionResponse, protocol.ErrorMessage)) and getattr(
                message, "id", getattr(message, "action_id", None)
            ) == action_id:
                return message

    async def subscribe(self, event, subscribe=True):
        await self.send(protocol.SubscriptionRequest(event, subscribe))

    async def close(self):
        await self.comm.disconnect()


@pytest.mark.parametrize("encoding", ["json", "cbor", "bare"])
async def test_init_action_event_in_every_encoding(rivet_node, encoding):
    a = Client(f"enc-{encoding}", encoding, {"name": "ann"})
    b = Client(f"enc-{encoding}", encoding, {"name": "bob"})
    init = await a.open()
    assert isinstance(init, protocol.Init) and init.actor_id and init.connection_id
    init_b = await b.open()
    assert init_b.actor_id == init.actor_id and init_b.connection_id != init.connection_id
    await b.subscribe("message")
    await asyncio.sleep(0.05)
    response = await a.call("send", "hi")
    assert response == protocol.ActionResponse(1, 1)
    event = await b.recv()
    assert event == protocol.Event("message", ["ann", "hi"])
    who = await b.call("whoami")
    assert who.output["name"] == "bob" and who.output["conns"] == ["ann", "bob"]
    assert who.output["params"] == {"name": "bob"}
    error = await a.call("nope")
    assert isinstance(error, protocol.ErrorMessage) and (error.code, error.action_id) == ("action_not_found", 3 - 1)
    await a.close()
    await b.close()


async def test_large_action_ids_round_trip(rivet_node):
    client = Client("ids", "cbor")
    await client.open()
    client.next_id = 2**40
    response = await client.call("whoami")
    assert isinstance(response, protocol.ActionResponse) and response.id == 2**40
    await client.close()


async def test_hook_order_and_conns_visibility(rivet_node):
    EVENTS.clear()
    client = Client("hooks", params={"name": "zed"})
    await client.open()
    hooks = [h for k, h in EVENTS if k == "hooks"]
    assert hooks == ["before_connect:{'name': 'zed'}", "create_conn_state", "on_connect:0"]
    # Listed in conns only after the hooks succeeded (on_connect saw 0 others).
    who = await client.call("whoami")
    assert who.output["conns"] == ["zed"]
    await client.close()
    await asyncio.sleep(0.05)
    assert ("hooks", "on_disconnect:zed") in EVENTS


@pytest.mark.parametrize("params, code", [({"refuse": True}, "refused"), ({"crash": True}, "internal_error")])
async def test_refused_connection(rivet_node, params, code):
    client = Client(f"refuse-{code}", params=params)
    connected, _ = await client.comm.connect(timeout=5)
    assert connected
    error = await client.recv()
    assert isinstance(error, protocol.ErrorMessage) and error.action_id is None
    assert error.code == code
    if code == "refused":
        assert (error.group, error.message, error.metadata) == ("user", "go away", {"reason": "test"})
    else:
        assert "secret" not in error.message
    closed = await client.recv()
    assert closed[0] == "close" and closed[1] == 1011 and closed[2] == f"{error.group}.{code}"


async def test_conn_send_reaches_one_connection_only(rivet_node):
    a, b, c = (Client("whisper", params={"name": n}) for n in ("a", "b", "c"))
    inits = [await x.open() for x in (a, b, c)]
    for x in (a, b, c):
        await x.subscribe("private")
    await asyncio.sleep(0.05)
    await a.call("whisper", inits[1].connection_id, "psst")
    assert await b.recv() == protocol.Event("private", ["psst"])
    assert await c.comm.receive_nothing(timeout=0.2)
    for x in (a, b, c):
        await x.close()


async def test_subscribe_unsubscribe_and_can_subscribe(rivet_node):
    admin = Client("subs", params={"name": "admin"})
    guest = Client("subs", params={"name": "guest"})
    await admin.open()
    await guest.open()
    await admin.subscribe("secret")
    # Undeclared events can be subscribed to and broadcast (RivetKit); declarations only add checks.
    await guest.subscribe("nonexistent")
    await asyncio.sleep(0.05)
    await admin.call("shout", "nonexistent", 1)
    assert await guest.recv() == protocol.Event("nonexistent", [1])
    await admin.subscribe("message")
    await asyncio.sleep(0.05)
    await guest.call("reveal", "x")
    assert await admin.recv() == protocol.Event("secret", ["x"])
    await admin.subscribe("message", False)
    await asyncio.sleep(0.05)
    await guest.call("send", "after unsubscribe")
    assert await admin.comm.receive_nothing(timeout=0.2)
    # A refused subscription closes the connection 1011 auth.forbidden (RivetKit), no Error frame.
    await guest.subscribe("secret")
    assert await guest.recv() == ("close", 1011, "auth.forbidden")
    await admin.close()


@pytest.mark.parametrize(
    "frame",
    [b"\x00\x01garbage", "not json at all", '{"body":{"tag":"Nope","val":{}}}', '{"body":{"tag":"ActionRequest","val":{"id":"one","name":"send","args":[]}}}', '{"body":{"tag":"ActionRequest","val":{"id":1.5,"name":"send","args":[]}}}'],
)
async def test_malformed_frames_close_1011_and_touch_nothing(rivet_node, frame):
    good = Client("garbage", params={"name": "good"})
    bad = Client("garbage", params={"name": "bad"})
    await good.open()
    await bad.open()
    if isinstance(frame, bytes):
        await bad.comm.send_to(bytes_data=frame)
    else:
        await bad.comm.send_to(text_data=frame)
    message = await bad.recv()
    if isinstance(message, protocol.ErrorMessage):
        message = await bad.recv()
    assert message[0] == "close" and message[1] == 1011 and message[2] == "actor.invalid_request"
    # The other connection and the state are unaffected.
    response = await good.call("send", "still here")
    assert response.output == 1
    await good.close()


async def test_oversized_frame_closes_with_incoming_too_long(rivet_node):
    client = Client("big")
    await client.open()
    await client.send(protocol.ActionRequest(1, "send", ["x" * 70_000]))
    message = await client.recv()
    if isinstance(message, protocol.ErrorMessage):
        message = await client.recv()
    assert message[:3] == ("close", 1011, "message.incoming_too_long")


async def test_outgoing_limit_on_action_response(rivet_node):
    client = Client("bigout")
    await client.open()
    response = await client.call("big", 2 * 1024 * 1024)
    assert isinstance(response, protocol.ErrorMessage)
    assert (response.group, response.code, response.action_id) == ("message", "outgoing_too_long", 1)
    # The connection stays usable.
    assert (await client.call("big", 10)).output == "x" * 10
    await client.close()


async def test_sleep_hibernates_connections_and_their_calls_wake_the_actor(rivet_node):
    """RivetKit: a sleeping actor's connections stay open (no on_disconnect, no close); the
    next instance adopts them, and a call on one wakes the actor."""
    EVENTS.clear()
    client = Client("sleepy", params={"name": "s"})
    init = await client.open()
    await client.subscribe("message")
    await client.call("go_to_sleep")
    await eventually(lambda: _async(init.actor_id not in rivet_node.runtime.instances))
    assert await client.comm.receive_nothing(timeout=0.2)  # still open, nothing sent
    assert ("sleepy", "on_disconnect:s") not in EVENTS
    # A call on the hibernated connection wakes the actor, which knows the connection.
    response = await client.call("whoami")
    assert response.output["id"] == init.connection_id and response.output["name"] == "s"
    assert init.actor_id in rivet_node.runtime.instances
    # Its subscriptions came along.
    other = Client("sleepy", params={"name": "o"})
    await other.open()
    await other.call("send", "hi")
    assert await client.recv() == protocol.Event("message", ["o", "hi"])
    await other.close()
    await client.close()
    await eventually(lambda: _async(("sleepy", "on_disconnect:s") in EVENTS))


async def _async(value):
    return value


async def test_open_connection_keeps_actor_awake(rivet_node):
    client = Client("awake")
    init = await client.open()
    inst = rivet_node.runtime.instances[init.actor_id]
    inst.last_activity -= 1000
    assert await rivet_node.runtime.reap_idle() == 0
    await client.close()
    await asyncio.sleep(0.05)
    inst.last_activity -= 1000
    assert await rivet_node.runtime.reap_idle() == 1


async def test_kick_disconnects_with_reason(rivet_node):
    a = Client("kick", params={"name": "a"})
    b = Client("kick", params={"name": "b"})
    await a.open()
    init_b = await b.open()
    await a.call("kick", init_b.connection_id)
    message = await b.recv()
    assert message[0] == "close" and message[2] == "room.kicked"
    await a.close()


async def test_direct_and_header_forms(rivet_node):
    first = Client("forms")
    init = await first.open()
    direct = Client("x", path=f"/api/rivet/gateway/{init.actor_id}/connect")
    assert (await direct.open()).actor_id == init.actor_id
    comm = WebsocketCommunicator(
        application, "/api/rivet/connect",
        subprotocols=["rivet", "rivet_encoding.json", "rivet_target.actor", f"rivet_actor.{init.actor_id}"],
    )
    connected, _ = await comm.connect(timeout=5)
    assert connected
    header_init = protocol.decode_to_client("json", (await comm.receive_output(5))["text"])
    assert header_init.actor_id == init.actor_id
    await comm.disconnect()
    await direct.close()
    await first.close()


async def test_origin_check(rivet_node, settings):
    settings.RIVET = {"ALLOWED_ORIGINS": ["https://good.example"]}
    good = Client("origin", origin="https://good.example")
    assert isinstance(await good.open(), protocol.Init)
    await good.close()
    bad = Client("origin", origin="https://evil.example")
    connected, _ = await bad.comm.connect(timeout=5)
    assert not connected


async def test_invalid_conn_params(rivet_node):
    comm = WebsocketCommunicator(
        application, f"/api/rivet/gateway/room/connect?{QUERY}badparams",
        subprotocols=["rivet", "rivet_encoding.json", "rivet_conn_params.%7Bnope"],
    )
    connected, _ = await comm.connect(timeout=5)
    assert connected
    error = protocol.decode_to_client("json", (await comm.receive_output(5))["text"])
    assert isinstance(error, protocol.ErrorMessage) and error.code == "invalid_request"
    closed = await comm.receive_output(5)
    assert closed["type"] == "websocket.close" and closed["code"] == 1011


async def test_raw_websocket(rivet_node):
    comm = WebsocketCommunicator(application, f"/api/rivet/gateway/room/websocket/chat/x?{QUERY}raw&x=1")
    connected, _ = await comm.connect(timeout=5)
    assert connected
    assert await comm.receive_from(5) == "hello /chat/x 1"
    await comm.send_to(text_data="text")
    assert await comm.receive_from(5) == "text"
    await comm.send_to(bytes_data=b"\x00bin")
    assert (await comm.receive_output(5))["bytes"] == b"\x00bin"
    await comm.send_to(text_data="close")
    closed = await comm.receive_output(5)
    assert closed["type"] == "websocket.close" and closed["code"] == 4000


async def test_raw_websocket_without_handler_stays_open_and_silent(rivet_node):
    """RivetKit: an actor without on_websocket accepts the socket and never writes to it."""
    comm = WebsocketCommunicator(application, f"/api/rivet/gateway/counter/websocket/x?{QUERY}nohandler")
    connected, _ = await comm.connect(timeout=5)
    assert connected
    await comm.send_to(text_data="anyone?")
    assert await comm.receive_nothing(timeout=0.3)
    await comm.disconnect()


async def test_self_conn_is_task_local_under_concurrent_calls(rivet_node):
    a = Client("tasklocal", params={"name": "a"})
    b = Client("tasklocal", params={"name": "b"})
    await a.open()
    await b.open()
    # Interleaved at the await: each call still sees its own connection afterwards.
    results = await asyncio.gather(a.call("slow_whoami", 0.2), b.call("slow_whoami", 0.1))
    assert [r.output for r in results] == [["a", "a"], ["b", "b"]]
    await a.close()
    await b.close()


async def test_connect_hook_timeout(transactional_db, settings):
    from rivet_django.testing import running_node

    settings.RIVET = {"HOOK_TIMEOUT": 0.2}
    async with running_node():
        client = Client("hang", params={"name": "h", "hang": 5})
        connected, _ = await client.comm.connect(timeout=5)
        assert connected
        error = await client.recv()
        assert isinstance(error, protocol.ErrorMessage) and error.code == "internal_error"
        closed = await client.recv()
        assert closed[0] == "close" and closed[1] == 1011


async def test_events_describe_only_durable_state(rivet_node):
    listener = Client("held", params={"name": "l"})
    speaker = Client("held", params={"name": "s"})
    await listener.open()
    await speaker.open()
    await listener.subscribe("message")
    await asyncio.sleep(0.05)
    # An event waits for the next commit after it; that commit fails (the state cannot be
    # serialized, so the last good state is kept): the event never goes out, whether the
    # bad change came before or after it.
    for action in ("announce_then_break", "break_then_announce"):
        failed = await speaker.call(action, "never")
        assert isinstance(failed, protocol.ErrorMessage) and failed.code == "not_serializable"
        assert await listener.comm.receive_nothing(timeout=0.3)
    ok = await speaker.call("send", "after")
    assert ok.output == 1
    assert await listener.recv() == protocol.Event("message", ["s", "after"])
    await listener.close()
    await speaker.close()


async def test_state_changed_in_connect_hooks_is_committed(rivet_node):
    from asgiref.sync import sync_to_async

    from rivet_django.models import Actor as ActorRow
    from rivet_django.runtime import serde

    client = Client("joined", params={"name": "j"})
    init = await client.open()
    row = await sync_to_async(ActorRow.objects.get)(pk=init.actor_id)
    assert serde.loads(bytes(row.state))["joined"] == 1
    await client.close()
