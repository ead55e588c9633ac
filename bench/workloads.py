"""The seven workloads, each run against rivet_django and RivetKit on fresh servers.

Every workload starts its own server per side (fresh database), runs one or more
load generators against it and stops it by pid. ``Params`` holds the sizes: the
full suite's (the issue's numbers) or ``--quick``'s (seconds, small counts).
"""

from __future__ import annotations

import functools
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .loadgen import run_js, run_py
from .proc import Cores, core_busy, cpu_snapshot, rss_kb
from .servers import HarnessError, OursServer, PeerServer

__all__ = ["WORKLOADS", "Context", "Params"]


@dataclass(frozen=True)
class Params:
    """Sizes of every workload."""

    # 1, 2 and 6: callers/connections over keys, measured for duration after warmup.
    http_concurrency: int = 64
    ws_connections: int = 64
    keys: int = 100
    duration_s: float = 10.0
    warmup_s: float = 2.0
    max_calls: int = 10_000_000
    # 3: one actor, receivers subscribed, increments sent one at a time ("sequential")
    # and with up to 8 in flight ("pipelined"), each on its own actor.
    fanout_receivers: int = 200
    fanout_increments: int = 1_000
    fanout_windows: tuple[tuple[str, int], ...] = (("sequential", 1), ("pipelined", 8))
    # 4: sequential cold creates.
    cold_keys: int = 1_000
    # 5: memory. Actors are created `concurrency` at a time: 32 for rivet_django; 8 for
    # RivetKit, whose create rate peaks at 4-16 (about 20/s here) and which fails creates
    # above that (route_resolve_query_timeout, actor_generation_mismatch).
    mem_awake: int = 10_000
    mem_many: int = 100_000
    mem_concurrency_ours: int = 32
    mem_concurrency_peer: int = 8
    # Time bounds of each create phase per side: RivetKit cannot create 100,000 actors
    # in a reasonable time (about 80 minutes at its rate; 10,000 take it 8), so it gets
    # what it makes in 5 minutes; KB per actor divides by the actors actually created.
    mem_awake_limit_s: float = 300.0
    mem_many_limit_ours_s: float = 1_800.0
    mem_many_limit_peer_s: float = 300.0
    settle_s: float = 3.0
    # Longest wait for created actors to be reported asleep.
    sleep_wait_s: float = 120.0
    # 7: wake latency of sleeping actors.
    wake_keys: int = 300
    # Full runs wait (bounded) for the rest of the machine to be idle before each measurement.
    quiet_wait_s: float = 60.0
    # Encodings of the official client for workloads 1 and 2 ("default" = bare).
    encodings: tuple[str, ...] = ("default", "json")
    # The Python AsyncClient run (workloads 1 and 2, rivet_django only).
    python_client: bool = True

    @classmethod
    def quick(cls) -> Params:
        return cls(
            http_concurrency=16,
            ws_connections=16,
            keys=20,
            duration_s=1.0,
            warmup_s=0.3,
            fanout_receivers=20,
            fanout_increments=50,
            cold_keys=10,
            mem_awake=100,
            mem_many=200,
            mem_awake_limit_s=20.0,
            mem_many_limit_ours_s=20.0,
            mem_many_limit_peer_s=20.0,
            settle_s=0.5,
            sleep_wait_s=15.0,
            wake_keys=10,
            quiet_wait_s=0.0,
        )


@dataclass
class Context:
    """What every workload needs: sizes, pinning, sides to run, where to write logs."""

    params: Params
    cores: Cores
    sides: list[str]
    workdir: Path
    quick: bool
    notes: list[str] = field(default_factory=list)
    #: ``runactors --server`` of our side.
    ours_server: str = "uvicorn"
    #: --profile: py-spy's collapsed stacks of every rivet_django server go here.
    profile_dir: Path | None = None
    #: --server-env: extra environment of every rivet_django server.
    ours_env: dict[str, str] = field(default_factory=dict)
    #: --quick: one server per side for every workload (started once, stopped by close()).
    shared: dict[str, OursServer | PeerServer] = field(default_factory=dict)

    def server(self, workload: str, side: str) -> OursServer | PeerServer:
        name = "shared" if self.quick else workload
        if self.quick and side in self.shared:
            return self.shared[side]
        server: OursServer | PeerServer
        if side == "rivet_django":
            profile = self.profile_dir / f"{name}.txt" if self.profile_dir is not None else None
            server = OursServer(
                self.workdir / f"{name}-{side}",
                self.cores.server,
                server=self.ours_server,
                profile=profile,
                env=self.ours_env,
            )
        else:
            server = PeerServer(self.workdir / f"{name}-{side}", self.cores.server)
        if self.quick:
            self.shared[side] = server
        return server

    def close(self) -> None:
        for server in self.shared.values():
            server.stop()
        self.shared.clear()

    def log(self, workload: str, side: str) -> Path:
        return self.workdir / f"{workload}-{side}-load.log"

    def js(
        self, workload: str, server: Any, config: dict[str, Any], timeout: float, *, quiet: bool = True
    ) -> dict[str, Any]:
        """The official JS client; ``quiet``: first wait (bounded) for the machine to be idle."""
        before = wait_quiet(self.params.quiet_wait_s) if quiet else None
        res = run_js(config, server=server, cores=self.cores, timeout=timeout, log=self.log(workload, server.side))
        if before is not None:
            res["quiet_before"] = before
        return res

    def py(self, workload: str, server: Any, config: dict[str, Any], timeout: float) -> dict[str, Any]:
        """Our Python AsyncClient."""
        before = wait_quiet(self.params.quiet_wait_s)
        res = run_py(config, server=server, cores=self.cores, timeout=timeout, log=self.log(workload, server.side))
        res["quiet_before"] = before
        return res


def _prefix() -> str:
    return uuid.uuid4().hex[:8]


def per_side(ctx: Context, workload: str, body: Callable[[Any], dict[str, Any]]) -> dict[str, Any]:
    """Runs ``body(server)`` on a fresh server of each side; a failure is recorded, not raised."""
    out: dict[str, Any] = {}
    for side in ctx.sides:
        server = ctx.server(workload, side)
        print(f"  {workload} on {side}", flush=True)
        try:
            if not ctx.quick or not server.alive():
                server.start()
            out[side] = body(server)
            if not server.alive():
                out[side]["server_died"] = True
                out[side]["server_log"] = server.log_tail()
        except HarnessError as exc:
            print(f"    FAILED: {exc}", flush=True)
            out[side] = {"failed": str(exc)[:4000], "server_log": server.log_tail()}
        finally:
            if not ctx.quick:
                server.stop()
    return out


def wait_quiet(limit_s: float, busy_pct: float = 25.0) -> dict[str, Any]:
    """Waits (at most ``limit_s``) until all cores together are less than ``busy_pct`` busy
    over one second: other people's processes on the machine skew every number."""
    if limit_s <= 0:
        return {"waited_s": 0.0, "busy_pct": None}
    t0 = time.monotonic()
    while True:
        a = cpu_snapshot([])
        time.sleep(1.0)
        busy = sum(core_busy(a, cpu_snapshot([])).values())
        if busy < busy_pct or time.monotonic() - t0 >= limit_s:
            return {"waited_s": time.monotonic() - t0 - 1.0, "busy_pct": busy}


def _throughput_cfg(ctx: Context, mode: str, actor: str, encoding: str) -> dict[str, Any]:
    p = ctx.params
    return {
        "mode": mode,
        "actor": actor,
        "encoding": encoding,
        "keys": p.keys,
        "concurrency": p.http_concurrency,
        "connections": p.ws_connections,
        "duration_s": p.duration_s,
        "warmup_s": p.warmup_s,
        "max_calls": p.max_calls,
        "prefix": _prefix(),
    }


def _throughput_timeout(ctx: Context) -> float:
    return ctx.params.duration_s + ctx.params.warmup_s + 150


def w1_http(ctx: Context) -> dict[str, Any]:
    """Stateless HTTP actions: concurrent callers over many actor keys (+ workload 6 on ours)."""

    def body(server: Any) -> dict[str, Any]:
        res: dict[str, Any] = {}
        for enc in ctx.params.encodings:
            res[enc] = ctx.js("w1", server, _throughput_cfg(ctx, "http", "counter", enc), _throughput_timeout(ctx))
            _say(f"{enc}", res[enc])
        if server.side == "rivet_django":
            # Workload 6: the same load on a counter with durability="throttled", same server.
            res["throttled"] = ctx.js(
                "w1", server, _throughput_cfg(ctx, "http", "throttledCounter", "default"), _throughput_timeout(ctx)
            )
            _say("throttled", res["throttled"])
            if ctx.params.python_client:
                res["python"] = ctx.py(
                    "w1", server, _throughput_cfg(ctx, "http", "counter", "bare"), _throughput_timeout(ctx)
                )
                _say("python client", res["python"])
        return res

    return per_side(ctx, "w1", body)


def w2_ws(ctx: Context) -> dict[str, Any]:
    """Connected WebSocket actions: each connection calls sequentially."""

    def body(server: Any) -> dict[str, Any]:
        res: dict[str, Any] = {}
        for enc in ctx.params.encodings:
            res[enc] = ctx.js("w2", server, _throughput_cfg(ctx, "ws", "counter", enc), _throughput_timeout(ctx))
            _say(enc, res[enc])
        if server.side == "rivet_django" and ctx.params.python_client:
            res["python"] = ctx.py(
                "w2", server, _throughput_cfg(ctx, "ws", "counter", "bare"), _throughput_timeout(ctx)
            )
            _say("python client", res["python"])
        return res

    return per_side(ctx, "w2", body)


def w3_fanout(ctx: Context) -> dict[str, Any]:
    """Broadcast fan-out: one actor, many subscribed connections, a stream of increments."""
    p = ctx.params

    def body(server: Any) -> dict[str, Any]:
        res: dict[str, Any] = {}
        for label, window in p.fanout_windows:
            cfg = {
                "mode": "fanout",
                "actor": "counter",
                "receivers": p.fanout_receivers,
                "increments": p.fanout_increments,
                "window": window,
                "duration_s": 120,
                "drain_timeout_ms": 30_000,
                "prefix": _prefix(),
            }
            res[label] = ctx.js("w3", server, cfg, 300)
            res[label]["window"] = window
            _say(
                f"fan-out, {label}",
                res[label],
                extra=f"{res[label].get('sent')} increments sent, {res[label].get('delivered')} delivered",
            )
        return res

    return per_side(ctx, "w3", body)


def w4_cold(ctx: Context) -> dict[str, Any]:
    """Cold create: getOrCreate + first action on new keys, one at a time."""
    p = ctx.params

    def body(server: Any) -> dict[str, Any]:
        cfg = {
            "mode": "sequential",
            "actor": "counter",
            "action": "increment",
            "args": [1],
            "n": p.cold_keys,
            "second": True,
            "duration_s": 900,
            "prefix": _prefix(),
        }
        res = ctx.js("w4", server, cfg, 960)
        _say("cold create", res)
        return res

    return per_side(ctx, "w4", body)


def _create(
    ctx: Context, server: Any, actor: str, prefix: str, n: int, action: str, limit_s: float, workload: str = "w5"
) -> dict[str, Any]:
    """``n`` actors, one ``getOrCreate`` + ``action`` each, at the side's create concurrency."""
    p = ctx.params
    conc = p.mem_concurrency_ours if server.side == "rivet_django" else p.mem_concurrency_peer
    cfg = {
        "mode": "create",
        "actor": actor,
        "action": action,
        "args": [1] if action == "increment" else [],
        "n": n,
        "offset": 0,
        "concurrency": conc,
        "duration_s": limit_s,
        "prefix": prefix,
    }
    res = ctx.js(workload, server, cfg, limit_s + 120)
    res["concurrency"] = conc
    res["requested"] = n
    return res


def _wait_asleep(ctx: Context, server: Any, actor: str, prefix: str, n: int, workload: str = "w5") -> dict[str, Any]:
    """Waits (bounded) until the ``n`` actors ``prefix-0..n-1`` are asleep.

    rivet_django: counted in its database, all of them. RivetKit: a sample of up to
    100 keys through the manager API (``GET /actors?name&key`` reports ``sleep_ts``).
    The API sample is also taken on rivet_django, to check what it reports.
    """
    step = max(1, n // 100)
    keys = list(range(0, n, step))[:100]
    deadline = time.monotonic() + ctx.params.sleep_wait_s
    t0 = time.monotonic()
    out: dict[str, Any] = {}
    while True:
        if isinstance(server, OursServer):
            counts = server.status_counts(actor, f"{prefix}-")
            out = {"sampled": n, "asleep": counts.get("sleeping", 0), "by_status": counts, "source": "database"}
        else:
            check = ctx.js(
                workload,
                server,
                {"mode": "check-sleep", "actor": actor, "prefix": prefix, "keys": keys},
                120,
                quiet=False,
            )
            out = {k: check.get(k) for k in ("sampled", "asleep", "awake", "missing", "errors", "error_samples")}
            out["source"] = "GET /actors (sample)"
        if out["asleep"] >= out["sampled"] or time.monotonic() >= deadline:
            break
        time.sleep(0.5)
    out["waited_s"] = time.monotonic() - t0
    if isinstance(server, OursServer):
        api = ctx.js(
            workload,
            server,
            {"mode": "check-sleep", "actor": actor, "prefix": prefix, "keys": keys[:20]},
            120,
            quiet=False,
        )
        out["api_sample"] = {k: api.get(k) for k in ("sampled", "asleep", "awake", "missing", "errors")}
    return out


def _probe(server: Any) -> dict[str, Any] | None:
    """What our server's memory holds (bench/benchapp/memprobe.py); None for RivetKit."""
    return server.memory_probe() if isinstance(server, OursServer) else None


def memory_breakdown(before: dict[str, Any] | None, after: dict[str, Any] | None, actors: int) -> dict[str, Any]:
    """KB per actor that each kind of memory grew by between two probes.

    - ``heap``: memory in use by the process's objects (Python objects and C allocations)
      except SQLite's, i.e. what the actors and their indexes still hold;
    - ``sqlite``: SQLite's page caches and statements (bounded by its cache size);
    - ``allocator_free``: memory freed but kept by CPython's allocator in arenas that some
      other live object still uses (reused by later allocations, not returned to the OS).
    """
    if not before or not after or not actors:
        return {}

    def heap(p: dict[str, Any]) -> float | None:
        if p.get("malloc_live") is None:
            return None
        return float(p["pymalloc_live"] + p["malloc_live"] - (p.get("sqlite_used") or 0))

    def per_actor(a: float | None, b: float | None) -> float | None:
        return None if a is None or b is None else (b - a) / 1024 / actors

    return {
        "heap": per_actor(heap(before), heap(after)),
        "python_objects": per_actor(before["pymalloc_live"], after["pymalloc_live"]),
        "sqlite": per_actor(before.get("sqlite_used"), after.get("sqlite_used")),
        "allocator_free": per_actor(
            before["pymalloc_held"] - before["pymalloc_live"], after["pymalloc_held"] - after["pymalloc_live"]
        ),
    }


def w5_memory(ctx: Context) -> dict[str, Any]:
    """Server RSS per awake and per sleeping actor; many actors created then asleep."""
    p = ctx.params

    def body(server: Any) -> dict[str, Any]:
        res: dict[str, Any] = {}
        pids = server.pids()
        prefix = _prefix()
        # Warm the code paths with a few actors of each kind, then take the baseline.
        _create(ctx, server, "memCounter", prefix + "w", 16, "increment", 120)
        _create(ctx, server, "sleepyCounter", prefix + "w", 16, "increment", 120)
        time.sleep(p.settle_s + 1.5)
        res["rss_base_kb"] = rss_kb(pids)
        res["storage_base_bytes"] = server.storage_bytes()
        res["probe_base"] = _probe(server)

        awake = _create(ctx, server, "memCounter", prefix, p.mem_awake, "increment", p.mem_awake_limit_s)
        res["create_awake"] = awake
        time.sleep(p.settle_s)
        res["rss_awake_kb"] = rss_kb(pids)
        res["kb_per_awake"] = (res["rss_awake_kb"] - res["rss_base_kb"]) / max(1, awake["ok"])
        res["probe_awake"] = _probe(server)
        _say("awake", awake, extra=f"{res['kb_per_awake']:.2f} KB/actor")

        # Ask exactly the actors that were created to sleep.
        created = awake["attempted"]
        sleep = _create(ctx, server, "memCounter", prefix, created, "goToSleep", p.mem_awake_limit_s)
        res["sleep_calls"] = sleep
        res["asleep_check"] = _wait_asleep(ctx, server, "memCounter", prefix, created)
        time.sleep(p.settle_s)
        res["rss_asleep_kb"] = rss_kb(pids)
        res["kb_per_asleep"] = (res["rss_asleep_kb"] - res["rss_base_kb"]) / max(1, awake["ok"])
        res["probe_asleep"] = _probe(server)
        res["asleep_breakdown"] = memory_breakdown(res["probe_base"], res["probe_asleep"], awake["ok"])
        parts = ", ".join(f"{k} {v:.2f}" for k, v in res["asleep_breakdown"].items() if v is not None)
        _say(
            "after sleep",
            sleep,
            extra=f"{res['kb_per_asleep']:.2f} KB/actor RSS ({parts}), asleep {res['asleep_check']}",
        )

        limit = p.mem_many_limit_ours_s if server.side == "rivet_django" else p.mem_many_limit_peer_s
        many = _create(ctx, server, "sleepyCounter", prefix, p.mem_many, "increment", limit)
        res["create_many"] = many
        res["rss_many_peak_kb"] = rss_kb(pids)
        res["many_asleep_check"] = _wait_asleep(ctx, server, "sleepyCounter", prefix, many["attempted"])
        time.sleep(p.settle_s)
        res["rss_many_kb"] = rss_kb(pids)
        res["kb_per_asleep_many"] = (res["rss_many_kb"] - res["rss_asleep_kb"]) / max(1, many["ok"])
        res["storage_many_bytes"] = server.storage_bytes()
        res["probe_many"] = _probe(server)
        _say(
            "many",
            many,
            extra=f"RSS {res['rss_many_kb'] / 1024:.0f} MB, storage "
            f"{res['storage_many_bytes'] / 2**20:.1f} MB, asleep {res['many_asleep_check']}",
        )
        return res

    return per_side(ctx, "w5", body)


def w7_wake(ctx: Context) -> dict[str, Any]:
    """Wake latency: the first call to an actor that has fallen asleep."""
    p = ctx.params

    def body(server: Any) -> dict[str, Any]:
        prefix = _prefix()
        created = ctx.js(
            "w7",
            server,
            {
                "mode": "create",
                "actor": "sleepyCounter",
                "action": "increment",
                "args": [1],
                "n": p.wake_keys,
                "offset": 0,
                "concurrency": 4,
                "duration_s": 300,
                "prefix": prefix,
            },
            400,
        )
        time.sleep(1.5)
        check = _wait_asleep(ctx, server, "sleepyCounter", prefix, p.wake_keys, workload="w7")
        cfg = {
            "mode": "sequential",
            "actor": "sleepyCounter",
            "action": "getCount",
            "n": p.wake_keys,
            "second": True,
            "duration_s": 600,
            "prefix": prefix,
        }
        res = ctx.js("w7", server, cfg, 660)
        res["create"] = {k: created.get(k) for k in ("ok", "errors", "error_samples")}
        res["asleep_check"] = check
        _say("wake", res, extra=f"asleep before: {check.get('asleep')}/{check.get('sampled')}")
        return res

    return per_side(ctx, "w7", body)


def w8_database(ctx: Context) -> dict[str, Any]:
    """Per-actor SQLite: one INSERT per HTTP action (commit durability) against state only."""

    def body(server: Any) -> dict[str, Any]:
        cfg = functools.partial(_throughput_cfg, ctx, "http")
        timeout = _throughput_timeout(ctx)
        res: dict[str, Any] = {"state": ctx.js("w8", server, cfg("counter", "default"), timeout)}
        _say("state only (counter)", res["state"])
        res["db"] = ctx.js("w8", server, cfg("dbCounter", "default"), timeout)
        _say("INSERT per call (dbCounter)" + (", local file" if server.side == "rivet_django" else ""), res["db"])
        if server.side == "rivet_django":
            # The shared backend (committed WAL frames stored in the Django database, here
            # the server's SQLite file, before each reply) on a server of its own.
            shared = OursServer(
                ctx.workdir / "w8-shared",
                ctx.cores.server,
                server=ctx.ours_server,
                env={**ctx.ours_env, "RIVET_BENCH_DB_BACKEND": "shared"},
            )
            shared.start()
            try:
                res["db_shared"] = ctx.js("w8", shared, cfg("dbCounter", "default"), timeout)
                _say("INSERT per call (dbCounter), shared backend", res["db_shared"])
            finally:
                shared.stop()
        return res

    return per_side(ctx, "w8", body)


def _say(label: str, res: dict[str, Any], extra: str = "") -> None:
    parts = [f"    {label}:"]
    if "throughput" in res:
        parts.append(f"{res['throughput']:.0f}/s")
    if "p50_ms" in res:
        parts.append(f"p50 {res['p50_ms']:.1f} ms p99 {res['p99_ms']:.1f} ms")
    if "ok" in res:
        parts.append(f"ok {res['ok']}")
    parts.append(f"errors {res.get('errors', 0)}")
    if res.get("server_cpu_pct") is not None:
        parts.append(f"server CPU {res['server_cpu_pct']:.0f}% client CPU {res['client_cpu_pct']:.0f}%")
    if extra:
        parts.append(extra)
    print(" ".join(parts), flush=True)


WORKLOADS: dict[str, Callable[[Context], dict[str, Any]]] = {
    "w1": w1_http,
    "w2": w2_ws,
    "w3": w3_fanout,
    "w4": w4_cold,
    "w5": w5_memory,
    "w7": w7_wake,
    "w8": w8_database,
}
