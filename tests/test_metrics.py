"""Prometheus metrics: a call counts, by actor type, action and outcome; commits, awake
actors, connections and schedule lag show; the endpoint is protected like the inspector."""

from __future__ import annotations

import re

import httpx
import pytest

pytestmark = pytest.mark.django_db(transaction=True)

API = "/api/rivet"


def _value(text: str, name: str, **labels: str) -> float:
    """The sample ``name{labels}`` (labels in any order), 0 if absent."""
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}")[0])) if "{" in line else {}
        if line.split("{")[0].split(" ")[0] == name and found == labels:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def _scrape(http: httpx.AsyncClient) -> str:
    response = await http.get(f"{API}/metrics", headers={"authorization": "Bearer metrics-secret"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return response.text


async def _call(http: httpx.AsyncClient, name: str, action: str, args: list, key: str = "m") -> httpx.Response:
    return await http.post(
        f"{API}/gateway/{name}/action/{action}", params={"rvt-method": "getOrCreate", "rvt-key": key}, json={"args": args}
    )


async def test_calls_commits_and_actors_are_counted(http, settings):
    settings.RIVET = {**settings.RIVET, "INSPECTOR_TOKEN": "metrics-secret"}
    before = await _scrape(http)
    ok_before = _value(before, "rivet_actor_calls_total", actor="counter", action="increment", outcome="ok")
    for _ in range(3):
        assert (await _call(http, "counter", "increment", [1])).status_code == 200
    assert (await _call(http, "errors", "user_error", [])).status_code == 500
    assert (await _call(http, "counter", "nope", [])).status_code == 404
    text = await _scrape(http)
    assert _value(text, "rivet_actor_calls_total", actor="counter", action="increment", outcome="ok") == ok_before + 3
    assert _value(text, "rivet_actor_calls_total", actor="errors", action="user_error", outcome="user_error") >= 1
    assert _value(text, "rivet_actor_calls_total", actor="counter", action="", outcome="action_not_found") >= 1
    assert _value(text, "rivet_actor_call_seconds_count", actor="counter") >= 3
    assert _value(text, "rivet_commits_total") >= 1 and _value(text, "rivet_committed_states_total") >= 1
    assert _value(text, "rivet_actors_awake", actor="counter") >= 1
    assert "rivet_lease_renewed_seconds_ago" in text and "rivet_connections" in text


async def test_the_endpoint_needs_the_global_token_outside_debug(http, settings):
    assert (await http.get(f"{API}/metrics")).status_code == 401
    settings.RIVET = {**settings.RIVET, "INSPECTOR_TOKEN": "metrics-secret"}
    assert (await http.get(f"{API}/metrics", headers={"authorization": "Bearer wrong"})).status_code == 401
    assert (await http.get(f"{API}/metrics", headers={"authorization": "Bearer metrics-secret"})).status_code == 200
    settings.DEBUG = True
    settings.RIVET = {k: v for k, v in settings.RIVET.items() if k != "INSPECTOR_TOKEN"}
    assert (await http.get(f"{API}/metrics")).status_code == 200


async def test_metrics_off_count_nothing(http, settings):
    settings.RIVET = {**settings.RIVET, "INSPECTOR_TOKEN": "metrics-secret", "METRICS": False}
    before = _value(await _scrape(http), "rivet_actor_calls_total", actor="counter", action="increment", outcome="ok")
    assert (await _call(http, "counter", "increment", [1], key="off")).status_code == 200
    after = _value(await _scrape(http), "rivet_actor_calls_total", actor="counter", action="increment", outcome="ok")
    assert after == before


async def test_schedule_lag_is_observed(transactional_db, settings):
    from asgiref.sync import sync_to_async
    from django.db import connections
    from prometheus_client import REGISTRY

    from rivet_django.testing import ManualClock, fire_schedules, running_node

    def count() -> float:
        return REGISTRY.get_sample_value("rivet_schedule_lag_seconds_count") or 0.0

    async with running_node(clock=ManualClock()) as node:
        record, _ = await node.router.get_or_create("default", "dbChores", ["lag"])
        await node.router.call_action(record.actor_id, "later", [30, "x"])
        before = count()
        assert await fire_schedules(node, advance=32) == 1
        assert count() == before + 1
        assert (REGISTRY.get_sample_value("rivet_schedule_lag_seconds_sum") or 0) >= 2.0  # ran 2 s late
    await sync_to_async(connections.close_all)()


def test_latency_tallies_are_prometheus_histograms():
    """The hot path's plain tallies become cumulative buckets; a value on a bound counts in it."""
    from rivet_django.metrics import _Tally

    tally = _Tally((0.001, 0.01))
    for value in (0.0005, 0.001, 0.002, 0.01, 5.0):
        tally.observe(value)
    assert tally.buckets() == [("0.001", 2), ("0.01", 4), ("+Inf", 5)]
    assert tally.sum == pytest.approx(5.0135)
