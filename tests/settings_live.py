"""Settings of a live ``runactors`` process serving the test app's actors (``tests.server.LiveServer``).

The test settings on the SQLite file ``LiveServer`` names in ``RIVET_DEMO_DB``,
with the runtime's log on stderr (the server's log file).
"""

import os

from tests.settings import *  # noqa: F403

DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": os.environ["RIVET_DEMO_DB"]}}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "loggers": {"rivet_django": {"handlers": ["console"], "level": os.environ.get("RIVET_LOG_LEVEL", "INFO")}},
}
