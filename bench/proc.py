"""Process plumbing for the benchmark: free ports, core pinning, CPU and RSS from /proc.

Every process the benchmark starts goes through :func:`spawn` and is stopped by
:func:`stop_pid` (by pid, never by name). CPU use comes from ``/proc/<pid>/stat``
(utime + stime of all threads) so a saturated server or load generator is
visible; 100 % means one core busy.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "Cores",
    "CpuSnapshot",
    "cpu_delta",
    "cpu_snapshot",
    "dir_size",
    "free_port",
    "free_port_block",
    "pid_alive",
    "rss_kb",
    "spawn",
    "stop_pid",
]

CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Cores:
    """Which core the servers and the load generators are pinned to (None: not pinned)."""

    server: int | None
    load: int | None
    note: str

    @classmethod
    def detect(cls) -> Cores:
        available = sorted(os.sched_getaffinity(0))
        if shutil.which("taskset") is None:
            return cls(None, None, "taskset not found: processes are not pinned")
        if len(available) < 2:
            return cls(None, None, f"only {len(available)} core available: server and load share it")
        return cls(
            available[0],
            available[1],
            f"server pinned to core {available[0]}, load generator to core {available[1]} "
            f"({len(available)} cores available)",
        )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_port_block(offsets: Sequence[int], attempts: int = 50) -> int:
    """A port P with P + every offset free on 127.0.0.1 (the RivetKit engine binds P, P+1, P+10)."""
    for _ in range(attempts):
        base = free_port()
        if base + max(offsets) < 65536 and all(_port_free(base + o) for o in offsets):
            return base
    raise RuntimeError(f"no free block of ports {list(offsets)} found in {attempts} attempts")


def spawn(
    argv: Sequence[str],
    *,
    core: int | None,
    cwd: Path | str,
    env: Mapping[str, str],
    stdout: int | object = subprocess.DEVNULL,
    stderr: int | object = subprocess.STDOUT,
) -> subprocess.Popen[bytes]:
    """Start ``argv`` pinned to ``core`` (``taskset`` execs it: the pid is the program's)."""
    full = ["taskset", "-c", str(core), *argv] if core is not None else list(argv)
    return subprocess.Popen(full, cwd=cwd, env=dict(env), stdout=stdout, stderr=stderr)  # type: ignore[arg-type]


def pid_alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def pid_cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def stop_pid(
    pid: int, *, expect: str | None = None, timeout: float = 15.0, proc: subprocess.Popen[bytes] | None = None
) -> None:
    """SIGTERM ``pid``, wait up to ``timeout`` s, then SIGKILL. ``expect``: a substring its
    command line must contain (guards against a recycled pid)."""
    if not pid_alive(pid):
        if proc is not None:
            proc.poll()
        return
    if expect is not None and expect not in pid_cmdline(pid):
        return
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 10.0)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None:
                return
            if not pid_alive(pid):
                return
            time.sleep(0.05)
    if proc is not None:
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass


def descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (children, grandchildren...)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found: list[int] = []
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _ticks(pid: int) -> int | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    # After the command name: state is fields[0], so utime (14) and stime (15) are [11] and [12].
    return int(fields[11]) + int(fields[12])


def _core_ticks() -> dict[int, tuple[int, int]]:
    """Per core: (busy, total) jiffies from /proc/stat."""
    cores = {}
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("cpu") and line[3:4].isdigit():
            name, *values = line.split()
            nums = [int(v) for v in values]
            idle = nums[3] + (nums[4] if len(nums) > 4 else 0)
            cores[int(name[3:])] = (sum(nums[:8]) - idle, sum(nums[:8]))
    return cores


@dataclass
class CpuSnapshot:
    """CPU ticks of some processes and of every core at one instant."""

    at: float
    ticks: dict[int, int | None]
    cores: dict[int, tuple[int, int]]


def cpu_snapshot(pids: Iterable[int]) -> CpuSnapshot:
    return CpuSnapshot(time.monotonic(), {pid: _ticks(pid) for pid in pids}, _core_ticks())


def cpu_delta(a: CpuSnapshot, b: CpuSnapshot, pids: Iterable[int]) -> float | None:
    """CPU % (100 = one core) used by ``pids`` between two snapshots."""
    wall = b.at - a.at
    if wall <= 0:
        return None
    used = 0
    for pid in pids:
        t0, t1 = a.ticks.get(pid), b.ticks.get(pid)
        if t0 is not None and t1 is not None:
            used += t1 - t0
    return 100.0 * used / CLK_TCK / wall


def core_busy(a: CpuSnapshot, b: CpuSnapshot) -> dict[int, float]:
    """Busy % of each core between two snapshots, whoever used it."""
    out = {}
    for core, (busy1, total1) in b.cores.items():
        busy0, total0 = a.cores.get(core, (busy1, total1))
        if total1 > total0:
            out[core] = 100.0 * (busy1 - busy0) / (total1 - total0)
    return out


def rss_kb(pids: Iterable[int]) -> int:
    """Sum of VmRSS (KB) of the live ``pids``."""
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
                    break
        except OSError:
            continue
    return total


def dir_size(paths: Iterable[Path]) -> int:
    """Apparent size in bytes of files and of everything under folders."""
    total = 0
    for path in paths:
        if path.is_file():
            total += path.stat().st_size
        elif path.is_dir():
            for sub in path.rglob("*"):
                try:
                    if sub.is_file():
                        total += sub.stat().st_size
                except OSError:
                    continue
    return total
