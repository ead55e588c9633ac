"""Placement: on which node an actor that no live node holds wakes up.

``RIVET["PLACEMENT"]`` names a policy: ``"local"`` (the default: the node the call
arrived on, no extra query) or ``"least_loaded"`` (the live node holding the fewest
actors), or the dotted path of a class with the same ``choose`` method.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

from django.utils.module_loading import import_string

if TYPE_CHECKING:
    from ..storage.store import NodeInfo

__all__ = ["LeastLoaded", "Local", "Placement", "load_placement"]


class Placement(Protocol):
    #: False: the gateway never asks (saves reading the node table on wake).
    consults_nodes: bool

    def choose(self, actor_id: str, here: str, nodes: Sequence[NodeInfo]) -> str:
        """The id of the node to wake ``actor_id`` on: ``here`` or one of ``nodes`` (live, serving)."""
        ...


class Local:
    """Wake the actor where the call arrived."""

    consults_nodes = False

    def choose(self, actor_id: str, here: str, nodes: Sequence[NodeInfo]) -> str:
        return here


class LeastLoaded:
    """Wake the actor on the live node with the fewest actors (this node on a tie)."""

    consults_nodes = True

    def choose(self, actor_id: str, here: str, nodes: Sequence[NodeInfo]) -> str:
        load = {info.node_id: info.actors for info in nodes}
        load.setdefault(here, 0)
        return min(load, key=lambda node_id: (load[node_id], node_id != here, node_id))


_BUILT_IN: dict[str, type] = {"local": Local, "least_loaded": LeastLoaded}


def load_placement(name: str) -> Placement:
    cls = _BUILT_IN.get(name) or import_string(name)
    return cls()  # type: ignore[no-any-return]
