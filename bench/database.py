"""Per-actor databases on PostgreSQL: what ``self.db`` costs per call, on each backend.

    python -m bench.database            # about 1 minute; needs PostgreSQL and wrk
    python -m bench.database --quick    # a few seconds per step

One ``runactors`` node on a fresh PostgreSQL database (tests/cluster.py), loaded with
wrk (32 connections) over 100 actors, action ``increment(1)`` in the direct gateway
form:

- ``counter``: state only (commit durability: the reply waits for the state commit);
- ``dbCounter``: one ``INSERT ... RETURNING`` into the actor's own SQLite database per
  call, on the ``local`` backend (the file is the database), then, on a fresh node,
  the ``shared`` backend (committed WAL frames stored in PostgreSQL before the reply).

Each step runs twice and the better run is kept; the machine's noise is large, read
the ratios. Written to bench/results/database-<UTC>.json. ``python -m bench --only w8``
compares the same actor with RivetKit's ``c.db`` (SQLite as the Django database).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.cluster import REPO, RESULTS, _place, _run, _script
from tests.cluster import Cluster


def _measure(folder: Path, backend: str, seconds: float) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with Cluster(1, lease_seconds=30.0, env={"RIVET_LEDGER_DIR": "", "RIVET_TEST_DB_BACKEND": backend}) as cluster:
        node = cluster.nodes[0]
        base = f"http://127.0.0.1:{node.port}"
        names = ["counter", "dbCounter"] if backend == "local" else ["dbCounter"]
        for name in names:
            ids = _place(node.endpoint, [f"{name}-{i}" for i in range(100)], name)
            script = _script(folder, f"{backend}-{name}", ids, "/api/rivet")
            _run(base, script, 8, 1.0)  # warm up
            runs = [_run(base, script, 32, seconds) for _ in range(2)]
            best = max(runs, key=lambda r: r.get("rps", 0.0))
            label = "state" if name == "counter" else f"db_{backend}"
            out[label] = {k: best.get(k) for k in ("rps", "p50_ms", "p99_ms", "errors")}
            print(f"{label:9} {best.get('rps')} req/s  p50 {best.get('p50_ms')} ms  p99 {best.get('p99_ms')} ms  "
                  f"non-2xx {best.get('errors')}", flush=True)  # fmt: skip
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.database", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a few seconds per step (proves the harness works)")
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        print("wrk is not installed (apt-get install wrk)", file=sys.stderr)
        return 2
    seconds = 2.0 if args.quick else 10.0
    folder = Path(tempfile.mkdtemp(prefix="rivet-bench-database-"))
    started = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    results: dict[str, Any] = {"started": started, "seconds_per_step": seconds, "database": "postgresql"}
    results.update(_measure(folder, "local", seconds))
    results.update(_measure(folder, "shared", seconds))
    state, local, shared = (results.get(k, {}).get("rps") for k in ("state", "db_local", "db_shared"))
    if state and local and shared:
        results["local_over_state"] = round(local / state, 3)
        results["shared_over_local"] = round(shared / local, 3)
        print(f"local backend: {local / state:.0%} of state only; shared backend: {shared / local:.0%} of local")
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"database-{started}.json"
    out.write_text(json.dumps(results, indent=2))
    print(f"written {out.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
