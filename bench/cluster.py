"""Multi-node workload: what the forwarded hop costs, and a 3-node cluster under load.

    python -m bench.cluster            # about 2 minutes; needs PostgreSQL and wrk
    python -m bench.cluster --quick    # a few seconds per step

Three ``runactors`` nodes on a fresh PostgreSQL database (tests/cluster.py), loaded
with wrk (a native load generator: a Python or JS client would be the bottleneck).
Every request is an action call ``increment(1)`` on the test app's ``counter``, in the
direct gateway form (``/gateway/{actor id}/action/increment``), over 100 actors.

1. **Hop latency**: one connection, one request at a time. *direct*: requests enter
   the node that holds the actors; *forwarded*: they enter another node, which
   sends each on to the owner. The added p50 is the cost of the hop.
2. **Hop throughput**: the same with 32 connections: forwarded / direct.
3. **WebSocket relay**: a connection (our Python client) to an actor on n1, opened
   through n1 (direct) or n2 (relayed to n1): sequential action calls (p50, p99) and
   64 calls in flight at a time (calls/s). The client is Python, so the ratio, not
   the rate, is the result.
4. **Cluster**: 300 actors spread over the three nodes (each woke on the node of
   its first call); one wrk per node, each calling every actor, so about two thirds
   of the calls are forwarded. Total throughput against the single-node direct
   figure of step 2, in the same run.

The machine's cores are shared by the nodes and wrk: the ratios, not the absolute
numbers, are the result. Written to bench/results/cluster-<UTC>.json.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.cluster import Cluster  # noqa: E402

RESULTS = REPO / "bench" / "results"

_LUA = """
local ids = {%s}
local body = '{"args":[1]}'
local headers = {["content-type"] = "application/json"}
request = function()
  local id = ids[math.random(#ids)]
  return wrk.format("POST", "%s/gateway/" .. id .. "/action/increment", headers, body)
end
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) forwarded = 0 end
function response(status, headers, body)
  if headers["x-rivet-forwarded"] then forwarded = forwarded + 1 end
end
function done(summary, latency, requests)
  local total = 0
  for _, t in ipairs(threads) do total = total + t:get("forwarded") end
  io.write(string.format("FORWARDED %%d OF %%d\\n", total, summary.requests))
end
"""


def _place(endpoint: str, keys: list[str], name: str = "counter") -> list[str]:
    """Wake ``keys`` on the node at ``endpoint`` (its first call); their actor ids."""
    ids = []
    with httpx.Client(timeout=30) as http:
        for key in keys:
            response = http.post(
                f"{endpoint}/gateway/{name}/action/increment",
                params={"rvt-method": "getOrCreate", "rvt-key": key},
                json={"args": [0]},
            )
            response.raise_for_status()
            ids.append(response.headers["x-rivet-actor"])
    return ids


def _script(folder: Path, name: str, ids: list[str], prefix: str) -> Path:
    path = folder / f"{name}.lua"
    path.write_text(_LUA % (", ".join(f'"{i}"' for i in ids), prefix))
    return path


def _wrk(base: str, script: Path, connections: int, seconds: float) -> subprocess.Popen[str]:
    return subprocess.Popen(
        ["wrk", "-t", "1" if connections == 1 else "2", "-c", str(connections), "-d", f"{max(1, round(seconds))}s",
         "--latency", "--timeout", "30s", "-s", str(script), base],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _parse(output: str) -> dict[str, Any]:
    """Requests/sec, latency percentiles (ms) and non-2xx count from wrk's report."""
    result: dict[str, Any] = {"raw": output[-1500:]}
    if m := re.search(r"Requests/sec:\s+([\d.]+)", output):
        result["rps"] = float(m.group(1))
    for pct in ("50", "90", "99"):
        if m := re.search(rf"^\s+{pct}(?:\.000)?%\s+([\d.]+)(us|ms|s)\s*$", output, re.MULTILINE):
            result[f"p{pct}_ms"] = round(float(m.group(1)) * _UNITS[m.group(2)], 3)
    m = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    result["errors"] = int(m.group(1)) if m else 0
    if m := re.search(r"FORWARDED (\d+) OF (\d+)", output):
        result["forwarded"], result["requests"] = int(m.group(1)), int(m.group(2))
    return result


def _run(base: str, script: Path, connections: int, seconds: float) -> dict[str, Any]:
    proc = _wrk(base, script, connections, seconds)
    out, _ = proc.communicate(timeout=seconds + 60)
    return _parse(out)


async def _connection_round(endpoint: str, key: str, calls: int) -> dict[str, Any]:
    import asyncio
    import statistics

    from rivet_django.client import AsyncClient

    async with AsyncClient(endpoint) as client:
        conn = client.counter.get_or_create([key]).connect()
        await conn.increment(0)
        latencies = []
        for _ in range(calls):
            started = time.perf_counter()
            await conn.increment(1)
            latencies.append((time.perf_counter() - started) * 1000)
        latencies.sort()
        started = time.perf_counter()
        done = 0
        while done < calls * 2:
            batch = min(64, calls * 2 - done)
            await asyncio.gather(*(conn.increment(1) for _ in range(batch)))
            done += batch
        rate = done / (time.perf_counter() - started)
        await conn.dispose()
    return {
        "p50_ms": round(statistics.median(latencies), 3),
        "p99_ms": round(latencies[int(len(latencies) * 0.99) - 1], 3),
        "calls_per_s": round(rate, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cluster", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a few seconds per step (proves the harness works)")
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        print("wrk is not installed (apt-get install wrk)", file=sys.stderr)
        return 2
    seconds = 2.0 if args.quick else 10.0
    folder = Path(tempfile.mkdtemp(prefix="rivet-bench-cluster-"))
    started = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    results: dict[str, Any] = {"started": started, "seconds_per_step": seconds, "nodes": 3}
    with Cluster(3, lease_seconds=30.0, env={"RIVET_LEDGER_DIR": ""}) as cluster:
        n1 = cluster.nodes[0]
        prefix = "/api/rivet"
        base = {node.node_id: f"http://127.0.0.1:{node.port}" for node in cluster.nodes}
        ids_n1 = _place(n1.endpoint, [f"hop-{i}" for i in range(100)])
        hop = _script(folder, "hop", ids_n1, prefix)
        # Warm both paths (connections between nodes, caches).
        _run(base["n1"], hop, 4, 1.0)
        _run(base["n2"], hop, 4, 1.0)

        latency: dict[str, Any] = {}
        for label, node in (("direct", "n1"), ("forwarded", "n2"), ("direct_again", "n1"), ("forwarded_again", "n2")):
            latency[label] = _run(base[node], hop, 1, seconds)
            print(f"latency {label:16} p50 {latency[label].get('p50_ms')} ms  p99 {latency[label].get('p99_ms')} ms")
        throughput: dict[str, Any] = {}
        for label, node in (("direct", "n1"), ("forwarded", "n2"), ("direct_again", "n1"), ("forwarded_again", "n2")):
            throughput[label] = _run(base[node], hop, 32, seconds)
            print(f"throughput {label:16} {throughput[label].get('rps')} req/s  p50 {throughput[label].get('p50_ms')} ms")

        def best(table: dict[str, Any], label: str, key: str, pick: Any) -> float:
            values = [table[name].get(key) for name in (label, label + "_again") if table[name].get(key) is not None]
            return float(pick(values)) if values else float("nan")

        added_p50 = best(latency, "forwarded", "p50_ms", min) - best(latency, "direct", "p50_ms", min)
        ratio = best(throughput, "forwarded", "rps", max) / best(throughput, "direct", "rps", max)
        results["hop"] = {"latency": latency, "throughput": throughput, "added_p50_ms": round(added_p50, 3),
                          "forwarded_over_direct": round(ratio, 3)}
        print(f"hop: +{added_p50:.3f} ms p50; forwarded throughput {ratio:.0%} of direct")

        import asyncio

        calls = 100 if args.quick else 1000
        relay: dict[str, Any] = {}
        for label, node in (("direct", cluster.nodes[0]), ("relayed", cluster.nodes[1]),
                            ("direct_again", cluster.nodes[0]), ("relayed_again", cluster.nodes[1])):
            relay[label] = asyncio.run(_connection_round(node.endpoint, "hop-0", calls))
            print(f"connection {label:14} p50 {relay[label]['p50_ms']} ms  p99 {relay[label]['p99_ms']} ms  "
                  f"{relay[label]['calls_per_s']} calls/s")
        relay["added_p50_ms"] = round(
            min(relay["relayed"]["p50_ms"], relay["relayed_again"]["p50_ms"])
            - min(relay["direct"]["p50_ms"], relay["direct_again"]["p50_ms"]), 3
        )
        relay["relayed_over_direct"] = round(
            max(relay["relayed"]["calls_per_s"], relay["relayed_again"]["calls_per_s"])
            / max(relay["direct"]["calls_per_s"], relay["direct_again"]["calls_per_s"]), 3
        )
        results["relay"] = relay
        print(f"relay: +{relay['added_p50_ms']} ms p50; relayed calls/s {relay['relayed_over_direct']:.0%} of direct")

        ids = []
        for node in cluster.nodes:
            ids += _place(node.endpoint, [f"spread-{node.node_id}-{i}" for i in range(100)])
        spread = _script(folder, "spread", ids, prefix)
        procs = [_wrk(base[node.node_id], spread, 12, seconds) for node in cluster.nodes]
        outs = [_parse(proc.communicate(timeout=seconds + 60)[0]) for proc in procs]
        total = sum(o.get("rps", 0.0) for o in outs)
        requests = sum(o.get("requests", 0) for o in outs)
        forwarded = sum(o.get("forwarded", 0) for o in outs)
        results["cluster"] = {
            "per_node": outs,
            "total_rps": round(total, 1),
            "p50_ms": [o.get("p50_ms") for o in outs],
            "p99_ms": [o.get("p99_ms") for o in outs],
            "forwarded_share": round(forwarded / requests, 3) if requests else None,
            "over_single_node_direct": round(total / best(throughput, "direct", "rps", max), 3),
        }
        print(
            f"cluster: {total:.0f} req/s over 3 nodes ({results['cluster']['over_single_node_direct']:.0%} of one node "
            f"direct), forwarded share {results['cluster']['forwarded_share']}, "
            f"p50 {results['cluster']['p50_ms']} ms, p99 {results['cluster']['p99_ms']} ms"
        )
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"cluster-{started}.json"
    out.write_text(json.dumps(results, indent=2))
    print(f"written {out.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
