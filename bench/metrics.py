"""What observability costs the hot path: one node, wrk; metrics off, on, and tracing on too, alternated.

    python -m bench.metrics            # about 2 minutes; needs wrk
    python -m bench.metrics --quick

A ``runactors`` node (``bench.settings``: the demo on SQLite) with ``RIVET["METRICS"]``
off, off again (a control: the noise between two identical servers), on, and on with
``RIVET["TRACING"]`` too (spans into the inspector's buffer, no exporter), three times
each, alternating (this machine's noise is large; ``bench.hotpath`` measures the
per-call cost without HTTP): wrk, 32
connections, ``increment(1)`` on 100 counters in the direct gateway form. Written to
bench/results/metrics-<UTC>.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.cluster import REPO, RESULTS, _place, _run, _script
from tests.server import LiveServer

#: label -> (RIVET["METRICS"], RIVET["TRACING"]). "off-again" is "off" once more, a
#: control: how far two identical servers differ here is the noise any other gap sits in.
MODES = {"off": (False, False), "off-again": (False, False), "metrics": (True, False), "tracing": (True, True)}


def _measure(folder: Path, label: str, seconds: float, index: int) -> dict[str, Any]:
    metrics, tracing = MODES[label]
    server = LiveServer(
        str(folder / f"db-{index}-{label}.sqlite3"),
        env={
            "RIVET_BENCH_METRICS": "1" if metrics else "0",
            "RIVET_BENCH_TRACING": "1" if tracing else "0",
            "RIVET_LOG_LEVEL": "WARNING",
        },
        settings="bench.settings",
    )
    with server:
        ids = _place(server.endpoint, [f"m-{i}" for i in range(100)])
        script = _script(folder, f"m-{index}-{label}", ids, "/api/rivet")
        base = server.endpoint.removesuffix("/api/rivet")
        _run(base, script, 8, 1.0)  # warm up
        return _run(base, script, 32, seconds)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.metrics", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        print("wrk is not installed (apt-get install wrk)", file=sys.stderr)
        return 2
    seconds, rounds = (2.0, 1) if args.quick else (10.0, 3)
    folder = Path(tempfile.mkdtemp(prefix="rivet-bench-metrics-"))
    started = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    runs: dict[str, list[dict[str, Any]]] = {label: [] for label in MODES}
    labels = list(MODES)
    for index in range(rounds):
        # Rotated each round: the first server of a round tends to run faster here.
        for label in labels[index % len(labels) :] + labels[: index % len(labels)]:
            result = _measure(folder, label, seconds, index)
            runs[label].append({k: result.get(k) for k in ("rps", "p50_ms", "p99_ms", "errors")})
            print(f"{label:9} round {index + 1}: {result.get('rps')} req/s p50 {result.get('p50_ms')} ms "
                  f"p99 {result.get('p99_ms')} ms", flush=True)  # fmt: skip
    medians = {label: statistics.median(r["rps"] or 0 for r in runs[label]) for label in MODES}
    off = medians["off"]
    results = {
        "started": started,
        "seconds_per_run": seconds,
        "runs": runs,
        "medians": medians,
        "over_off": {label: round(value / off, 3) if off else None for label, value in medians.items()},
    }
    print("medians: " + ", ".join(f"{label} {value:.0f} req/s" for label, value in medians.items()))
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"metrics-{started}.json"
    out.write_text(json.dumps(results, indent=2))
    print(f"written {out.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
