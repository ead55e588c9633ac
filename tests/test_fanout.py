"""Broadcast fan-out under load over real sockets: 500 connections, 200 broadcasts, all in order."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
from websockets.asyncio.client import connect

from rivet_django import protocol
from tests.server import LiveServer

CONNECTIONS = 500
BROADCASTS = 200
QUERY = "rvt-namespace=default&rvt-method=getOrCreate&rvt-runner=default&rvt-crash-policy=sleep&rvt-key=fanout"


@pytest.fixture(scope="module")
def server():
    with LiveServer(node_id="fanout-node") as live:
        yield live


async def test_every_socket_receives_every_broadcast_in_order(server):
    ws_url = server.endpoint.replace("http://", "ws://") + f"/gateway/counter/connect?{QUERY}"
    sockets = []
    try:
        for start in range(0, CONNECTIONS, 50):
            batch = await asyncio.gather(
                *(connect(ws_url, subprotocols=["rivet", "rivet_encoding.json"], max_size=None, open_timeout=20) for _ in range(start, min(start + 50, CONNECTIONS)))
            )
            sockets.extend(batch)
        inits = [protocol.decode_to_client("json", await asyncio.wait_for(ws.recv(), 10)) for ws in sockets]
        assert all(isinstance(i, protocol.Init) for i in inits)
        assert len({i.actor_id for i in inits}) == 1
        subscribe = protocol.encode_to_server("json", protocol.SubscriptionRequest("count", True))
        await asyncio.gather(*(ws.send(subscribe) for ws in sockets))
        # A round trip on each socket proves its subscription was processed.
        ping = protocol.encode_to_server("json", protocol.ActionRequest(1, "getCount", []))
        await asyncio.gather(*(ws.send(ping) for ws in sockets))
        for ws in sockets:
            reply = protocol.decode_to_client("json", await asyncio.wait_for(ws.recv(), 20))
            assert isinstance(reply, protocol.ActionResponse)

        async def collect(ws) -> list[int]:
            values: list[int] = []
            while len(values) < BROADCASTS:
                message = protocol.decode_to_client("json", await asyncio.wait_for(ws.recv(), 30))
                if isinstance(message, protocol.Event):
                    assert message.name == "count"
                    values.append(message.args[0])
            return values

        collectors = [asyncio.ensure_future(collect(ws)) for ws in sockets]
        started = time.monotonic()
        async with httpx.AsyncClient(base_url=server.endpoint, timeout=30) as http:
            for _ in range(BROADCASTS):
                response = await http.post(
                    f"/gateway/counter/action/increment?{QUERY}", content=b'{"args":[1]}',
                    headers={"content-type": "application/json"},
                )
                assert response.status_code == 200
        results = await asyncio.wait_for(asyncio.gather(*collectors), 120)
        elapsed = time.monotonic() - started
        expected = list(range(1, BROADCASTS + 1))
        assert all(values == expected for values in results)
        print(f"{CONNECTIONS * BROADCASTS} deliveries in {elapsed:.1f}s")
    finally:
        await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)
