"""Settings for the test suite. ``RIVET_TEST_DB=postgres`` runs it on PostgreSQL."""

import os
import sys
import tempfile
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent

# The demo's apps (``notes``) import as top-level modules, as in demo_project; pytest
# adds the folder itself (pyproject.toml), other tools reading these settings do not.
if str(BASE_DIR.parent / "demo_project") not in sys.path:
    sys.path.append(str(BASE_DIR.parent / "demo_project"))
SECRET_KEY = "tests-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["*"]
USE_TZ = True
TIME_ZONE = "UTC"

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "channels",
    "ninja",  # the actor API's docs page serves Swagger UI from django-ninja's own static files (offline)
    "rivet_django",
    "tests.testapp",
    "tests.parityapp",
    "notes",  # demo_project/notes: Django models in actors' own databases
]
DATABASE_ROUTERS = ["rivet_django.routers.ActorDatabaseRouter"]

MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]

ROOT_URLCONF = "tests.urls"
ASGI_APPLICATION = "tests.asgi.application"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]

if os.environ.get("RIVET_TEST_DB") == "postgres":
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": "test",
            "USER": os.environ.get("PGUSER", "postgres"),
            "HOST": "127.0.0.1",
            "PORT": "5432",
            "TEST": {"NAME": f"rivet_test_{os.getpid()}"},
        }
    }
else:
    _db = Path(tempfile.gettempdir()) / f"rivet_test_{os.getpid()}.sqlite3"
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": str(_db),
            # A file, not :memory:, so the runtime's DB thread and the test share it for real.
            "TEST": {"NAME": str(_db)},
        }
    }

CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
RIVET = {
    "SQLITE_SYNCHRONOUS": "NORMAL",
    "DB_APPS": ["notes"],
    "INSPECTOR_TOKEN": os.environ.get("RIVET_TEST_INSPECTOR_TOKEN") or None,
    "TRACING": os.environ.get("RIVET_TRACING") == "1",
    # RIVET_TEST_DB_BACKEND=shared runs self.db on the shared backend with SQLite too
    # (None: "shared" on PostgreSQL, "local" on SQLite).
    "DB_BACKEND": os.environ.get("RIVET_TEST_DB_BACKEND") or None,
    # Actors' own databases (self.db): one folder per test process, outside the repository.
    # (RIVET_TEST_DB_DIR: a folder that outlives a restarted live server).
    "DB_DIR": os.environ.get("RIVET_TEST_DB_DIR") or str(Path(tempfile.gettempdir()) / f"rivet_test_actor_dbs_{os.getpid()}"),
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
