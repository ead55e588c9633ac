"""Settings of the benchmark's rivet_django server: the demo project plus bench actors.

    DJANGO_SETTINGS_MODULE=bench.settings python manage.py runactors --port 8000

Everything else (SQLite, in-memory channel layer, commit durability, rivet_django
defaults) is the demo project's, i.e. what a newcomer gets from the README.
"""

import os

from demo_project.settings import *  # noqa: F403
from demo_project.settings import INSTALLED_APPS, RIVET

INSTALLED_APPS = [*INSTALLED_APPS, "bench.benchapp"]

RIVET = {
    **RIVET,
    # Per-actor SQLite files (workload 8's dbCounter) next to the run's database.
    "DB_DIR": os.environ.get("RIVET_BENCH_DB_DIR") or None,
    # Workload 8 runs dbCounter on each backend of self.db ("local", "shared").
    "DB_BACKEND": os.environ.get("RIVET_BENCH_DB_BACKEND") or None,
    # bench/metrics.py measures the hot path with Prometheus counting on and off.
    "METRICS": os.environ.get("RIVET_BENCH_METRICS", "1") == "1",
    "TRACING": os.environ.get("RIVET_BENCH_TRACING", "0") == "1",
}
