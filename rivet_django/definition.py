"""How users declare actors: the :class:`Actor` base class and its decorators.

This module does no I/O and imports nothing from Django. A subclass is turned
into an :class:`ActorDefinition` (name, options, actions, initial values) when
the class statement runs, and registered in :data:`rivet_django.registry.actors`.
At run time the runtime creates one object of the class per awake actor and
binds it to its :class:`~rivet_django.runtime.instance.ActorInstance`; the
properties below read through that binding.
"""

from __future__ import annotations

import copy
import inspect
import logging
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, fields
from functools import cached_property
from typing import TYPE_CHECKING, Any, Literal, TypeVar, overload

from .exceptions import DatabaseNotEnabled, StateNotEnabled

if TYPE_CHECKING:
    from .runtime.instance import ActorInstance

__all__ = [
    "ActionSpec",
    "Actor",
    "ActorDefinition",
    "ActorOptions",
    "EventSpec",
    "QueueSpec",
    "action",
    "event",
    "queue",
]

F = TypeVar("F", bound=Callable[..., Any])

_UNSET: Any = object()

#: Hook methods the runtime looks for; all optional, sync or async.
HOOK_NAMES = (
    "create_state",
    "create_vars",
    "create_conn_state",
    "on_create",
    "on_wake",
    "on_sleep",
    "on_destroy",
    "on_state_change",
    "on_before_connect",
    "on_connect",
    "on_disconnect",
    "on_request",
    "on_websocket",
    "on_before_action_response",
    "on_migrate",
    "run",
)


@dataclass(frozen=True)
class ActionSpec:
    """An ``@action`` method: its public name and whether it is a coroutine function."""

    name: str
    attr: str
    is_async: bool


@dataclass(frozen=True)
class EventSpec:
    """A declared event; ``can_subscribe(actor, conn)`` may refuse a subscription."""

    can_subscribe: Callable[[Any, Any], Any] | None = None


@dataclass(frozen=True)
class QueueSpec:
    """A declared durable queue and its limits (``None``: the actor's defaults)."""

    max_size: int | None = None
    max_message_size: int | None = None
    can_publish: Callable[[Any, Any], Any] | None = None


def event(*, can_subscribe: Callable[[Any, Any], Any] | None = None) -> EventSpec:
    """Declare an event in ``events = {...}``."""
    return EventSpec(can_subscribe=can_subscribe)


def queue(
    *,
    max_size: int | None = None,
    max_message_size: int | None = None,
    can_publish: Callable[[Any, Any], Any] | None = None,
) -> QueueSpec:
    """Declare a durable queue in ``queues = {...}``."""
    return QueueSpec(max_size=max_size, max_message_size=max_message_size, can_publish=can_publish)


@overload
def action(func: F, /) -> F: ...
@overload
def action(*, name: str | None = None) -> Callable[[F], F]: ...
def action(func: Any = None, /, *, name: str | None = None) -> Any:
    """Mark a method as an action callable by clients: ``@action`` or ``@action(name="x")``."""

    def mark(f: F) -> F:
        f._rivet_action_name = name or f.__name__  # type: ignore[attr-defined]
        return f

    if func is not None:
        return mark(func)
    return mark


@dataclass(frozen=True)
class ActorOptions:
    """``class Meta`` options of an actor (API.md), with their defaults."""

    name: str = ""
    display_name: str = ""
    icon: str = ""
    abstract: bool = False
    sleep_timeout: float = 30.0
    no_sleep: bool = False
    sleep_grace_period: float = 15.0
    action_timeout: float | None = 60.0
    state_save_interval: float = 1.0
    durability: Literal["commit", "throttled"] = "commit"
    max_queue_size: int = 1000
    max_queue_message_size: int = 64 * 1024
    run_stop_timeout: float = 15.0
    version: int = 1

    @classmethod
    def from_meta(cls, meta: type | None, default_name: str) -> ActorOptions:
        """Read a ``Meta`` class; unknown attributes are an error (typos should not pass)."""
        known = {f.name for f in fields(cls)}
        values: dict[str, Any] = {}
        if meta is not None:
            for attr, value in vars(meta).items():
                if attr.startswith("_"):
                    continue
                if attr not in known:
                    raise TypeError(f"Unknown Meta option {attr!r} (known: {', '.join(sorted(known))})")
                values[attr] = value
        values.setdefault("name", default_name)
        values.setdefault("display_name", values["name"])
        options = cls(**values)
        if options.durability not in ("commit", "throttled"):
            raise ValueError(f"Meta.durability must be 'commit' or 'throttled', not {options.durability!r}")
        return options


def _positional_bounds(signature: inspect.Signature) -> tuple[float, float] | None:
    fewest, most = 0, 0.0
    for param in signature.parameters.values():
        if param.kind in (param.POSITIONAL_ONLY, param.POSITIONAL_OR_KEYWORD):
            most += 1
            if param.default is param.empty:
                fewest += 1
        elif param.kind is param.VAR_POSITIONAL:
            most = math.inf
        elif param.kind is param.KEYWORD_ONLY and param.default is param.empty:
            return None
    return (fewest, most)


@dataclass
class ActorDefinition:
    """Everything the runtime needs to know about one actor class."""

    cls: type[Actor]
    options: ActorOptions
    actions: dict[str, ActionSpec]
    initial_state: Any = _UNSET
    initial_vars: Any = _UNSET
    initial_conn_state: Any = _UNSET
    events: dict[str, EventSpec] = field(default_factory=dict)
    queues: dict[str, QueueSpec] = field(default_factory=dict)
    _signatures: dict[str, inspect.Signature] = field(default_factory=dict, repr=False)
    _bounds: dict[str, tuple[float, float] | None] = field(default_factory=dict, repr=False)
    _hooks: dict[str, Callable[..., Any] | None] = field(default_factory=dict, repr=False)

    def signature(self, action_name: str, bound_method: Callable[..., Any]) -> inspect.Signature:
        """The (bound) call signature of an action, computed once per class."""
        signature = self._signatures.get(action_name)
        if signature is None:
            signature = self._signatures[action_name] = inspect.signature(bound_method)
        return signature

    def positional_bounds(self, action_name: str, bound_method: Callable[..., Any]) -> tuple[float, float] | None:
        """(fewest, most) positional arguments an action takes when it is given no keywords,
        or None when only a full signature check can tell (required keyword-only ones)."""
        bounds = self._bounds.get(action_name, _UNSET)
        if bounds is _UNSET:
            bounds = self._bounds[action_name] = _positional_bounds(self.signature(action_name, bound_method))
        return bounds  # type: ignore[no-any-return]

    @cached_property
    def has_connect_hooks(self) -> bool:
        """A stateless call opens a short-lived connection (PROTOCOL.md section 6)."""
        hooks = ("on_before_connect", "create_conn_state", "on_connect", "on_disconnect")
        return any(self.hook(h) is not None for h in hooks) or self.initial_conn_state is not _UNSET

    @property
    def name(self) -> str:
        return self.options.name

    @property
    def has_state(self) -> bool:
        return self.initial_state is not _UNSET or self.hook("create_state") is not None

    def hook(self, name: str) -> Callable[..., Any] | None:
        """The user's hook method of that name, unbound, or None (looked up once: most
        actors define few hooks, and a missing attribute is a slow lookup every call)."""
        try:
            return self._hooks[name]
        except KeyError:
            found = self._hooks[name] = getattr(self.cls, name, None)
            return found

    def make_initial_state(self, actor: Actor, input: Any) -> Any:
        """Fresh state for a new actor (deep copy of the class attribute)."""
        return copy.deepcopy(self.initial_state)

    def make_initial_vars(self) -> Any:
        return None if self.initial_vars is _UNSET else copy.deepcopy(self.initial_vars)

    def make_initial_conn_state(self) -> Any:
        return None if self.initial_conn_state is _UNSET else copy.deepcopy(self.initial_conn_state)


def default_actor_name(cls_name: str) -> str:
    """``Counter`` -> ``counter``, ``ChatRoom`` -> ``chatRoom``."""
    return cls_name[:1].lower() + cls_name[1:]


class Actor:
    """Base class of user actors; the instance is the context of every action and hook.

    Declare ``state`` (or ``create_state``), ``vars`` (or ``create_vars``),
    ``@action`` methods and hooks; see API.md. Framework attributes live under
    ``_rivet`` so user attributes never collide with them.
    """

    _rivet_definition: ActorDefinition
    _rivet: ActorInstance

    class Meta:
        abstract = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # Declarations come off every class, abstract ones included: a plain ``state``
        # attribute left on a class would hide the ``state`` property below and be one
        # dict shared by every actor.
        _take_declarations(cls)
        meta = cls.__dict__.get("Meta")
        # ``abstract`` is never inherited (a ``class Meta(Base.Meta)`` is concrete).
        if meta is not None and vars(meta).get("abstract", False):
            return
        options = ActorOptions.from_meta(_merged_meta(cls), default_actor_name(cls.__name__))
        definition = ActorDefinition(
            cls=cls,
            options=options,
            actions=_collect_actions(cls),
            initial_state=_declared(cls, "state"),
            initial_vars=_declared(cls, "vars"),
            initial_conn_state=_declared(cls, "conn_state"),
            events=dict(_inherited_value(cls, "events") or {}),
            queues=dict(_inherited_value(cls, "queues") or {}),
        )
        cls._rivet_definition = definition
        from .registry import actors

        actors.add(definition)

    # -- identity ---------------------------------------------------------------

    @property
    def id(self) -> str:
        """The actor's unique id."""
        return self._rivet.actor_id

    @property
    def name(self) -> str:
        """The registered actor name (e.g. ``"counter"``)."""
        return self._rivet.definition.name

    @property
    def key(self) -> tuple[str, ...]:
        """The actor's key, a tuple of strings."""
        return self._rivet.key

    @property
    def namespace(self) -> str:
        return self._rivet.namespace

    # -- state ------------------------------------------------------------------

    #: Set by ``@workflow``: state and client are only for steps in the workflow's body.
    _rivet_is_workflow = False

    def _check_workflow_effects(self, feature: str) -> None:
        if self._rivet_is_workflow:
            from .workflow import check_effects_allowed

            check_effects_allowed(feature)

    @property
    def state(self) -> Any:
        """Durable state, persisted after every action that changes it."""
        if not self._rivet.definition.has_state:
            raise StateNotEnabled()
        self._check_workflow_effects("state")
        return self._rivet.state

    @state.setter
    def state(self, value: Any) -> None:
        if not self._rivet.definition.has_state:
            raise StateNotEnabled()
        self._check_workflow_effects("state")
        self._rivet.assign_state(value)

    @property
    def db(self) -> Any:
        """The actor's own SQLite database (:mod:`rivet_django.runtime.database`); needs ``on_migrate``."""
        db = self._rivet.db
        if db is None:
            raise DatabaseNotEnabled()
        self._check_workflow_effects("db")
        return db

    @property
    def vars(self) -> Any:
        """Ephemeral per-wake values, never persisted."""
        return self._rivet.vars

    @vars.setter
    def vars(self, value: Any) -> None:
        self._rivet.vars = value

    async def save_state(self, immediate: bool = True) -> None:
        """Persist state now (``immediate=True`` waits for the commit)."""
        await self._rivet.save_state(immediate=immediate)

    # -- lifecycle --------------------------------------------------------------

    def sleep(self) -> None:
        """Ask to sleep once the current work is done."""
        self._rivet.request_sleep()

    def destroy(self) -> None:
        """Ask for permanent deletion once the current work is done."""
        self._rivet.request_destroy()

    @property
    def prevent_sleep(self) -> bool:
        return self._rivet.prevent_sleep

    @prevent_sleep.setter
    def prevent_sleep(self, value: bool) -> None:
        self._rivet.set_prevent_sleep(bool(value))

    @property
    def aborted(self) -> bool:
        """True once the actor has started stopping (sleep or destroy)."""
        return self._rivet.aborted

    @property
    def abort_event(self) -> Any:
        """An ``asyncio.Event`` set when the actor starts stopping."""
        return self._rivet.abort_event

    def keep_awake(self, aw: Awaitable[Any]) -> Any:
        """Run ``aw`` in the background; the actor does not sleep until it finishes."""
        return self._rivet.keep_awake(aw)

    def wait_until(self, aw: Awaitable[Any]) -> Any:
        """Run ``aw`` in the background; stopping waits for it (within the grace period), but
        it does not keep the actor awake (RivetKit's ``waitUntil``)."""
        return self._rivet.wait_until(aw)

    # -- connections and events -------------------------------------------------

    @property
    def conn(self) -> Any:
        """The connection that made the current call, or None."""
        return self._rivet.current_conn()

    @property
    def conns(self) -> dict[str, Any]:
        return self._rivet.conns

    def broadcast(self, event: str, *args: Any) -> None:
        """Send an event to every connection subscribed to it."""
        self._rivet.broadcast(event, args)

    @property
    def request(self) -> Any:
        """The HTTP request (connect hooks, ``on_request``), else None."""
        return self._rivet.current_request()

    # -- storage ----------------------------------------------------------------

    @property
    def kv(self) -> Any:
        """Async key-value store of this actor (``get``, ``put``, ``list`` ...)."""
        return self._rivet.kv

    @property
    def schedule(self) -> Any:
        """Durable schedules: ``after``, ``at``, ``cron``, ``every``, ``list``, ``get``, ``cancel``."""
        return self._rivet.schedule

    @property
    def queue(self) -> Any:
        """The actor's durable queues: ``send``, ``next``, ``iter``, ``next_batch``, ``try_next``."""
        return self._rivet.queue

    # -- misc -------------------------------------------------------------------

    @property
    def log(self) -> logging.LoggerAdapter[logging.Logger]:
        return self._rivet.log

    def client(self, namespace: str | None = None) -> Any:
        """An async client for calling other actors, in this actor's namespace unless
        ``namespace`` names another."""
        self._check_workflow_effects("client")
        return self._rivet.client(namespace)

    def __repr__(self) -> str:
        binding = getattr(self, "_rivet", None)
        if binding is None:
            return f"<{type(self).__name__} (unbound)>"
        return f"<{type(self).__name__} {binding.definition.name} key={list(binding.key)} id={binding.actor_id}>"


#: Class attributes that declare initial values; moved off the class into its declarations.
_DECLARED_VALUES = ("state", "vars", "conn_state")

#: Meta options that name one class and are never inherited.
_PER_CLASS_OPTIONS = frozenset({"abstract", "name", "display_name"})


def _take_declarations(cls: type) -> None:
    """Move ``state = {...}`` (and ``vars``, ``conn_state``) off ``cls`` into
    ``cls._rivet_declarations``, where :func:`_declared` finds them through the MRO.

    The base class exposes these names as properties reading the live per-actor
    values; a plain class attribute would shadow them for the class and all its
    subclasses. A property the user wrote stays (it declares nothing).
    """
    found: dict[str, Any] = {}
    for attr in _DECLARED_VALUES:
        value = cls.__dict__.get(attr, _UNSET)
        if value is _UNSET or isinstance(value, property):
            continue
        found[attr] = value
        delattr(cls, attr)
    cls._rivet_declarations = found  # type: ignore[attr-defined]


def _declared(cls: type, attr: str) -> Any:
    """The nearest declaration of ``attr`` in the MRO (each actor deep-copies it)."""
    for klass in cls.__mro__:
        if klass is Actor:
            break
        if isinstance(klass.__dict__.get(attr), property):
            return _UNSET
        declarations: dict[str, Any] = klass.__dict__.get("_rivet_declarations", {})
        if attr in declarations:
            return declarations[attr]
    return _UNSET


def _merged_meta(cls: type) -> type | None:
    """One ``Meta`` holding the options of every ``Meta`` in the MRO, nearest first;
    ``name``, ``display_name`` and ``abstract`` only from the class's own ``Meta``."""
    values: dict[str, Any] = {}
    for klass in reversed(cls.__mro__):
        if klass is Actor or not issubclass(klass, Actor):
            continue
        meta = klass.__dict__.get("Meta")
        if meta is None:
            continue
        for attr, value in vars(meta).items():
            if attr.startswith("_") or (klass is not cls and attr in _PER_CLASS_OPTIONS):
                continue
            values[attr] = value
    values.pop("abstract", None)
    return type("Meta", (), values) if values else None


def _inherited_value(cls: type, attr: str) -> Any:
    for klass in cls.__mro__:
        if attr in klass.__dict__:
            return klass.__dict__[attr]
    return None


def _collect_actions(cls: type) -> dict[str, ActionSpec]:
    actions: dict[str, ActionSpec] = {}
    for klass in reversed(cls.__mro__):
        for attr, value in klass.__dict__.items():
            func = value.__func__ if isinstance(value, (staticmethod, classmethod)) else value
            public_name = getattr(func, "_rivet_action_name", None)
            if public_name is None:
                continue
            # A subclass overriding the method without @action keeps it an action.
            actions = {k: v for k, v in actions.items() if v.attr != attr}
            actions[public_name] = ActionSpec(name=public_name, attr=attr, is_async=inspect.iscoroutinefunction(func))
    # Overrides without the decorator: re-check async-ness on the final attribute.
    for public_name, spec in list(actions.items()):
        final = getattr(cls, spec.attr)
        actions[public_name] = ActionSpec(name=public_name, attr=spec.attr, is_async=inspect.iscoroutinefunction(final))
    return actions
