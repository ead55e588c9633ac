"""The two servers under test, each started fresh on free ports and stopped by pid.

- :class:`OursServer`: ``python manage.py runactors`` with ``bench.settings`` (the
  demo project + bench actors) on a new SQLite database, after ``migrate``.
- :class:`PeerServer`: RivetKit's local dev server (bench/peer/server.mjs, Node 22)
  and the Rust engine it spawns. The engine outlives its parent, so its pid is read
  from its runtime file and it is stopped on its own. ``HOME`` points at a fresh
  folder: the engine keeps its data (and that runtime file) under ``$HOME/.rivetkit``.

Both are pinned to the server core; ``pids()`` lists every process whose CPU and
RSS count as the server's.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from contextlib import closing
from pathlib import Path
from typing import Any

from .proc import descendants, dir_size, free_port, free_port_block, pid_alive, spawn, stop_pid

__all__ = ["BENCH", "NODE22", "PEER_DIR", "REPO", "HarnessError", "OursServer", "PeerServer", "peer_installed"]

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
PEER_DIR = BENCH / "peer"
NODE22 = PEER_DIR / "node_modules" / ".bin" / "node"


class HarnessError(RuntimeError):
    """The benchmark itself could not do its job (a server did not start, a generator crashed)."""


def peer_installed() -> str | None:
    """None if the RivetKit peer can run, else why not."""
    if not (PEER_DIR / "node_modules" / "rivetkit" / "package.json").is_file():
        return "bench/peer/node_modules is missing: run (cd bench/peer && npm ci)"
    if not NODE22.exists():
        return "bench/peer/node_modules/.bin/node (the node@22 package) is missing: run (cd bench/peer && npm ci)"
    return None


def base_env() -> dict[str, str]:
    """The environment minus what would change how servers and clients behave."""
    env = dict(os.environ)
    # RUST_BACKTRACE=1 makes the RivetKit engine ~10x slower (BENCH-NOTES.md).
    for name in (
        "RUST_BACKTRACE",
        "DJANGO_SETTINGS_MODULE",
        "RIVET_ENDPOINT",
        "RIVET_ENGINE",
        "RIVET_TOKEN",
        "RIVET_NAMESPACE",
        "RIVET_LOG_LEVEL",
        "NODE_OPTIONS",
    ):
        env.pop(name, None)
    return env


def _wait_http_ok(url: str, proc: subprocess.Popen[bytes], timeout: float, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise HarnessError(f"server exited with {proc.returncode}:\n{_tail(log)}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise HarnessError(f"server did not answer {url} within {timeout}s:\n{_tail(log)}")


def _tail(path: Path, size: int = 4000) -> str:
    try:
        return path.read_text(errors="replace")[-size:]
    except OSError:
        return ""


class OursServer:
    """rivet_django's ``runactors`` on a fresh SQLite database."""

    side = "rivet_django"
    #: A migrated empty database, made once per run and copied for every server.
    _template: Path | None = None

    def __init__(
        self,
        workdir: Path,
        core: int | None,
        *,
        server: str = "uvicorn",
        profile: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.workdir = workdir
        self.core = core
        self.server = server
        #: Where py-spy writes this server's collapsed stacks (None: no profiling).
        self.profile = profile
        self.profiler: subprocess.Popen[bytes] | None = None
        self.db_path = workdir / "db.sqlite3"
        self.log = workdir / "runactors.log"
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.env = {
            **base_env(),
            "DJANGO_SETTINGS_MODULE": "bench.settings",
            "RIVET_DEMO_DB": str(self.db_path),
            "RIVET_BENCH_DB_DIR": str(workdir / "actor_dbs"),
            "DJANGO_DEBUG": "0",
            # Lifecycle logs at INFO for 100,000 actors would be a workload of their own;
            # RivetKit's default level is warn.
            "RIVET_LOG_LEVEL": "WARNING",
            "PYTHONUNBUFFERED": "1",
            # bench/benchapp/memprobe.py: what the memory holds, on SIGUSR1 (workload 5).
            "RIVET_BENCH_MEMPROBE": str(workdir / "memprobe.jsonl"),
            # --server-env (e.g. another malloc: LD_PRELOAD, PYTHONMALLOC).
            **(env or {}),
        }

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/rivet"

    def _migrate(self) -> None:
        template = OursServer._template
        if template is None or not template.is_file():
            subprocess.run(
                [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
                cwd=REPO,
                env=self.env,
                check=True,
                timeout=180,
            )
            template = self.workdir.parent / "migrated-template.sqlite3"
            # A consistent copy of the freshly migrated database (WAL included).
            with closing(sqlite3.connect(self.db_path)) as src, closing(sqlite3.connect(template)) as dst:
                src.backup(dst)
            OursServer._template = template
        else:
            shutil.copyfile(template, self.db_path)

    def start(self, timeout: float = 60.0) -> OursServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._migrate()
        self.port = free_port()
        with open(self.log, "ab") as log:
            self.proc = spawn(
                [
                    sys.executable, "manage.py", "runactors", "--port", str(self.port),
                    "--node-id", "bench-node", "--server", self.server,
                ],
                core=self.core,
                cwd=REPO,
                env=self.env,
                stdout=log,
            )
        _wait_http_ok(self.endpoint + "/metadata", self.proc, timeout, self.log)
        if self.profile is not None:
            self._start_profiler(self.profile)
        return self

    def _start_profiler(self, out: Path) -> None:
        """py-spy sampling the whole life of the server (it writes when the server exits)."""
        py_spy = shutil.which("py-spy")
        if py_spy is None:
            raise HarnessError("--profile needs py-spy (pip install py-spy)")
        out.parent.mkdir(parents=True, exist_ok=True)
        assert self.proc is not None
        self.profiler = subprocess.Popen(
            [py_spy, "record", "--pid", str(self.proc.pid), "--format", "raw", "--rate", "250", "-o", str(out)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def pids(self) -> list[int]:
        return [self.proc.pid] if self.proc is not None else []

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def memory_probe(self, timeout: float = 15.0) -> dict[str, Any] | None:
        """What the server's memory holds now (bench/benchapp/memprobe.py), or None."""
        if not self.alive():
            return None
        assert self.proc is not None
        path = Path(self.env["RIVET_BENCH_MEMPROBE"])
        seen = len(path.read_text().splitlines()) if path.exists() else 0
        os.kill(self.proc.pid, signal.SIGUSR1)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            lines = path.read_text().splitlines() if path.exists() else []
            if len(lines) > seen:
                return dict(json.loads(lines[-1]))
            time.sleep(0.1)
        return None

    def storage_bytes(self) -> int:
        paths = [self.db_path, Path(f"{self.db_path}-wal"), Path(f"{self.db_path}-shm"), self.workdir / "actor_dbs"]
        return dir_size(paths)

    def log_tail(self) -> str:
        return _tail(self.log)

    def status_counts(self, name: str, key_prefix: str) -> dict[str, int]:
        """Actors of ``name`` whose first key part starts with ``key_prefix``, by status, read
        from the database (read-only; WAL lets it run next to the server)."""
        uri = f"file:{self.db_path}?mode=ro"
        with closing(sqlite3.connect(uri, uri=True, timeout=30)) as con:
            rows = con.execute(
                "SELECT status, COUNT(*) FROM rivet_django_actor WHERE name = ? AND key LIKE ? GROUP BY status",
                (name, '["' + key_prefix.replace("%", "").replace("_", "") + "%"),
            ).fetchall()
        return {str(status): int(n) for status, n in rows}

    def stop(self) -> None:
        if self.proc is not None:
            # SIGTERM: runactors puts every actor to sleep (final flush), then exits.
            stop_pid(self.proc.pid, timeout=40.0, proc=self.proc)
        if self.profiler is not None:
            try:
                self.profiler.wait(timeout=30)
            except subprocess.TimeoutExpired:
                stop_pid(self.profiler.pid, timeout=5.0, proc=self.profiler)
            self.profiler = None


class PeerServer:
    """RivetKit 2.3.19's local dev server (node + the rivet-engine it spawns)."""

    side = "rivetkit"

    def __init__(self, workdir: Path, core: int | None) -> None:
        self.workdir = workdir
        self.core = core
        self.home = workdir / "home"
        self.log = workdir / "rivetkit.log"
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.engine_pid: int | None = None
        self.extra_pids: list[int] = []

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> PeerServer:
        self.home.mkdir(parents=True, exist_ok=True)
        # The engine binds P (gateway), P+1 (API peer) and P+10 (metrics).
        self.port = free_port_block([0, 1, 10])
        env = {
            **base_env(),
            "HOME": str(self.home),
            "RIVET_RUN_ENGINE": "1",
            "RIVET_RUN_ENGINE_HOST": "127.0.0.1",
            "RIVET_RUN_ENGINE_PORT": str(self.port),
            # The first-party "Services" actor host (a third process on a fixed port)
            # has nothing to do with these workloads.
            "RIVET_RUN_SERVICES": "0",
        }
        with open(self.log, "ab") as log:
            self.proc = spawn([str(NODE22), "server.mjs"], core=self.core, cwd=PEER_DIR, env=env, stdout=log)
        deadline = time.monotonic() + timeout
        runtime_file = self.home / ".rivetkit" / "var" / "engine" / "runtime.json"
        try:
            while time.monotonic() < deadline:
                if self.engine_pid is None and runtime_file.is_file():
                    try:
                        self.engine_pid = int(json.loads(runtime_file.read_text())["pid"])
                    except (ValueError, KeyError):
                        pass  # being written
                if self.proc.poll() is not None:
                    raise HarnessError(f"RivetKit server exited with {self.proc.returncode}:\n{_tail(self.log)}")
                if "BENCH_READY" in _tail(self.log) and self.engine_pid is not None:
                    break
                time.sleep(0.1)
            else:
                raise HarnessError(f"RivetKit server not ready within {timeout}s:\n{_tail(self.log)}")
            self.extra_pids = [p for p in descendants(self.proc.pid) if p != self.engine_pid]
            _wait_http_ok(self.endpoint + "/metadata", self.proc, 10.0, self.log)
        except BaseException:
            self.stop()
            raise
        return self

    def pids(self) -> list[int]:
        pids = [self.proc.pid] if self.proc is not None else []
        if self.engine_pid is not None:
            pids.append(self.engine_pid)
        return pids + self.extra_pids

    def alive(self) -> bool:
        return (
            self.proc is not None
            and self.proc.poll() is None
            and self.engine_pid is not None
            and pid_alive(self.engine_pid)
        )

    def storage_bytes(self) -> int:
        # Everything the engine and RivetKit keep, except their log files.
        root = self.home / ".rivetkit"
        return dir_size([p for p in root.glob("*/*") if p.name != "logs"] if root.is_dir() else [])

    def log_tail(self) -> str:
        return _tail(self.log)

    def stop(self) -> None:
        try:
            if self.proc is not None:
                stop_pid(self.proc.pid, timeout=15.0, proc=self.proc)
        finally:
            if self.engine_pid is not None:
                stop_pid(self.engine_pid, expect="rivet-engine", timeout=15.0)
            for pid in self.extra_pids:
                stop_pid(pid, timeout=5.0)
