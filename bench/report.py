"""Turns raw workload results into rows (ours, RivetKit, ratio, target, met), a printed
table, a CPU table and a PNG chart."""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["build_rows", "print_tables", "write_chart"]

OURS, PEER = "rivet_django", "rivetkit"
SATURATED = 90.0  # % of one core: a load generator this busy may be the bottleneck
ENC_LABEL = {"default": "bare (default)", "json": "json"}


def _get(runs: dict[str, Any], *path: str) -> Any:
    node: Any = runs
    for part in path:
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _ratio(ours: Any, peer: Any) -> float | None:
    if isinstance(ours, (int, float)) and isinstance(peer, (int, float)) and peer:
        return ours / peer
    return None


def _row(
    workload: str,
    metric: str,
    unit: str,
    ours: Any,
    peer: Any,
    *,
    target: str = "",
    check: Any = None,
    value_for_check: Any = None,
    note: str = "",
) -> dict[str, Any]:
    ratio = _ratio(ours, peer)
    subject = ratio if value_for_check is None else value_for_check
    met = None
    if check is not None and isinstance(subject, (int, float)):
        met = bool(check(subject))
    return {
        "workload": workload,
        "metric": metric,
        "unit": unit,
        "ours": ours,
        "rivetkit": peer,
        "ratio": ratio,
        "target": target,
        "met": met,
        "note": note,
    }


def _client_note(*results: Any) -> str:
    notes = []
    for res in results:
        if isinstance(res, dict):
            cpu = res.get("client_cpu_pct")
            if isinstance(cpu, (int, float)) and cpu >= SATURATED:
                notes.append(f"client {cpu:.0f}% CPU")
            if res.get("errors"):
                notes.append(f"{res['errors']} errors")
            if res.get("failed"):
                notes.append("FAILED")
    return "; ".join(dict.fromkeys(notes))


def _python_client_rows(r: dict[str, Any], workload: str, label: str) -> list[dict[str, Any]]:
    """Throughput and latency of our Python AsyncClient run of ``workload`` (ours only)."""
    py = _get(r, workload, OURS, "python")
    if not py:
        return []
    latency = f"{_fmt(py.get('p50_ms'))} / {_fmt(py.get('p99_ms'))}"
    return [
        _row(label, "throughput, Python AsyncClient", "calls/s", py.get("throughput"), None, note=_client_note(py)),
        _row(label, "p50 / p99, Python AsyncClient", "ms", latency, None),
    ]


def build_rows(runs: dict[str, Any], sides: list[str]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    r = runs

    for enc in ("default", "json"):
        o, p = _get(r, "w1", OURS, enc), _get(r, "w1", PEER, enc)
        if o is None and p is None:
            continue
        lab = ENC_LABEL[enc]
        note = _client_note(o, p)
        rows.append(
            _row(
                "1 HTTP actions",
                f"throughput, {lab}",
                "calls/s",
                _get(o, "throughput"),
                _get(p, "throughput"),
                target=">= 3x",
                check=lambda x: x >= 3,
                note=note,
            )
        )
        rows.append(_row("1 HTTP actions", f"p50, {lab}", "ms", _get(o, "p50_ms"), _get(p, "p50_ms")))
        rows.append(
            _row(
                "1 HTTP actions",
                f"p99, {lab}",
                "ms",
                _get(o, "p99_ms"),
                _get(p, "p99_ms"),
                target="<= 1/3",
                check=lambda x: x <= 1 / 3,
            )
        )
    rows += _python_client_rows(r, "w1", "1 HTTP actions")

    for enc in ("default", "json"):
        o, p = _get(r, "w2", OURS, enc), _get(r, "w2", PEER, enc)
        if o is None and p is None:
            continue
        lab = ENC_LABEL[enc]
        rows.append(
            _row(
                "2 WebSocket actions",
                f"throughput, {lab}",
                "calls/s",
                _get(o, "throughput"),
                _get(p, "throughput"),
                target=">= 1.5x",
                check=lambda x: x >= 1.5,
                note=_client_note(o, p),
            )
        )
        rows.append(_row("2 WebSocket actions", f"p50, {lab}", "ms", _get(o, "p50_ms"), _get(p, "p50_ms")))
        rows.append(_row("2 WebSocket actions", f"p99, {lab}", "ms", _get(o, "p99_ms"), _get(p, "p99_ms")))
    rows += _python_client_rows(r, "w2", "2 WebSocket actions")

    for variant, how in (("sequential", "1 increment in flight"), ("pipelined", "8 increments in flight")):
        o, p = _get(r, "w3", OURS, variant), _get(r, "w3", PEER, variant)
        if o is None and p is None:
            continue
        rows.append(
            _row(
                "3 Broadcast fan-out",
                f"events delivered/s, {how}",
                "events/s",
                _get(o, "throughput"),
                _get(p, "throughput"),
                target=">= 2x",
                check=lambda x: x >= 2,
                note="; ".join(filter(None, [_client_note(o, p), _short_note(o, p)])),
            )
        )
        rows.append(
            _row("3 Broadcast fan-out", f"delivery latency p50, {how}", "ms", _get(o, "p50_ms"), _get(p, "p50_ms"))
        )
        rows.append(
            _row("3 Broadcast fan-out", f"delivery latency p99, {how}", "ms", _get(o, "p99_ms"), _get(p, "p99_ms"))
        )
        rows.append(
            _row(
                "3 Broadcast fan-out",
                f"increments sent / events delivered, {how}",
                "",
                _frac(_get(o, "sent"), _get(o, "delivered")),
                _frac(_get(p, "sent"), _get(p, "delivered")),
            )
        )

    o, p = _get(r, "w4", OURS), _get(r, "w4", PEER)
    if o or p:
        rows.append(
            _row(
                "4 Cold create",
                "mean",
                "ms",
                _get(o, "mean_ms"),
                _get(p, "mean_ms"),
                target="<= 1/10",
                check=lambda x: x <= 0.1,
                note=_client_note(o, p),
            )
        )
        rows.append(_row("4 Cold create", "p99", "ms", _get(o, "p99_ms"), _get(p, "p99_ms")))
        rows.append(
            _row(
                "4 Cold create", "next call on it, p50", "ms", _get(o, "second", "p50_ms"), _get(p, "second", "p50_ms")
            )
        )

    o, p = _get(r, "w5", OURS), _get(r, "w5", PEER)
    if o or p:
        counts = f"actors: {_get(o, 'create_awake', 'ok')} ours, {_get(p, 'create_awake', 'ok')} RivetKit"
        rows.append(
            _row(
                "5 Memory",
                "RSS per awake idle actor",
                "KB",
                _get(o, "kb_per_awake"),
                _get(p, "kb_per_awake"),
                target="<= 2 KB (ours)",
                check=lambda x: x <= 2,
                value_for_check=_get(o, "kb_per_awake"),
                note="; ".join(filter(None, [counts, _client_note(_get(o, "create_awake"), _get(p, "create_awake"))])),
            )
        )
        rows.append(
            _row(
                "5 Memory",
                "RSS per actor after they all sleep",
                "KB",
                _get(o, "kb_per_asleep"),
                _get(p, "kb_per_asleep"),
                target="~ 0 (<= 0.2 KB, ours)",
                check=lambda x: x <= 0.2,
                value_for_check=_get(o, "kb_per_asleep"),
                note=_asleep_note(o, p, "asleep_check"),
            )
        )
        for part, metric in (
            ("heap", "after they sleep: heap still in use, per actor (no SQLite)"),
            ("sqlite", "after they sleep: SQLite page cache growth, per actor"),
            ("allocator_free", "after they sleep: freed, kept by CPython's allocator, per actor"),
        ):
            value = _get(o, "asleep_breakdown", part)
            if value is not None:
                rows.append(_row("5 Memory", metric, "KB", value, None))
        many_o, many_p = _get(o, "create_many"), _get(p, "create_many")
        rows.append(
            _row(
                "5 Memory",
                "many actors: created (errors) of attempted",
                "actors",
                _ok_err(many_o),
                _ok_err(many_p),
                target="all, no error (ours)",
                check=lambda x: x,
                value_for_check=_many_ok(o),
                note="; ".join(filter(None, [_asleep_note(o, p, "many_asleep_check"), _limit_note(many_o, many_p)])),
            )
        )
        rows.append(
            _row(
                "5 Memory",
                "many actors: RSS once asleep",
                "MB",
                _mb(_get(o, "rss_many_kb"), 1024),
                _mb(_get(p, "rss_many_kb"), 1024),
            )
        )
        rows.append(
            _row(
                "5 Memory",
                "many actors: RSS added per sleeping actor",
                "KB",
                _get(o, "kb_per_asleep_many"),
                _get(p, "kb_per_asleep_many"),
            )
        )
        rows.append(
            _row(
                "5 Memory",
                "many actors: storage (whole server)",
                "MB",
                _mb(_get(o, "storage_many_bytes"), 2**20),
                _mb(_get(p, "storage_many_bytes"), 2**20),
            )
        )
        rows.append(
            _row(
                "5 Memory",
                "create rate (getOrCreate + action, concurrent)",
                "actors/s",
                _get(many_o, "throughput"),
                _get(many_p, "throughput"),
                note=f"concurrency {_get(many_o, 'concurrency')} ours, {_get(many_p, 'concurrency')} RivetKit",
            )
        )

    commit, throttled = _get(r, "w1", OURS, "default"), _get(r, "w1", OURS, "throttled")
    if commit and throttled:
        c, t = commit.get("throughput"), throttled.get("throughput")
        rows.append(
            _row(
                "6 Durability (ours)",
                "commit throughput / throttled throughput",
                "calls/s",
                f"{_fmt(c)} / {_fmt(t)}",
                None,
                target=">= 70 %",
                check=lambda x: x >= 0.7,
                value_for_check=_ratio(c, t),
                note=f"commit = {_pct(_ratio(c, t))} of throttled",
            )
        )
        rows.append(
            _row(
                "6 Durability (ours)",
                "p99 commit / throttled",
                "ms",
                f"{_fmt(commit.get('p99_ms'))} / {_fmt(throttled.get('p99_ms'))}",
                None,
            )
        )

    o, p = _get(r, "w7", OURS), _get(r, "w7", PEER)
    if o or p:
        rows.append(
            _row(
                "7 Wake",
                "first call to a sleeping actor, p50",
                "ms",
                _get(o, "p50_ms"),
                _get(p, "p50_ms"),
                note="; ".join(filter(None, [_client_note(o, p), _asleep_note(o, p, "asleep_check")])),
            )
        )
        rows.append(_row("7 Wake", "first call to a sleeping actor, p99", "ms", _get(o, "p99_ms"), _get(p, "p99_ms")))
        rows.append(
            _row("7 Wake", "next call (awake), p50", "ms", _get(o, "second", "p50_ms"), _get(p, "second", "p50_ms"))
        )

    o, p = _get(r, "w8", OURS), _get(r, "w8", PEER)
    if o or p:
        rows.append(
            _row(
                "8 Per-actor SQLite",
                "HTTP actions/s, one INSERT each",
                "calls/s",
                _get(o, "db", "throughput"),
                _get(p, "db", "throughput"),
                note=f"ours: local file; state-only counter in the same run: {_fmt(_get(o, 'state', 'throughput'))} "
                f"(ours) / {_fmt(_get(p, 'state', 'throughput'))} (RivetKit)",
            )
        )
        rows.append(
            _row("8 Per-actor SQLite", "p99, one INSERT each", "ms", _get(o, "db", "p99_ms"), _get(p, "db", "p99_ms"))
        )
        rows.append(
            _row(
                "8 Per-actor SQLite",
                "shared backend actions/s (ours) vs RivetKit",
                "calls/s",
                _get(o, "db_shared", "throughput"),
                _get(p, "db", "throughput"),
                note=f"p99 {_fmt(_get(o, 'db_shared', 'p99_ms'))} ms; shared / local = "
                f"{_pct(_ratio(_get(o, 'db_shared', 'throughput'), _get(o, 'db', 'throughput')))}",
            )
        )
    return rows


def _frac(a: Any, b: Any) -> str | None:
    return None if a is None else f"{a:,} / {b:,}"


def _short_note(*results: Any) -> str:
    """Fan-out runs that did not send every increment within their time bound."""
    notes = []
    for side, res in zip((OURS, PEER), results, strict=True):
        sent, wanted = (res.get("sent"), res.get("requested_increments")) if isinstance(res, dict) else (None, None)
        if sent is not None and wanted is not None and sent < wanted:
            notes.append(f"{side} sent only {sent} of {wanted} increments in {res.get('send_elapsed_s', 0):.0f} s")
        if isinstance(res, dict) and res.get("missing"):
            notes.append(f"{side}: {res['missing']} events missing")
    return "; ".join(notes)


def _ok_err(res: Any) -> str | None:
    if not isinstance(res, dict):
        return None
    return f"{res.get('ok'):,} ({res.get('errors')} err) of {res.get('attempted'):,}"


def _limit_note(*results: Any) -> str:
    notes = []
    for side, res in zip((OURS, PEER), results, strict=True):
        if isinstance(res, dict) and res.get("elapsed_s") and res.get("attempted") is not None:
            notes.append(f"{side}: {res['attempted']:,} attempted in {res['elapsed_s']:.0f} s")
    return "; ".join(notes)


def _many_ok(res: Any) -> bool | None:
    many = _get(res, "create_many")
    if not isinstance(many, dict):
        return None
    return bool(
        many.get("errors") == 0
        and many.get("ok") == many.get("requested", many.get("attempted"))
        and res.get("server_alive", True)
        and not res.get("server_died")
    )


def _asleep_note(o: Any, p: Any, key: str) -> str:
    notes = []
    for side, res in ((OURS, o), (PEER, p)):
        check = _get(res, key)
        if isinstance(check, dict) and check.get("sampled") and check.get("asleep") != check.get("sampled"):
            notes.append(
                f"{side}: only {check.get('asleep')}/{check.get('sampled')} actors asleep ({check.get('source')})"
            )
        api = _get(check, "api_sample")
        if isinstance(api, dict) and api.get("sampled") and api.get("asleep") != api.get("sampled"):
            notes.append(
                f"{side}: GET /actors reports sleep_ts for only {api.get('asleep')}/{api.get('sampled')} "
                f"actors its database has asleep"
            )
    return "; ".join(notes)


def _mb(value: Any, div: float) -> float | None:
    return value / div if isinstance(value, (int, float)) else None


def _pct(x: Any) -> str:
    return f"{100 * x:.0f} %" if isinstance(x, (int, float)) else "-"


def _fmt(x: Any) -> str:
    if x is None:
        return "-"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, float):
        if abs(x) >= 100:
            return f"{x:,.0f}"
        if abs(x) >= 10:
            return f"{x:.1f}"
        return f"{x:.2f}"
    if isinstance(x, int):
        return f"{x:,}"
    return str(x)


def _ratio_fmt(x: Any) -> str:
    if x is None:
        return "-"
    return f"{x:.2f}x" if x >= 0.1 else f"{x:.2g}x"


def cpu_rows(runs: dict[str, Any]) -> list[list[str]]:
    """One line per load-generator run: server / client / other CPU in its measured window."""
    out = []

    def walk(workload: str, side: str, variant: str, res: Any) -> None:
        if not isinstance(res, dict):
            return
        if "server_cpu_pct" in res:
            client = res.get("client_cpu_pct")
            out.append(
                [
                    workload,
                    side,
                    variant,
                    _fmt(res.get("server_cpu_pct")),
                    _fmt(client),
                    _fmt(res.get("other_cpu_pct")),
                    _fmt(res.get("window_s")),
                    _fmt(res.get("errors", 0)),
                    "CLIENT SATURATED" if isinstance(client, (int, float)) and client >= SATURATED else "",
                ]
            )

    for workload, per in runs.items():
        if not isinstance(per, dict):
            continue
        for side, res in per.items():
            if not isinstance(res, dict):
                continue
            if "server_cpu_pct" in res:
                walk(workload, side, "", res)
            for variant, sub in res.items():
                if isinstance(sub, dict) and "server_cpu_pct" in sub:
                    walk(workload, side, variant, sub)
    return out


def _table(headers: list[str], lines: list[list[str]]) -> str:
    widths = [max(len(h), *(len(line[i]) for line in lines)) if lines else len(h) for i, h in enumerate(headers)]
    fmt = "  ".join(f"{{:{'<' if i < 2 else '>'}{w}}}" for i, w in enumerate(widths))
    sep = "  ".join("-" * w for w in widths)
    return "\n".join([fmt.format(*headers), sep, *(fmt.format(*line) for line in lines)])


def print_tables(doc: dict[str, Any]) -> None:
    rows = doc["rows"]
    lines = []
    for row in rows:
        met = "" if row["met"] is None else ("MET" if row["met"] else "not met")
        lines.append(
            [
                row["workload"],
                f"{row['metric']} [{row['unit']}]",
                _fmt(row["ours"]),
                _fmt(row["rivetkit"]),
                _ratio_fmt(row["ratio"]),
                row["target"],
                met,
            ]
        )
    print()
    print(f"Results ({doc['meta']['mode']}, {doc['meta']['started']}): ratio = rivet_django / RivetKit")
    print(_table(["workload", "metric", "rivet_django", "RivetKit", "ratio", "target", "met?"], lines))
    notes = [(row["workload"], row["metric"], row["note"]) for row in rows if row.get("note")]
    if notes:
        print("\nNotes:")
        for workload, metric, note in notes:
            print(f"  {workload} / {metric}: {note}")
    cpu = cpu_rows(doc["runs"])
    if cpu:
        print("\nCPU in each measured window (100 = one core busy; 'other' = rest of the machine):")
        print(_table(["workload", "side", "run", "server %", "client %", "other %", "window s", "errors", ""], cpu))
    for note in doc["meta"].get("notes", []):
        print(f"note: {note}")
    print()


def write_chart(doc: dict[str, Any], path: Path) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = doc["runs"]
    panels: list[tuple[str, list[tuple[str, tuple[str, ...]]]]] = [
        (
            "1 HTTP actions/s",
            [("bare", ("w1", "{side}", "default", "throughput")), ("json", ("w1", "{side}", "json", "throughput"))],
        ),
        (
            "1 HTTP p99 ms",
            [("bare", ("w1", "{side}", "default", "p99_ms")), ("json", ("w1", "{side}", "json", "p99_ms"))],
        ),
        (
            "2 WebSocket actions/s",
            [("bare", ("w2", "{side}", "default", "throughput")), ("json", ("w2", "{side}", "json", "throughput"))],
        ),
        (
            "3 fan-out events/s",
            [
                ("sequential", ("w3", "{side}", "sequential", "throughput")),
                ("pipelined", ("w3", "{side}", "pipelined", "throughput")),
            ],
        ),
        ("4 cold create mean ms", [("", ("w4", "{side}", "mean_ms"))]),
        (
            "5 KB per actor",
            [("awake", ("w5", "{side}", "kb_per_awake")), ("asleep", ("w5", "{side}", "kb_per_asleep"))],
        ),
        ("7 wake p50 / p99 ms", [("p50", ("w7", "{side}", "p50_ms")), ("p99", ("w7", "{side}", "p99_ms"))]),
    ]
    fig, axes = plt.subplots(2, 4, figsize=(16, 7.5))
    colors = {OURS: "#2b7bba", PEER: "#e0822d"}
    for ax, (title, series) in zip(axes.flat, panels, strict=False):
        xs = range(len(series))
        width = 0.38
        for k, side in enumerate((OURS, PEER)):
            vals = []
            for _, keys in series:
                v = _get(runs, *(part.format(side=side) for part in keys))
                vals.append(v if isinstance(v, (int, float)) else 0)
            bars = ax.bar([x + (k - 0.5) * width for x in xs], vals, width, label=side, color=colors[side])
            for bar, v in zip(bars, vals, strict=True):
                if v:
                    ax.annotate(
                        _fmt(float(v)),
                        (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                        ha="center",
                        va="bottom",
                        fontsize=7,
                    )
        ax.set_xticks(list(xs), [label for label, _ in series])
        ax.set_title(title, fontsize=10)
    # Workload 6 on the last panel: our two durability modes.
    ax = axes.flat[-1]
    c = _get(runs, "w1", OURS, "default", "throughput")
    t = _get(runs, "w1", OURS, "throttled", "throughput")
    ax.bar(["commit", "throttled"], [c or 0, t or 0], color=colors[OURS])
    ax.set_title("6 rivet_django HTTP actions/s by durability", fontsize=10)
    axes.flat[0].legend(fontsize=8)
    fig.suptitle(
        f"rivet_django vs RivetKit {doc['meta']['machine'].get('rivetkit', '')} "
        f"({doc['meta']['mode']}, {doc['meta']['started']})"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
