"""The admin lists actors for staff only and shows state as JSON."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User

from rivet_django.models import Actor
from rivet_django.runtime import serde

pytestmark = pytest.mark.django_db


@pytest.fixture
def actor_row():
    return Actor.objects.create(
        id="abc123", namespace="default", name="counter", key=["k"], key_hash="h" * 64,
        state=serde.dumps({"count": 41, "raw": b"\x01"}),
    )


def test_staff_sees_actor_list_and_state(client, actor_row):
    User.objects.create_superuser("admin", "a@example.com", "pw")
    client.login(username="admin", password="pw")
    listing = client.get("/admin/rivet_django/actor/")
    assert listing.status_code == 200 and b"counter" in listing.content
    detail = client.get(f"/admin/rivet_django/actor/{actor_row.id}/change/")
    assert detail.status_code == 200
    assert b"&quot;count&quot;: 41" in detail.content
    assert client.get("/admin/rivet_django/actor/?q=counter").status_code == 200
    # Read-only: no add, no delete.
    assert client.get("/admin/rivet_django/actor/add/").status_code == 403


def test_non_staff_is_sent_to_login(client, actor_row):
    User.objects.create_user("joe", "j@example.com", "pw")
    client.login(username="joe", password="pw")
    response = client.get("/admin/rivet_django/actor/")
    assert response.status_code == 302 and "/admin/login/" in response["Location"]
