"""The demo's Celery app, for ``RIVET["SCHEDULER"] = "celery"``.

    celery -A demo_project worker -l info     # from demo_project/ (or PYTHONPATH=demo_project)
    celery -A demo_project beat -l info

The broker is ``CELERY_BROKER_URL`` from the settings, else the environment
variable of that name, else the local Redis.
"""

import os

from celery import Celery

from rivet_django.celery import configure

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "demo_project.settings")

app = Celery("demo_project")
app.config_from_object("django.conf:settings", namespace="CELERY")
if not app.conf.broker_url:
    app.conf.broker_url = os.environ.get("CELERY_BROKER_URL", "redis://127.0.0.1:6379/0")
app.autodiscover_tasks()
configure(app)
