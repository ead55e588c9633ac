"""``ledger``: a counter that says which node served each call and keeps an activation ledger.

Every call appends ``actor node generation start end`` (wall clock) to this node's
ledger file (``RIVET_LEDGER_DIR``), outside the fenced database writes: a second
activation of one actor would show as call intervals of two (node, generation)
pairs that overlap, whether or not its writes were refused.
"""

import os
import time

from rivet_django import Actor, action, event


def _ledger(actor_id: str, node: str, generation: int, start: float, end: float) -> None:
    folder = os.environ.get("RIVET_LEDGER_DIR")
    if folder:
        with open(os.path.join(folder, f"{os.getpid()}.ledger"), "a") as out:
            out.write(f"{actor_id} {node} {generation} {start:.6f} {end:.6f}\n")


class Ledger(Actor):
    state = {"count": 0}
    events = {"counted": event()}

    def _where(self) -> tuple[str, int]:
        inst = self._rivet
        return inst.runtime.node_id, inst.generation

    @action
    def increment(self, amount: int = 1) -> dict:
        start = time.time()
        self.state["count"] += amount
        self.broadcast("counted", self.state["count"])
        node, generation = self._where()
        _ledger(self.id, node, generation, start, time.time())
        return {"count": self.state["count"], "node": node}

    @action
    def info(self) -> dict:
        start = time.time()
        node, generation = self._where()
        _ledger(self.id, node, generation, start, time.time())
        return {"count": self.state["count"], "node": node, "generation": generation}

    @action
    def nap(self) -> None:
        """Go to sleep now (connections hibernate on this node)."""
        self.sleep()

    @action
    async def remind(self, seconds: float, name: str, *args: object) -> str:
        """Schedule the action ``name`` ``seconds`` from now; its schedule id."""
        return await self.schedule.after(seconds, name, *args)

    @action
    def fail(self) -> None:
        raise ZeroDivisionError("the ledger cannot divide")


class DbCounter(Actor):
    """bench/database.py: ``increment`` inserts one row into the actor's own database
    (the same actor as bench/benchapp's ``dbCounter``)."""

    async def on_migrate(self, db):
        await db.migrate(["CREATE TABLE log (id INTEGER PRIMARY KEY, amount INTEGER NOT NULL);"])

    @action
    async def increment(self, amount: int = 1) -> int:
        rows = await self.db.execute("INSERT INTO log (amount) VALUES (?) RETURNING id", amount)
        return rows[0]["id"]
