"""The admin's actor list shows each awake actor's live connections, asked of the node
holding it (once per page, all nodes at once), and never wakes an actor to count them.

In process (no node): asleep and destroyed actors are shown without asking anyone, an
actor held by a node that does not answer shows "?". On a live ``runactors`` (the
demo): an actor with two WebSockets shows 2, one whose connection hibernates while it
sleeps shows "1 hibernating", an asleep one shows "—" and stays asleep; a plain
process (no node) renders the same list. On a two-node cluster: the count of an actor
on the other node, and "?" quickly while that node is paused.
"""

from __future__ import annotations

import asyncio
import os
import re
import sqlite3
import subprocess
import sys
import time
from datetime import timedelta

import httpx
import pytest

from rivet_django.client import AsyncClient
from tests.browser import ARTIFACTS, CHROMIUM_ARGS, admin_login, chromium_path, require_playwright
from tests.cluster import Cluster, postgres_available
from tests.server import REPO, LiveServer

pytestmark = pytest.mark.timeout(180)

CHANGELIST = "/admin/rivet_django/actor/"

_USERS = "from django.contrib.auth.models import User; User.objects.create_superuser('boss', 'b@example.com', 'pw')"

#: Run in a process that holds no node (``manage.py shell``): the changelist as the admin
#: of a plain WSGI worker renders it, printed.
_PLAIN_PROCESS = """
from django.contrib.auth.models import User
from django.test import Client
from rivet_django.node import get_node
client = Client()
client.force_login(User.objects.get(username='boss'))
page = client.get('/admin/rivet_django/actor/')
assert page.status_code == 200, page.status_code
assert get_node() is None, 'the list started a node'
print(page.content.decode())
"""


def _cells(page: str) -> dict[str, dict[str, str]]:
    """The changelist's rows by actor id: each column's text by field name."""
    rows: dict[str, dict[str, str]] = {}
    for row in re.findall(r"<tr>(.*?)</tr>", page, re.S):
        found = re.search(r"/admin/rivet_django/actor/([^/]+)/change/", row)
        if found:
            fields = re.findall(r'<t[dh] class="field-([a-z_]+)[^"]*">(.*?)</t[dh]>', row, re.S)
            rows[found.group(1)] = {name: re.sub(r"<[^>]+>", "", text).strip() for name, text in fields}
    return rows


def _token(page: httpx.Response) -> str:
    match = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
    assert match, page.text[:2000]
    return match.group(1)


def _admin(endpoint: str) -> httpx.Client:
    """An HTTP client of the admin next to the actor API at ``endpoint``, logged in as staff."""
    http = httpx.Client(base_url=endpoint.removesuffix("/api/rivet"), timeout=20)
    form = http.get("/admin/login/")
    http.post("/admin/login/", data={"username": "boss", "password": "pw", "csrfmiddlewaretoken": _token(form)})
    return http


def _listing(http: httpx.Client) -> dict[str, dict[str, str]]:
    page = http.get(CHANGELIST)
    assert page.status_code == 200, page.text[:2000]
    return _cells(page.text)


def _sleep(http: httpx.Client, actor_ids: list[str]) -> None:
    """Put actors to sleep with the admin's action (through the runtime)."""
    listing = http.get(CHANGELIST)
    done = http.post(
        CHANGELIST,
        data={"action": "sleep_actors", "_selected_action": actor_ids, "csrfmiddlewaretoken": _token(listing)},
        follow_redirects=True,
    )
    assert f"Put {len(actor_ids)} actor(s) to sleep." in done.text


def _increment(endpoint: str, name: str, key: str) -> str:
    response = httpx.post(
        f"{endpoint}/gateway/{name}/action/increment",
        params={"rvt-method": "getOrCreate", "rvt-key": key},
        json={"args": [1]},
        timeout=20,
    )
    assert response.status_code == 200, response.text
    return response.headers["x-rivet-actor"]


async def _open(client: AsyncClient, key: str, count: int) -> tuple[str, list]:
    """``count`` WebSocket connections to counter ``key``, each open (one call answered)."""
    conns = [client.counter.get_or_create([key]).connect() for _ in range(count)]
    for conn in conns:
        await conn.increment(0)
    info = await client.counter.get_or_create([key]).resolve()
    return info, conns


# -- in process: no node, nothing asked of asleep actors, "?" for a silent node ------------------


@pytest.mark.django_db(transaction=True)
def test_asleep_and_destroyed_actors_need_no_question_and_a_silent_node_shows_a_question_mark(monkeypatch):
    from django.utils import timezone

    from rivet_django import console
    from rivet_django.models import Actor

    soon = timezone.now() + timedelta(seconds=60)

    def actor(actor_id: str, **fields) -> Actor:
        return Actor.objects.create(
            id=actor_id, namespace="default", name="counter", key=[actor_id], key_hash=actor_id * 8, **fields
        )

    asleep = actor("asleep", status="sleeping")
    gone = actor("gone", status="destroyed")
    lapsed = actor("lapsed", status="awake", node="dead", lease_expires_at=timezone.now())
    held = actor("held", status="awake", node="ghost", lease_expires_at=soon)

    asked: list[dict] = []

    import rivet_django.cluster.gateway as gateway_module

    real = gateway_module.connection_counts

    async def spy(owners, *, timeout):
        asked.append({node: list(ids) for node, ids in owners.items()})
        return await real(owners, timeout=timeout)

    monkeypatch.setattr(gateway_module, "connection_counts", spy)
    assert console.connection_texts([asleep, gone, lapsed]) == {"asleep": "—", "gone": "—", "lapsed": "—"}
    assert asked == []  # nobody was asked

    started = time.monotonic()
    texts = console.connection_texts([asleep, held])
    assert texts == {"asleep": "—", "held": "?"}  # node "ghost" is not in the Node table
    assert asked == [{"ghost": ["held"]}]
    assert time.monotonic() - started < console.COUNTS_TIMEOUT + 2
    from rivet_django.node import get_node

    assert get_node() is None  # counting started no node in this process


# -- one live node (the demo) ----------------------------------------------------------------


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    server = LiveServer(str(tmp_path_factory.mktemp("connections") / "db.sqlite3"))
    server.env["DJANGO_DEBUG"] = "1"  # runactors serves the admin's CSS (for the screenshot)
    server.start()
    server.manage("shell", "-c", _USERS)
    yield server
    server.stop()
    server.kill()


def _row(server: LiveServer, actor_id: str) -> tuple[str, int, str | None]:
    """The actor's status, generation and node, as the database has them."""
    with sqlite3.connect(server.db_path, timeout=5) as db:
        status, generation, node = db.execute(
            "SELECT status, generation, node FROM rivet_django_actor WHERE id = ?", (actor_id,)
        ).fetchone()
    return str(status), int(generation), node


def _plain_process(env: dict[str, str]) -> dict[str, dict[str, str]]:
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", _PLAIN_PROCESS],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert time.monotonic() - started < 30
    return _cells(done.stdout)


def test_the_list_counts_live_connections_and_wakes_no_one(demo):
    http = _admin(demo.endpoint)
    napping = _increment(demo.endpoint, "counter", "napping")
    _sleep(http, [napping])
    before = _row(demo, napping)
    assert before[0] == "sleeping"

    async def scenario() -> None:
        async with AsyncClient(demo.endpoint) as client:
            busy, busy_conns = await _open(client, "busy", 2)
            dozing, dozing_conns = await _open(client, "dozing", 1)
            await asyncio.to_thread(_sleep, http, [dozing])  # its connection hibernates on the node
            assert _row(demo, dozing)[0] == "sleeping"

            cells = await asyncio.to_thread(_listing, http)
            assert cells[busy]["connections"] == "2"
            assert cells[busy]["status_now"] == "awake"
            assert cells[dozing]["connections"] == "1 hibernating"
            assert cells[napping]["connections"] == "—"
            plain = await asyncio.to_thread(_plain_process, demo.env)
            assert {a: plain[a]["connections"] for a in (busy, dozing, napping)} == {
                busy: "2",
                dozing: "1 hibernating",
                napping: "—",
            }
            await asyncio.to_thread(_screenshot, demo, busy)
            assert _row(demo, dozing)[0] == "sleeping"  # counting its hibernated connection did not wake it

            await busy_conns[0].dispose()
            await _eventually(lambda: _listing(http)[busy]["connections"] == "1")
            for conn in [*busy_conns[1:], *dozing_conns]:
                await conn.dispose()

    try:
        asyncio.run(scenario())
    finally:
        http.close()
    # Listing it (three times, from two processes) did not wake the asleep actor.
    assert _row(demo, napping) == before


async def _eventually(check, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(check):
        assert time.monotonic() < deadline, "never happened"
        await asyncio.sleep(0.2)


def _screenshot(server: LiveServer, busy: str) -> None:
    """The changelist in headless Chromium, with its connections column."""
    sync_api = require_playwright()
    shots = ARTIFACTS / "admin-console"
    shots.mkdir(parents=True, exist_ok=True)
    base = server.endpoint.removesuffix("/api/rivet")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1800, "height": 600})
            admin_login(page, base)
            page.goto(f"{base}{CHANGELIST}")
            row = page.locator("#result_list tr", has=page.locator(f'a[href*="{busy}"]'))
            assert row.locator("td.field-connections").inner_text().strip() == "2"
            assert page.locator("#result_list th.column-connections").count() == 1
            page.screenshot(path=str(shots / "5-connections.png"), full_page=True)
        finally:
            browser.close()


# -- two nodes -----------------------------------------------------------------------------------


@pytest.mark.skipif(
    not os.environ.get("CI") and not postgres_available(), reason="PostgreSQL is not running on 127.0.0.1:5432"
)
def test_a_count_comes_from_the_node_holding_the_actor_and_a_paused_node_shows_a_question_mark():
    with Cluster(2, lease_seconds=30.0) as cluster:
        done = cluster.manage("shell", "-c", _USERS, timeout=60)
        assert done.returncode == 0, done.stderr
        first, second = cluster.nodes
        http = _admin(first.endpoint)

        async def scenario() -> None:
            async with AsyncClient(second.endpoint) as client:
                remote, conns = await _open(client, "remote", 2)  # woken on n2 (placement "local")
                cells = (await asyncio.to_thread(_listing, http))[remote]
                assert (cells["node"], cells["connections"]) == ("n2", "2")
                plain = await asyncio.to_thread(_plain_process, cluster.environ())
                assert plain[remote]["connections"] == "2"

                cluster.pause(second)
                try:
                    started = time.monotonic()
                    cells = (await asyncio.to_thread(_listing, http))[remote]
                    assert cells["connections"] == "?"
                    assert time.monotonic() - started < 5  # the page does not wait for the node
                finally:
                    cluster.resume(second)
                await _eventually(lambda: _listing(http)[remote]["connections"] == "2")
                # n1's admin puts the actor held by n2 to sleep (the operation goes to n2).
                await asyncio.to_thread(_sleep, http, [remote])
                await _eventually(lambda: _listing(http)[remote]["connections"] == "2 hibernating")
                assert _listing(http)[remote]["status_now"] == "sleeping"
                for conn in conns:
                    await conn.dispose()

        try:
            asyncio.run(scenario())
        finally:
            http.close()
