"""Durable workflows: ``@workflow`` on ``run`` and the ``ctx`` it is given.

A workflow is ordinary async code whose *entries* (steps, loops, sleeps, queue
waits, joins, races) are recorded in :class:`~rivet_django.models.WorkflowEntry`
before the workflow moves on. After a crash, a restart or a sleep the function
simply runs again from the top: an entry already completed returns its recorded
result without running again, so the workflow continues where it was.

Locations. Every entry has a name, unique in its scope; its location is the
path of scopes and names: ``"setup"``, ``"task-loop"``, ``"task-loop/3/process"``
(iteration 3 of the loop), ``"fetch/left/get"`` (branch ``left`` of a join).
Each recorded entry also stores its *position* in its scope (0, 1, 2...).

Divergence rules (replay against a history written by other code): the
workflow stops with :class:`~rivet_django.exceptions.WorkflowHistoryDivergence` when

1. a location is reached as another kind than recorded (a step where a loop was);
2. a recorded name is reached at another position of its scope than recorded
   (steps reordered, or one inserted before it);
3. a name not in history is reached at a position where history recorded
   another name (a step renamed or replaced);
4. the workflow (or a loop iteration) finishes while recorded entries of its
   scope were not reached (steps removed).

Loops keep bounded storage: a loop has one entry holding its iteration number
and state; when an iteration ends, that entry is updated and the iteration's
own entries are deleted in the same transaction.

Writes and queue messages. A message leaves storage only with the entry that
recorded it (at least once delivery). Entry writes are serialized per workflow,
so concurrent branches commit in order; a write, once started, runs to its end
even if its branch is cancelled, so memory and storage agree. When a race is
recorded, the messages its losing branches' pruned entries received go back to
the queue in the same transaction, with their ids.

The end. When the workflow returns, or stops because a step exhausted its
retries (:class:`~rivet_django.exceptions.WorkflowStepFailed` left the body),
its outcome is recorded at the reserved location :data:`END_LOCATION`
(``"/end"``, kind ``"workflow"``, status ``"completed"`` or ``"failed"``). On
later wakes ``run`` finds it and returns at once: a finished workflow does not
replay its history, and steps added to its code later do not run. A history
divergence is not recorded (fixing the code lets the workflow continue).
Deleting an actor's entries while it is asleep starts its workflow over.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import logging
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from . import tracing
from .definition import action
from .exceptions import (
    ActorAborted,
    InvalidRequest,
    QueueAlreadyCompleted,
    QueuePreviousMessageNotCompleted,
    WorkflowHistoryDivergence,
    WorkflowOutsideStep,
    WorkflowStepFailed,
)
from .runtime import serde
from .runtime.queue import StoredMessage
from .storage.workflows import DjangoWorkflowStore, EntryRecord, EntryWrite

if TYPE_CHECKING:
    from .runtime.instance import ActorInstance

__all__ = [
    "END_LOCATION",
    "WAKE_ACTION",
    "CriticalError",
    "Loop",
    "LoopContext",
    "RecordedMessage",
    "StepFailure",
    "StepResult",
    "TryResult",
    "WorkflowContext",
    "backoff_delay",
    "in_step",
    "workflow",
]

logger = logging.getLogger("rivet_django.workflow")

#: The internal action a durable sleep schedules to wake its actor (added to every workflow actor).
WAKE_ACTION = "_rivet_workflow_wake"

#: Where a workflow's outcome is recorded once it ends (entry names cannot contain "/").
END_LOCATION = "/end"

_ENGINE_ATTR = "_rivet_workflow_engine"

_T = TypeVar("_T")

#: True while a workflow step's function runs (for guards such as "state only inside steps").
_IN_STEP: contextvars.ContextVar[bool] = contextvars.ContextVar("rivet_workflow_in_step", default=False)


#: True in a workflow's body (its run task and the branch tasks it starts).
_IN_BODY: contextvars.ContextVar[bool] = contextvars.ContextVar("rivet_workflow_in_body", default=False)


def in_step() -> bool:
    """Whether the calling code runs inside a workflow step."""
    return _IN_STEP.get()


def check_effects_allowed(feature: str) -> None:
    """Raise if ``feature`` (``"state"``, ``"client"``) is used in a workflow's body outside
    a step (replay would repeat the effect); RivetKit's text: "state is only available inside
    workflow steps"."""
    if _IN_BODY.get() and not _IN_STEP.get():
        raise WorkflowOutsideStep(f"{feature} is only available inside workflow steps")


# -- public helpers ------------------------------------------------------------------------


class Loop:
    """What a loop body returns: ``Loop.continue_(state)`` or ``Loop.break_(value)`` (None: continue)."""

    __slots__ = ("is_break", "value")

    def __init__(self, is_break: bool, value: Any) -> None:
        self.is_break = is_break
        self.value = value

    @classmethod
    def continue_(cls, state: Any = None) -> Loop:
        """Run the next iteration with ``state`` as ``loop.state``."""
        return cls(False, state)

    @classmethod
    def break_(cls, value: Any = None) -> Loop:
        """End the loop; ``ctx.loop(...)`` returns ``value``."""
        return cls(True, value)

    def __repr__(self) -> str:
        return f"Loop.{'break_' if self.is_break else 'continue_'}({self.value!r})"


class CriticalError(Exception):
    """Raised by a step's function: the step fails at once, without retries (RivetKit's
    ``CriticalError``; ``try_step`` reports it as kind ``"critical"``)."""


@dataclass(frozen=True)
class StepFailure:
    """Why a step failed for good (RivetKit's ``TryStepFailure``).

    ``kind`` is ``"exhausted"`` (every attempt raised), ``"timeout"`` (the last attempt
    timed out) or ``"critical"`` (a :class:`CriticalError`); ``error`` is
    ``{"name": ..., "message": ...}`` of the last exception.
    """

    kind: str
    step_name: str
    attempts: int
    error: dict[str, str]

    @property
    def message(self) -> str:
        return self.error.get("message", "")


@dataclass(frozen=True)
class StepResult:
    """What ``ctx.try_step`` returns: ``ok`` and ``value``, or ``failure`` once the step failed
    for good. ``kind``, ``message`` and ``attempts`` read the failure's fields directly."""

    ok: bool
    value: Any = None
    failure: StepFailure | None = None
    attempts: int = 0

    @property
    def kind(self) -> str | None:
        return None if self.failure is None else self.failure.kind

    @property
    def message(self) -> str | None:
        return None if self.failure is None else self.failure.message

    @property
    def error(self) -> str:
        """``"Name: message"`` of the failure (empty when ok)."""
        if self.failure is None:
            return ""
        return _join_error(self.failure.error)


@dataclass(frozen=True)
class TryResult:
    """What ``ctx.try_`` returns: ``ok`` and ``value``, or ``failure`` =
    ``{"source": "step" | "join" | "race" | "block", "name", "error": {"name", "message"},
    "step"?: {...}}`` (RivetKit's ``ctx.try``)."""

    ok: bool
    value: Any = None
    failure: dict[str, Any] | None = None


@dataclass
class RecordedMessage:
    """A queue message as ``ctx.queue.next`` recorded it (it left storage with its entry).

    For a ``completable`` message, ``await complete(response)`` answers a sender waiting
    with ``wait=True`` (``{"status": "completed", "response": ...}``); until then a
    further ``ctx.queue.next`` raises ``queue.previous_message_not_completed``. A message
    that is not completable was acknowledged when it was recorded (its waiting sender
    heard ``completed``); ``complete`` does nothing then.
    """

    id: int
    name: str
    body: Any
    completable: bool = False
    _engine: Any = None
    _completed: bool = False

    async def complete(self, response: Any = None) -> None:
        if not self.completable or self._engine is None:
            return
        if self._completed:
            raise QueueAlreadyCompleted()
        self._completed = True
        self._engine.answer(self, response)

    @property
    def completed(self) -> bool:
        return self._completed


# -- the engine -----------------------------------------------------------------------------


class _Engine:
    """One run of a workflow: the loaded history and what this run has reached."""

    def __init__(self, instance: ActorInstance) -> None:
        self.inst = instance
        self.store = DjangoWorkflowStore(getattr(instance.runtime.store, "executor"))  # noqa: B009
        self.history: dict[str, EntryRecord] = {}
        self.decoded: dict[str, dict[str, Any]] = {}
        #: (scope, position) -> location, of recorded entries.
        self.positions: dict[tuple[str, int], str] = {}
        self.reached: set[str] = set()
        self._write_lock = asyncio.Lock()
        self.nudge = asyncio.Event()
        self.on_error: Callable[..., Any] | None = None
        #: Completable messages this run received and did not complete yet.
        self.uncompleted: list[RecordedMessage] = []
        #: Steps whose function runs now (a replay waits for none: see ``in_flight``).
        self.steps_running = 0

    def answer(self, message: RecordedMessage, response: Any) -> None:
        """Answer the sender of a completable message (if one waits, in this process)."""
        if message in self.uncompleted:
            self.uncompleted.remove(message)
        self.inst.queue.answer(message.id, response)

    async def load(self) -> None:
        self.history = await self.store.load(self.inst.actor_id)
        for loc, record in self.history.items():
            data = self._decode(record)
            self.decoded[loc] = data
            self.positions[(_scope_of(loc), data.get("p", -1))] = loc

    @staticmethod
    def _decode(record: EntryRecord) -> dict[str, Any]:
        if record.output is None:
            return {}
        value = serde.loads(record.output)
        return value if isinstance(value, dict) else {}

    # -- history checks ----------------------------------------------------------------

    def visit(self, scope: str, position: int, name: str, kind: str) -> EntryRecord | None:
        """The recorded entry of ``scope + name`` (None if new), after the divergence checks."""
        loc = scope + name
        if loc in self.reached:
            raise InvalidRequest(f"Workflow entry {loc!r} is used twice in one run; entry names must be unique")
        self.reached.add(loc)
        record = self.history.get(loc)
        where = f"scope {scope.rstrip('/')!r}" if scope else "the workflow"
        if record is not None:
            if record.kind != kind:
                raise WorkflowHistoryDivergence(
                    f"History divergence at {loc!r}: history recorded a {record.kind} there, "
                    f"the workflow now runs a {kind}"
                )
            recorded_pos = self.decoded[loc].get("p", -1)
            if recorded_pos != position:
                raise WorkflowHistoryDivergence(
                    f"History divergence at {loc!r}: history recorded it as entry #{recorded_pos} of {where}, "
                    f"the workflow now reaches it as entry #{position} (entries reordered, added or removed?)"
                )
            return record
        other = self.positions.get((scope, position))
        if other is not None and other != loc:
            prev = self.history[other]
            raise WorkflowHistoryDivergence(
                f"History divergence at entry #{position} of {where}: history recorded {prev.kind} "
                f"{other!r} there, the workflow now runs {kind} {loc!r} (renamed or replaced?)"
            )
        return None

    def check_complete(self, scope: str) -> None:
        """The workflow (or an iteration) finished: every recorded entry of ``scope`` must have been reached."""
        missing = sorted(
            (self.decoded[loc].get("p", -1), loc)
            for loc in self.history
            if _scope_of(loc) == scope and loc not in self.reached
        )
        if missing:
            names = ", ".join(repr(loc) for _, loc in missing)
            where = f"scope {scope.rstrip('/')!r}" if scope else "the workflow"
            raise WorkflowHistoryDivergence(
                f"History divergence: {where} finished without reaching recorded entries {names} (removed?)"
            )

    # -- writes ------------------------------------------------------------------------

    async def write(
        self,
        loc: str,
        kind: str,
        status: str,
        data: dict[str, Any],
        *,
        error: str = "",
        attempts: int = 0,
        with_state: bool = False,
        prune: Iterable[str] = (),
        consume_message: int | None = None,
        restore_messages: Sequence[StoredMessage] = (),
        on_commit: Callable[[], Awaitable[Any]] | None = None,
    ) -> EntryRecord:
        """Record an entry (with the state, a consumed message, pruned scopes...) in one transaction.

        Writes are serialized: entries and state snapshots commit in the order they
        were made, even from concurrent branches on several database threads. A
        caller cancelled while waiting for its turn writes nothing; once its write
        started, it runs to its end (``on_commit`` included) and then the
        cancellation is raised, so memory always agrees with what was committed.
        """
        async with self._write_lock:
            return await _run_to_end(
                self._commit(
                    loc,
                    kind,
                    status,
                    data,
                    error,
                    attempts,
                    with_state,
                    list(prune),
                    consume_message,
                    restore_messages,
                    on_commit,
                )
            )

    async def _commit(
        self,
        loc: str,
        kind: str,
        status: str,
        data: dict[str, Any],
        error: str,
        attempts: int,
        with_state: bool,
        pruned: list[str],
        consume_message: int | None,
        restore_messages: Sequence[StoredMessage],
        on_commit: Callable[[], Awaitable[Any]] | None,
    ) -> EntryRecord:
        inst = self.inst
        try:
            output = serde.dumps(data)
        except serde.ValueNotSerializable as exc:
            raise InvalidRequest(
                f"Result of workflow entry {loc!r} is not serializable: it holds a {exc.type_name!r}"
            ) from None
        record = EntryRecord(loc, kind, status, output, error, attempts)
        if restore_messages:
            # Loaded before the write: the in-memory view cannot also find them in storage.
            await inst.queue._ensure_loaded()
        state: bytes | None = None
        if with_state and inst.definition.has_state:
            # The step's state changes commit with its entry: a crash keeps both or neither.
            await inst._wait_pending_commit()
            state = inst._serialize_state()
            if state == inst._submitted:
                state = None
            else:
                inst._submitted = state
        write = EntryWrite(record, state, pruned, consume_message, restore_messages)
        written = asyncio.ensure_future(self.store.write(inst.actor_id, inst.generation, write))
        # Events the step made go out once its entry (and the state with it) is durable.
        inst._gate_unsettled(written)
        try:
            await written
        except BaseException:
            if state is not None:
                inst._submitted = None  # not durable: the next commit writes it again
            raise
        if state is not None and inst._serialize_state() != state:
            # Something else changed the state while we wrote: commit it the usual way.
            inst._submitted = None
            await inst._persist_changes()
        if pruned:
            prefixes = tuple(pruned)
            for old in [k for k in self.history if k.startswith(prefixes)]:
                self._forget(old)
            # Also the entries reached but never recorded (a cancelled race branch's last one).
            self.reached = {r for r in self.reached if not r.startswith(prefixes)}
        self.history[loc] = record
        self.decoded[loc] = data
        self.positions[(_scope_of(loc), data.get("p", -1))] = loc
        if restore_messages:
            inst.queue.restored(restore_messages)
        if on_commit is not None:
            await on_commit()
        return record

    def received_messages(self, prefix: str, *, but: str) -> list[StoredMessage]:
        """The queue messages recorded as received under ``prefix`` (not under ``but``), in id order."""
        messages = []
        for loc, record in self.history.items():
            if record.kind != "queue" or record.status != "completed" or not loc.startswith(prefix):
                continue
            if loc.startswith(but):
                continue
            data = self.decoded[loc]
            created = datetime.fromtimestamp(data["t"], tz=UTC) if "t" in data else datetime.now(tz=UTC)
            messages.append(StoredMessage(data["id"], data["name"], serde.dumps(data["v"]), created, data.get("a", 0)))
        return sorted(messages, key=lambda m: m.id)

    def _forget(self, loc: str) -> None:
        self.history.pop(loc, None)
        data = self.decoded.pop(loc, {})
        key = (_scope_of(loc), data.get("p", -1))
        if self.positions.get(key) == loc:
            del self.positions[key]
        self.reached.discard(loc)

    # -- waiting -----------------------------------------------------------------------

    async def wait(self, seconds: float) -> None:
        """Wait up to ``seconds`` (or a nudge); ActorAborted if the actor starts stopping."""
        inst = self.inst
        if inst.abort_event.is_set():
            raise ActorAborted()
        aborted = asyncio.ensure_future(inst.abort_event.wait())
        nudged = asyncio.ensure_future(self.nudge.wait())
        try:
            with inst.idle_wait():  # a durable sleep: the actor may sleep, a schedule wakes it
                await asyncio.wait({aborted, nudged}, timeout=max(0.0, seconds), return_when=asyncio.FIRST_COMPLETED)
        finally:
            aborted.cancel()
            nudged.cancel()
        self.nudge.clear()
        if inst.abort_event.is_set():
            raise ActorAborted()

    async def pause(self, seconds: float) -> None:
        """Wait ``seconds`` in full (a retry's backoff: a wake-up does not cut it short); ActorAborted if stopping."""
        abort = self.inst.abort_event
        if abort.is_set():
            raise ActorAborted()
        try:
            await asyncio.wait_for(abort.wait(), timeout=max(0.0, seconds))
        except TimeoutError:
            return
        raise ActorAborted()


def backoff_delay(attempt: int, base: float, maximum: float) -> float:
    """Seconds to wait before retry ``attempt`` (1, 2, ...): ``base * 2**(attempt-1)``, at most ``maximum``."""
    return float(min(maximum, base * (2 ** min(attempt - 1, 60))))


async def _run_to_end(coro: Coroutine[Any, Any, _T]) -> _T:
    """Await ``coro`` to its end even if the caller is cancelled meanwhile; then raise the cancellation.

    A started database write commits whatever happens to the task awaiting it
    (the executor's thread carries on), so the code that brings memory in line
    with it must run too.
    """
    task = asyncio.ensure_future(coro)
    cancelled = False
    while True:
        try:
            result = await asyncio.shield(task)
            break
        except asyncio.CancelledError:
            if task.done():
                raise
            cancelled = True
    if cancelled:
        raise asyncio.CancelledError()
    return result


def _scope_of(loc: str) -> str:
    return loc[: loc.rfind("/") + 1]


def _check_name(name: Any) -> str:
    if not isinstance(name, str) or not name or "/" in name or len(name) > 64:
        raise InvalidRequest(f"Workflow entry names are non-empty strings of up to 64 characters without '/': {name!r}")
    return name


async def _call(fn: Callable[..., Any], *args: Any) -> Any:
    result = fn(*args)
    if inspect.isawaitable(result):
        result = await result
    return result


def _error_info(exc: BaseException) -> dict[str, str]:
    """``{"name", "message"}`` of an exception (RivetKit's ``WorkflowError``)."""
    if isinstance(exc, TimeoutError):
        return {"name": "TimeoutError", "message": "the step timed out"}
    return {"name": type(exc).__name__, "message": str(exc)[:2000]}


def _join_error(error: dict[str, str]) -> str:
    """The stored form ``"Name: message"``."""
    return f"{error.get('name', 'Error')}: {error.get('message', '')}"


def _split_error(text: str) -> dict[str, str]:
    """``"Name: message"`` back into its parts (RivetKit's ``parseStoredWorkflowError``)."""
    name, sep, message = text.partition(": ")
    if not sep or not name.isidentifier():
        return {"name": "Error", "message": text}
    return {"name": name, "message": message}


# -- contexts --------------------------------------------------------------------------------


class _WorkflowQueue:
    """``ctx.queue``: recorded queue receives."""

    def __init__(self, ctx: WorkflowContext) -> None:
        self._ctx = ctx

    async def next(
        self, name: str, names: str | Iterable[str] | None = None, *, completable: bool = False
    ) -> RecordedMessage:
        """The next message of ``names`` (all queues if None), waiting for one; recorded as entry ``name``.

        The message leaves storage in the same transaction that records it, so
        after a crash the replay returns the same message and no other receive
        gets it (a race's losing branch gives it back to the queue). A
        ``completable`` message's waiting sender is answered by its ``complete(response)``;
        any other's when it is recorded.
        """
        ctx = self._ctx
        engine = ctx._engine
        if completable and engine.uncompleted:
            raise QueuePreviousMessageNotCompleted()
        loc, pos = ctx._enter(name, "queue")
        record = engine.visit(ctx._scope, pos, name, "queue")
        if record is not None and record.status == "completed":
            data = engine.decoded[loc]
            return RecordedMessage(data["id"], data["name"], data["v"], completable, engine)
        inst = engine.inst
        message = await inst.queue.next(names, completable=True)
        if message is None:  # only with a timeout or signal, which we do not pass
            raise ActorAborted()
        data = {
            "p": pos,
            "id": message.id,
            "name": message.name,
            "v": message.body,
            # What a race that discards this entry needs to put the message back as it was.
            "a": message.attempts,
            "t": message.created_at.timestamp(),
        }
        recorded = RecordedMessage(message.id, message.name, message.body, completable, engine)

        async def on_commit() -> None:
            # It left storage with the entry: it leaves the in-memory view too (even if this
            # branch is cancelled meanwhile); its sender is answered now or by complete().
            inst.queue.recorded(message, answer=not completable)

        # Not recorded (a crash, an error): the run's end gives the message back to the queue.
        await engine.write(loc, "queue", "completed", data, consume_message=message.id, on_commit=on_commit)
        if completable:
            engine.uncompleted.append(recorded)
        return recorded


class WorkflowContext:
    """The ``ctx`` of a workflow (and, as :class:`LoopContext`, of a loop iteration)."""

    def __init__(self, engine: _Engine, scope: str) -> None:
        self._engine = engine
        self._scope = scope
        self._position = 0
        self.queue = _WorkflowQueue(self)

    @property
    def actor(self) -> Any:
        return self._engine.inst.actor

    def _enter(self, name: str, kind: str) -> tuple[str, int]:
        _check_name(name)
        if self._engine.inst.aborted:
            # The actor is stopping (sleep, destroy): the workflow stops before its next
            # entry and resumes there on the next wake.
            raise ActorAborted()
        pos = self._position
        self._position += 1
        return self._scope + name, pos

    # -- steps ---------------------------------------------------------------------------

    async def step(
        self,
        name: str,
        fn: Callable[..., Any],
        *args: Any,
        retries: int = 3,
        timeout: float | None = 30,
        backoff_base: float = 0.1,
        backoff_max: float = 30,
    ) -> Any:
        """Run ``fn(*args)`` once and record its result; a replay returns the recorded result.

        A failure is retried ``retries`` times, waiting ``backoff_base * 2**(n-1)``
        seconds (at most ``backoff_max``) before retry ``n`` (a :class:`CriticalError`
        is not retried); then the failure is recorded and
        :class:`~rivet_django.exceptions.WorkflowStepFailed` raised.
        """
        if tracing.enabled():
            with tracing.actor_span(
                f"workflow step {name}", self._engine.inst, **{"rivet.workflow.step": self._scope + name}
            ):
                result = await self._run_step(name, fn, args, retries, timeout, backoff_base, backoff_max)
        else:
            result = await self._run_step(name, fn, args, retries, timeout, backoff_base, backoff_max)
        if not result.ok:
            assert result.failure is not None
            raise WorkflowStepFailed(
                f"Workflow step {self._scope + name!r} failed after {result.attempts} attempt(s): {result.error}",
                location=self._scope + name,
                attempts=result.attempts,
                error=result.error,
            )
        return result.value

    async def try_step(
        self,
        name: str,
        fn: Callable[..., Any],
        *args: Any,
        retries: int = 3,
        timeout: float | None = 30,
        backoff_base: float = 0.1,
        backoff_max: float = 30,
    ) -> StepResult:
        """Like :meth:`step`, but a step that fails for good returns ``StepResult(ok=False,
        failure=StepFailure(kind, step_name, attempts, error))`` instead of raising."""
        return await self._run_step(name, fn, args, retries, timeout, backoff_base, backoff_max)

    async def _run_step(
        self,
        name: str,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        retries: int,
        timeout: float | None,
        backoff_base: float,
        backoff_max: float,
    ) -> StepResult:
        engine = self._engine
        kind = "step"
        loc, pos = self._enter(name, kind)
        record = engine.visit(self._scope, pos, name, kind)
        attempts = 0
        if record is not None:
            if record.status == "completed":
                return StepResult(True, engine.decoded[loc].get("v"), attempts=record.attempts)
            if record.status == "failed":
                # Replayed: the failure was reported (on_error) when it happened.
                failure_kind = engine.decoded[loc].get("k", "exhausted")
                failure = StepFailure(failure_kind, loc, record.attempts, _split_error(record.error))
                return StepResult(False, failure=failure, attempts=record.attempts)
            attempts = record.attempts  # "retrying": attempts survive a crash
        inst = engine.inst
        while True:
            if attempts:
                await engine.pause(backoff_delay(attempts, backoff_base, backoff_max))
            attempts += 1
            token = _IN_STEP.set(True)
            inst._begin_turn()  # a running step keeps the actor awake, like a call
            engine.steps_running += 1
            try:
                if timeout is None:
                    value = await _call(fn, *args)
                else:
                    async with asyncio.timeout(timeout):
                        value = await _call(fn, *args)
            except (ActorAborted, asyncio.CancelledError):
                raise
            except Exception as exc:
                error = _error_info(exc)
                critical = isinstance(exc, CriticalError)
                final = critical or attempts > retries
                failure_kind = "critical" if critical else "timeout" if isinstance(exc, TimeoutError) else "exhausted"
                delay = None if final else backoff_delay(attempts, backoff_base, backoff_max)
                inst.log.warning(
                    "workflow step %r failed (attempt %d of %d): %s",
                    loc,
                    attempts,
                    retries + 1,
                    _join_error(error),
                    exc_info=final,
                )
                # Before the write: what on_error does to the state commits with the attempt.
                await _observe_failure(engine, loc, name, attempts, retries, delay, error)
                status = "failed" if final else "retrying"
                data = {"p": pos, "k": failure_kind} if final else {"p": pos}
                await engine.write(
                    loc, kind, status, data, error=_join_error(error), attempts=attempts, with_state=True
                )
                if final:
                    return StepResult(False, failure=StepFailure(failure_kind, loc, attempts, error), attempts=attempts)
                continue
            finally:
                _IN_STEP.reset(token)
                inst._end_turn()
                engine.steps_running -= 1
            await engine.write(loc, kind, "completed", {"p": pos, "v": value}, attempts=attempts, with_state=True)
            return StepResult(True, value, attempts=attempts)

    async def try_(self, name: str, fn: Callable[[WorkflowContext], Any]) -> TryResult:
        """Run the block ``fn(block_ctx)`` (its entries under ``name``); a step that fails for
        good, or a failed join or race inside it, ends the block and is returned as
        ``TryResult(ok=False, failure={"source", "name", "error", "step"?})`` instead of
        ending the workflow (RivetKit's ``ctx.try``)."""
        engine = self._engine
        loc, pos = self._enter(name, "try")
        record = engine.visit(self._scope, pos, name, "try")
        if record is not None and record.status == "completed":
            data = engine.decoded[loc]
            return TryResult(data.get("ok", True), data.get("v"), data.get("f"))
        scope = loc + "/"
        try:
            value = await _call(fn, WorkflowContext(engine, scope))
            engine.check_complete(scope)
            result = TryResult(True, value)
        except WorkflowStepFailed as exc:
            error = _split_error(exc.error)
            step = {"stepName": exc.location, "attempts": exc.attempts, "error": error}
            result = TryResult(False, failure={"source": "step", "name": name, "error": error, "step": step})
        except (ActorAborted, asyncio.CancelledError, WorkflowHistoryDivergence):
            raise
        except Exception as exc:
            source = getattr(exc, "_rivet_workflow_source", "block")
            result = TryResult(False, failure={"source": source, "name": name, "error": _error_info(exc)})
        await engine.write(loc, "try", "completed", {"p": pos, "ok": result.ok, "v": result.value, "f": result.failure})
        return result

    # -- loops ---------------------------------------------------------------------------

    async def loop(self, name: str, fn: Callable[[LoopContext], Any], state: Any = None) -> Any:
        """Run ``fn(loop)`` until it returns ``Loop.break_(value)``; returns ``value``.

        ``loop.state`` is the state the previous iteration passed to
        ``Loop.continue_(state)`` (first: ``state``); returning None continues
        with the same state. Each finished iteration's entries are deleted.
        """
        engine = self._engine
        loc, pos = self._enter(name, "loop")
        record = engine.visit(self._scope, pos, name, "loop")
        if record is not None:
            data = engine.decoded[loc]
            if record.status == "completed":
                return data.get("v")
            iteration, state = data.get("i", 0), data.get("s")
        else:
            iteration = 0
            await engine.write(loc, "loop", "running", {"p": pos, "i": 0, "s": state})
        while True:
            scope = f"{loc}/{iteration}/"
            ctx = LoopContext(engine, scope, iteration, state)
            outcome = await _call(fn, ctx)
            engine.check_complete(scope)
            if outcome is None:
                outcome = Loop.continue_(ctx.state)
            elif not isinstance(outcome, Loop):
                raise InvalidRequest(
                    f"A loop body must return Loop.continue_(state), Loop.break_(value) or None, not {outcome!r}"
                )
            if outcome.is_break:
                await engine.write(
                    loc,
                    "loop",
                    "completed",
                    {"p": pos, "i": iteration, "v": outcome.value},
                    attempts=iteration + 1,
                    prune=[loc + "/"],
                )
                return outcome.value
            iteration += 1
            state = outcome.value
            await engine.write(
                loc, "loop", "running", {"p": pos, "i": iteration, "s": state}, attempts=iteration, prune=[loc + "/"]
            )

    # -- sleep ---------------------------------------------------------------------------

    async def sleep(self, name: str, seconds: float) -> None:
        """Wait ``seconds`` durably: the wake-up time is recorded and a schedule wakes a sleeping actor."""
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or seconds < 0:
            raise InvalidRequest(f"sleep takes a non-negative number of seconds, not {seconds!r}")
        engine = self._engine
        inst = engine.inst
        loc, pos = self._enter(name, "sleep")
        record = engine.visit(self._scope, pos, name, "sleep")
        clock = inst.runtime.clock
        if record is not None:
            if record.status == "completed":
                return
            wake_at = engine.decoded[loc]["until"]
        else:
            wake_at = clock.time() + seconds
            # Scheduled first: a crash before the entry is recorded only costs a spare wake-up.
            await inst.schedule.at(wake_at, WAKE_ACTION)
            await engine.write(loc, "sleep", "sleeping", {"p": pos, "until": wake_at})
        while True:
            remaining = wake_at - clock.time()
            if remaining <= 0:
                break
            await engine.wait(remaining)
        await engine.write(loc, "sleep", "completed", {"p": pos, "until": wake_at})

    # -- concurrency ---------------------------------------------------------------------

    async def join(self, name: str, branches: Mapping[str, Callable[[WorkflowContext], Any]]) -> dict[str, Any]:
        """Run every branch ``fn(branch_ctx)`` concurrently; returns ``{branch: result}``."""
        engine = self._engine
        loc, pos = self._enter(name, "join")
        record = engine.visit(self._scope, pos, name, "join")
        if record is not None and record.status == "completed":
            return dict(engine.decoded[loc].get("v") or {})
        names = [_check_name(b) for b in branches]

        async def run(branch: str) -> Any:
            scope = f"{loc}/{branch}/"
            result = await _call(branches[branch], WorkflowContext(engine, scope))
            engine.check_complete(scope)
            return result

        tasks = [asyncio.ensure_future(run(b)) for b in names]
        try:
            results = await asyncio.gather(*tasks)
        except BaseException as exc:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if isinstance(exc, Exception) and not isinstance(exc, WorkflowStepFailed):
                exc._rivet_workflow_source = "join"  # type: ignore[attr-defined]  # for ctx.try_
            raise
        value = dict(zip(names, results, strict=True))
        await engine.write(loc, "join", "completed", {"p": pos, "v": value}, prune=[loc + "/"])
        return value

    async def race(self, name: str, branches: Mapping[str, Callable[[WorkflowContext], Any]]) -> tuple[str, Any]:
        """Run the branches concurrently; the first to finish wins, the others are cancelled.

        Returns ``(winning branch, its result)``. The queue messages the losing
        branches received (and whose entries are still recorded) go back to the
        queue when the race is recorded, so none is lost.
        """
        engine = self._engine
        loc, pos = self._enter(name, "race")
        record = engine.visit(self._scope, pos, name, "race")
        if record is not None and record.status == "completed":
            data = engine.decoded[loc]
            return data["w"], data.get("v")
        names = [_check_name(b) for b in branches]

        async def run(branch: str) -> tuple[str, Any]:
            return branch, await _call(branches[branch], WorkflowContext(engine, f"{loc}/{branch}/"))

        tasks = [asyncio.ensure_future(run(b)) for b in names]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                if not task.done():
                    task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        first = next(t for t in tasks if t in done)  # the earliest declared among the finished
        winner, value = first.result()
        prefix = loc + "/"
        # The losing branches' work is discarded with their entries: the messages they
        # received go back to the queue in the same transaction, so none is lost.
        lost = engine.received_messages(prefix, but=f"{prefix}{winner}/")
        await engine.write(
            loc, "race", "completed", {"p": pos, "w": winner, "v": value}, prune=[prefix], restore_messages=lost
        )
        return winner, value


class LoopContext(WorkflowContext):
    """The ``loop`` a loop body gets: a context scoped to one iteration, with ``iteration`` and ``state``."""

    def __init__(self, engine: _Engine, scope: str, iteration: int, state: Any) -> None:
        super().__init__(engine, scope)
        self.iteration = iteration
        self.state = state


# -- failures ------------------------------------------------------------------------------


async def _observe_failure(
    engine: _Engine,
    loc: str,
    name: str,
    attempt: int,
    retries: int,
    delay: float | None,
    error: dict[str, str],
) -> None:
    """``on_error(self, event)`` for one failed step attempt, with RivetKit's event shape:
    ``{"step": {"workflowId", "stepName", "attempt", "maxRetries", "remainingRetries",
    "willRetry", "retryDelay" (ms), "retryAt" (epoch ms), "error": {"name", "message"}}}``.
    It runs as a step would: it may change the state, broadcast and enqueue."""
    handler = engine.on_error
    if handler is None:
        return
    inst = engine.inst
    step: dict[str, Any] = {
        "workflowId": inst.actor_id,
        "stepName": name,
        "location": loc,
        "attempt": attempt,
        "maxRetries": retries,
        "remainingRetries": max(0, retries - (attempt - 1)),
        "willRetry": delay is not None,
        "error": dict(error),
    }
    if delay is not None:
        step["retryDelay"] = round(delay * 1000)
        step["retryAt"] = round((inst.runtime.clock.time() + delay) * 1000)
    token = _IN_STEP.set(True)
    try:
        await _call(handler, inst.actor, {"step": step})
    except Exception:
        inst.log.exception("the workflow's on_error handler raised")
    finally:
        _IN_STEP.reset(token)


# -- the decorator ---------------------------------------------------------------------------


def _wake(self: Any) -> None:
    """Wake-up of a durable ``ctx.sleep`` (scheduled): the workflow re-checks its timers."""
    engine = getattr(self, _ENGINE_ATTR, None)
    if engine is not None:
        engine.nudge.set()


_wake.__name__ = WAKE_ACTION
_wake_action = action(name=WAKE_ACTION)(_wake)


class _WorkflowMethod:
    """What ``@workflow`` puts on the class: ``run(self)`` replaying ``fn(self, ctx)``."""

    def __init__(self, fn: Callable[..., Awaitable[Any]], on_error: Callable[..., Any] | None) -> None:
        self.fn = fn
        self.on_error = on_error
        functools.update_wrapper(self, fn)

    def __set_name__(self, owner: type, name: str) -> None:
        # Runs before Actor.__init_subclass__ collects the actions.
        owner._rivet_is_workflow = True  # type: ignore[attr-defined]
        if WAKE_ACTION not in owner.__dict__:
            setattr(owner, WAKE_ACTION, _wake_action)

    def __get__(self, obj: Any, objtype: Any = None) -> Any:
        if obj is None:
            return self
        return functools.partial(self.__call__, obj)

    async def __call__(self, actor: Any) -> Any:
        inst: ActorInstance = actor._rivet
        engine = _Engine(inst)
        engine.on_error = self.on_error
        setattr(actor, _ENGINE_ATTR, engine)
        body = _IN_BODY.set(True)
        try:
            await engine.load()
            end = engine.history.get(END_LOCATION)
            if end is not None:
                # Finished earlier: nothing to replay, so an idle actor goes back to sleep.
                inst.log.debug("workflow already ended (%s); not run again", end.status)
                return None
            result = await self.fn(actor, WorkflowContext(engine, ""))
            engine.check_complete("")
            await engine.write(END_LOCATION, "workflow", "completed", {})
            inst.log.debug("workflow completed")
            return result
        except WorkflowStepFailed as exc:
            # The step's failure is recorded; so is the workflow's: later wakes do not run it
            # again, so an idle actor sleeps instead of spinning.
            inst.log.error("workflow stopped: %s", exc.message)
            await engine.write(END_LOCATION, "workflow", "failed", {}, error=exc.message)
            return None
        except WorkflowHistoryDivergence as exc:
            inst.log.error("workflow stopped: %s", exc.message)
            return None
        finally:
            _IN_BODY.reset(body)
            if getattr(actor, _ENGINE_ATTR, None) is engine:
                delattr(actor, _ENGINE_ATTR)


def workflow(fn: Any = None, /, *, on_error: Callable[..., Any] | None = None) -> Any:
    """Make ``async def run(self, ctx)`` a durable workflow: ``@workflow`` or ``@workflow(on_error=handler)``.

    ``on_error(self, event)`` (sync or async) is called on every failed step attempt with
    ``{"step": {"stepName", "attempt", "willRetry", "retryDelay" (ms), "error": {"name",
    "message"}, ...}}`` (RivetKit's shape); what it changes in ``self.state`` is recorded
    with the attempt, and it may broadcast and enqueue. Replays never call it again.
    """

    def wrap(f: Callable[..., Awaitable[Any]]) -> _WorkflowMethod:
        if not inspect.iscoroutinefunction(f):
            raise TypeError("@workflow decorates an async function: async def run(self, ctx)")
        return _WorkflowMethod(f, on_error)

    if fn is not None:
        return wrap(fn)
    return wrap
