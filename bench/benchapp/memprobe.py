"""What the benchmark server's memory holds, on request (``SIGUSR1``), for workload 5.

RSS says how much memory the process holds, not what it holds it for: after 10,000
actors sleep, CPython's small-object allocator keeps the 1 MiB arenas that a few
long-lived objects still use, and SQLite keeps its page cache. To tell "a sleeping actor
costs memory" from "the allocator kept memory it will reuse", each probe writes one JSON
line to ``$RIVET_BENCH_MEMPROBE``:

- ``pymalloc_live``: bytes in allocated small-object blocks (Python objects ≤ 512 bytes);
- ``pymalloc_held``: bytes in pymalloc's arenas (live blocks plus free space it keeps);
- ``malloc_live``: bytes allocated through the C ``malloc`` (larger objects, dict tables,
  SQLite), from glibc's ``mallinfo2``; None under another allocator;
- ``sqlite_used``: bytes SQLite has allocated (``sqlite3_memory_used``: page caches,
  prepared statements), a part of ``malloc_live``.

Installed by the bench app when that variable is set (bench servers only).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import json
import os
import re
import signal
import sys
import tempfile
import time
from typing import Any

__all__ = ["install", "snapshot"]

_ARENA_BYTES = 1 << 20  # CPython 3.10+: 1 MiB arenas


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")
    ]


def _pymalloc() -> dict[str, int]:
    """Parses ``sys._debugmallocstats()``, which writes to the C stderr."""
    with tempfile.TemporaryFile(mode="w+") as out:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(out.fileno(), 2)
        try:
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        out.seek(0)
        text = out.read()
    numbers = {
        label: int(value.replace(",", ""))
        for label, value in re.findall(r"^# (arenas allocated current|bytes in allocated blocks)\s*=\s*([\d,]+)", text, re.M)
    }
    return {
        "pymalloc_live": numbers.get("bytes in allocated blocks", 0),
        "pymalloc_held": numbers.get("arenas allocated current", 0) * _ARENA_BYTES,
    }


def _malloc_live() -> int | None:
    if "LD_PRELOAD" in os.environ:  # another malloc: glibc's counters would be wrong
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallinfo2.restype = _MallInfo2
    except (OSError, AttributeError):
        return None
    info = libc.mallinfo2()
    return int(info.uordblks + info.hblkhd)


def _sqlite_used() -> int | None:
    name = ctypes.util.find_library("sqlite3")
    if name is None:
        return None
    try:
        lib = ctypes.CDLL(name)  # the library Python's sqlite3 module is linked to
        lib.sqlite3_memory_used.restype = ctypes.c_int64
    except (OSError, AttributeError):
        return None
    return int(lib.sqlite3_memory_used())


def snapshot() -> dict[str, Any]:
    gc.collect()
    return {"time": time.time(), **_pymalloc(), "malloc_live": _malloc_live(), "sqlite_used": _sqlite_used()}


def install(path: str) -> None:
    """Append a :func:`snapshot` to ``path`` on every ``SIGUSR1`` (main thread only)."""

    def probe(signum: int, frame: Any) -> None:
        line = json.dumps(snapshot())
        with open(path, "a") as out:
            out.write(line + "\n")

    signal.signal(signal.SIGUSR1, probe)
