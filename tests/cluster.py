"""A local cluster for the multi-node tests: N ``runactors`` nodes on one fresh PostgreSQL database.

Each node is a real process (``tests.server.LiveServer`` with
``tests.settings_cluster``) on its own free port; the database is created for the
cluster and dropped when it stops. Nodes can be killed (-9), paused (SIGSTOP),
resumed and restarted under the same node id (a new port, as in a container
platform). Every wait is bounded.
"""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

from tests.server import REPO, LiveServer

__all__ = ["Cluster", "postgres_available"]


def _admin_connection():  # type: ignore[no-untyped-def]
    import psycopg

    return psycopg.connect(
        host="127.0.0.1", port=5432, user=os.environ.get("PGUSER", "postgres"), dbname="test", autocommit=True
    )


def postgres_available() -> bool:
    try:
        with _admin_connection() as conn:
            conn.execute("select 1")
        return True
    except Exception:
        return False


class Cluster:
    """``size`` nodes named ``n1``..``nN`` sharing one database."""

    def __init__(self, size: int = 3, *, lease_seconds: float = 3.0, env: dict[str, str] | None = None) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="rivet-cluster-"))
        self.ledger_dir = self.folder / "ledger"
        self.ledger_dir.mkdir()
        self.db_name = f"rivet_cluster_{os.getpid()}_{uuid.uuid4().hex[:6]}"
        self.env = {
            "RIVET_CLUSTER_DB": self.db_name,
            "RIVET_LEASE_SECONDS": str(lease_seconds),
            "RIVET_LEDGER_DIR": str(self.ledger_dir),
            "RIVET_CLUSTER_FOLDER": str(self.folder),
            "RIVET_LOG_LEVEL": "WARNING",
            **(env or {}),
        }
        self.nodes = [
            LiveServer(str(self.folder / f"n{i}.db"), env=self.env, node_id=f"n{i}", settings="tests.settings_cluster")
            for i in range(1, size + 1)
        ]
        self.lease_seconds = lease_seconds

    # -- lifecycle --------------------------------------------------------------------

    def start(self) -> Cluster:
        with _admin_connection() as conn:
            conn.execute(f'CREATE DATABASE "{self.db_name}"')
        self.manage("migrate", "--noinput", "-v", "0")
        for node in self.nodes:
            node._migrated = True
            node.start()
        return self

    def stop(self) -> None:
        try:
            for node in self.nodes:
                self.resume(node)
                try:
                    node.stop(timeout=20)
                except Exception:
                    node.kill()
        finally:
            with _admin_connection() as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{self.db_name}" WITH (FORCE)')
            shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> Cluster:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- processes --------------------------------------------------------------------

    def environ(self) -> dict[str, str]:
        return {**os.environ, **self.env, "DJANGO_SETTINGS_MODULE": "tests.settings_cluster", "RIVET_DEMO_DB": "unused"}

    def manage(self, *args: str, timeout: float = 120, input: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=REPO,
            env=self.environ(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            input=input,
        )

    def pause(self, node: LiveServer) -> None:
        if node.proc is not None and node.proc.poll() is None:
            os.kill(node.proc.pid, signal.SIGSTOP)

    def resume(self, node: LiveServer) -> None:
        if node.proc is not None and node.proc.poll() is None:
            os.kill(node.proc.pid, signal.SIGCONT)

    def endpoints(self) -> list[str]:
        return [node.endpoint for node in self.nodes if node.proc is not None and node.proc.poll() is None]

    def logs(self) -> str:
        return "\n".join(f"--- {node.node_id}\n{node.log()}" for node in self.nodes)

    # -- the activation ledger ----------------------------------------------------------

    def ledger(self) -> list[tuple[str, str, int, float, float]]:
        rows = []
        for path in self.ledger_dir.glob("*.ledger"):
            for line in path.read_text().splitlines():
                parts = line.split()
                if len(parts) == 5:
                    rows.append((parts[0], parts[1], int(parts[2]), float(parts[3]), float(parts[4])))
        return rows

    def overlapping_activations(self) -> list[str]:
        """Pairs of activations (node, generation) of one actor whose calls interleave in time."""
        spans: dict[str, dict[tuple[str, int], list[float]]] = {}
        for actor_id, node, generation, start, end in self.ledger():
            span = spans.setdefault(actor_id, {}).setdefault((node, generation), [start, end])
            span[0], span[1] = min(span[0], start), max(span[1], end)
        problems = []
        for actor_id, activations in spans.items():
            ordered = sorted(activations.items(), key=lambda item: item[1][0])
            for (first, (_, first_end)), (second, (second_start, _)) in itertools.pairwise(ordered):
                if second_start < first_end:
                    problems.append(f"{actor_id}: {first} until {first_end:.3f} overlaps {second} from {second_start:.3f}")
        return problems
