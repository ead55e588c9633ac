"""Actors used only by the benchmark, next to the demo's ``counter``.

Each mirrors an actor of bench/peer/server.mjs (same name, state and actions) so
both servers run the same workload. All are the demo counter with different
``Meta``: durability for workload 6, sleep timeouts for workloads 5 and 7.
"""

from rivet_django import Actor, action


class _BenchCounter(Actor):
    """state ``{count}``; ``increment(amount)`` adds and broadcasts ``count``."""

    state = {"count": 0}

    class Meta:
        abstract = True

    @action
    def increment(self, amount: int = 1) -> int:
        self.state["count"] += amount
        self.broadcast("count", self.state["count"])
        return self.state["count"]

    @action(name="getCount")
    def get_count(self) -> int:
        return self.state["count"]


class ThrottledCounter(_BenchCounter):
    """Workload 6: the counter with RivetKit-style batched saves."""

    class Meta:
        durability = "throttled"


class SleepyCounter(_BenchCounter):
    """Workloads 5 (100,000 actors) and 7 (wake): falls asleep after 1 s idle."""

    class Meta:
        sleep_timeout = 1.0


class MemCounter(_BenchCounter):
    """Workload 5 (10,000 awake actors): stays awake until asked to sleep."""

    class Meta:
        sleep_timeout = 3600.0

    @action(name="goToSleep")
    def go_to_sleep(self) -> bool:
        self.sleep()
        return True


class DbCounter(Actor):
    """Workload 8: ``increment`` inserts one row into the actor's own database (``self.db``)
    and answers its id; the reply waits for the insert to be durable (commit durability)."""

    async def on_migrate(self, db):
        await db.migrate(["CREATE TABLE log (id INTEGER PRIMARY KEY, amount INTEGER NOT NULL);"])

    @action
    async def increment(self, amount: int = 1) -> int:
        rows = await self.db.execute("INSERT INTO log (amount) VALUES (?) RETURNING id", amount)
        return rows[0]["id"]

    @action(name="getCount")
    async def get_count(self) -> int:
        return (await self.db.query_one("SELECT count(*) AS n FROM log"))["n"]
