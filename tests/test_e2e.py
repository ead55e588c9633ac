"""End to end: a real ``runactors`` process driven over HTTP by the Python clients.

Includes the crash-safety test: ``kill -9`` mid-stream, restart, and every
acknowledged increment is still there (commit durability).
"""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from rivet_django.client import ActorError, AsyncClient, Client
from tests.server import REPO, LiveServer


@pytest.fixture(scope="module")
def actor_server():
    server = LiveServer(node_id="e2e-node")
    with server:
        yield server


@pytest.mark.parametrize("encoding", ["json", "cbor", "bare"])
def test_sync_client_round_trip(actor_server, encoding):
    with Client(actor_server.endpoint, encoding=encoding) as client:
        handle = client.counter.get_or_create(["e2e", "a/b", encoding])
        assert handle.increment(5) == 5
        assert handle.action("increment", 2) == 7
        assert handle.getCount() == 7
        actor_id = handle.resolve()
        assert client.counter.get_for_id(actor_id).getCount() == 7
        assert client.counter.get(["e2e", "a/b", encoding]).getCount() == 7

        created = client.counter.create(["created", encoding], input={"start": 40})
        assert created.getCount() == 40
        assert created.getInput() == {"start": 40}
        with pytest.raises(ActorError) as dup:
            client.counter.create(["created", encoding])
        assert (dup.value.group, dup.value.code) == ("actor", "duplicate_key")

        with pytest.raises(ActorError) as missing:
            client.counter.get(["never-created", encoding]).getCount()
        assert missing.value.code == "not_found"

        with pytest.raises(ActorError) as user:
            handle.fail("my_code")
        assert (user.value.group, user.value.code, user.value.metadata) == ("user", "my_code", {"count": 7})

        with pytest.raises(ActorError) as internal:
            handle.crash()
        assert internal.value.code == "internal_error" and "secret" not in internal.value.message

        assert handle.echo(2**80, b"\x00\x01", "$x", ["$y", 1], None) == [2**80, b"\x00\x01", "$x", ["$y", 1], None]


async def test_async_client_concurrent_calls(actor_server):
    async with AsyncClient(actor_server.endpoint) as client:
        handles = [client.counter.get_or_create([f"conc-{i}"]) for i in range(8)]
        results = await asyncio.gather(*(h.increment(1) for h in handles for _ in range(10)))
        assert len(results) == 80
        assert await asyncio.gather(*(h.getCount() for h in handles)) == [10] * 8
        handle = client.counter.get_or_create(["to-destroy"])
        await handle.increment(3)
        await handle.destroy()
        # The key is free again: a fresh actor starts from zero.
        assert await client.counter.get_or_create(["to-destroy"]).getCount() == 0


def test_sigterm_sleeps_actors_and_exits_zero(tmp_path):
    server = LiveServer(str(tmp_path / "db.sqlite3"), node_id="term-node")
    server.start()
    try:
        with Client(server.endpoint) as client:
            assert client.counter.get_or_create(["term"]).increment(9) == 9
        assert server.stop() == 0
        assert "Stopped." in server.log()
        server.start()
        with Client(server.endpoint) as client:
            assert client.counter.get_or_create(["term"]).getCount() == 9
    finally:
        server.stop()


def test_kill_minus_9_keeps_every_acknowledged_increment(tmp_path):
    server = LiveServer(str(tmp_path / "db.sqlite3"), node_id="crash-node")
    server.start()
    acked = [0] * 4
    stop = threading.Event()

    def worker(index: int) -> None:
        with Client(server.endpoint, timeout=5.0) as client:
            handle = client.counter.get_or_create(["crash-test"])
            deadline = time.monotonic() + 20
            while not stop.is_set() and time.monotonic() < deadline:
                try:
                    handle.increment(1)
                except Exception:
                    return  # the server died: this call was never acknowledged
                acked[index] += 1

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    try:
        for t in threads:
            t.start()
        deadline = time.monotonic() + 15
        while sum(acked) < 200 and time.monotonic() < deadline:
            time.sleep(0.01)
        server.kill()
        stop.set()
        for t in threads:
            t.join(timeout=10)
        acknowledged = sum(acked)
        assert acknowledged > 0
        server.start()
        with Client(server.endpoint) as client:
            count = client.counter.get_or_create(["crash-test"]).getCount()
        assert count >= acknowledged
        # At most the calls in flight at the kill (one per worker) went through unacknowledged.
        assert count <= acknowledged + len(threads)
    finally:
        stop.set()
        server.stop()


async def test_close_reasons_reach_the_wire(tmp_path):
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    from rivet_django import protocol

    server = LiveServer(str(tmp_path / "db.sqlite3"), node_id="close-node")
    server.start()
    try:
        base = server.endpoint.replace("http://", "ws://")
        protocols = ["rivet", "rivet_encoding.json"]
        async with connect(f"{base}/gateway/counter/connect?rvt-namespace=default&rvt-method=get&rvt-key=missing", subprotocols=protocols) as ws:
            # As RivetKit's gateway: no Error frame, only the close reason the client parses.
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 10)
            assert ws.close_code == 1011 and ws.close_reason == "actor.not_found"

        ws = await connect(
            f"{base}/gateway/counter/connect?rvt-namespace=default&rvt-method=getOrCreate&rvt-runner=default&rvt-key=term",
            subprotocols=protocols,
        )
        assert isinstance(protocol.decode_to_client("json", await asyncio.wait_for(ws.recv(), 10)), protocol.Init)
        # SIGTERM: the actor sleeps and the connection is closed with a reason the client understands.
        stopping = asyncio.get_running_loop().run_in_executor(None, server.stop)
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 20)
        assert ws.close_code == 1011 and ws.close_reason == "actor.stopping"
        assert await stopping == 0
    finally:
        server.stop()


def test_daphne_server_option(tmp_path):
    """``runactors --server daphne`` serves the same API and WebSockets (close reasons
    included: the compat patch), and stops cleanly."""
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    from rivet_django import protocol

    server = LiveServer(str(tmp_path / "db.sqlite3"), node_id="daphne-node", server="daphne")
    server.start()
    try:
        with Client(server.endpoint, encoding="cbor") as client:
            assert client.counter.get_or_create(["dp"]).increment(4) == 4
        # Daphne parses any method token: a made-up one reaches on_request (RivetKit passes
        # every method; uvicorn's httptools parser knows the registered methods only).
        import httpx

        custom = httpx.request(
            "CUSTOM",
            server.endpoint + "/gateway/counter/request/count?rvt-namespace=default&rvt-method=get&rvt-key=dp",
            timeout=10,
        )
        assert custom.status_code == 200 and custom.json() == {"count": 4, "method": "CUSTOM"}
        base = server.endpoint.replace("http://", "ws://") + "/gateway/counter/connect?rvt-namespace=default&rvt-method=get"
        with connect(base + "&rvt-key=dp", subprotocols=["rivet", "rivet_encoding.json"]) as ws:
            assert isinstance(protocol.decode_to_client("json", ws.recv(timeout=10)), protocol.Init)
            ws.send(protocol.encode_to_server("json", protocol.ActionRequest(1, "getCount", [])))
            assert protocol.decode_to_client("json", ws.recv(timeout=10)) == protocol.ActionResponse(1, 4)
        with (
            connect(base + "&rvt-key=missing", subprotocols=["rivet", "rivet_encoding.json"]) as ws,
            pytest.raises(ConnectionClosed) as closed,
        ):
            ws.recv(timeout=10)
        assert closed.value.rcvd is not None
        assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (1011, "actor.not_found")
        assert server.stop() == 0
        assert "Stopped." in server.log()
    finally:
        server.stop()


async def test_raw_websocket_and_fetch_through_python_handles(actor_server):
    async with AsyncClient(actor_server.endpoint) as client:
        handle = client.counter.get_or_create(["raw-py"])
        assert await handle.increment(6) == 6
        response = await handle.fetch("/count")
        assert response.status_code == 200 and response.json() == {"count": 6, "method": "GET"}
        async with await handle.websocket("/echo?x=1") as ws:
            assert await asyncio.wait_for(ws.recv(), 10) == "welcome /echo"
            await ws.send(b"\x00\x01")
            assert await asyncio.wait_for(ws.recv(), 10) == b"\x00\x01"
            await ws.send("count")
            assert await asyncio.wait_for(ws.recv(), 10) == "6"


def test_sync_raw_websocket(actor_server):
    with Client(actor_server.endpoint) as client, client.counter.get_or_create(["raw-sync"]).websocket("/s") as ws:
        assert ws.recv(timeout=10) == "welcome /s"
        ws.send("hi")
        assert ws.recv(timeout=10) == "hi"


def test_shells_using_the_local_client_exit_cleanly_and_release_their_actors(tmp_path):
    """A standalone process (no runactors) hosts actors through ``Client.local()`` on a
    temporary client, and at exit releases them: the next process takes them at once, and
    nothing is printed but the result (the final flush must run before the interpreter
    shuts its thread pools down)."""
    import subprocess
    import sys

    live = LiveServer(str(tmp_path / "db.sqlite3"))  # its database and environment only
    live.migrate()
    code = (
        "from rivet_django.client import Client; "
        "print('count', Client.local().counter.get_or_create(['shell']).increment(1))"
    )
    for expected in (1, 2):
        started = time.monotonic()
        done = subprocess.run(
            [sys.executable, "manage.py", "shell", "-c", code],
            cwd=REPO, env=live.env, capture_output=True, text=True, timeout=60,
        )
        assert done.returncode == 0, done.stderr
        assert f"count {expected}" in done.stdout
        assert "Traceback" not in done.stderr + done.stdout, done.stderr
        assert time.monotonic() - started < 20  # not waiting for a lease to expire


def _serve(args: list[str], env: dict[str, str], port: int, log_path: str, timeout: float = 30.0):
    """Start a web server process of the site and wait until its port answers."""
    import socket
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, *args], cwd=REPO, env=env, stdout=open(log_path, "ab"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{args} exited with {proc.returncode}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return proc
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"{args} did not listen on {port}")


def test_the_sites_other_processes_reach_the_actors_runactors_hosts(tmp_path):
    """README's demo running (``runactors``, SQLite, in-memory channel layer): a shell,
    ``runserver`` (views and the actor API) and a WSGI server all reach its actors;
    the actor runs once, in runactors, and none of them registers as a node."""
    import subprocess
    import sys

    import httpx

    from tests.server import free_port

    with LiveServer(str(tmp_path / "db.sqlite3"), node_id="site-node") as live:
        code = (
            "from rivet_django.client import Client; "
            "print('count', Client.local().counter.get_or_create(['shared']).increment(1))"
        )
        done = subprocess.run(
            [sys.executable, "manage.py", "shell", "-c", code],
            cwd=REPO, env=live.env, capture_output=True, text=True, timeout=60,
        )
        assert done.returncode == 0, done.stderr
        assert "count 1" in done.stdout
        assert "Traceback" not in done.stderr

        procs = []
        try:
            rs_port, wsgi_port = free_port(), free_port()
            procs.append(_serve(["manage.py", "runserver", str(rs_port), "--noreload"], live.env, rs_port, live.log_path))
            wsgi = (
                "from wsgiref.simple_server import make_server; import demo_project.wsgi as w; "
                f"make_server('127.0.0.1', {wsgi_port}, w.application).serve_forever()"
            )
            env = {**live.env, "PYTHONPATH": str(REPO / "demo_project")}
            procs.append(_serve(["-c", wsgi], env, wsgi_port, live.log_path))
            with httpx.Client(timeout=30) as http:
                # runserver: an async view, a sync view, and the actor API itself.
                r = http.post(f"http://127.0.0.1:{rs_port}/counter/shared/increment")
                assert r.json() == {"key": "shared", "count": 2}, r.text
                assert http.get(f"http://127.0.0.1:{rs_port}/counter/shared/").json()["count"] == 2
                r = http.post(
                    f"http://127.0.0.1:{rs_port}/api/rivet/gateway/counter/action/increment",
                    params={"rvt-method": "getOrCreate", "rvt-key": "shared"},
                    json={"args": [1]},
                )
                assert r.status_code == 200 and r.json() == {"output": 3}, r.text
                # A sync view under a WSGI server.
                assert http.get(f"http://127.0.0.1:{wsgi_port}/counter/shared/").json()["count"] == 3
                # runactors itself agrees: one actor, one count.
                r = http.post(
                    f"{live.endpoint}/gateway/counter/action/getCount",
                    params={"rvt-method": "get", "rvt-key": "shared"},
                    json={"args": []},
                )
                assert r.json() == {"output": 3}
        finally:
            for proc in procs:
                proc.terminate()
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
        nodes = subprocess.run(
            [sys.executable, "manage.py", "rivet_nodes", "--json"],
            cwd=REPO, env=live.env, capture_output=True, text=True, timeout=60,
        )
        import json

        table = json.loads(nodes.stdout)["nodes"]
        assert [row["id"] for row in table] == ["site-node"], table
        assert table[0]["live"] and table[0]["actors"] >= 1


def test_runactors_reload_restarts_on_code_changes_and_hands_actors_off(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import urllib.request

    import httpx

    from tests.server import free_port

    live = LiveServer(str(tmp_path / "db.sqlite3"), settings="tests.settings_live")
    live.migrate()
    port = free_port()
    log_path = str(tmp_path / "reload.log")
    proc = subprocess.Popen(
        [sys.executable, "manage.py", "runactors", "--reload", "--port", str(port), "--node-id", "reload-node"],
        cwd=REPO, env=live.env, stdout=open(log_path, "ab"), stderr=subprocess.STDOUT,
    )
    endpoint = f"http://127.0.0.1:{port}/api/rivet"

    def wait_up(after_banners: int) -> None:
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:
            text = open(log_path).read()
            if text.count("Listening on") >= after_banners:
                try:
                    with urllib.request.urlopen(endpoint + "/metadata", timeout=1):
                        return
                except OSError:
                    pass
            time.sleep(0.1)
        raise AssertionError(open(log_path).read()[-3000:])

    def increment() -> int:
        r = httpx.post(
            f"{endpoint}/gateway/counter/action/increment",
            params={"rvt-method": "getOrCreate", "rvt-key": "reloaded"}, json={"args": [1]}, timeout=20,
        )
        assert r.status_code == 200, r.text
        return r.json()["output"]

    try:
        wait_up(1)
        assert increment() == 1
        os.utime(REPO / "tests" / "testapp" / "actors.py")  # "edit" an actors module
        wait_up(2)
        started = time.monotonic()
        assert increment() == 2  # the final state was written and the lease released
        assert time.monotonic() - started < 10
        text = open(log_path).read()
        assert "changed: handing the actors off and restarting" in text
        assert "Stopped." in text
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            assert proc.wait(timeout=40) == 0
        except subprocess.TimeoutExpired:
            proc.kill()
            raise


def test_runserver_alone_hosts_under_a_stable_id_so_a_restart_takes_its_actors_back(tmp_path):
    """No runactors: runserver hosts the actors itself, as node ``<host>:runserver:<port>``
    with its address; an autoreload (here: kill -9 and start again) takes the leases back
    at once, and a shell forwards to it."""
    import signal
    import subprocess
    import sys

    import httpx

    from tests.server import free_port

    live = LiveServer(str(tmp_path / "db.sqlite3"))
    live.migrate()
    port = free_port()
    log_path = str(tmp_path / "runserver.log")

    def increment() -> int:
        r = httpx.post(f"http://127.0.0.1:{port}/counter/alone/increment", timeout=20)
        assert r.status_code == 200, r.text
        return r.json()["count"]

    proc = _serve(["manage.py", "runserver", str(port), "--noreload"], live.env, port, log_path)
    try:
        assert increment() == 1
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        proc = _serve(["manage.py", "runserver", str(port), "--noreload"], live.env, port, log_path)
        started = time.monotonic()
        assert increment() == 2
        assert time.monotonic() - started < 10  # not the 30 s lease of a new node id
        code = "from rivet_django.client import Client; print('count', Client.local().counter.get_or_create(['alone']).increment(1))"
        done = subprocess.run(
            [sys.executable, "manage.py", "shell", "-c", code],
            cwd=REPO, env=live.env, capture_output=True, text=True, timeout=60,
        )
        assert "count 3" in done.stdout, done.stdout + done.stderr
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_runactors_serves_static_files_under_debug_like_runserver(tmp_path):
    """The admin's CSS under DEBUG (django.contrib.staticfiles); without DEBUG only after
    collectstatic (the demo's WhiteNoise), as a deployment would serve them."""
    import subprocess
    import sys

    import httpx

    static_root = tmp_path / "static"
    for debug, collected, expected in (("1", False, 200), ("0", False, 404), ("0", True, 200)):
        server = LiveServer(str(tmp_path / f"db-{debug}-{collected}.sqlite3"))
        server.env["DJANGO_DEBUG"] = debug
        server.env["RIVET_STATIC_ROOT"] = str(static_root)
        if collected:
            subprocess.run(
                [sys.executable, "manage.py", "collectstatic", "--noinput", "-v", "0"],
                cwd=REPO, env=server.env, check=True, timeout=120,
            )  # fmt: skip
        with server:
            base = server.endpoint.removesuffix("/api/rivet")
            response = httpx.get(f"{base}/static/admin/css/base.css", timeout=10)
            assert response.status_code == expected, (debug, response.status_code)
            # The banner says whether the inspector is open (DEBUG, no global token).
            assert ("Inspector:  OPEN" in server.log()) == (debug == "1"), server.log()
            if expected == 200:
                assert "text/css" in response.headers["content-type"]
            if debug == "1":
                # The API docs page loads Swagger UI from django-ninja's own files: no CDN.
                page = httpx.get(f"{server.endpoint}/docs", timeout=10)
                assert page.status_code == 200 and "cdn" not in page.text.lower()
                assert "/static/ninja/swagger-ui-bundle.js" in page.text
                bundle = httpx.get(f"{base}/static/ninja/swagger-ui-bundle.js", timeout=10)
                assert bundle.status_code == 200 and len(bundle.content) > 100_000


def test_the_demo_has_a_landing_page_whose_links_work(tmp_path):
    import re

    import httpx

    with LiveServer(str(tmp_path / "db.sqlite3")) as server:
        base = server.endpoint.removesuffix("/api/rivet")
        page = httpx.get(f"{base}/", timeout=10)
        assert page.status_code == 200
        for title in ("Counter", "Chat", "Notes", "Reminder", "Worker", "Agent", "API docs", "Admin"):
            assert title in page.text
        assert "is not registered here" not in page.text  # every demo's actor is
        links = sorted(set(re.findall(r'href="(/[^"]*)"', page.text)))
        assert {"/chat/", "/api/rivet/docs", "/admin/"} <= set(links)
        for link in links:
            response = httpx.get(f"{base}{link}", timeout=10)
            assert response.status_code in (200, 302), (link, response.status_code)
