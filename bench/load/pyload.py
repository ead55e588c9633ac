"""The benchmark's Python load generator: rivet_django's ``AsyncClient`` (default
encoding, bare), for workloads 1 (stateless HTTP) and 2 (WebSocket connections).

    PYTHONPATH=. python bench/load/pyload.py '<JSON config>'

Same line protocol and bounds as load.mjs (ready / start / end / result / fatal);
it shows what our Python client costs next to the official JS client.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import sys
import threading
import time
from typing import Any

from rivet_django.client import AsyncClient

cfg: dict[str, Any] = json.loads(sys.argv[1] if len(sys.argv) > 1 else "{}")
CALL_TIMEOUT = cfg.get("call_timeout_ms", 30_000) / 1000


def emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def _hard_limit() -> None:
    emit({"type": "fatal", "error": f"hard time limit of {cfg.get('hard_limit_s')} s reached"})
    os._exit(3)


_timer = threading.Timer(float(cfg.get("hard_limit_s", 600)), _hard_limit)
_timer.daemon = True
_timer.start()


class Errors:
    def __init__(self) -> None:
        self.count = 0
        self.kinds: dict[str, int] = {}
        self.samples: list[str] = []

    def add(self, exc: BaseException) -> None:
        self.count += 1
        if isinstance(exc, TimeoutError):
            kind = "timeout"
        elif getattr(exc, "group", None) and getattr(exc, "code", None):
            kind = f"{exc.group}.{exc.code}"  # type: ignore[attr-defined]
        else:
            kind = type(exc).__name__
        self.kinds[kind] = self.kinds.get(kind, 0) + 1
        if len(self.samples) < 5:
            self.samples.append(f"{kind}: {str(exc)[:300]}")

    def as_dict(self) -> dict[str, Any]:
        return {"errors": self.count, "error_kinds": self.kinds, "error_samples": self.samples}


def stats(latencies: list[float]) -> dict[str, Any]:
    a = sorted(latencies)
    n = len(a)
    if not n:
        return {"n": 0}

    def q(p: float) -> float:
        return a[min(n - 1, max(0, math.ceil(p * n) - 1))]

    return {
        "n": n,
        "mean_ms": sum(a) / n,
        "p50_ms": q(0.5),
        "p90_ms": q(0.9),
        "p99_ms": q(0.99),
        "max_ms": a[-1],
        "min_ms": a[0],
    }


async def call(errors: Errors, aw: Any) -> bool:
    try:
        await asyncio.wait_for(aw, CALL_TIMEOUT)
        return True
    except Exception as exc:  # counted, never dropped
        errors.add(exc)
        return False


def key_of(i: int) -> list[str]:
    return [f"{cfg.get('prefix', 'k')}-{i}"]


async def measured(workers: list[Any], duration: float, max_calls: int, make_call: Any) -> dict[str, Any]:
    errors = Errors()
    latencies: list[float] = []
    started = 0
    t0 = time.monotonic()

    async def worker(w: int, target: Any) -> None:
        nonlocal started
        it = 0
        while time.monotonic() - t0 < duration and started < max_calls:
            started += 1
            c0 = time.perf_counter_ns()
            if await call(errors, make_call(w, it, target)):
                latencies.append((time.perf_counter_ns() - c0) / 1e6)
            it += 1

    w0 = time.perf_counter()
    await asyncio.gather(*(worker(w, t) for w, t in enumerate(workers)))
    elapsed = time.perf_counter() - w0
    return {
        "elapsed_s": elapsed,
        "ok": len(latencies),
        "throughput": len(latencies) / elapsed,
        **errors.as_dict(),
        **stats(latencies),
    }


async def run_http(client: AsyncClient) -> dict[str, Any]:
    accessor = client.actor(cfg["actor"])
    handles = [accessor.get_or_create(key_of(i)) for i in range(cfg["keys"])]
    setup = Errors()
    sem = asyncio.Semaphore(16)

    async def create(h: Any) -> None:
        async with sem:
            await call(setup, h.action("getCount"))

    await asyncio.gather(*(create(h) for h in handles))
    emit({"type": "ready", "setup": setup.as_dict()})
    conc = cfg["concurrency"]

    def make_call(w: int, it: int, _target: Any) -> Any:
        return handles[(w + it * conc) % len(handles)].action("increment", 1)

    workers = list(range(conc))
    await measured(workers, cfg["warmup_s"], cfg["max_calls"], make_call)
    emit({"type": "start"})
    result = await measured(workers, cfg["duration_s"], cfg["max_calls"], make_call)
    emit({"type": "end"})
    return result


async def run_ws(client: AsyncClient) -> dict[str, Any]:
    accessor = client.actor(cfg["actor"])
    setup = Errors()
    conns: list[Any] = []
    sem = asyncio.Semaphore(16)

    async def open_conn(i: int) -> None:
        async with sem:
            conn = accessor.get_or_create(key_of(i % cfg["keys"])).connect()
            if await call(setup, conn.action("getCount")):
                conns.append(conn)
            else:
                await conn.dispose()

    await asyncio.gather(*(open_conn(i) for i in range(cfg["connections"])))
    emit({"type": "ready", "setup": setup.as_dict(), "connections": len(conns)})

    def make_call(_w: int, _it: int, conn: Any) -> Any:
        return conn.action("increment", 1)

    await measured(conns, cfg["warmup_s"], cfg["max_calls"], make_call)
    emit({"type": "start"})
    result = await measured(conns, cfg["duration_s"], cfg["max_calls"], make_call)
    emit({"type": "end"})
    result["connections"] = len(conns)
    for conn in conns:
        try:
            await asyncio.wait_for(conn.dispose(), 5)
        except Exception:
            pass
    return result


async def main() -> None:
    modes = {"http": run_http, "ws": run_ws}
    client = AsyncClient(cfg["endpoint"])
    try:
        result = await modes[cfg["mode"]](client)
    finally:
        try:
            await asyncio.wait_for(client.aclose(), 10)
        except Exception:
            pass
    emit({"type": "result", **result})


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except Exception as exc:
        import traceback

        emit({"type": "fatal", "error": "".join(traceback.format_exception(exc))})
        sys.exit(2)
    sys.exit(0)
