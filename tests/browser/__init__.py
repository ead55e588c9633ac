"""Headless Debian Chromium driven by Playwright, for end-to-end tests of demo pages.

Never ``playwright install``: it downloads browsers, and test machines have no
internet. Playwright drives the system's ``chromium`` (Debian package
``chromium``; ``CHROMIUM`` overrides the path). Without Playwright or Chromium a
test is skipped locally and fails in CI (``CI`` set), where a missing browser is
a broken setup, not a reason to pass.

:class:`PageRecorder` keeps what a page did (console messages, uncaught errors,
WebSocket frames and close codes) so a failing test can say what happened.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

__all__ = [
    "ARTIFACTS",
    "CHROMIUM_ARGS",
    "PageRecorder",
    "admin_login",
    "chromium_path",
    "in_ci",
    "require_playwright",
]

#: Screenshots and other test output; git-ignored except ``.gitkeep``.
ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"

CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",  # containers run tests as root, where the sandbox cannot start
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    # Nothing may reach out to the internet: no updates, sync or background fetches.
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() not in ("", "0", "false", "no")


def _unavailable(message: str) -> None:
    if in_ci():
        pytest.fail(message)
    pytest.skip(message)


def chromium_path() -> str:
    """The system Chromium; skips (locally) or fails (CI) when there is none."""
    path = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not os.access(path, os.X_OK):
        _unavailable(f"Chromium not found at {path}: apt-get install -y chromium (or set CHROMIUM)")
    return path


def admin_login(page: Any, base: str, username: str = "boss", password: str = "pw") -> None:
    """Log ``page`` in to the Django admin at ``base`` (the site root) through its login form."""
    page.goto(f"{base}/admin/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("input[type=submit]")


def require_playwright() -> Any:
    """``playwright.sync_api``; skips (locally) or fails (CI) when it is not installed."""
    try:
        from playwright import sync_api
    except ImportError:
        _unavailable("Playwright is not installed: pip install playwright (never `playwright install`)")
    return sync_api


#: Recorded lines that mean something went wrong on the page.
_ERROR_PREFIXES = ("console.error", "pageerror", "request failed", "http error")

# Playwright reports a socket's close but not its code: log codes from the page itself.
_LOG_WEBSOCKET_CLOSES = """
(() => {
  const Native = window.WebSocket;
  window.WebSocket = class extends Native {
    constructor(...args) {
      super(...args);
      this.addEventListener("close", (e) =>
        console.debug(`ws close code=${e.code} reason=${JSON.stringify(e.reason)} clean=${e.wasClean}`));
    }
  };
})();
"""


class PageRecorder:
    """Console output, page errors and WebSocket traffic of one page, for failure reports.

    Create it before the page navigates, so the close-code logger is installed.
    """

    def __init__(self, page: Any, label: str) -> None:
        self.label = label
        self.lines: list[str] = []
        self.urls: list[str] = []  # every request the page made, WebSockets included
        page.add_init_script(_LOG_WEBSOCKET_CLOSES)
        page.on("request", lambda request: self.urls.append(request.url))
        page.on("console", lambda msg: self._add(f"console.{msg.type}: {msg.text}"))
        page.on("pageerror", lambda error: self._add(f"pageerror: {error}"))
        page.on("requestfailed", lambda req: self._add(f"request failed: {req.method} {req.url} {req.failure}"))
        page.on("response", self._check_response)
        page.on("websocket", self._watch_socket)

    def _add(self, line: str) -> None:
        self.lines.append(line)

    def _check_response(self, response: Any) -> None:
        if response.status >= 400:
            self._add(f"http error: {response.status} {response.request.method} {response.url}")

    def _watch_socket(self, ws: Any) -> None:
        self.urls.append(ws.url)
        url = ws.url.split("?")[0]
        self._add(f"ws open {url}")
        ws.on("framesent", lambda payload: self._add(f"ws -> {_frame(payload)}"))
        ws.on("framereceived", lambda payload: self._add(f"ws <- {_frame(payload)}"))
        ws.on("socketerror", lambda error: self._add(f"ws error {error}"))
        ws.on("close", lambda _ws: self._add(f"ws closed {url}"))

    @property
    def errors(self) -> list[str]:
        return [line for line in self.lines if line.startswith(_ERROR_PREFIXES)]

    def report(self, limit: int = 80) -> str:
        lines = self.lines[-limit:]
        return f"--- page {self.label} ({len(self.lines)} events, last {len(lines)}) ---\n" + "\n".join(lines)


def _frame(payload: str | bytes) -> str:
    if isinstance(payload, bytes):
        return f"{len(payload)} bytes {payload[:48].hex()}"
    return payload[:200]
