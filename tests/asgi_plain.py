"""An ``ASGI_APPLICATION`` that forgets the actor WebSockets (system check E014)."""

from django.core.asgi import get_asgi_application

application = get_asgi_application()
