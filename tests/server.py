"""Start a real ``runactors`` process on a free port, and stop it by pid.

Used by the end-to-end, crash-safety and official-client tests. Every wait is
bounded in time; the process is killed if it does not stop by itself.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

__all__ = ["LiveServer", "free_port"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LiveServer:
    """``python manage.py runactors`` on its own SQLite file (``RIVET_DEMO_DB``).

    ``settings`` is the Django settings module: the demo project by default,
    ``"tests.settings_live"`` for the test app's actors.
    """

    def __init__(
        self,
        db_path: str | None = None,
        *,
        env: dict[str, str] | None = None,
        node_id: str = "live-node",
        server: str | None = None,
        settings: str = "demo_project.settings",
    ) -> None:
        self.db_path = db_path or os.path.join(tempfile.mkdtemp(prefix="rivet-live-"), "db.sqlite3")
        self.port = 0
        self.node_id = node_id
        self.proc: subprocess.Popen[bytes] | None = None
        self.env = {**os.environ, "RIVET_DEMO_DB": self.db_path, "DJANGO_DEBUG": "0", **(env or {})}
        self.env["DJANGO_SETTINGS_MODULE"] = settings
        self.log_path = self.db_path + ".log"
        # RIVET_TEST_SERVER=daphne runs every live test on daphne instead of runactors' default (uvicorn).
        self.server = server or os.environ.get("RIVET_TEST_SERVER", "uvicorn")
        self._migrated = False

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/rivet"

    def migrate(self) -> None:
        if not self._migrated:
            subprocess.run(
                [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
                cwd=REPO, env=self.env, check=True, timeout=120,
            )
            self._migrated = True

    def start(self, timeout: float = 30.0) -> LiveServer:
        self.migrate()
        self.port = free_port()
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [
                sys.executable, "manage.py", "runactors", "--port", str(self.port),
                "--node-id", self.node_id, "--server", self.server,
            ],
            cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"runactors exited with {self.proc.returncode}:\n{self.log()}")
            try:
                with urllib.request.urlopen(self.endpoint + "/metadata", timeout=1) as response:
                    if response.status == 200:
                        return self
            except OSError:
                time.sleep(0.1)
        self.kill()
        raise RuntimeError(f"runactors did not answer within {timeout}s:\n{self.log()}")

    def manage(self, *args: str, timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess[str]:
        """``manage.py *args`` in another process on this server's settings and database
        (``manage.py shell -c ...``: a second process, as a user would run one)."""
        return subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=REPO, env=self.env, capture_output=True, text=True, timeout=timeout, check=check,
        )  # fmt: skip

    def log(self) -> str:
        try:
            return Path(self.log_path).read_text(errors="replace")[-5000:]
        except OSError:
            return ""

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, wait for a clean exit; kill if it hangs. Returns the exit code."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise

    def kill(self) -> None:
        """``kill -9``: no flush, no goodbye."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def __enter__(self) -> LiveServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        try:
            self.stop()
        finally:
            self.kill()
