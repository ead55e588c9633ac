"""Actors of the test suite; discovered through autodiscovery like a user's app."""

import asyncio
import sqlite3

from rivet_django import Actor, UserError, action, event, queue
from rivet_django.exceptions import Forbidden

#: Hook calls recorded by LifecycleActor, in order: (actor key, hook name).
EVENTS: list[tuple[str, str]] = []


def _k(actor) -> str:
    return actor.key[0] if actor.key else ""


class Counter(Actor):
    state = {"count": 0}

    @action
    def increment(self, amount: int = 1) -> int:
        self.state["count"] += amount
        return self.state["count"]

    @action(name="getCount")
    async def get_count(self) -> int:
        return self.state["count"]

    @action
    async def slow_increment(self, amount: int, delay: float) -> int:
        current = self.state["count"]
        await asyncio.sleep(delay)
        self.state["count"] = current + amount
        return self.state["count"]

    @action
    def echo(self, *values):
        return {"values": list(values), "types": [type(v).__name__ for v in values]}

    @action
    def add_kw(self, a: int, *, b: int = 0) -> int:
        self.state["count"] += a + b
        return self.state["count"]


class Lifecycle(Actor):
    class Meta:
        sleep_timeout = 0.3

    def create_state(self, input):
        EVENTS.append((_k(self), "create_state"))
        return {"input": input, "wakes": 0}

    def on_create(self, input):
        EVENTS.append((_k(self), "on_create"))

    def create_vars(self):
        EVENTS.append((_k(self), "create_vars"))
        return {"ephemeral": 1}

    async def on_wake(self):
        EVENTS.append((_k(self), "on_wake"))
        self.state["wakes"] += 1

    def on_sleep(self):
        EVENTS.append((_k(self), "on_sleep"))

    def on_destroy(self):
        EVENTS.append((_k(self), "on_destroy"))

    def on_state_change(self, state):
        EVENTS.append((_k(self), "on_state_change"))

    @action
    def info(self):
        return {
            "state": self.state,
            "vars": self.vars,
            "id": self.id,
            "name": self.name,
            "key": list(self.key),
            "namespace": self.namespace,
        }

    @action
    def touch(self):
        self.state["touched"] = self.state.get("touched", 0) + 1
        return self.state["touched"]

    @action
    def go_to_sleep(self):
        self.sleep()
        return "ok"

    @action
    def self_destruct(self):
        self.destroy()
        return "bye"


class Errors(Actor):
    state = {"value": 1}

    @action
    def user_error(self):
        raise UserError("nope", code="custom_code", metadata={"why": "because"})

    @action
    def forbidden(self):
        raise Forbidden()

    @action
    def internal(self):
        raise ValueError("database password is hunter2")

    @action
    def bad_state(self):
        self.state["value"] = 2
        self.state["bad"] = object()
        return "unreachable"

    @action
    def bad_output(self):
        return object()

    @action
    def value(self):
        return self.state["value"]

    @action
    async def slow(self, seconds: float):
        await asyncio.sleep(seconds)
        return "done"

    @action
    def big(self, size: int):
        return "x" * size

    class Meta:
        action_timeout = 0.5


class Throttled(Actor):
    state = {"n": 0}

    class Meta:
        durability = "throttled"
        state_save_interval = 0.2

    @action
    def bump(self):
        self.state["n"] += 1
        return self.state["n"]


class Stateless(Actor):
    @action
    def ping(self):
        return "pong"

    @action
    def read_state(self):
        return self.state


class Storage(Actor):
    state = {}

    @action
    async def kv_put(self, key, value):
        await self.kv.put(key, value)

    @action
    async def kv_get(self, key):
        return await self.kv.get(key)

    @action
    async def kv_list(self, prefix):
        return await self.kv.list(prefix)

    @action
    async def kv_delete(self, key):
        await self.kv.delete(key)

    @action
    def set_state(self, value):
        self.state["value"] = value

    @action
    def get_state(self):
        return self.state.get("value")


class NoSleep(Actor):
    state = {"n": 0}

    class Meta:
        no_sleep = True
        sleep_timeout = 0.1

    @action
    def bump(self):
        self.state["n"] += 1
        return self.state["n"]


class Connecting(Actor):
    """Runs connect hooks on stateless HTTP calls (PROTOCOL.md section 6)."""

    state = {"connects": 0, "disconnects": 0}

    def on_before_connect(self, params):
        if isinstance(params, dict) and params.get("deny"):
            raise Forbidden()

    def create_conn_state(self, params):
        return {"user": (params or {}).get("user", "anon") if isinstance(params, dict) else "anon"}

    def on_connect(self, conn):
        self.state["connects"] += 1

    def on_disconnect(self, conn):
        self.state["disconnects"] += 1

    @action
    def whoami(self):
        return {"user": self.conn.state["user"], "conns": len(self.conns), "params": self.conn.params}

    @action
    def counts(self):
        return dict(self.state)


class Features(Actor):
    """Exercises the rest of the actor context API."""

    state = {"saved": 0, "background": 0}

    class Meta:
        durability = "throttled"
        state_save_interval = 60

    @action
    async def save_now(self):
        self.state["saved"] += 1
        await self.save_state(immediate=True)
        return self.state["saved"]

    @action
    def start_background(self, seconds: float):
        async def work():
            await asyncio.sleep(seconds)
            self.state["background"] += 1

        self.keep_awake(work())
        return "started"

    @action
    def background_done(self):
        return self.state["background"]

    @action
    def set_prevent_sleep(self, value: bool):
        self.prevent_sleep = value
        return self.prevent_sleep

    @action
    def log_something(self, message: str):
        self.log.warning("custom %s", message)
        return True

    @action
    def secret(self):
        return {"password": "hunter2", "user": "ann"}

    def on_before_action_response(self, name, args, output):
        if name == "secret":
            return {k: v for k, v in output.items() if k != "password"}
        return output

    @action
    async def call_other(self, key: str, amount: int, namespace: str | None = None):
        return await self.client(namespace).counter.get_or_create([key]).increment(amount)

    @action
    async def call_self(self):
        return await self.client().features.get_for_id(self.id).background_done()


class Room(Actor):
    """Connections, events and raw handlers."""

    state = {"messages": [], "requests": 0}
    conn_state = {"name": "anon"}
    events = {
        "message": event(),
        "secret": event(can_subscribe=lambda self, conn: conn.state["name"] == "admin"),
        "private": event(),
    }

    async def on_before_connect(self, params):
        EVENTS.append((_k(self), f"before_connect:{params!r}"))
        if isinstance(params, dict) and params.get("hang"):
            await asyncio.sleep(params["hang"])
        if isinstance(params, dict) and params.get("refuse"):
            raise UserError("go away", code="refused", metadata={"reason": "test"})
        if isinstance(params, dict) and params.get("crash"):
            raise RuntimeError("secret connect failure")

    def create_conn_state(self, params):
        EVENTS.append((_k(self), "create_conn_state"))
        return {"name": (params or {}).get("name", "anon") if isinstance(params, dict) else "anon"}

    def on_connect(self, conn):
        EVENTS.append((_k(self), f"on_connect:{len(self.conns)}"))
        self.state["joined"] = self.state.get("joined", 0) + 1

    def on_disconnect(self, conn):
        EVENTS.append((_k(self), f"on_disconnect:{conn.state['name']}"))

    @action
    def send(self, text):
        self.state["messages"].append({"from": self.conn.state["name"], "text": text})
        self.broadcast("message", self.conn.state["name"], text)
        return len(self.state["messages"])

    @action
    def whoami(self):
        return {
            "id": self.conn.id,
            "name": self.conn.state["name"],
            "params": self.conn.params,
            "conns": sorted(c.state["name"] for c in self.conns.values()),
        }

    @action
    def announce_then_break(self, text):
        self.broadcast("message", "system", text)
        self.state["broken"] = object()

    @action
    def break_then_announce(self, text):
        self.state["broken"] = object()
        self.broadcast("message", "system", text)

    @action
    def shout(self, event, *args):
        """Broadcast any event, declared or not."""
        self.broadcast(event, *args)

    @action
    async def slow_whoami(self, seconds):
        before = self.conn.state["name"]
        await asyncio.sleep(seconds)
        return [before, self.conn.state["name"]]

    @action
    def whisper(self, conn_id, text):
        self.conns[conn_id].send("private", text)

    @action
    def reveal(self, text):
        self.broadcast("secret", text)

    @action
    async def kick(self, conn_id):
        await self.conns[conn_id].disconnect("room.kicked")

    @action
    def big(self, size):
        return "x" * size

    @action
    def big_event(self, size):
        self.broadcast("message", "x" * size)

    @action
    async def slow(self, seconds):
        await asyncio.sleep(seconds)
        return seconds

    @action
    def request_info(self):
        return None if self.request is None else self.request.path

    @action
    def go_to_sleep(self):
        self.sleep()

    def on_request(self, request):
        from django.http import JsonResponse

        self.state["requests"] += 1
        if request.path == "/none":
            return None
        return JsonResponse(
            {
                "path": request.path,
                "query": request.GET.dict(),
                "method": request.method,
                "body": request.body.decode(),
                "requests": self.state["requests"],
            }
        )

    async def on_websocket(self, ws):
        await ws.send(f"hello {ws.path} {ws.query.get('x', '')}")
        async for message in ws:
            if message == "close":
                await ws.close(4000, "bye")
                return
            await ws.send(message)


# -- durable queues ---------------------------------------------------------------------

#: What queue handlers saw, in order: (actor key, what, message id, attempts).
QUEUE_LOG: list[tuple[str, str, int, int]] = []


def _message(msg):
    if msg is None:
        return None
    return {"id": msg.id, "name": msg.name, "body": msg.body, "attempts": msg.attempts}


class Inbox(Actor):
    """Consumes its queues from actions. Clients may send to "q" (the one declared queue); the
    actor's own sends may use any name."""

    state = {"seen": []}
    queues = {"q": queue()}

    class Meta:
        max_queue_size = 20
        max_queue_message_size = 1024

    @action
    async def send(self, name, body):
        return await self.queue.send(name, body)

    @action
    async def next(self, names=None, timeout=None, completable=False, respond=None):
        msg = await self.queue.next(names, timeout=timeout, completable=completable)
        if msg is not None and respond is not None:
            await msg.complete(respond)
        return _message(msg)

    @action
    async def next_batch(self, names=None, count=1, timeout=None):
        return [_message(m) for m in await self.queue.next_batch(names, count=count, timeout=timeout)]

    @action
    async def try_next(self, names=None):
        return _message(await self.queue.try_next(names))

    @action
    async def try_next_batch(self, names=None, count=1):
        return [_message(m) for m in await self.queue.try_next_batch(names, count=count)]

    @action
    async def drain(self, names=None):
        """Every stored message, one receive at a time (each receive acknowledges the previous one)."""
        out = []
        while (msg := await self.queue.try_next(names)) is not None:
            self.state["seen"].append(msg.id)
            out.append(_message(msg))
        return out

    @action
    async def size(self, names=None):
        return await self.queue.size(names)

    @action
    async def receive_and_fail(self, completable=False):
        msg = await self.queue.next(timeout=1, completable=completable)
        raise UserError("handler failed", metadata={"id": msg.id if msg else None})

    @action
    async def complete_twice(self):
        msg = await self.queue.next(timeout=1, completable=True)
        await msg.complete("first")
        await msg.complete("second")

    @action
    async def hold_completable(self):
        first = await self.queue.next(timeout=1, completable=True)
        try:
            await self.queue.next(timeout=0)
        except Exception as exc:
            return {"held": first.id, "error": f"{exc.group}.{exc.code}"}
        return {"held": first.id, "error": None}

    @action
    async def wait_with_signal(self, delay, batch=False):
        """Receive with a signal set after ``delay`` s (0: already set): the message, or the error."""
        signal = asyncio.Event()
        if delay == 0:
            signal.set()
        else:
            asyncio.get_running_loop().call_later(delay, signal.set)
        try:
            if batch:
                return [_message(m) for m in await self.queue.next_batch(count=5, signal=signal)]
            return _message(await self.queue.next(signal=signal))
        except Exception as exc:
            return f"{exc.group}.{exc.code}"

    @action
    async def iterate_with_signal(self, delay):
        """``iter`` until the signal: the bodies it yielded (it ends quietly)."""
        signal = asyncio.Event()
        asyncio.get_running_loop().call_later(delay, signal.set)
        return [m.body async for m in self.queue.iter(signal=signal)]

    @action
    async def wait_until_stopped(self):
        """Waits for a message with no timeout; the actor stopping ends the wait."""
        try:
            await self.queue.next()
        except Exception as exc:
            return f"{exc.group}.{exc.code}"
        return "got a message"

    @action
    async def send_to_worker(self, key, body, wait=True):
        return await self.client().worker.get_or_create([key]).queue.send("jobs", body, wait=wait, timeout=5)

    @action
    async def bad_send(self, kind):
        if kind == "name":
            await self.queue.send("", 1)
        elif kind == "body":
            await self.queue.send("q", object())
        elif kind == "count":
            await self.queue.next_batch(count=0)


class Worker(Actor):
    """A ``run`` loop consuming declared queues; limits and ``can_publish``."""

    state = {"done": [], "wakes": 0}
    queues = {
        "jobs": queue(),
        "never": queue(),
        "small": queue(max_size=2, max_message_size=64),
        "private": queue(
            can_publish=lambda self, conn: isinstance(conn.params, dict) and conn.params.get("token") == "secret"
        ),
    }

    def on_wake(self):
        self.state["wakes"] += 1

    async def run(self):
        async for msg in self.queue.iter("jobs"):
            body = msg.body if isinstance(msg.body, dict) else {"value": msg.body}
            QUEUE_LOG.append((_k(self), "received", msg.id, msg.attempts))
            if body.get("block") and msg.attempts == 1:
                # Mid-handler: the start is durable, the message is not acknowledged yet.
                self.state.setdefault("started", []).append(msg.id)
                await self.save_state()
                await asyncio.sleep(body["block"])
            self.state["done"].append(body.get("n", body.get("value")))
            if "reply" in body:
                await msg.complete({"reply": body["reply"], "done": len(self.state["done"])})

    @action
    def status(self):
        return dict(self.state)

    @action
    async def publish(self, name, body):
        """A send from the actor itself (no can_publish check)."""
        return await self.queue.send(name, body)

    @action
    async def peek(self, names):
        return _message(await self.queue.try_next(names))

    @action
    async def size(self, names=None):
        return await self.queue.size(names)


class Scheduled(Actor):
    """Exercises ``self.schedule`` (tests/test_schedules.py)."""

    state = {"runs": [], "fail_left": 0}

    @action
    async def add(self, method: str, *args, **options):
        """``self.schedule.<method>(*args, **options)``: after, at, cron, every."""
        return await getattr(self.schedule, method)(*args, **options)

    @action
    async def schedules(self):
        return [s.as_dict() for s in await self.schedule.list()]

    @action
    async def get_schedule(self, schedule_id):
        found = await self.schedule.get(schedule_id)
        return None if found is None else found.as_dict()

    @action
    async def cancel(self, schedule_id):
        return await self.schedule.cancel(schedule_id)

    @action
    def record(self, tag):
        import time

        self.state["runs"].append({"tag": tag, "at": time.time(), "conn": self.conn is not None})
        return len(self.state["runs"])

    @action
    def flaky(self, tag):
        if self.state["fail_left"] > 0:
            self.state["fail_left"] -= 1
            raise UserError("not yet", code="flaky")
        return self.record(tag)

    @action
    def boom(self):
        raise RuntimeError("scheduled failure")

    @action
    def set_fail(self, count: int):
        self.state["fail_left"] = count

    @action
    def runs(self):
        return self.state["runs"]


class SleepyScheduled(Scheduled):
    """Like Scheduled, but falls asleep 0.2 s after its last call."""

    state = {"runs": [], "fail_left": 0}

    class Meta:
        sleep_timeout = 0.2


#: What the run-loop actors did, in order: (actor key, event).
RUN_LOG: list[tuple[str, str]] = []


class Ticker(Actor):
    """A well-behaved run loop: works until aborted, then returns."""

    state = {"ticks": 0}

    class Meta:
        sleep_timeout = 60

    def on_wake(self):
        RUN_LOG.append((_k(self), "on_wake"))

    async def run(self):
        RUN_LOG.append((_k(self), "run"))
        while not self.aborted:
            self.state["ticks"] += 1
            try:
                await asyncio.wait_for(self.abort_event.wait(), 0.01)
            except TimeoutError:
                pass
        RUN_LOG.append((_k(self), "run-stopped"))

    @action
    def ticks(self):
        return self.state["ticks"]


class Stubborn(Actor):
    """Ignores the abort: cancelled after ``run_stop_timeout``."""

    class Meta:
        run_stop_timeout = 0.2
        sleep_grace_period = 5

    async def run(self):
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            RUN_LOG.append((_k(self), "cancelled"))
            raise

    @action
    def ping(self):
        return "pong"


class Crashy(Actor):
    """A run that raises or returns leaves the actor alive."""

    async def run(self):
        if self.key and self.key[0].startswith("raise"):
            raise RuntimeError("run loop exploded")
        return "done"

    @action
    def ping(self):
        return "pong"


# -- workflows (tests/test_workflows.py) ---------------------------------------------------

from rivet_django.workflow import Loop, workflow  # noqa: E402

#: Real executions of workflow step functions, by (actor key, step): survives crash_node.
WF_RUNS: dict[tuple[str, str], int] = {}
#: Test-controlled behaviour by actor key: "gate" (step after which the workflow parks),
#: "fail" (failures left per step), "order" (step names of Diverging), "reached" (events).
WF_CONTROL: dict[str, dict] = {}


def _wf_count(actor, step: str) -> None:
    WF_RUNS[(_k(actor), step)] = WF_RUNS.get((_k(actor), step), 0) + 1


async def _wf_gate(actor, point: str) -> None:
    """Park the workflow at ``point`` when the test asks (to crash the node exactly there)."""
    control = WF_CONTROL.get(_k(actor), {})
    if control.get("gate") == point:
        control["reached"].set()
        await asyncio.Event().wait()  # until the node is crashed (the task is cancelled)


class WfSteps(Actor):
    """Three steps; each counts its real executions and records itself in state."""

    state = {"done": [], "result": None}

    def _step(self, name: str):
        def run(value):
            _wf_count(self, name)
            self.state["done"].append(name)
            return value * 2

        return run

    @workflow
    async def run(self, ctx):
        await _wf_gate(self, "start")
        a = await ctx.step("a", self._step("a"), 1)
        await _wf_gate(self, "a")
        b = await ctx.step("b", self._step("b"), a)
        await _wf_gate(self, "b")
        c = await ctx.step("c", self._step("c"), b)
        await _wf_gate(self, "c")
        await ctx.step("finish", self._finish, [a, b, c])

    def _finish(self, values):
        _wf_count(self, "finish")
        self.state["result"] = values

    @action
    def progress(self):
        return self.state


#: The on_error events of WfRetry, by key (tests/test_workflows.py).
WF_EVENTS: dict[str, list[dict]] = {}


class WfRetry(Actor):
    """A step that fails ``WF_CONTROL[key]["fail"]`` times before it succeeds."""

    state = {"value": None, "errors": []}

    async def flaky(self):
        _wf_count(self, "flaky")
        control = WF_CONTROL.setdefault(_k(self), {})
        if control.get("fail", 0) > 0:
            control["fail"] -= 1
            raise ValueError("not yet")
        self.state["value"] = "ok"
        return "ok"

    def on_failure(self, event):
        """Every failed attempt: "step#attempt", with "!" when it will not be retried."""
        step = event["step"]
        self.state["errors"].append(f"{step['stepName']}#{step['attempt']}{'' if step['willRetry'] else '!'}")
        WF_EVENTS.setdefault(_k(self), []).append(event)

    @workflow(on_error=on_failure)
    async def run(self, ctx):
        result = await ctx.try_step("maybe", self.flaky, retries=1, backoff_base=0.01)
        if not result.ok:
            self.vars = {"try": result.error, "kind": result.kind, "message": result.message, "attempts": result.attempts}
        await ctx.step("flaky", self.flaky, retries=2, backoff_base=0.01, backoff_max=0.02)
        await ctx.step("after", _wf_count, self, "after")

    @action
    def progress(self):
        return {"state": self.state, "vars": self.vars}


class WfLoop(Actor):
    """A counting loop with a nested loop, driven by ``input`` (iterations)."""

    state = {"total": 0, "inner": 0, "result": None}

    def create_state(self, input):
        return {"total": 0, "inner": 0, "result": None, "n": (input or {}).get("n", 10)}

    def _add(self, i):
        self.state["total"] += i

    def _inner(self):
        self.state["inner"] += 1

    @workflow
    async def run(self, ctx):
        n = await ctx.step("n", lambda: self.state["n"])

        async def body(loop):
            await loop.step("add", self._add, loop.iteration)
            if loop.iteration + 1 >= n:
                return Loop.break_(loop.state + 1)
            return Loop.continue_(loop.state + 1)

        count = await ctx.loop("count", body, state=0)

        async def outer(loop):
            async def inner(inner_loop):
                await inner_loop.step("tick", self._inner)
                if inner_loop.iteration == 2:
                    return Loop.break_(inner_loop.iteration)
                return None

            await loop.loop("inner", inner)
            if loop.iteration == 1:
                return Loop.break_("nested-done")
            return None

        nested = await ctx.loop("outer", outer)

        def finish():
            self.state["result"] = [count, nested]

        await ctx.step("finish", finish)

    @action
    def progress(self):
        return self.state


class WfQueue(Actor):
    """Consumes ``jobs`` with ``ctx.queue.next`` in a loop until a message says stop."""

    queues = {"jobs": queue()}
    state = {"seen": [], "reason": None}

    @workflow
    async def run(self, ctx):
        async def body(loop):
            msg = await loop.queue.next("wait", "jobs")
            if msg.body.get("stop"):
                return Loop.break_(msg.body["stop"])

            def handle(body):
                self.state["seen"].append(body["n"])

            await loop.step("handle", handle, msg.body)
            return None

        reason = await ctx.loop("jobs", body)

        def done():
            self.state["reason"] = reason

        await ctx.step("done", done)

    @action
    def progress(self):
        return self.state


class WfSleep(Actor):
    """A step, a durable one-hour sleep, a step."""

    state = {"before": None, "after": None}

    class Meta:
        sleep_timeout = 0.3

    @workflow
    async def run(self, ctx):
        def before():
            self.state["before"] = True

        await ctx.step("before", before)
        await ctx.sleep("nap", 3600)

        def after():
            _wf_count(self, "after")
            self.state["after"] = True

        await ctx.step("after", after)

    @action
    def progress(self):
        return self.state


class WfDiverging(Actor):
    """Runs the steps named in ``WF_CONTROL[key]["order"]`` (a test changes them between runs)."""

    state = {"done": []}

    @workflow
    async def run(self, ctx):
        for name in WF_CONTROL.get(_k(self), {}).get("order", ["a", "b"]):
            if name.startswith("loop:"):
                await ctx.loop(name[5:], lambda loop: Loop.break_(1))
            else:
                await ctx.step(name, lambda n: self.state["done"].append(n), name)

    @action
    def progress(self):
        return self.state


class WfJoin(Actor):
    """``ctx.join`` of two branches, then ``ctx.race`` of a fast and a slow one."""

    state = {"join": None, "race": None}

    @workflow
    async def run(self, ctx):
        async def left(branch):
            return await branch.step("get", lambda: (_wf_count(self, "left"), 2)[1])

        async def right(branch):
            await asyncio.sleep(0.01)
            return await branch.step("get", lambda: (_wf_count(self, "right"), 3)[1])

        async def fast(branch):
            return await branch.step("get", lambda: (_wf_count(self, "fast"), "f")[1])

        async def slow(branch):
            await asyncio.sleep(5)
            return await branch.step("get", lambda: (_wf_count(self, "slow"), "s")[1])

        joined = await ctx.join("both", {"left": left, "right": right})
        winner = await ctx.race("first", {"slow": slow, "fast": fast})

        def record():
            _wf_count(self, "record")
            self.state["join"] = joined
            self.state["race"] = list(winner)

        await ctx.step("record", record)

    @action
    def progress(self):
        return self.state


class WfOutsideStep(Actor):
    """Touches state in its workflow body outside a step: refused."""

    state = {"inside": 0}

    @workflow
    async def run(self, ctx):
        await ctx.step("ok", lambda: self.state.update(inside=1))
        self.state["outside"] = 1  # raises WorkflowOutsideStep

    @action
    def read(self):
        return self.state


class FanOut(Actor):
    """Actor-to-actor: fan out to many workers through ``self.client()`` and gather."""

    @action
    async def fan(self, n):
        client = self.client()
        results = await asyncio.gather(*(client.counter.get_or_create([f"fan-{i}"]).increment(i + 1) for i in range(n)))
        return sum(results)

    @action
    async def ask_self(self):
        return await self.client().fanOut.get_for_id(self.id).fan(2)


#: Tags of ``SlowScheduled.slow`` runs: started, and allowed to end (tests/test_schedules.py).
SLOW_STARTED: list[str] = []
SLOW_RELEASED: set[str] = set()


class SlowScheduled(Scheduled):
    """Like Scheduled, with an action that runs until the test releases it."""

    state = {"runs": [], "fail_left": 0}

    @action
    async def slow(self, tag):
        SLOW_STARTED.append(tag)
        while tag not in SLOW_RELEASED:
            await asyncio.sleep(0.01)
        return self.record(tag)


class WfOnce(Actor):
    """Two steps; counts runs of its body. ``WF_CONTROL[key]["fail"]`` makes step ``b`` fail for good."""

    state = {"done": []}

    @workflow
    async def run(self, ctx):
        _wf_count(self, "body")
        await ctx.step("a", self._work, "a")
        await ctx.step("b", self._work, "b", retries=0)

    def _work(self, name):
        _wf_count(self, name)
        if name == "b" and WF_CONTROL.get(_k(self), {}).get("fail"):
            raise ValueError("broken for good")
        self.state["done"].append(name)

    @action
    def progress(self):
        return self.state


# -- kill -9 of a live server (tests/test_workflows.py) -------------------------------------

import os  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402


def _append_line(path: Path, line: str) -> None:
    """Append ``line`` durably: it survives a kill -9 of this process."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(line + "\n")
        f.flush()
        os.fsync(f.fileno())


def _lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []


async def _file_gate(directory: Path, point: str, limit: float = 30.0) -> None:
    """If ``hold-<point>`` exists: write ``at-<point>`` and wait (at most ``limit`` s) until it is gone."""
    hold = directory / f"hold-{point}"
    if not hold.exists():
        return
    (directory / f"at-{point}").touch()
    deadline = time.monotonic() + limit
    while hold.exists():
        if time.monotonic() > deadline:
            raise RuntimeError(f"gate {point!r} still held after {limit}s")
        await asyncio.sleep(0.02)


class WfKill(Actor):
    """Four steps, each with an idempotent external effect, for ``kill -9`` tests of a live server.

    Its files are in ``$RIVET_WF_KILL_DIR/<key>``: ``body`` gets a line per run of
    the workflow's body, ``attempts`` one per execution of step ``i``, ``ledger``
    step ``i``'s effect, written only if absent (idempotent). Gates (see
    ``_file_gate``): ``start-<i>`` as step ``i`` begins, ``effect-<i>`` after its
    effect and before its entry is recorded, ``end`` after the last step.
    """

    state = {"results": []}

    def _dir(self) -> Path:
        return Path(os.environ["RIVET_WF_KILL_DIR"]) / _k(self)

    @workflow
    async def run(self, ctx):
        _append_line(self._dir() / "body", "run")
        for i in range(4):
            await ctx.step(f"step-{i}", self._effect, i, timeout=60)
        await _file_gate(self._dir(), "end")

    async def _effect(self, i):
        directory = self._dir()
        _append_line(directory / "attempts", str(i))
        await _file_gate(directory, f"start-{i}")
        ledger = directory / "ledger"
        if str(i) not in _lines(ledger):
            _append_line(ledger, str(i))
        await _file_gate(directory, f"effect-{i}")
        self.state["results"].append(i)  # not durable before the entry: a crash forgets it
        return i * 10

    @action
    def progress(self):
        return self.state


class WfBackoff(Actor):
    """A step whose first attempt fails, then a one-minute backoff before its retry."""

    @workflow
    async def run(self, ctx):
        await ctx.step("once", self._once, retries=1, backoff_base=60)

    def _once(self):
        _wf_count(self, "once")
        if WF_RUNS[(_k(self), "once")] == 1:
            raise ValueError("the first attempt fails")


class WfRaceQueue(Actor):
    """``ctx.race`` that a branch loses after receiving a ``jobs`` message; the message is received again after.

    ``WF_CONTROL[key]["win"]`` (an asyncio.Event) lets the other branch win.
    """

    queues = {"jobs": queue()}
    state = {"race": None, "after": None}

    @workflow
    async def run(self, ctx):
        async def taker(branch):
            msg = await branch.queue.next("take", "jobs")
            await asyncio.Event().wait()  # holds the message until the race cancels it
            return msg.body

        async def other(branch):
            await WF_CONTROL[_k(self)]["win"].wait()
            return "other"

        winner = await ctx.race("r", {"taker": taker, "other": other})
        await _wf_gate(self, "raced")
        msg = await ctx.queue.next("after", "jobs")

        def record():
            self.state["race"] = list(winner)
            self.state["after"] = [msg.id, msg.body]

        await ctx.step("record", record)

    @action
    def progress(self):
        return self.state


class Mine(Actor):
    """Per-user: only the signed-in user whose username is the key may connect or call."""

    async def on_before_connect(self, params):
        user = await self.request.auser()
        if not user.is_authenticated:
            raise Forbidden("Sign in first")
        if self.key != (user.username,):
            raise Forbidden("This is not your actor")

    @action
    def owner(self):
        return self.key[0]


#: Hook order of Notes actors, per key (tests/test_database.py).
NOTES_ORDER: dict[str, list[str]] = {}
#: Database handles Notes actors kept past their stop (tests/test_database.py).
KEPT_DBS: dict[str, object] = {}


class Notes(Actor):
    """``self.db``: an actor's own SQLite database, its schema migrated on every wake."""

    state = {"wakes": 0}

    async def on_migrate(self, db):
        NOTES_ORDER.setdefault(_k(self), []).append("on_migrate")
        await db.migrate(
            [
                "CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT NOT NULL);",
                "ALTER TABLE notes ADD COLUMN done INTEGER NOT NULL DEFAULT 0; CREATE INDEX notes_done ON notes (done);",
            ]
        )

    def create_state(self, input):
        NOTES_ORDER.setdefault(_k(self), []).append("create_state")
        return {"wakes": 0}

    def create_vars(self):
        NOTES_ORDER.setdefault(_k(self), []).append("create_vars")
        return {}

    async def on_sleep(self):
        await self.db.execute("INSERT INTO notes (text) VALUES (?)", "written in on_sleep")

    @action
    async def add(self, text):
        await self.db.execute("INSERT INTO notes (text) VALUES (?)", text)
        return (await self.db.query_one("SELECT count(*) AS n FROM notes"))["n"]

    @action
    async def texts(self):
        return [row["text"] for row in await self.db.execute("SELECT text FROM notes ORDER BY id")]

    @action
    async def add_all(self, texts):
        async with self.db.transaction():
            for text in texts:
                if text == "boom":
                    raise UserError("boom", code="boom")
                await self.db.execute("INSERT INTO notes (text) VALUES (:text)", {"text": text})
        return len(texts)

    @action
    async def nested(self):
        async with self.db.transaction(), self.db.transaction():
            pass

    @action
    async def version(self):
        return (await self.db.execute("PRAGMA user_version"))[0]["user_version"]

    @action
    async def script(self, sql):
        await self.db.executescript(sql)

    @action
    async def script_in_transaction(self):
        async with self.db.transaction():
            await self.db.executescript("SELECT 1;")

    @action
    async def run_sql(self, sql, *params):
        """Any statement (bad input tests): its rows."""
        return await self.db.execute(sql, *params)

    @action
    async def add_unique(self, text):
        """An INSERT that a unique index may refuse, caught as sqlite3.IntegrityError."""
        await self.db.execute("CREATE UNIQUE INDEX IF NOT EXISTS notes_text ON notes (text)")
        try:
            await self.db.execute("INSERT INTO notes (text) VALUES (?)", text)
        except sqlite3.IntegrityError as exc:
            return f"refused: {exc}"
        return "added"

    @action
    def keep(self):
        KEPT_DBS[_k(self)] = self.db
        return str(self.db.path)


class NoDatabase(Actor):
    @action
    def use(self):
        return str(self.db)


class WfNotes(Actor):
    """A workflow writing to the actor's database inside a step, then (refused) outside one."""

    async def on_migrate(self, db):
        await db.migrate(["CREATE TABLE log (line TEXT);"])

    @workflow
    async def run(self, ctx):
        async def write():
            await self.db.execute("INSERT INTO log VALUES ('from a step')")

        await ctx.step("write", write)
        await self.db.execute("INSERT INTO log VALUES ('outside')")  # raises WorkflowOutsideStep

    @action
    async def lines(self):
        return [row["line"] for row in await self.db.execute("SELECT line FROM log")]


#: Lines DbChores.on_destroy read from its database just before it was deleted.
DB_CHORES_LAST: dict[str, list[str]] = {}


class DbChores(Actor):
    """``self.db`` in a run loop, a scheduled run and on_destroy."""

    queues = {"lines": queue()}

    async def on_migrate(self, db):
        await db.migrate(["CREATE TABLE log (line TEXT NOT NULL);"])

    async def run(self):
        await self.db.execute("INSERT INTO log VALUES ('run started')")
        async for msg in self.queue.iter("lines"):
            await self.db.execute("INSERT INTO log VALUES (?)", f"queued {msg.body}")

    async def on_destroy(self):
        rows = await self.db.execute("SELECT line FROM log ORDER BY rowid")
        DB_CHORES_LAST[_k(self)] = [row["line"] for row in rows]

    @action
    async def later(self, seconds, line):
        return await self.schedule.after(seconds, "write", line)

    @action
    async def write(self, line):
        await self.db.execute("INSERT INTO log VALUES (?)", f"scheduled {line}")

    @action
    async def lines(self):
        return [row["line"] for row in await self.db.execute("SELECT line FROM log ORDER BY rowid")]
