"""``self.request.auser()`` in hooks: the Django session user of same-site calls, over HTTP and WebSocket."""

from __future__ import annotations

import json

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator

from rivet_django import protocol
from tests.test_http import ASGIClient, body_of, q

pytestmark = pytest.mark.django_db(transaction=True)


@sync_to_async
def _session_cookie(username: str) -> str:
    from django.contrib.auth.models import User
    from django.test import Client

    user = User.objects.create_user(username, password="pw")
    browser = Client()
    browser.force_login(user)
    return f"sessionid={browser.cookies['sessionid'].value}"


async def test_http_calls_carry_the_session_user(rivet_node):
    cookie = await _session_cookie("alice")
    client = ASGIClient()

    async def owner(key: str, headers: dict[str, str]):
        response = await client.post(
            f"/api/rivet/gateway/mine/action/owner?{q(key=key)}", data=b'{"args":[]}', headers=headers
        )
        return response.status_code, body_of(response)

    assert await owner("alice", {"cookie": cookie}) == (200, "alice")
    status, error = await owner("bob", {"cookie": cookie})
    assert status == 403 and (error["group"], error["code"]) == ("auth", "forbidden")
    status, error = await owner("alice", {})
    assert status == 403 and error["message"] == "Sign in first"
    status, error = await owner("alice", {"cookie": "sessionid=forged"})
    assert status == 403 and error["message"] == "Sign in first"


async def test_websocket_connections_carry_the_session_user(rivet_node):
    from rivet_django.routing import application

    cookie = await _session_cookie("carol")

    async def connect(key: str, cookie_header: str | None):
        headers = [(b"cookie", cookie_header.encode())] if cookie_header else []
        comm = WebsocketCommunicator(
            application(), f"/api/rivet/gateway/mine/connect?{q(key=key)}",
            subprotocols=["rivet", "rivet_encoding.json"], headers=headers,
        )
        connected, _ = await comm.connect(timeout=5)
        assert connected
        message = await comm.receive_output(5)
        await comm.disconnect()
        return protocol.decode_to_client("json", message["text"]) if message.get("text") else message

    init = await connect("carol", cookie)
    assert isinstance(init, protocol.Init)
    refused = await connect("dave", cookie)
    assert isinstance(refused, protocol.ErrorMessage) and refused.code == "forbidden"
    anonymous = await connect("carol", None)
    assert isinstance(anonymous, protocol.ErrorMessage) and json.dumps(anonymous.message) == '"Sign in first"'
