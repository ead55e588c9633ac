"""The Celery scheduler driver end to end: real Redis, a real ``celery worker`` and ``celery beat``.

A ``runactors`` node (settings ``tests.settings_celery``: ``SCHEDULER = "celery"``,
Redis channel layer) hosts the demo ``reminder`` actors. Reminders are scheduled,
then the node is killed (-9) and restarted: the new node has no timers for them
and, in celery mode, does not poll. They fire only once Celery runs: beat
sends ``dispatch_due_schedules`` every second, the worker claims the due rows
and sends each to the node over the channel layer — the actor's owner for an
awake actor, a live node for a sleeping one — and the node runs it, once.
Every process is stopped by its pid; every wait is bounded.
"""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import urlparse

import pytest

from rivet_django.client import Client
from tests.server import REPO, LiveServer

REDIS = os.environ.get("RIVET_TEST_REDIS", "redis://127.0.0.1:6379")
SETTINGS = "tests.settings_celery"


def _redis_up() -> bool:
    url = urlparse(REDIS)
    try:
        with socket.create_connection((url.hostname or "127.0.0.1", url.port or 6379), timeout=1):
            return True
    except OSError:
        return False


pytestmark = pytest.mark.skipif(not _redis_up() and not os.environ.get("CI"), reason="Redis is not running")


class CeleryLiveServer(LiveServer):
    """The demo project's ``runactors`` with the Celery test settings."""

    def __init__(self, db_path: str, env: dict[str, str], node_id: str) -> None:
        super().__init__(db_path, env=env, node_id=node_id)
        self.env["DJANGO_SETTINGS_MODULE"] = SETTINGS


class Process:
    """A ``celery`` subprocess with its log in a file; stopped by pid."""

    def __init__(self, args: list[str], env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "demo_project", *args],
            cwd=REPO, env=env, stdout=open(log_path, "ab"), stderr=subprocess.STDOUT,
        )  # fmt: skip

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)


def _pending_schedules(db_path: str) -> int:
    with sqlite3.connect(db_path, timeout=5) as db:
        return int(db.execute("SELECT COUNT(*) FROM rivet_django_actorschedule").fetchone()[0])


def _wait(predicate, timeout: float):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.1)


def test_celery_worker_and_beat_dispatch_due_schedules_to_the_nodes(tmp_path):
    prefix = f"rivet-test-{uuid.uuid4().hex[:10]}"
    db_path = str(tmp_path / "db.sqlite3")
    env = {
        "RIVET_TEST_PREFIX": prefix,
        "RIVET_TEST_REDIS": REDIS,
        "RIVET_DEMO_DB": db_path,
        "DJANGO_DEBUG": "0",
        "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "demo_project")]),
    }
    server = CeleryLiveServer(db_path, env=env, node_id="celery-node")
    celery_env = {**server.env}
    processes: list[Process] = []
    server.start()
    try:
        with Client(server.endpoint) as client:
            asleep = client.reminder.get_or_create(["celery", "asleep"])
            awake = client.reminder.get_or_create(["celery", "awake"])
            due = time.time() + 1.0
            asleep.remind_at(due, "to a sleeping actor")
            awake.remind_at(due, "to an awake actor")
        # kill -9: the node's own timers die with it; the new node has none and does not poll.
        server.kill()
        server.start()
        with Client(server.endpoint) as client:
            awake = client.reminder.get_or_create(["celery", "awake"])
            assert awake.fired() == []  # wakes it on the node: its schedule must go to its owner
            time.sleep(max(0.0, due + 1.5 - time.time()))
            assert awake.fired() == [] and _pending_schedules(db_path) == 2  # nobody fires them yet

            processes.append(Process(
                ["worker", "--pool", "solo", "--without-gossip", "--without-mingle", "--without-heartbeat",
                 "-n", f"{prefix}@%h", "-l", "info"],
                celery_env, tmp_path / "worker.log",
            ))  # fmt: skip
            processes.append(Process(
                ["beat", "-s", str(tmp_path / "beat-schedule"), "--max-interval", "1", "-l", "info"],
                celery_env, tmp_path / "beat.log",
            ))  # fmt: skip
            started = time.monotonic()
            assert _wait(lambda: _pending_schedules(db_path) == 0, 45), (
                f"not dispatched\nworker:\n{processes[0].log()}\nbeat:\n{processes[1].log()}\nnode:\n{server.log()}"
            )
            asleep = client.reminder.get_or_create(["celery", "asleep"])
            assert [f["text"] for f in awake.fired()] == ["to an awake actor"]
            assert [f["text"] for f in asleep.fired()] == ["to a sleeping actor"]
            assert "dispatch_due_schedules" in processes[0].log()
            # Once: later dispatch passes find nothing more to do.
            time.sleep(2.0)
            assert len(awake.fired()) == 1 and len(asleep.fired()) == 1
            assert time.monotonic() - started < 45

            # A Celery task calling an actor (demo_project/counter/tasks.py): the worker is
            # not a node; its Client.local() forwards to runactors, which runs the actor.
            from celery import Celery

            sender = Celery(broker=f"{REDIS}/0")
            try:
                for _ in range(3):
                    sender.send_task("counter.tasks.increment_counter", args=["from-celery", 2], queue=prefix)
            finally:
                sender.close()
            counter = client.counter.get_or_create(["from-celery"])
            assert _wait(lambda: counter.getCount() == 6, 30), (
                f"count {counter.getCount()}\nworker:\n{processes[0].log()}\nnode:\n{server.log()}"
            )
            with sqlite3.connect(db_path, timeout=5) as db:
                nodes = [row[0] for row in db.execute("SELECT id FROM rivet_django_node")]
            assert nodes == ["celery-node"]  # the worker hosted nothing
    finally:
        for process in processes:
            process.stop()
        try:
            server.stop()
        finally:
            server.kill()
        _forget_redis_keys(prefix)


def _forget_redis_keys(prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(f"{REDIS}/0")
    try:
        keys = [*client.scan_iter(f"{prefix}*"), *client.scan_iter(f"_kombu.binding.{prefix}*")]
        if keys:
            client.delete(*keys)
    finally:
        client.close()
