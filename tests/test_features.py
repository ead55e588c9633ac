"""The rest of the actor context API, leases, the local clients, BARE versions over HTTP."""

from __future__ import annotations

import asyncio
import logging
import threading

import pytest
from asgiref.sync import sync_to_async
from django.db import connection
from django.test import AsyncClient as DjangoAsyncClient

from rivet_django import protocol
from rivet_django.client import ActorError, Client
from rivet_django.exceptions import ActorStopping
from rivet_django.models import Actor as ActorRow
from rivet_django.runtime import serde
from tests.helpers import make

pytestmark = pytest.mark.django_db(transaction=True)


async def stored(actor_id):
    r = await sync_to_async(ActorRow.objects.get)(pk=actor_id)
    return serde.loads(bytes(r.state))


async def test_save_state_immediate_in_throttled_mode(rivet_node):
    actor_id = await make(rivet_node, "features", ["save"])
    assert await rivet_node.router.call_action(actor_id, "save_now") == 1
    assert (await stored(actor_id))["saved"] == 1


async def test_keep_awake_holds_off_sleep_until_done(rivet_node):
    actor_id = await make(rivet_node, "features", ["bg"])
    await rivet_node.router.call_action(actor_id, "start_background", [0.3])
    inst = rivet_node.runtime.instances[actor_id]
    inst.last_activity -= 1000
    assert not inst.is_idle(rivet_node.runtime.clock.monotonic())
    await asyncio.sleep(0.5)
    assert await rivet_node.router.call_action(actor_id, "background_done") == 1
    inst.last_activity -= 1000
    assert inst.is_idle(rivet_node.runtime.clock.monotonic())


async def test_prevent_sleep(rivet_node):
    actor_id = await make(rivet_node, "features", ["prevent"])
    await rivet_node.router.call_action(actor_id, "set_prevent_sleep", [True])
    inst = rivet_node.runtime.instances[actor_id]
    inst.last_activity -= 1000
    assert await rivet_node.runtime.reap_idle() == 0
    await rivet_node.router.call_action(actor_id, "set_prevent_sleep", [False])
    inst.last_activity -= 1000
    assert await rivet_node.runtime.reap_idle() == 1


async def test_on_before_action_response_and_log(rivet_node, caplog):
    actor_id = await make(rivet_node, "features", ["hooks"])
    assert await rivet_node.router.call_action(actor_id, "secret") == {"user": "ann"}
    with caplog.at_level(logging.WARNING, logger="rivet_django.actor"):
        await rivet_node.router.call_action(actor_id, "log_something", ["hello"])
    assert f"[features ['hooks'] {actor_id} @{rivet_node.runtime.node_id}] custom hello" in caplog.text


async def test_actor_to_actor_calls_and_self_calls(rivet_node):
    actor_id = await make(rivet_node, "features", ["a2a"])
    assert await rivet_node.router.call_action(actor_id, "call_other", ["target", 4]) == 4
    assert await rivet_node.router.call_action(actor_id, "call_other", ["target", 1]) == 5
    assert await rivet_node.router.call_action(actor_id, "call_self") == 0


async def test_actor_client_addresses_the_callers_namespace(rivet_node):
    """``self.client()`` reaches actors in the calling actor's namespace, not the default one."""
    record, _ = await rivet_node.router.get_or_create("tenant-a", "features", ["caller"])
    assert await rivet_node.router.call_action(record.actor_id, "call_other", ["shared", 3]) == 3
    assert await rivet_node.router.call_action(record.actor_id, "call_other", ["shared", 1]) == 4
    tenant = await rivet_node.router.get("tenant-a", "counter", ["shared"])
    assert tenant is not None and tenant.namespace == "tenant-a"
    assert await rivet_node.router.get("default", "counter", ["shared"]) is None
    # An explicit namespace overrides the caller's.
    assert await rivet_node.router.call_action(record.actor_id, "call_other", ["shared", 5, "default"]) == 5
    default = await rivet_node.router.get("default", "counter", ["shared"])
    assert default is not None and default.actor_id != tenant.actor_id


async def test_async_local_client(rivet_client):
    handle = rivet_client.counter.get_or_create(["local"])
    assert await handle.increment(2) == 2
    assert await handle.getCount() == 2
    created = await rivet_client.counter.create(["local-created"])
    assert await created.increment(1) == 1
    with pytest.raises(ActorError) as dup:
        await rivet_client.counter.create(["local-created"])
    assert dup.value.code == "duplicate_key"
    with pytest.raises(ActorError) as missing:
        await rivet_client.counter.get(["nobody"]).getCount()
    assert missing.value.code == "not_found"
    with pytest.raises(ActorError) as internal:
        await rivet_client.errors.get_or_create(["x"]).internal()
    assert internal.value.code == "internal_error" and "hunter2" not in internal.value.message


async def test_sync_local_client_from_another_thread(rivet_node):
    results: dict[str, object] = {}

    def use_sync_client() -> None:
        with Client.local() as client:
            handle = client.counter.get_or_create(["sync-local"])
            results["a"] = handle.increment(3)
            results["b"] = handle.getCount()
            results["id"] = handle.resolve()

    thread = threading.Thread(target=use_sync_client)
    thread.start()
    while thread.is_alive():
        await asyncio.sleep(0.01)
    assert results["a"] == 3 and results["b"] == 3
    assert results["id"] in rivet_node.runtime.instances


async def test_lease_held_by_another_live_node_blocks_claim(rivet_node):
    actor_id = await make(rivet_node, "counter", ["leased"])
    await rivet_node.runtime.sleep_actor(actor_id)
    from datetime import timedelta

    from django.utils import timezone

    await sync_to_async(
        lambda: ActorRow.objects.filter(pk=actor_id).update(
            node="elsewhere", lease_expires_at=timezone.now() + timedelta(seconds=60)
        )
    )()
    with pytest.raises(ActorStopping):
        await rivet_node.router.call_action(actor_id, "increment", [1])
    # An expired lease may be taken over; the generation moves on.
    before = (await sync_to_async(ActorRow.objects.get)(pk=actor_id)).generation
    await sync_to_async(
        lambda: ActorRow.objects.filter(pk=actor_id).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    )()
    assert await rivet_node.router.call_action(actor_id, "increment", [1]) == 1
    row = await sync_to_async(ActorRow.objects.get)(pk=actor_id)
    assert row.node == rivet_node.runtime.node_id and row.generation == before + 1


async def test_lease_renewal_extends_and_detects_loss(rivet_node):
    a = await make(rivet_node, "counter", ["renew-a"])
    b = await make(rivet_node, "counter", ["renew-b"])
    await rivet_node.router.call_action(a, "increment", [1])
    await rivet_node.router.call_action(b, "increment", [1])
    old = (await sync_to_async(ActorRow.objects.get)(pk=a)).lease_expires_at
    await sync_to_async(lambda: ActorRow.objects.filter(pk=b).update(node="thief"))()
    await asyncio.sleep(0.01)
    await rivet_node.runtime.renew_leases()
    assert (await sync_to_async(ActorRow.objects.get)(pk=a)).lease_expires_at > old
    assert a in rivet_node.runtime.instances and b not in rivet_node.runtime.instances


@pytest.mark.parametrize("version", [2, 3, 4])
async def test_bare_versions_are_answered_in_kind(rivet_node, version):
    body = protocol.encode_action_request("bare", [5], version=version)
    assert body[:2] == version.to_bytes(2, "little")
    response = await DjangoAsyncClient().post(
        "/api/rivet/gateway/counter/action/increment?rvt-namespace=default&rvt-method=getOrCreate&rvt-runner=default&rvt-key=v"
        + str(version),
        data=body,
        content_type="application/octet-stream",
        headers={"x-rivet-encoding": "bare"},
    )
    assert response.status_code == 200
    assert response.content[:2] == version.to_bytes(2, "little")
    assert protocol.decode_action_response("bare", response.content) == 5


def test_sqlite_runs_in_wal_mode(db):
    if connection.vendor != "sqlite":
        pytest.skip("SQLite only")
    with connection.cursor() as cursor:
        cursor.execute("PRAGMA journal_mode")
        assert cursor.fetchone()[0] == "wal"


async def test_fan_out_fan_in_through_the_runtime(rivet_node):
    actor_id = await make(rivet_node, "fanOut", ["coordinator"])
    assert await rivet_node.router.call_action(actor_id, "fan", [20]) == sum(range(1, 21))
    # The workers are real actors with their own durable state.
    worker = await rivet_node.router.get("default", "counter", ["fan-19"])
    assert await rivet_node.router.call_action(worker.actor_id, "getCount") == 20
    # Calling yourself from an action (the outer call waits on the inner one) does not deadlock.
    # fan(2) again: fan-0 goes 1 -> 2 and fan-1 goes 2 -> 4.
    assert await asyncio.wait_for(rivet_node.router.call_action(actor_id, "ask_self"), 10) == 2 + 4
