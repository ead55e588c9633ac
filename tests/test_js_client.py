"""The official RivetKit JS client (npm ``rivetkit``) against a live ``runactors``.

Starts the demo project with :class:`tests.server.LiveServer` and runs the node
test files in ``tests/js/`` with ``RIVET_ENDPOINT`` pointing at it. Needs
``(cd tests/js && npm ci)``; without it the test is skipped locally and fails in
CI (``CI`` set), where a missing install is a broken setup, not a reason to pass.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess

import pytest

from tests.server import REPO, LiveServer

JS_DIR = REPO / "tests" / "js"
NODE_TIMEOUT = 180.0

# Server start + node run + server stop, each bounded on its own.
pytestmark = pytest.mark.timeout(NODE_TIMEOUT + 90)


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() not in ("", "0", "false", "no")


def _require_node_setup() -> str:
    """The node binary; skips (locally) or fails (CI) when the JS client is not installed."""
    installed = (JS_DIR / "node_modules" / "rivetkit" / "package.json").is_file()
    node = shutil.which("node")
    if not installed:
        message = "tests/js/node_modules/rivetkit is missing: run (cd tests/js && npm ci)"
        if _in_ci():
            pytest.fail(message)
        pytest.skip(message)
    if node is None:
        pytest.fail("node is not on PATH, but tests/js/node_modules is installed")
    return node


def test_official_js_client_against_live_server() -> None:
    """The demo project's actors: requests, encodings, realtime (``tests/js/*.test.mjs``)."""
    test_files = sorted(str(path.relative_to(REPO)) for path in JS_DIR.glob("*.test.mjs"))
    assert test_files, f"no *.test.mjs files in {JS_DIR}"
    _run_node(test_files, LiveServer())


def test_official_js_client_rivetkit_parity() -> None:
    """The test project's parity fixtures (tests/parityapp): RivetKit 2.3.19 behaviour."""
    _run_node([str((JS_DIR / "parity.spec.mjs").relative_to(REPO))], LiveServer(settings="tests.settings_live"))


def _run_node(test_files: list[str], live: LiveServer) -> None:
    node = _require_node_setup()
    with live as server:
        env = {**os.environ, "RIVET_ENDPOINT": server.endpoint, "NO_COLOR": "1"}
        # The client reads these as defaults; a stray value would point it elsewhere.
        for name in ("RIVET_NAMESPACE", "RIVET_TOKEN", "RIVET_ENGINE", "RIVET_POOL"):
            env.pop(name, None)
        # Explicit files rather than the folder: node 20 and node >= 21 read
        # `node --test <dir>` differently, file paths work on both.
        proc = subprocess.Popen(
            [node, "--test", *test_files],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # node --test forks per file: stop the whole group on timeout
        )
        try:
            output, _ = proc.communicate(timeout=NODE_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            output, _ = proc.communicate()
            pytest.fail(
                f"node --test did not finish within {NODE_TIMEOUT:.0f}s\n"
                f"--- node output ---\n{output.decode(errors='replace')}\n"
                f"--- server log (tail) ---\n{server.log()}"
            )
        text = output.decode(errors="replace")
        if proc.returncode != 0:
            pytest.fail(
                f"node --test exited with {proc.returncode}\n"
                f"--- node output ---\n{text}\n"
                f"--- server log (tail) ---\n{server.log()}"
            )
    # node prints "# pass N" / "# fail 0"; a run that collected nothing is a failure too.
    assert "# fail 0" in text, text
    assert "# pass 0" not in text, text
    print(text)
