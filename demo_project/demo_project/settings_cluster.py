"""The demo as a cluster (scripts/cluster.sh): PostgreSQL, Redis, Celery beat for schedules.

``RIVET_CLUSTER_DB`` names the PostgreSQL database (default ``rivet_demo_cluster``);
``RIVET_REDIS`` the Redis URL (default ``redis://127.0.0.1:6379``).
"""

import os

from demo_project.settings import *  # noqa: F403

REDIS = os.environ.get("RIVET_REDIS", "redis://127.0.0.1:6379")

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": os.environ.get("RIVET_CLUSTER_DB", "rivet_demo_cluster"),
        "USER": os.environ.get("PGUSER", "postgres"),
        "HOST": os.environ.get("PGHOST", "127.0.0.1"),
        "PORT": os.environ.get("PGPORT", "5432"),
    }
}
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {"hosts": [{"address": REDIS, "socket_timeout": None}], "prefix": "rivet-demo-cluster"},
    }
}
RIVET = {
    "SCHEDULER": "celery",
    "DB_THREADS": 4,
    "LEASE_SECONDS": float(os.environ.get("RIVET_LEASE_SECONDS", "10")),
}
CELERY_BROKER_URL = f"{REDIS}/1"
