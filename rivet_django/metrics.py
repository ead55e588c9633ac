"""Prometheus metrics of this process's actors (``prometheus-client``, its default registry).

Counted where each thing happens: action calls and their latency (every way in ends
in ``ActorInstance.call_action``), group commits (the committer), scheduled runs'
lag (the scheduler). Read at scrape time from the runtime: awake actors, open
connections, queued messages of awake actors, seconds since the node last renewed
its leases. Served at ``{api}/metrics`` (``api/manager.py``), protected like the
inspector. ``RIVET["METRICS"] = False`` turns the counting off.

Labels stay bounded: actor types and action names are the registered ones (a call
to an unknown action is counted under ``action=""``).
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from prometheus_client import REGISTRY
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

if TYPE_CHECKING:
    from .runtime.host import ActorRuntime

__all__ = ["call_finished", "commit_finished", "enabled", "install_collector", "schedule_started"]

CALL_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
COMMIT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
SCHEDULE_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)

_enabled: bool | None = None


def enabled() -> bool:
    global _enabled
    if _enabled is None:
        from .conf import rivet_settings

        _enabled = bool(rivet_settings.METRICS)
    return _enabled


def reset_enabled(**_: Any) -> None:
    """Read ``RIVET["METRICS"]`` again (settings changed)."""
    global _enabled
    _enabled = None


class _Tally:
    """One histogram's numbers: observations per bucket (the last: above every bound) and their sum.

    The hot path keeps plain numbers (prometheus-client's metric objects take a lock per
    update: about 1.5 µs a call, 8 % of an in-process call here) and :class:`_Collector`
    turns them into metric families when Prometheus scrapes. Calls and commits are counted
    on the node's event loop, one thread, so the updates need no lock.
    """

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1  # a bucket counts values <= its bound
        self.sum += value

    def buckets(self) -> list[tuple[str, int]]:
        """Cumulative ``(le, count)`` pairs, ``+Inf`` last, as Prometheus wants them."""
        pairs, total = [], 0
        for bound, count in zip([*map(str, self.bounds), "+Inf"], list(self.counts), strict=True):
            total += count
            pairs.append((bound, total))
        return pairs


#: (actor, action, outcome) -> calls; actor -> call latency; commits.
_calls: dict[tuple[str, str, str], int] = {}
_latencies: dict[str, _Tally] = {}
_commits = [0, 0]  # transactions, states written
_commit_latency = _Tally(COMMIT_BUCKETS)
_schedule_lag = _Tally(SCHEDULE_BUCKETS)


def call_finished(actor: str, action: str, outcome: str, started: float) -> None:
    key = (actor, action, outcome)
    _calls[key] = _calls.get(key, 0) + 1
    latency = _latencies.get(actor)
    if latency is None:
        latency = _latencies[actor] = _Tally(CALL_BUCKETS)
    latency.observe(time.perf_counter() - started)


def commit_finished(states: int, seconds: float) -> None:
    _commits[0] += 1
    _commits[1] += states
    _commit_latency.observe(seconds)


def schedule_started(lag_seconds: float) -> None:
    _schedule_lag.observe(max(0.0, lag_seconds))


class _Counted:
    """Calls, commits and scheduled runs' lag, from their tallies, at scrape time."""

    def collect(self) -> Iterator[Any]:
        calls = CounterMetricFamily(
            "rivet_actor_calls",
            "Action calls, by actor type, action and outcome",
            labels=["actor", "action", "outcome"],
        )
        for labels, count in sorted(list(_calls.items())):
            calls.add_metric(list(labels), count)
        yield calls
        latency = HistogramMetricFamily(
            "rivet_actor_call_seconds",
            "Action call latency (until the state change is durable), by actor type",
            labels=["actor"],
        )
        for actor, tally in sorted(list(_latencies.items())):
            latency.add_metric([actor], tally.buckets(), tally.sum)
        yield latency
        yield CounterMetricFamily("rivet_commits", "Group-commit transactions of actor states", value=_commits[0])
        yield CounterMetricFamily("rivet_committed_states", "Actor states written by group commits", value=_commits[1])
        commits = HistogramMetricFamily("rivet_commit_seconds", "Group-commit transaction latency")
        commits.add_metric([], _commit_latency.buckets(), _commit_latency.sum)
        yield commits
        lag = HistogramMetricFamily("rivet_schedule_lag_seconds", "How late scheduled runs start after their due time")
        lag.add_metric([], _schedule_lag.buckets(), _schedule_lag.sum)
        yield lag


REGISTRY.register(_Counted())  # type: ignore[arg-type]


class _RuntimeCollector:
    """Gauges read from the runtime when Prometheus scrapes."""

    def __init__(self) -> None:
        self.runtime: ActorRuntime | None = None

    def collect(self) -> Iterator[GaugeMetricFamily]:
        runtime = self.runtime
        if runtime is None or not runtime.started:
            return
        awake = GaugeMetricFamily("rivet_actors_awake", "Awake actors on this node, by actor type", labels=["actor"])
        connections = GaugeMetricFamily(
            "rivet_connections", "Open connections on this node, by actor type", labels=["actor"]
        )
        queued = GaugeMetricFamily(
            "rivet_queue_messages", "Stored queue messages of awake actors, by actor type", labels=["actor"]
        )
        by_type: dict[str, list[int]] = {}
        for inst in list(runtime.instances.values()):
            counts = by_type.setdefault(inst.definition.name, [0, 0, 0])
            counts[0] += 1
            counts[1] += len(inst.conns)
            queue = inst._queue
            counts[2] += queue._total if queue is not None else 0
        for name, (actors, conns, messages) in sorted(by_type.items()):
            awake.add_metric([name], actors)
            connections.add_metric([name], conns)
            queued.add_metric([name], messages)
        yield awake
        yield connections
        yield queued
        renewed = GaugeMetricFamily(
            "rivet_lease_renewed_seconds_ago",
            "Seconds since this node's leases were last renewed (above LEASE_SECONDS: its actors may have moved)",
        )
        renewed.add_metric([], max(0.0, time.monotonic() - runtime._renewed_at))
        yield renewed


_collector = _RuntimeCollector()
_registered = False


def install_collector(runtime: ActorRuntime) -> None:
    """Report this runtime's gauges (the process's one node)."""
    global _registered
    _collector.runtime = runtime
    if not _registered:
        REGISTRY.register(_collector)  # type: ignore[arg-type]
        _registered = True
