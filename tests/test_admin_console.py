"""The admin as a console, in a live ``runactors``: a staff user edits an actor's state,
calls an action, puts it to sleep, wakes it and destroys it, all through the runtime;
a user who may only view sees no buttons and is refused every change. Then the same
in a real browser (Playwright + Debian Chromium) on the demo, styled."""

from __future__ import annotations

import html
import re
import sqlite3

import httpx
import pytest

from tests.browser import ARTIFACTS, CHROMIUM_ARGS, admin_login, chromium_path, require_playwright
from tests.server import LiveServer

pytestmark = pytest.mark.timeout(180)

_USERS = """
from django.contrib.auth.models import Permission, User
User.objects.create_superuser('boss', 'b@example.com', 'pw')
viewer = User.objects.create_user('viewer', 'v@example.com', 'pw', is_staff=True)
viewer.user_permissions.add(Permission.objects.get(codename='view_actor'))
"""


def _call(endpoint: str, name: str, key: str, action: str, args: list) -> httpx.Response:
    return httpx.post(
        f"{endpoint}/gateway/{name}/action/{action}",
        params={"rvt-method": "getOrCreate", "rvt-key": key},
        json={"args": args},
        timeout=20,
    )


def _token(page: httpx.Response) -> str:
    match = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
    assert match, page.text[:2000]
    return match.group(1)


def _login(http: httpx.Client, username: str) -> None:
    form = http.get("/admin/login/")
    http.post("/admin/login/", data={"username": username, "password": "pw", "csrfmiddlewaretoken": _token(form)})


def _post(http: httpx.Client, url: str, data: dict[str, str], *, follow: bool = True) -> httpx.Response:
    page = http.get(url)
    return http.post(url, data={**data, "csrfmiddlewaretoken": _token(page)}, follow_redirects=follow)


def _messages(page: httpx.Response) -> str:
    return html.unescape(" ".join(re.findall(r'<li class="(?:success|error)">(.*?)</li>', page.text, re.S)))


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    server = LiveServer(str(tmp_path_factory.mktemp("console") / "db.sqlite3"), settings="tests.settings_live")
    server.start()
    server.manage("shell", "-c", _USERS)
    yield server
    server.stop()
    server.kill()


def _status(server: LiveServer, actor_id: str) -> str:
    with sqlite3.connect(server.db_path, timeout=5) as db:
        return str(db.execute("SELECT status FROM rivet_django_actor WHERE id = ?", (actor_id,)).fetchone()[0])


def _actor_id(response: httpx.Response) -> str:
    assert response.status_code == 200, response.text
    return response.headers["x-rivet-actor"]


def test_staff_operate_an_actor_through_the_runtime(live):
    actor_id = _actor_id(_call(live.endpoint, "counter", "console", "increment", [1]))
    base = live.endpoint.removesuffix("/api/rivet")
    console = f"/admin/rivet_django/actor/{actor_id}/operate/"
    with httpx.Client(base_url=base, timeout=20) as http:
        _login(http, "boss")
        page = http.get(console)
        assert page.status_code == 200 and "Replace the state" in page.text
        assert "&quot;count&quot;: 1" in page.text and "increment" in page.text

        done = _post(http, console, {"op": "state", "state": '{"count": 41}'})
        assert "State replaced and committed." in _messages(done)
        called = _post(http, console, {"op": "action", "action": "increment", "args": "[1]"})
        assert "ncrement(...) returned: 42" in _messages(called)
        # An edit over a state that changed since the page showed it is refused, clearly.
        form = http.get(console)
        expected = re.search(r'name="expected" value="([0-9a-f]+)"', form.text).group(1)
        assert _call(live.endpoint, "counter", "console", "increment", [1]).json()["output"] == 43
        stale = _post(http, console, {"op": "state", "state": '{"count": 0}', "expected": expected})
        assert "The state changed since it was read" in _messages(stale), _messages(stale)
        assert "Nothing was changed" in _messages(stale)
        assert _call(live.endpoint, "counter", "console", "increment", [-1]).json()["output"] == 42
        # Back to the state the form showed: the same fingerprint, so the edit goes through.
        fresh = re.search(r'name="expected" value="([0-9a-f]+)"', http.get(console).text).group(1)
        assert fresh == expected
        kept = _post(http, console, {"op": "state", "state": '{"count": 42}', "expected": fresh})
        assert "State replaced and committed." in _messages(kept)
        bad = _post(http, console, {"op": "state", "state": "{not json"})
        assert "not valid JSON" in _messages(bad) and "Nothing was changed" in _messages(bad)
        refused = _post(http, console, {"op": "action", "action": "add_kw", "args": "[1, 2, 3]"})
        assert "invalid_request" in _messages(refused)
        assert _call(live.endpoint, "counter", "console", "increment", [0]).json()["output"] == 42

        slept = _post(http, console, {"op": "sleep"}, follow=False)
        assert slept.status_code == 302
        assert _status(live, actor_id) == "sleeping"  # (the console page, shown next, wakes it again)
        assert "Put to sleep." in _messages(http.get(console))
        assert "Awake." in _messages(_post(http, console, {"op": "wake"}))

        confirm = http.get(f"/admin/rivet_django/actor/{actor_id}/destroy/")
        assert confirm.status_code == 200 and "Yes, destroy it" in confirm.text
        gone = _post(http, f"/admin/rivet_django/actor/{actor_id}/destroy/", {})
        assert gone.url.path == "/admin/rivet_django/actor/" and "Destroyed" in _messages(gone)
        fresh = _call(live.endpoint, "counter", "console", "increment", [0])
        assert fresh.json()["output"] == 0 and fresh.headers["x-rivet-actor"] != actor_id


def test_admin_actions_sleep_and_destroy_many(live):
    ids = [_actor_id(_call(live.endpoint, "counter", f"many-{i}", "increment", [1])) for i in range(2)]
    base = live.endpoint.removesuffix("/api/rivet")
    with httpx.Client(base_url=base, timeout=20) as http:
        _login(http, "boss")
        changelist = "/admin/rivet_django/actor/"
        listing = http.get(changelist)
        assert "Put the selected actors to sleep" in listing.text
        slept = http.post(
            changelist,
            data={"action": "sleep_actors", "_selected_action": ids, "csrfmiddlewaretoken": _token(listing)},
            follow_redirects=True,
        )
        assert "Put 2 actor(s) to sleep." in _messages(slept)
        assert [_status(live, actor_id) for actor_id in ids] == ["sleeping", "sleeping"]
        confirm = http.post(
            changelist,
            data={"action": "destroy_actors", "_selected_action": ids, "csrfmiddlewaretoken": _token(listing)},
        )
        assert confirm.status_code == 200 and "Yes, destroy them" in confirm.text
        done = http.post(
            changelist,
            data={
                "action": "destroy_actors",
                "_selected_action": ids,
                "confirmed": "yes",
                "csrfmiddlewaretoken": _token(confirm),
            },
            follow_redirects=True,
        )
        assert "Destroyed 2 actor(s)." in _messages(done)
    for i in range(2):
        assert _call(live.endpoint, "counter", f"many-{i}", "increment", [0]).json()["output"] == 0


def test_a_user_who_may_only_view_gets_no_buttons_and_no_changes(live):
    actor_id = _actor_id(_call(live.endpoint, "counter", "viewed", "increment", [5]))
    base = live.endpoint.removesuffix("/api/rivet")
    console = f"/admin/rivet_django/actor/{actor_id}/operate/"
    with httpx.Client(base_url=base, timeout=20) as http:
        _login(http, "viewer")
        page = http.get(console)
        assert page.status_code == 200 and "&quot;count&quot;: 5" in page.text
        assert "Replace the state" not in page.text and "Put to sleep" not in page.text
        refused = http.post(console, data={"op": "state", "state": "{}", "csrfmiddlewaretoken": _token(page)})
        assert refused.status_code == 403
        assert http.get(f"/admin/rivet_django/actor/{actor_id}/destroy/").status_code == 403
        assert "Put the selected actors to sleep" not in http.get("/admin/rivet_django/actor/").text
    assert _call(live.endpoint, "counter", "viewed", "increment", [0]).json()["output"] == 5


def test_the_console_in_a_browser_is_styled_and_works(tmp_path):
    sync_api = require_playwright()
    server = LiveServer(str(tmp_path / "db.sqlite3"))
    server.env["DJANGO_DEBUG"] = "1"  # runactors serves the admin's CSS, as runserver does
    server.start()
    shots = ARTIFACTS / "admin-console"
    shots.mkdir(parents=True, exist_ok=True)
    try:
        server.manage("shell", "-c", _USERS)
        actor_id = _actor_id(_call(server.endpoint, "counter", "browser", "increment", [2]))
        base = server.endpoint.removesuffix("/api/rivet")
        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1200, "height": 900})
                admin_login(page, base)
                page.goto(f"{base}/admin/rivet_django/actor/{actor_id}/change/")
                # Styled: Django's admin CSS gives the header its colors.
                header = page.locator("#header")
                assert header.evaluate("e => getComputedStyle(e).backgroundColor") not in ("rgba(0, 0, 0, 0)", "")
                page.screenshot(path=str(shots / "1-actor.png"), full_page=True)
                page.click("text=Open the console")
                page.fill("[data-testid=state-input]", '{"count": 10}')
                page.click("[data-testid=state-save]")
                assert "State replaced" in page.locator(".messagelist").inner_text()
                page.select_option("[data-testid=action-name]", "increment")
                page.fill("[data-testid=action-args]", "[5]")
                page.click("[data-testid=action-call]")
                assert "returned: 15" in page.locator(".messagelist").inner_text()
                page.screenshot(path=str(shots / "2-console.png"), full_page=True)
                page.click("[data-testid=destroy]")
                page.screenshot(path=str(shots / "3-destroy.png"))
                page.click("[data-testid=destroy-confirm]")
                assert "Destroyed" in page.locator(".messagelist").inner_text()
                page.screenshot(path=str(shots / "4-destroyed.png"))
            finally:
                browser.close()
        assert _call(server.endpoint, "counter", "browser", "getCount", []).json()["output"] == 0
    finally:
        server.stop()
        server.kill()


def test_staff_close_a_connection_and_cancel_a_schedule(live):
    import asyncio

    from rivet_django.client import AsyncClient

    schedule_id = _call(live.endpoint, "scheduled", "console", "add", ["after", 3600, "record", "later"]).json()[
        "output"
    ]
    actor_id = _call(live.endpoint, "scheduled", "console", "schedules", []).headers["x-rivet-actor"]
    base = live.endpoint.removesuffix("/api/rivet")
    console = f"/admin/rivet_django/actor/{actor_id}/operate/"

    async def scenario() -> None:
        async with AsyncClient(live.endpoint) as client:
            conn = client.scheduled.get_for_id(actor_id).connect()
            closed = asyncio.Event()
            conn.on_close(lambda *_: closed.set())
            assert await conn.schedules()  # open now
            with httpx.Client(base_url=base, timeout=20) as http:
                _login(http, "boss")
                page = await asyncio.to_thread(http.get, console)
                conn_id = re.search(r'data-testid="disconnect-([0-9a-f]+)"', page.text).group(1)
                assert schedule_id in page.text
                done = await asyncio.to_thread(_post, http, console, {"op": "disconnect", "conn": conn_id})
                assert "Connection closed." in _messages(done)
                await asyncio.wait_for(closed.wait(), 10)
                cancelled = await asyncio.to_thread(
                    _post, http, console, {"op": "cancel_schedule", "schedule": schedule_id}
                )
                assert "Schedule cancelled." in _messages(cancelled)
                again = await asyncio.to_thread(
                    _post, http, console, {"op": "cancel_schedule", "schedule": schedule_id}
                )
                assert "No such schedule" in _messages(again)
            await conn.dispose()

    asyncio.run(scenario())
    assert _call(live.endpoint, "scheduled", "console", "schedules", []).json()["output"] == []


def test_staff_replay_a_workflow_from_the_console(live):
    """The console lists a workflow's entries and replays it from a step, through the runtime."""
    import time

    actor_id = _actor_id(_call(live.endpoint, "wfSteps", "console", "progress", []))
    base = live.endpoint.removesuffix("/api/rivet")
    console = f"/admin/rivet_django/actor/{actor_id}/operate/"

    def done() -> list[str]:
        return _call(live.endpoint, "wfSteps", "console", "progress", []).json()["output"]["done"]

    deadline = time.monotonic() + 10
    while done() != ["a", "b", "c"] and time.monotonic() < deadline:
        time.sleep(0.05)
    with httpx.Client(base_url=base, timeout=20) as http:
        _login(http, "boss")
        page = http.get(console)
        assert "Workflow: completed" in page.text and "_rivet_workflow_wake" not in page.text
        entry_b = re.search(
            r'name="entry" value="(\d+)"><input type="submit" value="Replay from here" '
            r'data-testid="replay-\d+"></form></td></tr>',
            page.text.split("<td>b</td>", 1)[1],
        )
        assert entry_b, page.text
        replayed = _post(http, console, {"op": "replay", "entry": entry_b.group(1)})
        assert f"Workflow replayed from entry {entry_b.group(1)}." in _messages(replayed)
        deadline = time.monotonic() + 10
        while done() != ["a", "b", "c", "b", "c"] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert done() == ["a", "b", "c", "b", "c"]  # a kept its result; b and c ran again
        refused = _post(http, console, {"op": "replay", "entry": "999999"})
        assert "Workflow step not found: 999999" in _messages(refused) and "Nothing was changed" in _messages(refused)
    with httpx.Client(base_url=base, timeout=20) as http:
        _login(http, "viewer")
        page = http.get(console)
        assert "Replay from here" not in page.text and "Workflow: completed" in page.text
        forbidden = http.post(console, data={"op": "replay", "csrfmiddlewaretoken": _token(page)})
        assert forbidden.status_code == 403
