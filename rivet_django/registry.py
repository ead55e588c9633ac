"""The registry of actor definitions, filled by importing ``actors.py`` modules.

Modeled on ``django.contrib.admin.sites``: one :data:`actors` object with a
``_registry``, ``register()`` raising :class:`AlreadyRegistered`, and
:func:`autodiscover` importing ``<app>.actors`` for every installed app.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .exceptions import ActorNotFound, AlreadyRegistered

if TYPE_CHECKING:
    from .definition import Actor, ActorDefinition

__all__ = ["ActorRegistry", "actors", "autodiscover"]


class ActorRegistry:
    """Actor definitions by registered name."""

    def __init__(self) -> None:
        self._registry: dict[str, ActorDefinition] = {}
        #: Names claimed by more than one class (reported by system check E001).
        self.conflicts: dict[str, list[str]] = {}

    def add(self, definition: ActorDefinition) -> None:
        """Record a definition as its class is created; conflicts are kept for checks.

        Re-creating the same class (same module and qualified name, e.g. a module
        reload) replaces it quietly.
        """
        name = definition.name
        existing = self._registry.get(name)
        if existing is not None and _path(existing.cls) != _path(definition.cls):
            self.conflicts.setdefault(name, [_path(existing.cls)]).append(_path(definition.cls))
            return
        self._registry[name] = definition

    def register(self, cls: type[Actor]) -> ActorDefinition:
        """Register an actor class explicitly; a name taken by another class raises."""
        definition = cls._rivet_definition
        existing = self._registry.get(definition.name)
        if existing is not None and existing.cls is not cls:
            raise AlreadyRegistered(
                f"Actor name {definition.name!r} is already registered by {_path(existing.cls)}; "
                f"{_path(cls)} needs another Meta.name."
            )
        self._registry[definition.name] = definition
        return definition

    def unregister(self, name: str) -> None:
        self._registry.pop(name, None)
        self.conflicts.pop(name, None)

    def get(self, name: str) -> ActorDefinition:
        """The definition registered as ``name``; :class:`ActorNotFound` if none."""
        try:
            return self._registry[name]
        except KeyError:
            raise ActorNotFound(f"No actor named {name!r} is registered") from None

    def __contains__(self, name: object) -> bool:
        return name in self._registry

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self._registry.values())

    def __len__(self) -> int:
        return len(self._registry)

    def names(self) -> list[str]:
        return sorted(self._registry)


def _path(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


actors = ActorRegistry()


def autodiscover() -> None:
    """Import ``actors`` from every installed app (like ``admin.autodiscover``)."""
    from django.utils.module_loading import autodiscover_modules

    autodiscover_modules("actors", register_to=None)
