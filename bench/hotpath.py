"""What observability costs one call inside the runtime, without HTTP: metrics and tracing, alternated.

    python -m bench.hotpath            # about a minute
    python -m bench.hotpath --quick

``bench.metrics`` measures whole requests with wrk, where this machine's noise is
larger than the difference it looks for. This runs one in-process node (the demo's
settings, a fresh SQLite file) and calls ``increment(1)`` on 50 counters from 50
concurrent callers, as the runtime's own internal calls (``run_internal``: the same
``call_action`` every way in ends in), switching Prometheus counting and tracing
between rounds in the same process, so both modes share the same warm process,
database and allocator. Reports microseconds per call (median of the rounds) and the
difference to "off". Written to bench/results/hotpath-<UTC>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"

#: label -> (metrics on, tracing on)
MODES = {"off": (False, False), "metrics": (True, False), "tracing": (False, True), "both": (True, True)}


def _switch(metrics_on: bool, tracing_on: bool) -> None:
    from rivet_django import metrics, tracing

    metrics._enabled = metrics_on
    if tracing_on:
        tracing.setup()
    tracing._enabled = tracing_on


async def _round(runtime: Any, ids: list[str], calls: int) -> float:
    """Seconds per call of ``calls`` increments spread over the actors, all callers at once."""
    per_caller = calls // len(ids)

    async def caller(actor_id: str) -> None:
        for _ in range(per_caller):
            await runtime.run_internal(actor_id, "increment", [1])

    started = time.perf_counter()
    await asyncio.gather(*(caller(actor_id) for actor_id in ids))
    return (time.perf_counter() - started) / (per_caller * len(ids))


async def _main(rounds: int, calls: int) -> dict[str, Any]:
    from rivet_django.testing import running_node

    async with running_node(node_id="bench-hotpath") as node:
        router = node.router
        ids = [(await router.get_or_create("default", "counter", (f"hot-{i}",)))[0].actor_id for i in range(50)]
        _switch(False, False)
        await _round(node.runtime, ids, calls)  # warm up: every actor awake, caches filled
        samples: dict[str, list[float]] = {label: [] for label in MODES}
        for index in range(rounds):
            order = list(MODES)[index % len(MODES) :] + list(MODES)[: index % len(MODES)]  # rotated
            for label in order:
                _switch(*MODES[label])
                samples[label].append(await _round(node.runtime, ids, calls))
        _switch(False, False)
    off = statistics.median(samples["off"])
    return {
        "calls_per_round": calls,
        "rounds": rounds,
        "us_per_call": {label: [round(s * 1e6, 2) for s in values] for label, values in samples.items()},
        "median_us": {label: round(statistics.median(values) * 1e6, 2) for label, values in samples.items()},
        "extra_us_vs_off": {
            label: round((statistics.median(values) - off) * 1e6, 2) for label, values in samples.items()
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.hotpath", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    rounds, calls = (2, 2_000) if args.quick else (8, 10_000)
    folder = Path(tempfile.mkdtemp(prefix="rivet-bench-hotpath-"))
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "demo_project"))  # as manage.py does
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")
    os.environ["RIVET_DEMO_DB"] = str(folder / "db.sqlite3")
    os.environ["RIVET_BENCH_DB_DIR"] = str(folder / "actors")
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)
    result = asyncio.run(_main(rounds, calls))
    result["started"] = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    print(json.dumps(result["median_us"]), "us per call (median)")
    print(json.dumps(result["extra_us_vs_off"]), "us more than off")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"hotpath-{result['started']}.json").write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
