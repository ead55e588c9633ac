import httpx
import pytest

pytest_plugins = ["rivet_django.testing.fixtures"]


@pytest.fixture
async def http(rivet_node):
    """An HTTP client of this process's ASGI application (the actor API, the inspector,
    /metrics) on a started in-process node."""
    from rivet_django.routing import application

    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=application()), base_url="http://testserver"
    ) as client:
        yield client
