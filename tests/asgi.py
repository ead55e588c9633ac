import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
django_asgi_app = get_asgi_application()

from rivet_django.routing import application as rivet_application  # noqa: E402

application = rivet_application(django_asgi_app)
