"""Change tracking of an actor's state, for ``on_state_change``.

RivetKit wraps ``c.state`` in a deep proxy and calls ``onStateChange`` once per
event-loop tick in which the state was mutated (and before an action replies).
Python has no transparent proxies for ``dict`` and ``list``, so an actor that
defines ``on_state_change`` gets its state as :class:`ObservedDict`,
:class:`ObservedList` and :class:`ObservedSet`: subclasses of the builtins that
tell their :class:`StateObserver` after every mutation. They compare, serialize
(CBOR, JSON) and ``isinstance``-check as their builtins; copies are plain.

Actors without ``on_state_change`` never see these types: their state stays
plain and their hot path pays nothing.

While ``on_state_change`` runs, mutating the state raises
:class:`~rivet_django.exceptions.StateMutationReentrant` and is not applied
(RivetKit 2.3.19: ``actor.state_mutation_reentrant``), so the hook can never
re-trigger itself.
"""

from __future__ import annotations

import asyncio
import copy
import inspect
import logging
from collections.abc import Callable, Iterable
from typing import Any

from ..exceptions import StateMutationReentrant

__all__ = ["ObservedDict", "ObservedList", "ObservedSet", "StateObserver", "plain"]

logger = logging.getLogger("rivet_django.actor")


class StateObserver:
    """Collects the mutations of one actor's state and runs ``on_state_change`` for them."""

    __slots__ = ("_hook", "_scheduled", "in_hook", "pending")

    def __init__(self, hook: Callable[[], Any]) -> None:
        #: Calls the user's ``on_state_change`` with the current state.
        self._hook = hook
        self.pending = False
        self.in_hook = False
        self._scheduled = False

    def before_mutation(self) -> None:
        if self.in_hook:
            raise StateMutationReentrant()

    def changed(self) -> None:
        """A mutation was applied: run the hook at the end of this loop tick (once)."""
        self.pending = True
        if not self._scheduled:
            self._scheduled = True
            try:
                asyncio.get_running_loop().call_soon(self._tick)
            except RuntimeError:  # no loop (state built before the actor runs): flushed later
                self._scheduled = False

    def _tick(self) -> None:
        self._scheduled = False
        self.flush_now()

    def flush_now(self) -> None:
        """Run the hook now if the state changed since it last ran (actions call this before replying)."""
        if not self.pending or self.in_hook:
            return
        self.pending = False
        self.in_hook = True
        try:
            result = self._hook()
        except Exception:
            logger.exception("on_state_change raised")
            return
        finally:
            self.in_hook = False
        if inspect.isawaitable(result):
            # Not awaited (as RivetKit): the reply does not wait for it; failures are logged.
            task = asyncio.ensure_future(result)
            task.add_done_callback(_log_failure)

    def wrap(self, value: Any) -> Any:
        """``value`` with its dicts, lists and sets made observed containers of this observer."""
        if isinstance(value, _Observed) and value._observer is self:
            return value
        if type(value) is dict or isinstance(value, ObservedDict):
            return ObservedDict._of(self, value)
        if type(value) is list or isinstance(value, ObservedList):
            return ObservedList._of(self, value)
        if type(value) is set or isinstance(value, ObservedSet):
            return ObservedSet._of(self, value)
        return value


def _log_failure(task: asyncio.Future[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.error("on_state_change raised", exc_info=task.exception())


def _same(old: Any, new: Any) -> bool:
    """Whether assigning ``new`` over ``old`` changes nothing (same object, or equal scalars)."""
    return old is new or (type(old) is type(new) and not isinstance(old, (dict, list, set)) and old == new)


def plain(value: Any) -> Any:
    """A deep copy of ``value`` with observed containers turned back into builtins."""
    if isinstance(value, dict):
        return {plain(k): plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, set):
        return {plain(v) for v in value}
    return copy.deepcopy(value)


class _Observed:
    """Shared plumbing: the observer, and plain copies (``copy``/``deepcopy``/pickle)."""

    __slots__ = ()
    _observer: StateObserver
    #: The builtin this observes (copies and pickles are of it).
    _builtin: type

    def __copy__(self) -> Any:
        return self._builtin(self)

    def __deepcopy__(self, memo: dict[int, Any]) -> Any:
        return plain(self)

    def __reduce__(self) -> Any:
        return (self._builtin, (plain(self),))


def _mutator(builtin: type, name: str, wrap_args: bool = False) -> Callable[..., Any]:
    """``builtin.name`` as a method that checks, applies, then reports the change."""
    apply = getattr(builtin, name)

    def method(self: Any, *args: Any, **kwargs: Any) -> Any:
        observer: StateObserver = self._observer
        observer.before_mutation()
        if wrap_args:
            args = tuple(observer.wrap(a) for a in args)
        result = apply(self, *args, **kwargs)
        observer.changed()
        return result

    method.__name__ = name
    return method


class ObservedDict(_Observed, dict):  # type: ignore[type-arg]
    """A ``dict`` of an observed state."""

    __slots__ = ("_observer",)
    _builtin = dict

    @classmethod
    def _of(cls, observer: StateObserver, value: dict[Any, Any]) -> ObservedDict:
        made = cls()
        made._observer = observer
        dict.update(made, ((k, observer.wrap(v)) for k, v in value.items()))
        return made

    def __setitem__(self, key: Any, value: Any) -> None:
        observer = self._observer
        observer.before_mutation()
        if key in self and _same(dict.__getitem__(self, key), value):
            return  # assigning what is there is no change (RivetKit's proxy compares too)
        dict.__setitem__(self, key, observer.wrap(value))
        observer.changed()

    def setdefault(self, key: Any, default: Any = None) -> Any:
        if key in self:
            return dict.__getitem__(self, key)
        self[key] = default
        return dict.__getitem__(self, key)

    def update(self, *args: Any, **kwargs: Any) -> None:
        observer = self._observer
        observer.before_mutation()
        items = dict(*args, **kwargs)
        dict.update(self, ((k, observer.wrap(v)) for k, v in items.items()))
        observer.changed()

    def __ior__(self, other: Any) -> ObservedDict:  # type: ignore[override,misc]
        self.update(other)
        return self

    __delitem__ = _mutator(dict, "__delitem__")
    pop = _mutator(dict, "pop")
    popitem = _mutator(dict, "popitem")
    clear = _mutator(dict, "clear")


class ObservedList(_Observed, list):  # type: ignore[type-arg]
    """A ``list`` of an observed state."""

    __slots__ = ("_observer",)
    _builtin = list

    @classmethod
    def _of(cls, observer: StateObserver, value: Iterable[Any]) -> ObservedList:
        made = cls()
        made._observer = observer
        list.extend(made, (observer.wrap(v) for v in value))
        return made

    def __setitem__(self, index: Any, value: Any) -> None:
        observer = self._observer
        observer.before_mutation()
        value = [observer.wrap(v) for v in value] if isinstance(index, slice) else observer.wrap(value)
        list.__setitem__(self, index, value)
        observer.changed()

    def extend(self, values: Iterable[Any]) -> None:
        observer = self._observer
        observer.before_mutation()
        list.extend(self, [observer.wrap(v) for v in values])
        observer.changed()

    def __iadd__(self, values: Iterable[Any]) -> ObservedList:  # type: ignore[override,misc]
        self.extend(values)
        return self

    append = _mutator(list, "append", wrap_args=True)
    insert = _mutator(list, "insert", wrap_args=True)  # (the index is no container: kept as is)
    __delitem__ = _mutator(list, "__delitem__")
    __imul__ = _mutator(list, "__imul__")
    pop = _mutator(list, "pop")
    remove = _mutator(list, "remove")
    clear = _mutator(list, "clear")
    sort = _mutator(list, "sort")
    reverse = _mutator(list, "reverse")


class ObservedSet(_Observed, set):  # type: ignore[type-arg]
    """A ``set`` of an observed state (its items are hashable, so never containers to watch)."""

    __slots__ = ("_observer",)
    _builtin = set

    @classmethod
    def _of(cls, observer: StateObserver, value: Iterable[Any]) -> ObservedSet:
        made = cls()
        made._observer = observer
        set.update(made, value)
        return made

    add = _mutator(set, "add")
    discard = _mutator(set, "discard")
    remove = _mutator(set, "remove")
    pop = _mutator(set, "pop")
    clear = _mutator(set, "clear")
    update = _mutator(set, "update")
    difference_update = _mutator(set, "difference_update")
    intersection_update = _mutator(set, "intersection_update")
    symmetric_difference_update = _mutator(set, "symmetric_difference_update")
    __ior__ = _mutator(set, "__ior__")
    __iand__ = _mutator(set, "__iand__")
    __isub__ = _mutator(set, "__isub__")
    __ixor__ = _mutator(set, "__ixor__")
