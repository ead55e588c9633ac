"""An ``ASGI_APPLICATION`` routing WebSockets, none of them to rivet_django (system check W004)."""

from channels.auth import AuthMiddlewareStack
from channels.generic.websocket import WebsocketConsumer
from channels.routing import ProtocolTypeRouter, URLRouter
from django.core.asgi import get_asgi_application
from django.urls import path

from rivet_django.routing import websocket_urlpatterns


class Echo(WebsocketConsumer):
    def receive(self, text_data=None, bytes_data=None):
        self.send(text_data=text_data)


application = ProtocolTypeRouter(
    {"http": get_asgi_application(), "websocket": AuthMiddlewareStack(URLRouter([path("echo/", Echo.as_asgi())]))}
)

#: The same with rivet_django's routes added: passes the check.
with_actors = ProtocolTypeRouter(
    {
        "http": get_asgi_application(),
        "websocket": AuthMiddlewareStack(URLRouter([path("echo/", Echo.as_asgi()), *websocket_urlpatterns()])),
    }
)
