"""The demo worker: a durable workflow (setup -> loop over queued tasks -> teardown).

    h = client.taskWorker.get_or_create(["w1"])
    h.add_task({"text": "hello durable world"})   # queued; processed in order
    h.add_task({"numbers": [1, 2, 3]})
    h.progress()                                   # phase, processed, last results
    h.finish("done for today")                     # the loop ends, teardown runs

Watch it: connect and subscribe to ``"progress"``; every phase change and every
processed task is broadcast. The workflow survives crashes and restarts: each
completed step is recorded, a task is taken off the queue in the same
transaction that records it, and after a restart the workflow replays its
history and continues with the next task. Registered as ``"taskWorker"`` (the
test suite has an actor of its own named ``worker``).
"""

from __future__ import annotations

import time

from rivet_django import Actor, UserError, action, event, queue
from rivet_django.workflow import Loop, LoopContext, WorkflowContext, workflow

#: Results kept in the state.
KEEP = 50


def work(task: dict) -> dict:
    """The (deterministic) work of one task."""
    if "numbers" in task:
        numbers = [float(n) for n in task["numbers"]]
        return {"kind": "sum", "value": sum(numbers), "count": len(numbers)}
    text = str(task.get("text", ""))
    return {"kind": "words", "value": len(text.split()), "upper": text.upper()}


class TaskWorker(Actor):
    """Registered as "taskWorker"."""

    state = {"phase": "starting", "processed": 0, "results": [], "started_at": None, "finished": None}
    queues = {"tasks": queue(max_size=1000)}
    events = {"progress": event()}

    @workflow
    async def run(self, ctx: WorkflowContext) -> None:
        await ctx.step("setup", self.setup)

        async def body(loop: LoopContext) -> Loop | None:
            message = await loop.queue.next("wait-task", "tasks")
            if message.body.get("stop"):
                return Loop.break_(message.body.get("reason") or "stopped")
            await loop.step("process", self.process, message.id, message.body)
            return None

        reason = await ctx.loop("task-loop", body)
        await ctx.step("teardown", self.teardown, reason)

    # -- steps (the only place the workflow touches state) --------------------------------

    def setup(self) -> None:
        self.state["phase"] = "running"
        self.state["started_at"] = time.time()
        self._report()

    def process(self, task_id: int, task: dict) -> dict:
        result = {"task": task_id, **work(task)}
        self.state["processed"] += 1
        self.state["results"] = [*self.state["results"], result][-KEEP:]
        self._report(result)
        return result

    def teardown(self, reason: str) -> None:
        self.state["phase"] = "finished"
        self.state["finished"] = reason
        self._report()

    def _report(self, last: dict | None = None) -> None:
        self.broadcast(
            "progress", {"phase": self.state["phase"], "processed": self.state["processed"], "last": last}
        )

    # -- actions ---------------------------------------------------------------------------

    @action
    async def add_task(self, task: dict) -> int:
        """Queue a task (``{"text": ...}`` or ``{"numbers": [...]}``); returns its message id."""
        if not isinstance(task, dict) or task.get("stop"):
            raise UserError("a task is an object like {'text': ...} or {'numbers': [...]}", code="invalid_task")
        if self.state["phase"] == "finished":
            raise UserError("this worker has finished", code="finished")
        return await self.queue.send("tasks", task)

    @action
    async def finish(self, reason: str = "finished") -> int:
        """Queue the end of the loop: tasks queued before it are processed first, then teardown runs."""
        return await self.queue.send("tasks", {"stop": True, "reason": reason})

    @action
    def progress(self) -> dict:
        return self.state
