"""Fixture actors of the RivetKit 2.3.19 parity checks: precise sleep, ``run`` keeping an
actor awake, the stop sequence, events during an action, ``on_state_change``, access
control on raw routes, undeclared events and queues, error texts, stale handles and
workflow hooks.

Used in-process by tests/test_lifecycle.py and over the wire by the official JS client
(tests/js/parity.spec.mjs against a live ``runactors`` with tests.settings_live). What
happens is written to :data:`JOURNAL` (this process's memory, with the server's
monotonic clock), which :class:`ParityJournal` serves to remote tests.
"""

from __future__ import annotations

import asyncio
import copy
import time
from typing import Any

from django.http import HttpResponse, JsonResponse

from rivet_django import Actor, UserError, action, event, queue
from rivet_django.exceptions import Forbidden, StateMutationReentrant
from rivet_django.workflow import Loop, workflow

#: What happened, in order: ``{"key", "what", "t" (time.monotonic()), ...}``.
JOURNAL: list[dict[str, Any]] = []


def note(actor: Actor, what: str, **extra: Any) -> None:
    JOURNAL.append({"key": "/".join(actor.key), "what": what, "t": time.monotonic(), **extra})


def journal(key: str) -> list[dict[str, Any]]:
    return [entry for entry in JOURNAL if entry["key"] == key]


class ParityJournal(Actor):
    """Never sleeps: tells remote tests what the fixtures recorded."""

    class Meta:
        no_sleep = True

    @action
    def entries(self, key: str) -> list[dict[str, Any]]:
        return journal(key)

    @action
    def now(self) -> float:
        return time.monotonic()


# -- sleep on time (3) and what blocks it -------------------------------------------------


class Napper(Actor):
    """Sleeps 0.3 s after its last activity; actions start each kind of sleep blocker."""

    state = {"wakes": 0}

    class Meta:
        sleep_timeout = 0.3

    def on_wake(self) -> None:
        self.state["wakes"] += 1
        note(self, "wake")

    def on_sleep(self) -> None:
        note(self, "sleep")

    @action
    def touch(self) -> float:
        """Activity; returns the server's clock as the call ends."""
        return time.monotonic()

    @action
    def hold(self, seconds: float) -> float:
        self.keep_awake(asyncio.sleep(seconds))
        return time.monotonic()

    @action
    def linger(self, seconds: float) -> float:
        """wait_until work: a stop waits for it, but it does not keep the actor awake."""
        self.wait_until(asyncio.sleep(seconds))
        return time.monotonic()

    @action
    def prevent(self, flag: bool) -> float:
        self.prevent_sleep = flag
        return time.monotonic()

    @action
    def go_to_sleep(self) -> bool:
        self.sleep()
        self.sleep()  # a second request is a no-op
        return True

    @action
    def wakes(self) -> int:
        return int(self.state["wakes"])

    def on_request(self, request: Any) -> Any:
        return JsonResponse({"t": time.monotonic()})

    async def on_websocket(self, ws: Any) -> None:
        async for message in ws:
            await ws.send(message)
        # The socket closed (the client, or the actor stopping): work started here is
        # waited for by a stop, and what it changes is saved.
        self.wait_until(self._after_close())

    async def _after_close(self) -> None:
        await asyncio.sleep(0.2)
        self.state["closed_cleanly"] = True
        note(self, "close-work-done")


# -- run keeps the actor awake (4) ---------------------------------------------------------


class RunTicker(Actor):
    """A ``run`` loop that polls: it keeps the actor awake."""

    state = {"ticks": 0}

    class Meta:
        sleep_timeout = 0.2

    async def run(self) -> None:
        while not self.aborted:
            self.state["ticks"] += 1
            await asyncio.sleep(0.05)
        note(self, "run-end")

    def on_sleep(self) -> None:
        note(self, "sleep")

    @action
    def ticks(self) -> int:
        return int(self.state["ticks"])


class QueueRunner(Actor):
    """A ``run`` loop blocked on its queue: the actor may sleep, a message wakes it."""

    state = {"done": [], "wakes": 0}
    queues = {"jobs": queue()}

    class Meta:
        sleep_timeout = 0.2

    def on_wake(self) -> None:
        self.state["wakes"] += 1

    async def run(self) -> None:
        async for message in self.queue.iter("jobs"):
            self.state["done"].append(message.body)
        note(self, "run-end")

    def on_sleep(self) -> None:
        note(self, "sleep")

    @action
    def status(self) -> dict[str, Any]:
        return dict(self.state)


# -- the stop sequence (5) -----------------------------------------------------------------


class Stopper(Actor):
    """Records the stop sequence; ``go_to_sleep(mode)`` picks what ``on_sleep`` does."""

    state = {"wait_until_ran": False, "scheduled": 0, "jobs": [], "wakes": 0, "mode": None, "pings": 0}
    queues = {"jobs": queue()}

    class Meta:
        sleep_grace_period = 3.0
        run_stop_timeout = 1.0

    def on_wake(self) -> None:
        self.state["wakes"] += 1
        self.state["mode"] = None
        note(self, "wake", wakes=self.state["wakes"])

    async def run(self) -> None:
        while not self.aborted:
            await asyncio.sleep(0.02)
        note(self, "abort-seen")
        await asyncio.sleep(0.1)  # run takes a moment to wind down; on_sleep waits for it
        note(self, "run-end")

    async def on_sleep(self) -> None:
        mode = self.state["mode"]
        note(self, "on_sleep", aborted=self.aborted, conn=self.conn is not None)
        self.broadcast("sleeping", self.state["wakes"])
        self.wait_until(self._later())
        await self.schedule.after(0, "scheduled")
        await self.queue.send("jobs", f"from on_sleep {self.state['wakes']}")
        self.sleep()  # a second sleep is a no-op
        if mode == "throw":
            raise RuntimeError("on_sleep failed on purpose")
        if mode == "reject":
            self.wait_until(self._fail())
        if mode == "slow":
            await asyncio.sleep(1.0)
        if mode == "prevent":
            self.prevent_sleep = True
            self.wait_until(self._release())
        note(self, "on_sleep-end")

    async def _later(self) -> None:
        await asyncio.sleep(0.2)
        self.state["wait_until_ran"] = True
        note(self, "wait_until-done")

    async def _fail(self) -> None:
        await asyncio.sleep(0.05)
        raise RuntimeError("rejected on purpose")

    async def _release(self) -> None:
        await asyncio.sleep(0.3)
        note(self, "prevent-cleared")
        self.prevent_sleep = False

    def on_disconnect(self, conn: Any) -> None:
        note(self, "on_disconnect")

    def on_destroy(self) -> None:
        note(self, "on_destroy")

    @action
    def go_to_sleep(self, mode: str | None = None) -> bool:
        self.state["mode"] = mode
        self.sleep()
        self.sleep()
        return True

    @action
    def scheduled(self) -> None:
        self.state["scheduled"] += 1
        note(self, "scheduled", wakes=self.state["wakes"])

    @action
    def ping(self) -> dict[str, Any]:
        self.state["pings"] += 1
        return {"wakes": self.state["wakes"], "pings": self.state["pings"]}

    @action
    async def take_jobs(self) -> list[Any]:
        return [m.body for m in await self.queue.try_next_batch("jobs", count=10)]

    @action
    def status(self) -> dict[str, Any]:
        return dict(self.state)

    @action
    def destroy_me(self) -> bool:
        self.destroy()
        return True


# -- events during an action (6) --------------------------------------------------------------


class Streamer(Actor):
    """A long action that reports progress as it goes."""

    state = {"step": 0}

    @action
    async def work(self, steps: int, pause: float) -> int:
        for i in range(1, steps + 1):
            self.state["step"] = i
            self.broadcast("progress", i)
            await asyncio.sleep(pause)
        return steps


# -- on_state_change (7) --------------------------------------------------------------------


class Watched(Actor):
    """Keeps every state ``on_state_change`` saw (in vars: never persisted, never observed)."""

    state = {"a": {"b": 0}, "n": 0, "items": [], "reenter": False}

    def create_vars(self) -> dict[str, Any]:
        return {"calls": [], "error": None}

    def on_state_change(self, state: Any) -> None:
        self.vars["calls"].append(copy.deepcopy(state))
        if state["reenter"]:
            try:
                self.state["derived"] = 1
            except StateMutationReentrant as exc:
                self.vars["error"] = f"{exc.group}.{exc.code}"

    @action
    def bump_three(self) -> None:
        self.state["n"] += 1
        self.state["a"]["b"] += 1
        self.state["n"] += 1

    @action
    async def bump_across_awaits(self) -> None:
        self.state["n"] += 1
        await asyncio.sleep(0.01)
        self.state["a"]["b"] += 1
        await asyncio.sleep(0.01)
        self.state["items"].append({"x": [1]})

    @action
    def deep(self) -> None:
        self.state["items"][-1]["x"].append(2)

    @action
    def same(self) -> None:
        self.state["n"] = self.state["n"]

    @action
    def replace(self) -> None:
        self.state = {**self.state, "n": 100}

    @action
    def read(self) -> int:
        return int(self.state["n"])

    @action
    def reenter(self) -> None:
        self.state["reenter"] = True

    @action
    def seen(self) -> dict[str, Any]:
        return {"calls": self.vars["calls"], "error": self.vars["error"], "type": type(self.state).__name__}


class Unwatched(Actor):
    """No on_state_change: its state stays plain builtins."""

    state = {"a": {"b": 0}}

    @action
    def types(self) -> list[str]:
        return [type(self.state).__name__, type(self.state["a"]).__name__]


# -- stale handles (8) -------------------------------------------------------------------------


class Phoenix(Actor):
    """Destroyed and created again under the same key."""

    state = {"count": 0, "queued": []}
    queues = {"jobs": queue()}

    @action
    def increment(self, amount: int = 1) -> int:
        self.state["count"] += amount
        return int(self.state["count"])

    @action
    def destroy_me(self) -> bool:
        self.destroy()
        return True

    @action
    async def queued(self) -> list[Any]:
        return [m.body for m in await self.queue.try_next_batch("jobs", count=10)]

    def on_request(self, request: Any) -> Any:
        return JsonResponse({"id": self.id, "count": self.state["count"]})

    async def on_websocket(self, ws: Any) -> None:
        await ws.send(self.id)
        async for message in ws:
            await ws.send(message)


# -- events and queues without declarations (9, 10) ----------------------------------------------


class Eventful(Actor):
    """Declares one event; broadcasts any."""

    events = {"count": event()}

    @action
    def shout(self, name: str, *args: Any) -> None:
        self.broadcast(name, *args)


class Mailbox(Actor):
    """Declares the queue "jobs" only."""

    queues = {"jobs": queue()}

    @action
    async def stored(self) -> list[Any]:
        return [[m.name, m.body] for m in await self.queue.try_next_batch(count=10)]


class NoQueues(Actor):
    """Declares no queues at all."""

    @action
    async def stored(self) -> list[Any]:
        return [[m.name, m.body] for m in await self.queue.try_next_batch(count=10)]


# -- connection hooks on raw routes (11, 12) -------------------------------------------------------


class Gatekeeper(Actor):
    """Connect hooks that refuse ``{"allow": false}``; raw HTTP and WebSocket handlers."""

    state = {"requests": 0}

    def on_before_connect(self, params: Any) -> None:
        note(self, "before_connect")
        if isinstance(params, dict) and params.get("allow") is False:
            raise Forbidden()

    def create_conn_state(self, params: Any) -> dict[str, Any]:
        return {"who": (params or {}).get("who", "anon") if isinstance(params, dict) else "anon"}

    def on_connect(self, conn: Any) -> None:
        note(self, "connect", who=conn.state["who"])

    def on_disconnect(self, conn: Any) -> None:
        note(self, "disconnect", who=conn.state["who"])

    def on_request(self, request: Any) -> Any:
        self.state["requests"] += 1
        if request.method == "HEAD":
            return HttpResponse(status=200)
        who = self.conn.state["who"] if self.conn is not None else None
        return JsonResponse({"method": request.method, "path": request.path, "who": who})

    async def on_websocket(self, ws: Any) -> None:
        await ws.send(f"{self.conn.state['who'] if self.conn is not None else None} {ws.path}")
        async for message in ws:
            await ws.send(message)


# -- error texts (13) ---------------------------------------------------------------------------------


class Sluggish(Actor):
    """Times out, fails, refuses."""

    class Meta:
        action_timeout = 0.2

    @action
    async def slow(self) -> str:
        await asyncio.sleep(2)
        return "too late"

    @action
    def boom(self) -> None:
        raise RuntimeError("secret detail")

    @action
    def nope(self) -> None:
        raise UserError("nope", code="custom", metadata={"why": "because"})


# -- workflows (15-18) -------------------------------------------------------------------------------


class WfEcho(Actor):
    """Answers waiting senders with ``complete(response)`` of a completable workflow receive."""

    state = {"received": []}
    queues = {"requests": queue()}

    @workflow
    async def run(self, ctx: Any) -> None:
        async def body(loop: Any) -> Any:
            message = await loop.queue.next("wait", "requests", completable=True)

            def store() -> None:
                self.state["received"].append(message.body)

            await loop.step("store", store)
            await message.complete({"echo": message.body})
            return Loop.continue_()

        await ctx.loop("requests", body)

    @action
    def received(self) -> list[Any]:
        return list(self.state["received"])


class WfFailing(Actor):
    """A step that always fails: the workflow stops and the actor sleeps (no spin)."""

    state = {"attempts": 0, "errors": []}
    queues = {"go": queue(), "errors": queue()}

    class Meta:
        sleep_timeout = 0.2

    async def on_error(self, event: dict[str, Any]) -> None:
        step = event["step"]
        self.state["errors"].append([step["stepName"], step["attempt"], step["willRetry"]])
        self.broadcast("workflowError", step["stepName"])
        await self.queue.send("errors", step["attempt"])

    async def doomed(self) -> None:
        self.state["attempts"] += 1
        raise ValueError("always")

    @workflow(on_error=on_error)
    async def run(self, ctx: Any) -> None:
        await ctx.queue.next("go", "go")  # the test subscribes first
        await ctx.step("doomed", self.doomed, retries=1, backoff_base=0.01)

    def on_sleep(self) -> None:
        note(self, "sleep")

    def on_wake(self) -> None:
        note(self, "wake")

    @action
    def status(self) -> dict[str, Any]:
        return dict(self.state)

    @action
    async def enqueued_errors(self) -> list[Any]:
        return [m.body for m in await self.queue.try_next_batch("errors", count=10)]


class WfDestroyer(Actor):
    """Destroys itself from inside a workflow step."""

    state = {"steps": 0}

    @workflow
    async def run(self, ctx: Any) -> None:
        def first() -> None:
            self.state["steps"] += 1
            self.destroy()

        await ctx.step("first", first)
        await ctx.step("never", lambda: note(self, "after-destroy"))

    def on_destroy(self) -> None:
        note(self, "on_destroy", steps=self.state["steps"])
