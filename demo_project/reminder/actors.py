"""The demo reminder: ``self.schedule`` one-shots (``after``/``at``) and cron.

    h = client.reminder.get_or_create(["ann"])
    h.remind_in(5, "stretch")                  # in 5 seconds
    h.remind_at(1767225600, "happy new year")   # at an epoch time (or ISO string)
    h.daily("standup", "0 9 * * 1-5", "stand-up meeting", "Europe/Paris")
    h.list(); h.cancel(schedule_id); h.fired()

A reminder that comes due is kept in the state (the last 100) and broadcast as
the event ``"reminder"``, even if the actor was asleep or the server restarted
in between: the schedule wakes it.
"""

from __future__ import annotations

import time
from datetime import datetime

from rivet_django import Actor, UserError, action, event

#: Fired reminders kept in the state.
KEEP = 100


class Reminder(Actor):
    """Registered as "reminder"."""

    state = {"fired": []}
    events = {"reminder": event()}

    @action
    async def remind_in(self, seconds: float, text: str) -> str:
        """A one-shot reminder ``seconds`` from now; returns its schedule id."""
        return await self.schedule.after(seconds, "fire", text)

    @action
    async def remind_at(self, when: float | str, text: str) -> str:
        """A one-shot reminder at epoch seconds or an ISO 8601 time with an offset."""
        at: float | datetime
        try:
            at = datetime.fromisoformat(when) if isinstance(when, str) else when
        except ValueError:
            raise UserError(f"{when!r} is not an ISO 8601 time", code="invalid_time") from None
        return await self.schedule.at(at, "fire", text)

    @action
    async def daily(self, name: str, cron: str, text: str, tz: str | None = None) -> str:
        """A named recurring reminder (5-field cron, e.g. ``"0 9 * * *"``); the same name replaces it."""
        return await self.schedule.cron(name, cron, "fire", text, tz=tz)

    @action
    async def list(self) -> list[dict]:
        """Pending reminders, soonest first."""
        return [
            {"id": s.id, "name": s.name, "kind": s.kind, "text": (s.args or [None])[0], "due_at": s.due_at,
             "cron": s.cron, "tz": s.tz}
            for s in await self.schedule.list()
        ]  # fmt: skip

    @action
    async def cancel(self, schedule_id: str) -> bool:
        return await self.schedule.cancel(schedule_id)

    @action
    def fired(self) -> list[dict]:
        """Reminders that came due, oldest first."""
        return self.state["fired"]

    @action
    def fire(self, text: str) -> dict:
        """Run by the schedules (callable directly too)."""
        entry = {"text": text, "at": time.time()}
        self.state["fired"] = [*self.state["fired"], entry][-KEEP:]
        self.broadcast("reminder", entry)
        return entry
