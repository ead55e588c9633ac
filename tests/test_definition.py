"""Declaring actors: definitions, Meta options, actions, registry, autodiscovery, checks."""

from __future__ import annotations

import pytest
from django.core import checks

from rivet_django import Actor, action, event, queue
from rivet_django.exceptions import ActorNotFound, AlreadyRegistered
from rivet_django.registry import ActorRegistry, actors
from tests.helpers import make


def _cleanup(*names: str) -> None:
    for name in names:
        actors.unregister(name)


def test_autodiscovery_registered_the_test_apps_actors():
    # tests/testapp/actors.py was imported by AppConfig.ready, not by this test.
    assert {"counter", "lifecycle", "errors", "throttled", "storage"} <= set(actors.names())
    assert actors.get("counter").cls.__module__ == "tests.testapp.actors"


def test_default_name_actions_and_state():
    class ChatRoom(Actor):
        state = {"messages": []}
        vars = {"typing": set()}
        conn_state = {"user": None}
        events = {"message": event()}
        queues = {"jobs": queue(max_size=5)}

        @action
        def send(self, text: str) -> None: ...

        @action(name="getHistory")
        async def get_history(self) -> list: ...

        def helper(self) -> None: ...

    try:
        definition = actors.get("chatRoom")
        assert definition.cls is ChatRoom
        assert set(definition.actions) == {"send", "getHistory"}
        assert definition.actions["getHistory"].attr == "get_history"
        assert definition.actions["getHistory"].is_async and not definition.actions["send"].is_async
        assert definition.initial_state == {"messages": []}
        assert definition.make_initial_vars() == {"typing": set()}
        assert definition.make_initial_conn_state() == {"user": None}
        assert definition.events["message"].can_subscribe is None
        assert definition.queues["jobs"].max_size == 5
        # The class attribute moved into the definition; each actor gets a deep copy.
        assert isinstance(ChatRoom.__dict__.get("state", None), type(None))
        first = definition.make_initial_state(None, None)
        first["messages"].append(1)
        assert definition.make_initial_state(None, None) == {"messages": []}
        assert definition.options.sleep_timeout == 30 and definition.options.durability == "commit"
    finally:
        _cleanup("chatRoom")


def test_meta_options_and_abstract_and_inheritance():
    class Base(Actor):
        state = {"n": 0}

        class Meta:
            abstract = True

        @action
        def bump(self) -> int:
            self.state["n"] += 1
            return self.state["n"]

    class Child(Base):
        class Meta:
            name = "child-actor"
            sleep_timeout = 5
            durability = "throttled"
            action_timeout = None

        @action
        def extra(self) -> None: ...

    try:
        assert "base" not in actors
        definition = actors.get("child-actor")
        assert set(definition.actions) == {"bump", "extra"}
        assert definition.initial_state == {"n": 0}
        assert definition.options.sleep_timeout == 5
        assert definition.options.durability == "throttled"
        assert definition.options.action_timeout is None
    finally:
        _cleanup("child-actor")


def test_bad_meta_options_fail_at_class_creation():
    with pytest.raises(TypeError, match="sleep_timout"):

        class Typo(Actor):
            class Meta:
                sleep_timout = 3

    with pytest.raises(ValueError, match="durability"):

        class BadDurability(Actor):
            class Meta:
                durability = "sometimes"


def test_duplicate_names_are_a_system_check_error():
    class First(Actor):
        class Meta:
            name = "dupe"

    class Second(Actor):
        class Meta:
            name = "dupe"

    try:
        errors = [e for e in checks.run_checks() if e.id == "rivet_django.E001"]
        assert len(errors) == 1
        assert "dupe" in errors[0].msg and "First" in errors[0].msg and "Second" in errors[0].msg
        assert errors[0].hint
        with pytest.raises(AlreadyRegistered):
            actors.register(Second)
    finally:
        _cleanup("dupe")


def test_registry_lookup_errors():
    registry = ActorRegistry()
    with pytest.raises(ActorNotFound):
        registry.get("nothing")
    assert "nothing" not in registry and len(registry) == 0


def test_settings_checks(settings):
    settings.RIVET = {"SCHEDULER": "cron-tab", "NOT_A_SETTING": 1}
    ids = {m.id for m in checks.run_checks()}
    assert {"rivet_django.E003", "rivet_django.E004"} <= ids
    settings.RIVET = {}
    ids = {m.id for m in checks.run_checks()}
    assert not ids & {"rivet_django.E003", "rivet_django.E004"}


def test_redis8_without_socket_timeout_check(settings, monkeypatch):
    import redis

    monkeypatch.setattr(redis, "__version__", "8.1.0")
    settings.CHANNEL_LAYERS = {
        "default": {"BACKEND": "channels_redis.core.RedisChannelLayer", "CONFIG": {"hosts": ["redis://127.0.0.1:6379"]}}
    }
    assert "rivet_django.E006" in {m.id for m in checks.run_checks()}
    settings.CHANNEL_LAYERS["default"]["CONFIG"]["hosts"] = [
        {"address": "redis://127.0.0.1:6379", "socket_timeout": None}
    ]
    assert "rivet_django.E006" not in {m.id for m in checks.run_checks()}


def test_settings_defaults_and_override(settings):
    from rivet_django.conf import rivet_settings

    assert rivet_settings.NAMESPACE == "default"
    settings.RIVET = {"NAMESPACE": "other"}
    assert rivet_settings.NAMESPACE == "other"
    with pytest.raises(AttributeError):
        rivet_settings.NO_SUCH_SETTING  # noqa: B018


def test_importing_the_package_does_not_import_models():
    import subprocess
    import sys

    code = "import rivet_django, sys; assert 'rivet_django.models' not in sys.modules; print('ok')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "ok", out.stderr


def test_concrete_parent_state_is_inherited():
    class Parent(Actor):
        state = {"n": 1}
        vars = {"v": 2}

    class Child(Parent):
        pass

    try:
        assert actors.get("child").initial_state == {"n": 1}
        assert actors.get("child").make_initial_vars() == {"v": 2}
        assert actors.get("parent").initial_state == {"n": 1}
    finally:
        _cleanup("parent", "child")


def test_celery_scheduler_needs_a_cross_process_layer(settings):
    settings.RIVET = {"SCHEDULER": "celery"}
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    assert "rivet_django.E008" in {m.id for m in checks.run_checks()}


def test_argument_counts_checked_without_binding_match_the_signature():
    """The fast check of positional arguments agrees with inspect's binding, and leaves
    the cases it cannot decide (required keyword-only parameters) to it."""
    import inspect

    from rivet_django.definition import _positional_bounds

    def bounds(fn):
        return _positional_bounds(inspect.signature(fn))

    assert bounds(lambda: None) == (0, 0)
    assert bounds(lambda a, b=1: None) == (1, 2)
    assert bounds(lambda a, /, b, *rest: None) == (2, float("inf"))
    assert bounds(lambda a, *, b=0, **kw: None) == (1, 1)
    assert bounds(lambda a, *, b: None) is None


async def test_wrong_argument_counts_are_invalid_requests(rivet_node):
    from rivet_django.exceptions import InvalidRequest
    from tests.helpers import make

    actor_id = await make(rivet_node, "counter", ["arity"])
    call = rivet_node.router.call_action
    assert await call(actor_id, "increment") == 1  # amount has a default
    assert await call(actor_id, "increment", [2]) == 3
    with pytest.raises(InvalidRequest, match="Invalid arguments for action 'increment'"):
        await call(actor_id, "increment", [1, 2])
    assert await call(actor_id, "add_kw", [1], {"b": 2}) == 6
    with pytest.raises(InvalidRequest, match="Invalid arguments for action 'add_kw'"):
        await call(actor_id, "add_kw", [])
    with pytest.raises(InvalidRequest):
        await call(actor_id, "add_kw", [1], {"c": 2})


async def test_state_declared_on_an_abstract_base_is_per_actor_and_persisted(rivet_node):
    """Every declaration an abstract base makes behaves as if written on the concrete class."""

    class TenantBase(Actor):
        state = {"items": []}
        vars = {"seen": []}
        conn_state = {"role": "guest"}
        events = {"added": event()}
        queues = {"jobs": queue(max_size=3)}

        class Meta:
            abstract = True
            sleep_timeout = 7
            durability = "throttled"

        @action
        def add(self, item: str) -> list:
            self.state["items"].append(item)
            self.vars["seen"].append(item)
            return self.state["items"]

        @action
        def role(self) -> str:
            return self.conn.state["role"]

        @action
        def seen(self) -> list:
            return self.vars["seen"]

    class TenantList(TenantBase):
        class Meta:
            durability = "commit"  # overrides the base; sleep_timeout is inherited

    class OtherList(TenantBase):
        pass

    try:
        # Nothing is left on the classes that would hide the per-actor properties.
        for cls in (TenantBase, TenantList, OtherList):
            assert "state" not in cls.__dict__ and isinstance(cls.state, property)
            assert isinstance(cls.vars, property)
        definition = actors.get("tenantList")
        assert definition.initial_state == {"items": []}
        assert definition.options.sleep_timeout == 7 and definition.options.durability == "commit"
        assert actors.get("otherList").options.durability == "throttled"
        assert set(definition.events) == {"added"} and definition.queues["jobs"].max_size == 3
        assert "tenantBase" not in actors

        a = await make(rivet_node, "tenantList", ["a"])
        b = await make(rivet_node, "tenantList", ["b"])
        c = await make(rivet_node, "otherList", ["a"])
        assert await rivet_node.router.call_action(a, "add", ["x"]) == ["x"]
        assert await rivet_node.router.call_action(b, "add", ["y"]) == ["y"]
        assert await rivet_node.router.call_action(c, "add", ["z"]) == ["z"]
        assert await rivet_node.router.call_action(a, "seen") == ["x"]
        assert await rivet_node.router.call_action(b, "seen") == ["y"]
        assert await rivet_node.router.call_action(a, "role") == "guest"
        # Persisted per actor: it survives sleep.
        await rivet_node.runtime.sleep_actor(a)
        assert await rivet_node.router.call_action(a, "add", ["x2"]) == ["x", "x2"]
        assert await rivet_node.router.call_action(b, "add", ["y2"]) == ["y", "y2"]
    finally:
        _cleanup("tenantList", "otherList")


def test_meta_subclassing_the_abstract_meta_is_concrete():
    class Base(Actor):
        class Meta:
            abstract = True
            action_timeout = 3

    class Concrete(Base):
        class Meta(Base.Meta):
            name = "concreteMeta"

    try:
        assert actors.get("concreteMeta").options.action_timeout == 3
        assert actors.get("concreteMeta").options.abstract is False
    finally:
        _cleanup("concreteMeta")


@pytest.mark.parametrize("value", [0, 0.5, "30", None, True])
def test_lease_seconds_must_be_a_number_of_at_least_one(settings, value):
    settings.RIVET = {"LEASE_SECONDS": value}
    assert "rivet_django.E009" in {m.id for m in checks.run_checks()}


def test_placement_must_be_a_policy(settings):
    settings.RIVET = {"PLACEMENT": "busiest"}
    assert "rivet_django.E010" in {m.id for m in checks.run_checks()}
    settings.RIVET = {"PLACEMENT": "rivet_django.cluster.placement.LeastLoaded", "LEASE_SECONDS": 3}
    ids = {m.id for m in checks.run_checks()}
    assert "rivet_django.E010" not in ids and "rivet_django.E009" not in ids


def test_local_actor_databases_warn_on_a_shared_database(settings, monkeypatch):
    from django.db import connection

    assert "rivet_django.W003" not in {m.id for m in checks.run_checks()}  # SQLite: one node
    monkeypatch.setattr(connection, "vendor", "postgresql")
    assert "rivet_django.W003" not in {m.id for m in checks.run_checks()}  # shared backend (the default there)
    settings.RIVET = {**settings.RIVET, "DB_BACKEND": "local"}
    warning = next(m for m in checks.run_checks() if m.id == "rivet_django.W003")
    assert "notes" in warning.msg and "DB_BACKEND" in warning.hint


def test_db_apps_must_be_installed_and_routed(settings):
    ids = {m.id for m in checks.run_checks()}
    assert "rivet_django.E011" not in ids and "rivet_django.E012" not in ids  # the test settings are right
    settings.RIVET = {"DB_APPS": ["notes", "nope"]}
    settings.DATABASE_ROUTERS = []
    messages = {m.id: m.msg for m in checks.run_checks()}
    assert "nope" in messages["rivet_django.E011"] and "notes" not in messages["rivet_django.E011"]
    assert "ActorDatabaseRouter" in messages["rivet_django.E012"]


def test_db_backend_must_be_local_or_shared(settings):
    settings.RIVET = {"DB_BACKEND": "s3"}
    assert "rivet_django.E013" in {m.id for m in checks.run_checks()}
    settings.RIVET = {"DB_BACKEND": "shared"}
    assert "rivet_django.E013" not in {m.id for m in checks.run_checks()}


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("tests.asgi.application", None),
        ("tests.asgi_other_ws.with_actors", None),
        ("tests.asgi_plain.application", "rivet_django.E014"),
        ("tests.asgi_other_ws.application", "rivet_django.W004"),
        ("tests.nowhere.application", "rivet_django.E014"),
    ],
)
def test_asgi_application_must_route_actor_websockets(settings, path, expected):
    settings.ASGI_APPLICATION = path
    ids = {m.id for m in checks.run_checks()} & {"rivet_django.E014", "rivet_django.W004"}
    assert ids == ({expected} if expected else set())


def test_api_docs_need_ninja_installed_to_work_offline(settings):
    assert "rivet_django.W005" not in {m.id for m in checks.run_checks()}
    settings.INSTALLED_APPS = [app for app in settings.INSTALLED_APPS if app != "ninja"]
    warning = next(m for m in checks.run_checks() if m.id == "rivet_django.W005")
    assert "ninja" in warning.hint
