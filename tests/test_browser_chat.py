"""The chat demo (``demo_project/chat``) end to end, against a real ``runactors``.

The browser test opens the chat page in headless Debian Chromium (Playwright,
see :mod:`tests.browser`): the page loads the official RivetKit client from the
committed bundle and talks to the ``chatRoom`` actor over its WebSocket. Two
people join one room; what one sends, the other sees within 2 s; presence and
the typing indicator reach the other page too; the page rejoins by itself
after the server restarts. Screenshots go to ``tests/artifacts/``.

The other tests check the actor's rules over plain HTTP with the Python client.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from rivet_django.client import ActorError, Client
from tests.browser import ARTIFACTS, CHROMIUM_ARGS, PageRecorder, chromium_path, require_playwright
from tests.server import REPO, LiveServer

# Server start and stop are bounded by LiveServer; this bounds each test.
pytestmark = pytest.mark.timeout(120)

DELIVERY_BOUND = 2.0  # seconds from "send" on one page to the message on the other
CONNECT_TIMEOUT = 15.0


@pytest.fixture(scope="module")
def server() -> Iterator[LiveServer]:
    with LiveServer(node_id="chat-node") as live:
        yield live


@pytest.fixture
def client(server: LiveServer) -> Iterator[Client]:
    with Client(server.endpoint) as c:
        yield c


def _room() -> str:
    return f"test-{uuid.uuid4().hex[:10]}"


# -- the actor's rules, over HTTP ------------------------------------------------


def test_joining_needs_a_sensible_name(client: Client) -> None:
    room = _room()
    for params, code in [
        (None, "name_required"),
        ({"name": "   "}, "name_required"),
        ({"name": "x" * 33}, "name_too_long"),
    ]:
        with pytest.raises(ActorError) as caught:
            client.chatRoom.get_or_create([room], params=params).action("history")
        assert (caught.value.group, caught.value.code) == ("user", code), params


def test_messages_are_validated_stamped_and_bounded(client: Client) -> None:
    handle = client.chatRoom.get_or_create([_room()], params={"name": "  Ada "})
    message = handle.action("sendMessage", "  hello  ")
    assert message["name"] == "Ada" and message["text"] == "hello"
    assert isinstance(message["id"], str) and abs(message["ts"] / 1000 - time.time()) < 60
    for text, code in [("  ", "empty_message"), ("x" * 2001, "message_too_long")]:
        with pytest.raises(ActorError) as caught:
            handle.action("sendMessage", text)
        assert caught.value.code == code
    for i in range(104):
        handle.action("sendMessage", f"m{i}")
    history = handle.action("history")
    assert len(history) == 100
    assert [m["text"] for m in history[:1] + history[-1:]] == ["m4", "m103"]


def test_the_committed_bundle_is_the_pinned_client() -> None:
    """The page's bundle is built from the rivetkit version the JS client tests pin."""
    bundle = REPO / "demo_project" / "chat" / "static" / "chat" / "rivetkit-client.js"
    build_pin = json.loads((REPO / "scripts" / "chat-bundle" / "package.json").read_text())["devDependencies"]
    tests_pin = json.loads((REPO / "tests" / "js" / "package.json").read_text())["dependencies"]
    assert build_pin["rivetkit"] == tests_pin["rivetkit"]
    with bundle.open("rb") as f:
        banner = f.readline().decode()
    assert f"rivetkit@{build_pin['rivetkit']} client" in banner, "rebuild it: scripts/build-chat-bundle.sh"
    assert bundle.stat().st_size < 500 * 1024


# -- two browsers in one room ----------------------------------------------------


@pytest.fixture
def browser() -> Iterator[Any]:
    executable = chromium_path()
    sync_api = require_playwright()
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS, timeout=30_000)
        try:
            yield browser
        finally:
            browser.close()


class ChatPage:
    """One person's chat tab (its own browser context: separate storage, like two people)."""

    def __init__(self, browser: Any, server: LiveServer, label: str) -> None:
        self.context = browser.new_context(viewport={"width": 900, "height": 640})
        self.page = self.context.new_page()
        self.page.set_default_timeout(CONNECT_TIMEOUT * 1000)
        self.recorder = PageRecorder(self.page, label)
        self.base = f"http://127.0.0.1:{server.port}"
        self.label = label

    def join(self, name: str, room: str) -> None:
        from playwright.sync_api import expect

        self.page.goto(f"{self.base}/chat/{room}/")
        self.page.wait_for_selector("html[data-ready=true]", state="attached")  # chat.js and the client loaded
        self.page.get_by_label("Name").fill(name)
        self.page.get_by_test_id("join-button").click()
        expect(self.page.get_by_test_id("status")).to_have_attribute("data-status", "connected")

    def by_test_id(self, test_id: str) -> Any:
        return self.page.get_by_test_id(test_id)

    def screenshot(self, name: str) -> None:
        ARTIFACTS.mkdir(exist_ok=True)
        self.page.screenshot(path=str(ARTIFACTS / name), full_page=True)

    def close(self) -> None:
        self.context.close()


def test_two_pages_chat_in_the_same_room(browser: Any, server: LiveServer) -> None:
    from playwright.sync_api import expect

    room = _room()
    ada = ChatPage(browser, server, "A (Ada)")
    bob = ChatPage(browser, server, "B (Bob)")
    pages = [ada, bob]
    try:
        ada.join("Ada", room)
        bob.join("Bob", room)

        # Presence: both pages list both people.
        for page in pages:
            expect(page.by_test_id("member")).to_have_count(2)
            expect(page.by_test_id("members")).to_contain_text("Ada")
            expect(page.by_test_id("members")).to_contain_text("Bob")

        # Typing: Bob sees Ada typing.
        ada.by_test_id("message-input").press_sequentially("Hello Bob", delay=20)
        expect(bob.by_test_id("typing")).to_have_text("Ada is typing…", timeout=DELIVERY_BOUND * 1000)
        bob.screenshot("chat-typing-b.png")

        # The message: sent by Ada, on Bob's page within the bound.
        started = time.monotonic()
        ada.by_test_id("message-input").press("Enter")
        expect(bob.by_test_id("message-text")).to_have_text(["Hello Bob"], timeout=DELIVERY_BOUND * 1000)
        elapsed = time.monotonic() - started
        assert elapsed < DELIVERY_BOUND, f"delivered after {elapsed:.2f}s"
        expect(bob.by_test_id("message").first).to_contain_text("Ada")
        # Ada sees her own message once (the action's reply and the event are de-duplicated).
        expect(ada.by_test_id("message-text")).to_have_text(["Hello Bob"])
        # A message ends its author's typing indicator.
        expect(bob.by_test_id("typing")).to_have_text("")

        # Bob answers; someone joining later gets the history and joins the presence list.
        bob.by_test_id("message-input").fill("Hi Ada")
        bob.by_test_id("send-button").click()
        expect(ada.by_test_id("message-text")).to_have_text(["Hello Bob", "Hi Ada"], timeout=DELIVERY_BOUND * 1000)
        cy = ChatPage(browser, server, "C (Cy)")
        pages.append(cy)
        cy.join("Cy", room)
        expect(cy.by_test_id("message-text")).to_have_text(["Hello Bob", "Hi Ada"])
        expect(ada.by_test_id("member")).to_have_count(3)

        # Leaving updates the others' presence.
        cy.by_test_id("leave-button").click()
        expect(ada.by_test_id("member")).to_have_count(2)

        ada.screenshot("chat-a.png")
        bob.screenshot("chat-b.png")
        for page in pages:
            assert not page.recorder.errors, page.recorder.report()
            # Everything, the official client included, came from the server under test.
            origins = {f"http://127.0.0.1:{server.port}", f"ws://127.0.0.1:{server.port}"}
            foreign = [u for u in page.recorder.urls if "/".join(u.split("/")[:3]) not in origins and u[:5] != "data:"]
            assert not foreign, foreign
    except Exception as exc:
        for page in pages:
            try:
                page.screenshot(f"chat-failure-{page.label[0].lower()}.png")
            except Exception:
                pass
        reports = "\n".join(page.recorder.report() for page in pages)
        raise AssertionError(f"{exc}\n{reports}\n--- server log (tail) ---\n{server.log()}") from exc
    finally:
        for page in pages:
            page.close()


def test_the_page_shows_a_refused_join(browser: Any, server: LiveServer) -> None:
    from playwright.sync_api import expect

    page = ChatPage(browser, server, "refused")
    try:
        page.page.goto(f"{page.base}/chat/{_room()}/")
        page.page.wait_for_selector("html[data-ready=true]", state="attached")
        # Bypass the input's own checks: the server must refuse a blank name by itself.
        page.page.evaluate("document.getElementById('join-form').noValidate = true")
        page.page.get_by_label("Name").fill("   ")
        page.by_test_id("join-button").click()
        expect(page.by_test_id("error")).to_contain_text("A name is required")
        expect(page.by_test_id("status")).to_have_attribute("data-status", "idle")
        expect(page.by_test_id("room-view")).to_be_hidden()
    except Exception as exc:
        raise AssertionError(f"{exc}\n{page.recorder.report()}\n--- server log ---\n{server.log()}") from exc
    finally:
        page.close()


def test_the_page_rejoins_after_a_server_restart(browser: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The official client gives up when the server is unreachable; the page keeps retrying."""
    from playwright.sync_api import expect

    import tests.server

    room = _room()
    server = LiveServer(node_id="chat-restart-node").start()
    pages: list[ChatPage] = []
    try:
        ada = ChatPage(browser, server, "A (Ada)")
        bob = ChatPage(browser, server, "B (Bob)")
        pages += [ada, bob]
        ada.join("Ada", room)
        bob.join("Bob", room)
        ada.by_test_id("message-input").fill("before")
        ada.by_test_id("message-input").press("Enter")
        expect(bob.by_test_id("message-text")).to_have_text(["before"])

        server.stop()
        expect(ada.by_test_id("status")).to_have_attribute("data-status", "disconnected")
        monkeypatch.setattr(tests.server, "free_port", lambda: server.port)  # same address again
        server.start()
        for page in pages:
            expect(page.by_test_id("status")).to_have_attribute("data-status", "connected", timeout=30_000)
            expect(page.by_test_id("member")).to_have_count(2)
        bob.by_test_id("message-input").fill("after")
        bob.by_test_id("message-input").press("Enter")
        expect(ada.by_test_id("message-text")).to_have_text(["before", "after"], timeout=DELIVERY_BOUND * 1000)
        expect(ada.by_test_id("error")).to_be_hidden()  # the "connection lost" note went away
    except Exception as exc:
        reports = "\n".join(page.recorder.report() for page in pages)
        raise AssertionError(f"{exc}\n{reports}\n--- server log (tail) ---\n{server.log()}") from exc
    finally:
        for page in pages:
            page.close()
        try:
            server.stop()
        finally:
            server.kill()
