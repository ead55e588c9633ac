"""``python -m bench``: run every workload against rivet_django and RivetKit, report ratios.

    python -m bench            # the full suite (about 30-60 minutes)
    python -m bench --quick    # seconds per workload: proves the harness works
    python -m bench --only w1,w3 --sides rivet_django

Prints a table, writes ``bench/results/<timestamp>.json``, ``latest.json`` and a
PNG chart. Exit status: 0 unless the harness itself broke (a server that would not
start, a load generator that crashed, a measurement in which not one call
succeeded); slow numbers and some failed calls never fail it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

from .proc import Cores
from .report import build_rows, print_tables, write_chart
from .servers import BENCH, NODE22, REPO, peer_installed
from .workloads import WORKLOADS, Context, Params

RESULTS = BENCH / "results"
SIDES = ("rivet_django", "rivetkit")


def _machine() -> dict[str, Any]:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_kb = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    except OSError:
        pass

    def out(argv: list[str]) -> str:
        try:
            return subprocess.run(argv, capture_output=True, text=True, timeout=30, cwd=REPO).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    rivetkit_version = ""
    try:
        rivetkit_version = json.loads((BENCH / "peer/node_modules/rivetkit/package.json").read_text())["version"]
    except (OSError, ValueError, KeyError):
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_mb": mem_kb // 1024,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "node_load": out([str(NODE22), "--version"]) if NODE22.exists() else "",
        "rivetkit": rivetkit_version,
        "git": out(["git", "rev-parse", "--short", "HEAD"])
        + (" (dirty)" if out(["git", "status", "--porcelain"]) else ""),
        "loadavg_before": os.getloadavg(),
    }


def _nothing_succeeded(result: Any, path: str = "") -> list[str]:
    """Measurements in ``result`` whose load generator made calls and none succeeded: the
    client or the harness is broken (slow or partly failing runs are only reported)."""
    found: list[str] = []
    if isinstance(result, dict):
        if result.get("ok") == 0:
            found.append(path or "(measurement)")
        for key, value in result.items():
            found.extend(_nothing_succeeded(value, f"{path}.{key}" if path else str(key)))
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="seconds per workload, small counts")
    parser.add_argument("--only", default="", help=f"comma-separated workloads ({','.join(WORKLOADS)}; w6 is in w1)")
    parser.add_argument("--sides", default=",".join(SIDES), help="comma-separated: rivet_django,rivetkit")
    parser.add_argument("--no-python-client", action="store_true", help="skip the AsyncClient runs")
    parser.add_argument("--keep-workdir", action="store_true", help="keep server databases and logs")
    parser.add_argument("--results", default=str(RESULTS), help="where JSON and PNG go")
    parser.add_argument(
        "--server", default="uvicorn", choices=("uvicorn", "daphne"), help="runactors --server of our side"
    )
    parser.add_argument(
        "--set", action="append", default=[], metavar="NAME=VALUE",
        help="override one size of Params (e.g. --set mem_many=1000); the results record it",
    )
    parser.add_argument("--profile", default="", help="folder for py-spy profiles of our servers (needs py-spy)")
    parser.add_argument(
        "--server-env", action="append", default=[], metavar="NAME=VALUE",
        help="environment of our servers (e.g. LD_PRELOAD=libjemalloc.so.2 PYTHONMALLOC=malloc); recorded",
    )
    args = parser.parse_args(argv)
    server_env: dict[str, str] = {}
    for item in args.server_env:
        name, sep, value = item.partition("=")
        if not sep or not name:
            parser.error(f"--server-env {item!r}: expected NAME=VALUE")
        server_env[name] = value

    params = Params.quick() if args.quick else Params()
    if args.no_python_client:
        params = Params(**{**params.__dict__, "python_client": False})
    overrides: dict[str, Any] = {}
    for item in args.set:
        name, _, value = item.partition("=")
        current = getattr(params, name, None)
        if current is None or isinstance(current, tuple):
            parser.error(f"--set {item!r}: no such size")
        overrides[name] = type(current)(value) if not isinstance(current, bool) else value.lower() in ("1", "true")
    if overrides:
        params = Params(**{**params.__dict__, **overrides})
    sides = [s for s in args.sides.split(",") if s]
    for side in sides:
        if side not in SIDES:
            parser.error(f"unknown side {side!r}")
    notes: list[str] = []
    missing = peer_installed()
    if "rivetkit" in sides and missing:
        sides.remove("rivetkit")
        notes.append(f"RivetKit side skipped: {missing}")
        print(f"NOTE: {notes[-1]}", flush=True)
    if not sides:
        print("nothing to run", file=sys.stderr)
        return 1
    if missing and "rivet_django" in sides:
        # Our side still needs Node 22 + the official client for its load generator.
        print(f"ERROR: the load generator needs the official client and Node 22: {missing}", file=sys.stderr)
        return 1
    selected = [w for w in (args.only.split(",") if args.only else WORKLOADS) if w]
    if "w6" in selected and "w1" not in selected:
        selected = ["w1" if w == "w6" else w for w in selected]
    selected = [w for w in selected if w != "w6"]
    for w in selected:
        if w not in WORKLOADS:
            parser.error(f"unknown workload {w!r}")

    cores = Cores.detect()
    notes.append(cores.note)
    if cores.load is not None:
        # The driver mostly sleeps; keep it off the server's core.
        os.sched_setaffinity(0, {cores.load})
    workdir = Path(tempfile.mkdtemp(prefix="rivet-bench-"))
    started = dt.datetime.now(dt.UTC)
    meta: dict[str, Any] = {
        "started": started.isoformat(timespec="seconds"),
        "mode": "quick" if args.quick else "full",
        "sides": sides,
        "params": params.__dict__ | {"encodings": list(params.encodings)},
        "machine": _machine(),
        "notes": notes,
        "workdir": str(workdir),
        "ours_server": args.server,
        "ours_env": server_env,
    }
    print(f"rivet_django benchmark ({meta['mode']}), {cores.note}; work dir {workdir}", flush=True)
    ctx = Context(
        params=params,
        cores=cores,
        sides=sides,
        workdir=workdir,
        quick=args.quick,
        notes=notes,
        ours_server=args.server,
        profile_dir=Path(args.profile).resolve() if args.profile else None,
        ours_env=server_env,
    )

    runs: dict[str, Any] = {}
    broken: list[str] = []
    t0 = time.monotonic()
    try:
        for name in selected:
            print(f"{name}: {(WORKLOADS[name].__doc__ or '').splitlines()[0]}", flush=True)
            w0 = time.monotonic()
            try:
                runs[name] = WORKLOADS[name](ctx)
            except Exception:
                broken.append(f"{name}: {traceback.format_exc()}")
                print(f"  HARNESS ERROR in {name}:\n{traceback.format_exc()}", flush=True)
                continue
            runs[name]["_elapsed_s"] = time.monotonic() - w0
            for side, res in runs[name].items():
                if isinstance(res, dict) and "failed" in res:
                    broken.append(f"{name} on {side}: {res['failed'][:500]}")
                for path in _nothing_succeeded(res):
                    broken.append(f"{name} on {side}: {path}: not one call succeeded")
    finally:
        ctx.close()
        meta["elapsed_s"] = time.monotonic() - t0
        meta["loadavg_after"] = os.getloadavg()

    rows = build_rows(runs, sides)
    doc = {"meta": meta, "rows": rows, "runs": runs, "harness_errors": broken}
    out_dir = Path(args.results)
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = started.strftime("%Y%m%dT%H%M%SZ") + ("-quick" if args.quick else "")
    json_path = out_dir / f"{stamp}.json"
    text = json.dumps(doc, indent=1, default=str)
    json_path.write_text(text)
    (out_dir / "latest.json").write_text(text)
    print_tables(doc)
    try:
        png = write_chart(doc, out_dir / f"{stamp}.png")
        if png is not None:
            shutil.copyfile(png, out_dir / "latest.png")
            print(f"chart: {png}")
    except ImportError:
        print("chart skipped: matplotlib is not installed (pip install matplotlib)")
    print(f"results: {json_path} (and {out_dir / 'latest.json'})")
    if args.keep_workdir:
        print(f"work dir kept: {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"total {meta['elapsed_s']:.0f} s")
    if broken:
        print(f"HARNESS BROKEN ({len(broken)}):", file=sys.stderr)
        for b in broken:
            print(f"  {b[:2000]}", file=sys.stderr)
        return 1
    return 0
