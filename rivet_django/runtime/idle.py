"""``IdleTimers``: when each awake actor checks whether it may go to sleep.

Every awake actor is due for an idle check ``sleep_timeout`` after its last
activity. One event-loop timer per actor would cost each a ``TimerHandle``, its
context and a heap entry (about 150 bytes; 100,000 awake actors are a
workload), so actors share timers instead: due times are rounded to a grid and
the actors due at the same grid point share one loop timer. A check further
away than :data:`COARSE` seconds waits on the coarse grid (one timer per second
at most, whatever the timeout) and, when that fires, the actor re-arms for what
is left on the :data:`FINE` grid. So an actor costs one list entry, a check runs
at most ``FINE`` late, and a slot whose members all left (their actors stopped)
cancels its timer at once.
"""

from __future__ import annotations

import asyncio
import math
from typing import Protocol

__all__ = ["COARSE", "FINE", "IdleTimers"]

#: Seconds; a check runs at most this late.
FINE = 0.01

#: Seconds; checks further away than twice this wait on a grid this coarse first.
COARSE = 1.0


class _Checked(Protocol):
    def idle_check(self) -> None: ...


class _Slot:
    __slots__ = ("handle", "members")

    def __init__(self, handle: asyncio.TimerHandle) -> None:
        self.handle = handle
        #: A list, not a set: 8 bytes a member instead of about 40 (a member leaves at most
        #: once, when its actor stops; the scan is over one slot's members).
        self.members: list[_Checked] = []


class IdleTimers:
    """Grid points with due idle checks, one loop timer each."""

    __slots__ = ("_slots",)

    def __init__(self) -> None:
        self._slots: dict[float, _Slot] = {}

    def add(self, member: _Checked, delay: float) -> float:
        """Call ``member.idle_check()`` in about ``delay`` seconds; returns the slot's key
        (an earlier coarse one for a far check: the member re-arms from there)."""
        loop = asyncio.get_running_loop()
        due = loop.time() + max(delay, 0.0)
        # A far check waits on the coarse grid, at most COARSE before it is due.
        at = math.ceil((due - COARSE) / COARSE) * COARSE if delay > 2 * COARSE else math.ceil(due / FINE) * FINE
        slot = self._slots.get(at)
        if slot is None:
            slot = self._slots[at] = _Slot(loop.call_at(at, self._fire, at))
        slot.members.append(member)
        return at

    def discard(self, member: _Checked, at: float) -> None:
        """Forget ``member``'s check at ``at``; an emptied slot cancels its timer."""
        slot = self._slots.get(at)
        if slot is None:
            return
        try:
            slot.members.remove(member)
        except ValueError:
            return
        if not slot.members:
            slot.handle.cancel()
            del self._slots[at]

    def _fire(self, at: float) -> None:
        slot = self._slots.pop(at, None)
        if slot is not None:
            for member in slot.members:
                member.idle_check()

    def __len__(self) -> int:
        return sum(len(slot.members) for slot in self._slots.values())
