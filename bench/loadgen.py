"""Runs one load generator process and measures the window it reports.

A generator (bench/load/load.mjs with the official RivetKit client, or
bench/load/pyload.py with our AsyncClient) prints JSON lines: ``ready``,
``start``, ``end``, ``result`` (or ``fatal``). Between ``start`` and ``end`` the
driver samples the CPU of the server's processes, of the generator and of every
core, so a saturated client or a busy machine shows in the results.
"""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from .proc import Cores, core_busy, cpu_delta, cpu_snapshot, spawn, stop_pid
from .servers import BENCH, NODE22, REPO, HarnessError, base_env

__all__ = ["run_js", "run_py"]

LOAD_DIR = BENCH / "load"


def _reader(stream: Any, out: queue.Queue[bytes | None]) -> None:
    try:
        for line in iter(stream.readline, b""):
            out.put(line)
    finally:
        out.put(None)


def _run(
    argv: list[str], *, server: Any, cores: Cores, timeout: float, env: dict[str, str], log: Path
) -> dict[str, Any]:
    """Start the generator pinned to the load core, follow its lines, return its result + CPU use."""
    with open(log, "ab") as err:
        proc = spawn(argv, core=cores.load, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=err)
    lines: queue.Queue[bytes | None] = queue.Queue()
    threading.Thread(target=_reader, args=(proc.stdout, lines), daemon=True).start()
    server_pids = server.pids()
    watched = [*server_pids, proc.pid]
    start = end = None
    result: dict[str, Any] | None = None
    progress: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            try:
                raw = lines.get(timeout=min(1.0, max(0.01, deadline - time.monotonic())))
            except queue.Empty:
                continue
            if raw is None:
                break
            try:
                msg = json.loads(raw)
            except ValueError:
                continue  # stray output of a library
            kind = msg.get("type")
            if kind == "start":
                start = cpu_snapshot(watched)
            elif kind == "end":
                end = cpu_snapshot(watched)
            elif kind == "progress":
                progress.append(msg)
                print(f"      ... {msg.get('done')} done, {msg.get('errors')} errors", flush=True)
            elif kind == "ready" and msg.get("setup", {}).get("errors"):
                print(f"      setup errors: {msg['setup']}", flush=True)
            elif kind == "result":
                result = msg
            elif kind == "fatal":
                raise HarnessError(f"load generator failed: {msg.get('error')}\n{_tail(log)}")
        else:
            raise HarnessError(f"load generator did not finish within {timeout:.0f}s")
        if result is None:
            proc.wait(timeout=10)
            raise HarnessError(f"load generator exited ({proc.returncode}) without a result:\n{_tail(log)}")
    finally:
        stop_pid(proc.pid, timeout=5.0, proc=proc)
    result.pop("type", None)
    if start is not None and end is not None:
        result["window_s"] = end.at - start.at
        result["server_cpu_pct"] = cpu_delta(start, end, server_pids)
        result["client_cpu_pct"] = cpu_delta(start, end, [proc.pid])
        busy = core_busy(start, end)
        result["core_busy_pct"] = {str(k): v for k, v in busy.items()}
        # Everything else on the machine in the window (other processes, the driver).
        total = sum(busy.values())
        result["other_cpu_pct"] = max(0.0, total - (result["server_cpu_pct"] or 0) - (result["client_cpu_pct"] or 0))
    result["server_alive"] = server.alive()
    return result


def _tail(path: Path, size: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-size:]
    except OSError:
        return ""


def run_js(config: dict[str, Any], *, server: Any, cores: Cores, timeout: float, log: Path) -> dict[str, Any]:
    """The official RivetKit JS client (Node 22) against ``server``."""
    cfg = {"endpoint": server.endpoint, "hard_limit_ms": int(timeout * 1000), **config}
    return _run(
        [str(NODE22), str(LOAD_DIR / "load.mjs"), json.dumps(cfg)],
        server=server,
        cores=cores,
        timeout=timeout + 15,
        env=base_env(),
        log=log,
    )


def run_py(config: dict[str, Any], *, server: Any, cores: Cores, timeout: float, log: Path) -> dict[str, Any]:
    """Our Python ``AsyncClient`` against ``server``."""
    cfg = {"endpoint": server.endpoint, "hard_limit_s": timeout, **config}
    return _run(
        [sys.executable, str(LOAD_DIR / "pyload.py"), json.dumps(cfg)],
        server=server,
        cores=cores,
        timeout=timeout + 15,
        env={**base_env(), "PYTHONPATH": str(REPO)},
        log=log,
    )
