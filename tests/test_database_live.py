"""``self.db`` in a live ``runactors`` process: kill -9 under a stream of acknowledged
inserts loses none of them (both backends), and the admin browses an actor's tables
through the runtime."""

from __future__ import annotations

import re
import threading
import time

import httpx
import pytest

from tests.server import LiveServer

pytestmark = pytest.mark.timeout(180)


def _action(endpoint: str, key: str, action: str, args: list, timeout: float = 20.0):
    response = httpx.post(
        f"{endpoint}/gateway/notebook/action/{action}",
        params={"rvt-method": "getOrCreate", "rvt-key": key},
        json={"args": args},
        timeout=timeout,
    )
    assert response.status_code == 200, response.text
    return response.json()["output"]


@pytest.mark.parametrize("backend", ["local", "shared"])
def test_kill_9_under_acknowledged_inserts_loses_none(tmp_path, backend):
    disk = tmp_path / "disk-1"
    env = {"RIVET_TEST_DB_BACKEND": backend, "RIVET_TEST_DB_DIR": str(disk)}
    server = LiveServer(str(tmp_path / "db.sqlite3"), env=env, settings="tests.settings_live")
    server.start()
    acked: list[str] = []
    stop = threading.Event()

    def stream() -> None:
        with httpx.Client(timeout=5) as http:
            for i in range(100_000):
                if stop.is_set():
                    return
                try:
                    response = http.post(
                        f"{server.endpoint}/gateway/notebook/action/add",
                        params={"rvt-method": "getOrCreate", "rvt-key": "crash"},
                        json={"args": [f"row {i}"]},
                    )
                except httpx.HTTPError:
                    return  # the server died with this one in flight: not acknowledged
                if response.status_code == 200:
                    acked.append(f"row {i}")

    writer = threading.Thread(target=stream)
    try:
        writer.start()
        deadline = time.monotonic() + 20
        while len(acked) < 200 and time.monotonic() < deadline:
            time.sleep(0.02)
        server.kill()
    finally:
        stop.set()
        writer.join(timeout=20)
    assert len(acked) >= 200
    if backend == "shared":
        # The file is only a cache: the node comes back on another disk.
        server.env["RIVET_TEST_DB_DIR"] = str(tmp_path / "disk-2")
    server.start()
    try:
        texts = [note["text"] for note in _action(server.endpoint, "crash", "notes", [])]
        missing = set(acked) - set(texts)
        assert not missing, f"{len(missing)} of {len(acked)} acknowledged rows lost"
        assert len(texts) == len(set(texts)) and len(texts) <= len(acked) + 1
    finally:
        server.stop()
        server.kill()


def _login(http: httpx.Client, username: str) -> None:
    form = http.get("/admin/login/")
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form.text).group(1)
    http.post("/admin/login/", data={"username": username, "password": "pw", "csrfmiddlewaretoken": token})


def test_staff_browse_an_actors_tables_in_the_admin(tmp_path):
    server = LiveServer(str(tmp_path / "db.sqlite3"), settings="tests.settings_live")
    server.start()
    try:
        _action(server.endpoint, "admin-view", "add", ["first <b>note</b>", ["x"]])
        _action(server.endpoint, "admin-view", "add", ["second", []])
        create = (
            "from django.contrib.auth.models import User\n"
            "User.objects.create_superuser('boss', 'b@example.com', 'pw')\n"
            "User.objects.create_user('joe', 'j@example.com', 'pw')\n"
            "from rivet_django.models import Actor\n"
            "print('ID', Actor.objects.get(name='notebook').pk)\n"
        )
        done = server.manage("shell", "-c", create)
        actor_id = done.stdout.split("ID ", 1)[1].split()[0]
        base = server.endpoint.removesuffix("/api/rivet")
        with httpx.Client(base_url=base, timeout=20) as joe:
            _login(joe, "joe")
            page = joe.get(f"/admin/rivet_django/actor/{actor_id}/database/")
            assert page.status_code == 302 and "/admin/login/" in page.headers["location"]
        with httpx.Client(base_url=base, timeout=20) as boss:
            _login(boss, "boss")
            change = boss.get(f"/admin/rivet_django/actor/{actor_id}/change/")
            assert change.status_code == 200 and "Browse its tables" in change.text
            tables = boss.get(f"/admin/rivet_django/actor/{actor_id}/database/")
            assert tables.status_code == 200
            assert "notes_note" in tables.text and "notes_tag" in tables.text and "django_migrations" in tables.text
            assert "<td>2</td>" in tables.text  # two notes
            rows = boss.get(f"/admin/rivet_django/actor/{actor_id}/database/", params={"table": "notes_note"})
            assert rows.status_code == 200
            assert "first &lt;b&gt;note&lt;/b&gt;" in rows.text and "second" in rows.text  # escaped
            assert "2 rows" in rows.text
            bad = boss.get(
                f"/admin/rivet_django/actor/{actor_id}/database/", params={"table": 'x"; DROP TABLE notes_note; --'}
            )
            assert bad.status_code == 200 and "actor.invalid_request" in bad.text and "has no table" in bad.text
        # Read-only, and nothing was dropped.
        assert len(_action(server.endpoint, "admin-view", "notes", [])) == 2
    finally:
        server.stop()
        server.kill()
