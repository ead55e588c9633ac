"""Settings of one node of a test cluster (tests/cluster.py): the test apps on a shared
PostgreSQL database (``RIVET_CLUSTER_DB``), with a short lease (``RIVET_LEASE_SECONDS``)."""

import os
import tempfile

from tests.settings_live import *  # noqa: F403
from tests.settings_live import INSTALLED_APPS

INSTALLED_APPS = [*INSTALLED_APPS, "tests.clusterapp"]

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": os.environ["RIVET_CLUSTER_DB"],
        "USER": os.environ.get("PGUSER", "postgres"),
        "HOST": "127.0.0.1",
        "PORT": "5432",
    }
}

RIVET = {
    "LEASE_SECONDS": float(os.environ.get("RIVET_LEASE_SECONDS", "30")),
    "PLACEMENT": os.environ.get("RIVET_PLACEMENT", "local"),
    "SCHEDULER": os.environ.get("RIVET_SCHEDULER", "embedded"),
    "SHUTDOWN_TIMEOUT": 5.0,
    "DB_APPS": ["notes"],
    "INSPECTOR_TOKEN": "cluster-inspector",
    # OpenTelemetry spans (tests/test_tracing.py's cross-node test turns them on).
    "TRACING": os.environ.get("RIVET_TRACING") == "1",
    # None: "shared" (the database is PostgreSQL); bench/database.py measures "local" too.
    "DB_BACKEND": os.environ.get("RIVET_TEST_DB_BACKEND") or None,
    # Each process its own disk (a node restarted after kill -9 starts with an empty one):
    # actors' databases (shared backend, PostgreSQL) must come back from the database.
    "DB_DIR": os.path.join(os.environ.get("RIVET_CLUSTER_FOLDER") or tempfile.gettempdir(), f"dbs-{os.getpid()}"),
}

# The Celery driver's nodes are reached over a channel layer on the local Redis
# (``RIVET_TEST_PREFIX`` keeps one run's channels apart from any other's).
if os.environ.get("RIVET_TEST_PREFIX"):
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {
                "hosts": [{"address": os.environ.get("RIVET_TEST_REDIS", "redis://127.0.0.1:6379"), "socket_timeout": None}],
                "prefix": os.environ["RIVET_TEST_PREFIX"],
            },
        }
    }
