"""Settings of the Celery end-to-end test: the demo project, its schedules dispatched by Celery.

``runactors``, ``celery worker`` and ``celery beat`` all run with these (see
tests/test_schedules_celery.py), on one SQLite file (``RIVET_DEMO_DB``) and the
local Redis as broker and channel layer. ``RIVET_TEST_PREFIX`` keeps the
queue and channel names of one run apart from any other run on the same Redis.
"""

import os

from demo_project.settings import *  # noqa: F403

REDIS = os.environ.get("RIVET_TEST_REDIS", "redis://127.0.0.1:6379")
PREFIX = os.environ.get("RIVET_TEST_PREFIX", "rivet-celery")

CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {"hosts": [{"address": REDIS, "socket_timeout": None}], "prefix": PREFIX},
    }
}
RIVET = {"SCHEDULER": "celery", "SQLITE_SYNCHRONOUS": "NORMAL"}

CELERY_BROKER_URL = f"{REDIS}/0"
CELERY_TASK_DEFAULT_QUEUE = PREFIX
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
