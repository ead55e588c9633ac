"""``self.queue``: an actor's durable queues, and sends to them from clients.

The database is the source of truth (ARCHITECTURE.md rule 6): a send is
acknowledged only once its message is stored, and a message leaves storage only
once it is completed or acknowledged. While an actor is awake its
:class:`ActorQueueAPI` keeps a view of the stored messages in memory (loaded on
first use, appended to by sends), so a consumer waiting in ``next()`` wakes the
moment a message arrives, without polling.

A delivered message is *in flight*: no other receive gets it. Then::

    in flight --complete(response)------------------------------> deleted; a waiting sender gets the response
    in flight --its consumer asks for more, or its handler returns--> deleted (not completable only)
    in flight --its handler fails, the actor stops, a crash---------> stored still: delivered again later

The *consumer* of a message is the handler that received it: the action call
or ``run()`` it was received in, else the asyncio task. A ``completable=True``
message is never acknowledged implicitly: its consumer completes it with
``complete()`` before it may receive more, and if its handler returns without
doing so the message goes back to the queue. While a message is in flight the
actor does not go to sleep; a ``run`` loop blocked in ``next()`` on an empty
queue holds none, so its actor may sleep, and the next send wakes it.

Sends from clients (``POST .../queue/{name}``, ``handle.queue.send``) go
through :class:`QueueHub`, the runtime's part: it wakes the actor, checks
``can_publish`` on a short-lived connection, and holds the futures of senders
waiting for a completion (``wait=True``). As in RivetKit, a client's send to a
name the actor does not declare in ``queues`` (or to an actor that declares
none) is answered ``completed`` and dropped (logged at WARNING); the actor's
own ``self.queue.send`` may use any name.

A receive that would wait returns stored messages first; when none is stored
and the actor is stopping or the caller's ``signal`` is set, it raises
``actor.aborted`` (``iter`` ends quietly on it). Storage is reached through
:class:`QueueStore` (the Django one is
:class:`rivet_django.storage.queues.DjangoQueueStore`).

With ``RIVET["TRACING"]`` on, storing a message is a ``queue send <name>`` span
(a producer) and each delivery a ``queue receive <name>`` span (a consumer) from
the receive until the message leaves the handler: completed, acknowledged (the
handler asked for more or returned) or given back (an error status). A delivery
links to its send span, and descends from it when the receiving handler has no
span of its own (a ``run`` loop); otherwise it is a child of the handler's span (an
action). The sender's span context is kept with the message in memory only, not
stored (no schema change): a message loaded from storage (after a restart, or when
its actor slept before receiving it) has no link. While a handler holds the single
message it received, that message's span is current, so its handling (calls to
other actors included) belongs to the message's trace.
"""

from __future__ import annotations

import abc
import asyncio
import contextvars
import enum
import inspect
import logging
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from .. import tracing
from ..exceptions import (
    ActorAborted,
    ActorNotFound,
    Forbidden,
    InvalidRequest,
    QueueAlreadyCompleted,
    QueueFull,
    QueueMessageTooLarge,
    QueuePreviousMessageNotCompleted,
)
from . import serde
from .conn import Conn

if TYPE_CHECKING:
    from ..definition import QueueSpec
    from .host import ActorRuntime
    from .instance import ActorInstance

__all__ = [
    "ActorQueueAPI",
    "QueueHub",
    "QueueMessage",
    "QueueStore",
    "StoredMessage",
    "enter_handler",
    "leave_handler",
]

logger = logging.getLogger("rivet_django.runtime")

#: Longest queue name (the column's size).
MAX_QUEUE_NAME_LENGTH = 128

#: How often a client send retries when the instance it found was stopping.
_SEND_ATTEMPTS = 5

SendResult = dict[str, Any]
"""``{"status": "completed" | "timedOut", "response"?: value}`` (PROTOCOL.md section 7)."""


# -- storage interface -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """One stored message as the store hands it over."""

    id: int
    name: str
    body: bytes
    created_at: datetime
    attempts: int = 0


class QueueStore(abc.ABC):
    """Durable storage of queue messages; writes are fenced by the actor's generation."""

    @abc.abstractmethod
    async def load(self, actor_id: str) -> list[StoredMessage]:
        """Every stored message of the actor, in id order."""

    @abc.abstractmethod
    async def insert(self, actor_id: str, generation: int, name: str, body: bytes, waiting: bool) -> StoredMessage:
        """Store a message; :class:`~rivet_django.exceptions.LostOwnership` if ``generation`` is stale."""

    @abc.abstractmethod
    async def settle(
        self, actor_id: str, generation: int, *, remove: Sequence[int] = (), delivered: Sequence[int] = ()
    ) -> None:
        """Delete the ``remove`` messages and count one more delivery of the ``delivered`` ones, atomically."""

    @abc.abstractmethod
    async def actors_with_messages(self, limit: int) -> list[tuple[str, str]]:
        """``(actor_id, actor name)`` of actors that have stored messages."""


# -- handlers (consumers) ---------------------------------------------------------------

#: The consumer of the running handler: a :class:`_Consumer` once it received a
#: message, the task itself as a marker of a handler scope that has not yet.
_CONSUMER: contextvars.ContextVar[Any] = contextvars.ContextVar("rivet_queue_consumer", default=None)


def enter_handler() -> contextvars.Token[Any]:
    """Open a handler scope (an action call, ``run()``): messages received in it belong to it."""
    return _CONSUMER.set(asyncio.current_task())


def leave_handler(token: contextvars.Token[Any]) -> _Consumer | None:
    """Close a handler scope; returns its consumer to ``await consumer.finish(handled)``, if it received any."""
    consumer = _CONSUMER.get()
    _CONSUMER.reset(token)
    if not isinstance(consumer, _Consumer):
        return None
    if consumer.trace is not None:
        consumer.untrace()
    return consumer


class _Consumer:
    """The messages one handler holds: acknowledged when it asks for more or returns."""

    __slots__ = ("closed", "held", "queue", "task", "trace", "unacked")

    def __init__(self, queue: ActorQueueAPI, task: asyncio.Task[Any] | None) -> None:
        self.queue = queue
        self.task = task
        #: Non-completable messages, acknowledged by the next receive or the handler's end.
        self.unacked: list[_Entry] = []
        #: Completable messages not completed yet.
        self.held: list[_Entry] = []
        self.closed = False
        #: What made a message's span current in the handler (tracing on), to undo.
        self.trace: tuple[Any, Any] | None = None

    def untrace(self) -> None:
        """The handler moves on from its message (a new receive, its end): the message's
        span stops being current. Called in the handler's task, like the receive."""
        made, self.trace = self.trace, None
        if made is not None:
            tracing.restore(made)

    async def finish(self, handled: bool) -> None:
        """The handler ended: acknowledge what it received (``handled``) or give it back."""
        if not self.closed:
            self.closed = True
            await self.queue._finish_consumer(self, handled)

    def on_task_done(self, task: asyncio.Task[Any]) -> None:
        if self.closed:
            return
        if self.unacked or self.held:
            handled = not task.cancelled() and task.exception() is None
            self.queue._spawn(self.finish(handled))
        else:
            self.closed = True


class _State(enum.Enum):
    PENDING = "pending"
    IN_FLIGHT = "in flight"
    SETTLING = "settling"
    DONE = "done"


class _Entry:
    """The in-memory view of one stored message."""

    __slots__ = ("attempts", "body", "consumer", "created_at", "id", "name", "origin", "span", "state")

    def __init__(self, stored: StoredMessage, origin: Any = None) -> None:
        self.id = stored.id
        self.name = stored.name
        self.body = stored.body
        self.created_at = stored.created_at
        self.attempts = stored.attempts
        self.state = _State.PENDING
        self.consumer: _Consumer | None = None
        #: Tracing on: the span context of the send (in memory only), and the delivery's span.
        self.origin = origin
        self.span: Any = None


class _Waiter:
    __slots__ = ("future", "names")

    def __init__(self, names: frozenset[str] | None, future: asyncio.Future[None]) -> None:
        self.names = names
        self.future = future

    def fire(self, *_: Any) -> None:
        if not self.future.done():
            self.future.set_result(None)


class QueueMessage:
    """A message handed to a consumer.

    ``id`` (increasing per actor), ``name`` (the queue), ``body``, ``created_at``
    (a datetime) and ``attempts`` (deliveries so far, this one included).
    ``await complete(response)`` answers a sender waiting with ``wait=True``.
    """

    __slots__ = ("_entry", "_queue", "attempts", "body", "completable", "created_at", "id", "name")

    def __init__(self, queue: ActorQueueAPI, entry: _Entry, completable: bool) -> None:
        self._queue = queue
        self._entry = entry
        self.id = entry.id
        self.name = entry.name
        # Decoded per delivery: a handler that mutates the body cannot change a redelivery.
        self.body = serde.loads(entry.body)
        self.created_at = entry.created_at
        self.attempts = entry.attempts
        self.completable = completable

    async def complete(self, response: Any = None) -> None:
        """Remove the message for good and answer a waiting sender (a second call: ``queue.already_completed``)."""
        await self._queue._complete(self._entry, response)

    @property
    def completed(self) -> bool:
        return self._entry.state is _State.DONE

    def __repr__(self) -> str:
        return f"<QueueMessage {self.name}#{self.id} attempts={self.attempts}>"


# -- one actor's queues ------------------------------------------------------------------


class ActorQueueAPI:
    """``self.queue`` of one awake actor; see the module docstring for the delivery rules."""

    def __init__(self, instance: ActorInstance) -> None:
        self._instance = instance
        self._hub: QueueHub = instance.runtime.queues
        #: Stored messages not in flight, in id order.
        self._pending: dict[int, _Entry] = {}
        #: Stored (or being stored) messages per queue name, and in all.
        self._sizes: dict[str, int] = {}
        self._total = 0
        self._in_flight = 0
        self._loaded = False
        self._loading: asyncio.Future[None] | None = None
        self._waiters: list[_Waiter] = []
        self._background: set[asyncio.Future[Any]] = set()

    # -- public API -------------------------------------------------------------

    async def send(self, name: str, body: Any) -> int:
        """Store ``body`` in this actor's queue ``name``; returns the message id."""
        spec = self._check_name(name)
        return await self._publish(name, spec, body)

    async def next(
        self,
        names: str | Iterable[str] | None = None,
        timeout: float | None = None,
        signal: asyncio.Event | None = None,
        completable: bool = False,
    ) -> QueueMessage | None:
        """The next message of ``names`` (all queues if None), waiting for one; None on timeout.

        Stored messages come first; otherwise raises :class:`~rivet_django.exceptions.ActorAborted`
        (``actor.aborted``) when ``signal`` is set (already, or while waiting) or the actor
        starts stopping.
        """
        messages = await self._receive(names, 1, timeout, signal, completable, wait=True)
        return messages[0] if messages else None

    async def next_batch(
        self,
        names: str | Iterable[str] | None = None,
        count: int = 1,
        timeout: float | None = None,
        signal: asyncio.Event | None = None,
        completable: bool = False,
    ) -> list[QueueMessage]:
        """Up to ``count`` messages, waiting for at least one; ``[]`` on timeout, ``actor.aborted``
        as :meth:`next` says."""
        return await self._receive(names, count, timeout, signal, completable, wait=True)

    async def try_next(
        self, names: str | Iterable[str] | None = None, completable: bool = False
    ) -> QueueMessage | None:
        """The next message if one is stored, else None (never waits)."""
        messages = await self._receive(names, 1, None, None, completable, wait=False)
        return messages[0] if messages else None

    async def try_next_batch(
        self, names: str | Iterable[str] | None = None, count: int = 1, completable: bool = False
    ) -> list[QueueMessage]:
        """Up to ``count`` stored messages, without waiting."""
        return await self._receive(names, count, None, None, completable, wait=False)

    async def iter(
        self,
        names: str | Iterable[str] | None = None,
        signal: asyncio.Event | None = None,
        completable: bool = False,
    ) -> AsyncIterator[QueueMessage]:
        """``async for message in self.queue.iter():`` until ``signal`` is set or the actor stops."""
        while True:
            try:
                message = await self.next(names, signal=signal, completable=completable)
            except ActorAborted:
                return
            if message is not None:
                yield message

    async def size(self, names: str | Iterable[str] | None = None) -> int:
        """How many messages are stored (in flight included), in ``names`` or in all queues."""
        selected = self._names(names)
        await self._ensure_loaded()
        if selected is None:
            return self._total
        return sum(self._sizes.get(name, 0) for name in selected)

    # -- runtime hooks -------------------------------------------------------------

    async def reset(self) -> int:
        """Delete every message no handler holds (the inspector's ``DELETE queue``); how many.

        Messages a handler holds stay until it completes or gives them back. Senders
        waiting on deleted messages are answered ``completed`` with no response.
        """
        await self._ensure_loaded()
        entries = list(self._pending.values())
        if not entries:
            return 0
        for entry in entries:  # taken, so no receive gets them while the delete runs
            del self._pending[entry.id]
            entry.state = _State.IN_FLIGHT
        self._in_flight += len(entries)
        try:
            await self._settle(remove=entries)
        except BaseException:
            self._release(entries)
            raise
        return len(entries)

    @property
    def busy(self) -> bool:
        """Whether a handler holds a message (the actor must not go to sleep under it)."""
        return self._in_flight > 0

    def restored(self, messages: Iterable[StoredMessage]) -> None:
        """Messages another writer put back in storage (a workflow race's losing branch): deliverable again.

        The writer loads the view before its write, so the load cannot have found them too.
        """
        if not self._loaded:
            return  # the load finds them in storage
        for stored in messages:
            self._sizes[stored.name] = self._sizes.get(stored.name, 0) + 1
            self._total += 1
            self._add(_Entry(stored))

    def recorded(self, message: QueueMessage, *, answer: bool) -> None:
        """A workflow recorded ``message``: it left storage with that entry. It leaves the
        in-memory view without going back to the queue; its waiting sender hears
        ``completed`` now (``answer``) or from :meth:`answer` later."""
        entry = message._entry
        consumer = entry.consumer
        if consumer is not None:
            for held in (consumer.held, consumer.unacked):
                if entry in held:
                    held.remove(entry)
        self._forget(entry, "recorded")
        if answer:
            self._hub._resolve(entry.id, {"status": "completed"})

    def answer(self, message_id: int, response: Any) -> None:
        """Answer the sender waiting for message ``message_id`` with ``response``."""
        self._hub._resolve(message_id, _completed(response))

    def abort_waits(self) -> None:
        """The actor started stopping: every waiting receive ends with ActorAborted."""
        for waiter in self._waiters:
            waiter.fire()

    # -- names, bodies, limits --------------------------------------------------------

    def _check_name(self, name: Any) -> QueueSpec | None:
        """The declaration of queue ``name`` (None if undeclared); the name must be well formed."""
        if not isinstance(name, str) or not name or len(name) > MAX_QUEUE_NAME_LENGTH:
            raise InvalidRequest(f"Queue names are non-empty strings of at most {MAX_QUEUE_NAME_LENGTH} characters")
        return self._instance.definition.queues.get(name)

    def _names(self, names: str | Iterable[str] | None) -> frozenset[str] | None:
        if names is None:
            return None
        try:
            selected = frozenset((names,) if isinstance(names, str) else names)
        except TypeError:
            raise InvalidRequest(f"names must be a queue name or a list of them, not {names!r}") from None
        for name in selected:
            self._check_name(name)
        return selected or None

    def _encode(self, spec: QueueSpec | None, body: Any) -> bytes:
        try:
            data = serde.dumps(body)
        except serde.ValueNotSerializable as exc:
            raise InvalidRequest(f"Queue message body is not serializable: it holds a {exc.type_name!r}") from None
        options = self._instance.options
        limit = options.max_queue_message_size
        if spec is not None and spec.max_message_size is not None:
            limit = spec.max_message_size
        if len(data) > limit:
            raise QueueMessageTooLarge(f"Queue message is {len(data)} bytes. Limit is {limit} bytes.")
        return data

    def _reserve(self, name: str, spec: QueueSpec | None) -> None:
        """Count a message about to be stored, or refuse it (``queue.full``)."""
        if spec is not None and spec.max_size is not None:
            if self._sizes.get(name, 0) >= spec.max_size:
                raise QueueFull(spec.max_size)
        elif self._total >= self._instance.options.max_queue_size:
            raise QueueFull(self._instance.options.max_queue_size)
        self._sizes[name] = self._sizes.get(name, 0) + 1
        self._total += 1

    def _unreserve(self, name: str) -> None:
        left = self._sizes.get(name, 0) - 1
        if left > 0:
            self._sizes[name] = left
        else:
            self._sizes.pop(name, None)
        self._total -= 1

    # -- sending ------------------------------------------------------------------------

    async def _publish(
        self,
        name: str,
        spec: QueueSpec | None,
        body: Any,
        *,
        waiting: bool = False,
        on_stored: Callable[[int], None] | None = None,
    ) -> int:
        if tracing.enabled():
            with tracing.producer_span(f"queue send {name}", self._instance, **{"rivet.queue": name}) as span:
                message_id = await self._store(name, spec, body, waiting, on_stored, span.get_span_context())
                span.set_attribute("rivet.queue.message_id", message_id)
                return message_id
        return await self._store(name, spec, body, waiting, on_stored, None)

    async def _store(
        self,
        name: str,
        spec: QueueSpec | None,
        body: Any,
        waiting: bool,
        on_stored: Callable[[int], None] | None,
        origin: Any,
    ) -> int:
        """Store a message and add it to the view; ``origin``: its send span's context (tracing on)."""
        data = self._encode(spec, body)
        await self._ensure_loaded()
        self._reserve(name, spec)
        inst = self._instance
        insert = asyncio.ensure_future(self._hub.store.insert(inst.actor_id, inst.generation, name, data, waiting))

        def stored(task: asyncio.Future[StoredMessage]) -> None:
            # A callback, not code after the await: a stored message joins the view even
            # if the sender was cancelled meanwhile.
            if task.cancelled() or task.exception() is not None:
                self._unreserve(name)
                return
            message = task.result()
            if on_stored is not None:
                on_stored(message.id)  # a waiting sender is registered before anyone can complete it
            self._add(_Entry(message, origin))
            inst.last_activity = inst.runtime.clock.monotonic()

        insert.add_done_callback(stored)
        message = await asyncio.shield(insert)
        return message.id

    async def _publish_from_client(
        self, name: str, body: Any, wait: bool, params: Any, request: Any
    ) -> tuple[int | None, asyncio.Future[SendResult] | None]:
        """A client's send: connect hooks and ``can_publish``, then store; a turn, so stopping
        waits for it. A name the actor does not declare is dropped: ``(None, None)``."""
        from .instance import InstanceStatus, NotAwake

        inst = self._instance
        if inst.status is not InstanceStatus.AWAKE:
            raise NotAwake()
        spec = self._check_name(name)
        inst._begin_turn()
        try:
            if inst.definition.has_connect_hooks or (spec is not None and spec.can_publish is not None):
                await self._authorize(name, spec, params, request)
            if spec is None:
                # RivetKit 2.3.19: ignored, and answered "completed" (with or without wait).
                inst.log.warning("dropped a message sent to queue %r, which the actor does not declare in queues", name)
                return None, None
            waiter: asyncio.Future[SendResult] | None = None

            def register(message_id: int) -> None:
                nonlocal waiter
                if wait:
                    waiter = self._hub._expect(inst.actor_id, message_id)

            message_id = await self._publish(name, spec, body, waiting=wait, on_stored=register)
            return message_id, waiter
        finally:
            inst._end_turn()

    async def _authorize(self, name: str, spec: QueueSpec | None, params: Any, request: Any) -> None:
        inst = self._instance
        # Like a stateless action call (PROTOCOL.md section 6): a short-lived connection runs the connect hooks.
        hooks = inst.definition.has_connect_hooks
        conn = await inst.open_conn(params, request=request) if hooks else Conn(params, request=request)
        try:
            if spec is not None and spec.can_publish is not None:
                allowed = spec.can_publish(inst.actor, conn)
                if inspect.isawaitable(allowed):
                    allowed = await allowed
                if not allowed:
                    raise Forbidden(f"Publishing to queue {name!r} is not allowed")
        finally:
            if hooks:
                await inst.close_conn(conn)

    # -- the in-memory view ----------------------------------------------------------------

    async def _ensure_loaded(self) -> None:
        if self._loaded:
            return
        loading = self._loading
        if loading is None:
            loading = self._loading = asyncio.ensure_future(self._load())
        try:
            await asyncio.shield(loading)
        except BaseException:
            if loading.done() and self._loading is loading and not self._loaded:
                self._loading = None  # failed: the next use tries again
            raise

    async def _load(self) -> None:
        for stored in await self._hub.store.load(self._instance.actor_id):
            self._sizes[stored.name] = self._sizes.get(stored.name, 0) + 1
            self._total += 1
            self._pending[stored.id] = _Entry(stored)
        self._loaded = True
        self._dispatch()

    def _add(self, entry: _Entry) -> None:
        """Make a stored message deliverable, keeping id order."""
        entry.state = _State.PENDING
        entry.consumer = None
        pending = self._pending
        out_of_order = bool(pending) and entry.id < next(reversed(pending))
        pending[entry.id] = entry
        if out_of_order:
            self._pending = dict(sorted(pending.items()))
        for waiter in self._waiters:
            if waiter.names is None or entry.name in waiter.names:
                waiter.fire()

    def _release(self, entries: Iterable[_Entry]) -> None:
        """Messages handed back (handler failed or ended): deliverable again."""
        for entry in entries:
            if entry.state in (_State.IN_FLIGHT, _State.SETTLING):
                self._in_flight -= 1
                if entry.span is not None:
                    _end_delivery(entry, "released", error="given back to the queue: delivered again later")
                self._add(entry)

    def _take(self, names: frozenset[str] | None, count: int, consumer: _Consumer) -> list[_Entry]:
        taken: list[_Entry] = []
        for entry in self._pending.values():
            if names is None or entry.name in names:
                taken.append(entry)
                if len(taken) >= count:
                    break
        for entry in taken:
            del self._pending[entry.id]
            entry.state = _State.IN_FLIGHT
            entry.consumer = consumer
        self._in_flight += len(taken)
        return taken

    def _dispatch(self) -> None:
        """Wake every waiter that has a message to take (after a load, or a waiter gave up its wakeup)."""
        for waiter in self._waiters:
            if waiter.future.done():
                continue
            if waiter.names is None:
                if self._pending:
                    waiter.fire()
            elif any(entry.name in waiter.names for entry in self._pending.values()):
                waiter.fire()

    def _forget(self, entry: _Entry, outcome: str = "acknowledged") -> None:
        """A message left storage (``outcome``: how, for its delivery's span)."""
        if entry.span is not None:
            _end_delivery(entry, outcome)
        if entry.state in (_State.IN_FLIGHT, _State.SETTLING):
            self._in_flight -= 1
        elif entry.state is _State.PENDING:
            self._pending.pop(entry.id, None)
        if entry.state is not _State.DONE:
            self._unreserve(entry.name)
        entry.state = _State.DONE
        entry.consumer = None

    # -- receiving ------------------------------------------------------------------------------

    def _consumer(self) -> _Consumer:
        task = asyncio.current_task()
        current = _CONSUMER.get()
        if isinstance(current, _Consumer) and current.queue is self and current.task is task and not current.closed:
            return current
        scoped = current is not None and current is task
        consumer = _Consumer(self, task)
        _CONSUMER.set(consumer)
        if not scoped and task is not None:
            # No handler scope (a background task, a hook): the task is the handler.
            task.add_done_callback(consumer.on_task_done)
        return consumer

    def _aborted(self) -> bool:
        return self._instance.abort_event.is_set()

    async def _receive(
        self,
        names: str | Iterable[str] | None,
        count: int,
        timeout: float | None,
        signal: asyncio.Event | None,
        completable: bool,
        *,
        wait: bool,
    ) -> list[QueueMessage]:
        selected = self._names(names)
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise InvalidRequest(f"count must be a positive integer, not {count!r}")
        if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout < 0):
            raise InvalidRequest(f"timeout must be a non-negative number of seconds or None, not {timeout!r}")
        consumer = self._consumer()
        if consumer.held:
            raise QueuePreviousMessageNotCompleted()
        if consumer.trace is not None:
            consumer.untrace()
        # Asking for the next message acknowledges the previous ones.
        acks, consumer.unacked = consumer.unacked, []
        taken: list[_Entry] = []
        try:
            if acks:
                # What the handler did with those messages is durable before they leave storage.
                await self._instance._persist_changes()
            await self._ensure_loaded()
            taken = self._take(selected, count, consumer)  # stored messages first, aborted or not
            if not taken and wait and timeout != 0:
                if acks:
                    await self._settle(remove=acks)  # not held back while we wait
                    acks = []
                if self._aborted() or (signal is not None and signal.is_set()):
                    raise ActorAborted()
                with self._instance.idle_wait():  # a run loop blocked here lets its actor sleep
                    taken = await self._wait(selected, count, timeout, signal, consumer)
            if acks or taken:
                await self._settle(remove=acks, delivered=taken)
        except BaseException:
            self._release([*acks, *taken])
            raise
        if not taken:
            return []
        inst = self._instance
        inst.last_activity = inst.runtime.clock.monotonic()
        (consumer.held if completable else consumer.unacked).extend(taken)
        if tracing.enabled():
            self._trace_deliveries(consumer, taken, completable)
        return [QueueMessage(self, entry, completable) for entry in taken]

    def _trace_deliveries(self, consumer: _Consumer, taken: list[_Entry], completable: bool) -> None:
        """A ``queue receive`` span per message (see the module docstring); a single one is current."""
        handler = tracing.current_span_context()
        actor = tracing.actor_attributes(self._instance)
        for entry in taken:
            entry.span = tracing.start_span(
                f"queue receive {entry.name}",
                parent=handler if handler is not None else entry.origin,
                links=[entry.origin] if entry.origin is not None else [],
                kind="consumer",
                **actor,
                **{
                    "rivet.queue": entry.name,
                    "rivet.queue.message_id": entry.id,
                    "rivet.queue.attempt": entry.attempts,
                    "rivet.queue.completable": completable,
                },
            )
        if len(taken) == 1:
            consumer.trace = tracing.make_current(taken[0].span)

    async def _wait(
        self,
        names: frozenset[str] | None,
        count: int,
        timeout: float | None,
        signal: asyncio.Event | None,
        consumer: _Consumer,
    ) -> list[_Entry]:
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        signal_task: asyncio.Task[Any] | None = None
        try:
            while True:
                if signal is not None and signal.is_set():
                    raise ActorAborted()
                if deadline is not None and loop.time() >= deadline:
                    return []
                waiter = _Waiter(names, loop.create_future())
                self._waiters.append(waiter)
                timer = loop.call_at(deadline, waiter.fire) if deadline is not None else None
                if signal is not None:
                    if signal_task is None:
                        signal_task = loop.create_task(signal.wait())
                    signal_task.add_done_callback(waiter.fire)
                try:
                    await waiter.future
                except BaseException:
                    self._waiters.remove(waiter)
                    # Our wakeup may have been meant for a message: pass it on.
                    self._dispatch()
                    raise
                finally:
                    if timer is not None:
                        timer.cancel()
                    if signal_task is not None:
                        signal_task.remove_done_callback(waiter.fire)
                self._waiters.remove(waiter)
                if self._aborted():
                    raise ActorAborted()
                taken = self._take(names, count, consumer)
                if taken:
                    return taken
        finally:
            if signal_task is not None and not signal_task.done():
                signal_task.cancel()

    async def _settle(self, *, remove: Sequence[_Entry] = (), delivered: Sequence[_Entry] = ()) -> None:
        """Delete acknowledged messages and count deliveries in one fenced write."""
        for entry in remove:
            entry.state = _State.SETTLING
        inst = self._instance
        try:
            await self._hub.store.settle(
                inst.actor_id,
                inst.generation,
                remove=[entry.id for entry in remove],
                delivered=[entry.id for entry in delivered],
            )
        except BaseException:
            for entry in remove:
                if entry.state is _State.SETTLING:
                    entry.state = _State.IN_FLIGHT
            raise
        for entry in delivered:
            entry.attempts += 1
        for entry in remove:
            self._forget(entry)
            self._hub._resolve(entry.id, {"status": "completed"})

    async def _finish_consumer(self, consumer: _Consumer, handled: bool) -> None:
        unacked, consumer.unacked = consumer.unacked, []
        held, consumer.held = consumer.held, []
        if held:
            self._instance.log.warning(
                "%d completable queue message(s) were not completed by the handler that received them; "
                "they go back to the queue",
                len(held),
            )
            self._release(held)
        if not unacked:
            return
        if not handled:
            self._release(unacked)
            return
        try:
            await self._instance._persist_changes()
            await self._settle(remove=unacked)
        except Exception:
            self._instance.log.warning(
                "Acknowledging queue messages failed; they will be delivered again", exc_info=True
            )
            self._release(unacked)

    async def _complete(self, entry: _Entry, response: Any) -> None:
        if entry.state in (_State.DONE, _State.SETTLING):
            raise QueueAlreadyCompleted()
        result = _completed(response)
        consumer = entry.consumer
        if consumer is not None:
            for held in (consumer.held, consumer.unacked):
                if entry in held:
                    held.remove(entry)
        if entry.state is _State.PENDING:
            # A stale handle (the message went back to the queue): completing it still settles it.
            self._pending.pop(entry.id, None)
            entry.state = _State.IN_FLIGHT
            self._in_flight += 1
        inst = self._instance
        entry.state = _State.SETTLING
        try:
            await inst._persist_changes()  # the handler's effects are durable before the message goes
            await self._hub.store.settle(inst.actor_id, inst.generation, remove=[entry.id])
        except BaseException:
            self._release([entry])
            raise
        self._forget(entry, "completed")
        inst.last_activity = inst.runtime.clock.monotonic()
        self._hub._resolve(entry.id, result)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)


def _end_delivery(entry: _Entry, outcome: str, error: str | None = None) -> None:
    """End the span of a message's delivery: it left its handler (``outcome``)."""
    span, entry.span = entry.span, None
    tracing.end_span(span, error=error, **{"rivet.queue.outcome": outcome})


def _completed(response: Any) -> SendResult:
    """What a waiting sender gets for a completion: ``response`` as a copy, as a sender
    over the wire would get it (omitted when None)."""
    result: SendResult = {"status": "completed"}
    if response is not None:
        try:
            result["response"] = serde.loads(serde.dumps(response))
        except serde.ValueNotSerializable as exc:
            raise InvalidRequest(f"Queue response is not serializable: it holds a {exc.type_name!r}") from None
    return result


# -- the runtime's part ------------------------------------------------------------------------


class QueueHub:
    """Sends from clients, waiting senders, and waking actors that have messages to consume."""

    def __init__(self, runtime: ActorRuntime, store: QueueStore | None = None) -> None:
        self.runtime = runtime
        self._store = store
        #: Futures of senders waiting for a completion, by message id.
        self._senders: dict[int, asyncio.Future[SendResult]] = {}
        #: Ids of the messages waited for, by actor (to answer their senders if it is destroyed).
        self._waited: dict[str, set[int]] = {}
        self._background: set[asyncio.Future[Any]] = set()

    @property
    def store(self) -> QueueStore:
        if self._store is None:
            # The embedded default: the Django store on the runtime's database threads.
            from ..storage.queues import DjangoQueueStore

            self._store = DjangoQueueStore(getattr(self.runtime.store, "executor"))  # noqa: B009
        return self._store

    async def send(
        self,
        actor_id: str,
        name: str,
        body: Any,
        *,
        wait: bool = False,
        timeout: float | None = None,
        params: Any = None,
        request: Any = None,
    ) -> SendResult:
        """Store a client's message (waking the actor); with ``wait``, wait up to ``timeout`` s for its completion.

        Answers ``{"status": "completed"}`` once stored (no wait), else
        ``{"status": "completed", "response"?: value}`` or ``{"status": "timedOut"}``.
        """
        from .instance import InstanceStatus, NotAwake

        if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout < 0):
            raise InvalidRequest(f"timeout must be a non-negative number of seconds or None, not {timeout!r}")
        for attempt in range(_SEND_ATTEMPTS):
            inst = await self.runtime.instance(actor_id)
            try:
                message_id, waiter = await inst.queue._publish_from_client(name, body, wait, params, request)
                break
            except NotAwake:
                if attempt == _SEND_ATTEMPTS - 1:
                    raise
        if message_id is None:
            return {"status": "completed"}  # an undeclared queue: nothing was stored
        if inst.status is not InstanceStatus.AWAKE:
            # Stored while the actor was stopping: wake it again so its run loop finds the message.
            self._spawn(self._wake(actor_id))
        if waiter is None:
            return {"status": "completed"}
        try:
            if timeout is None:
                return await waiter
            return await asyncio.wait_for(asyncio.shield(waiter), timeout)
        except TimeoutError:
            return {"status": "timedOut"}
        finally:
            if self._senders.get(message_id) is waiter:
                del self._senders[message_id]
            waiter.cancel()  # no-op once answered; else it leaves the actor's index too

    async def recover(self, limit: int = 10_000) -> int:
        """Wake the actors that have stored messages and a ``run`` loop (after a restart nothing else would)."""
        try:
            found = await self.store.actors_with_messages(limit)
        except Exception:
            logger.exception("Looking for actors with queued messages failed")
            return 0
        woken = 0
        for actor_id, name in found:
            if actor_id in self.runtime.instances or name not in self.runtime.registry:
                continue
            if self.runtime.registry.get(name).hook("run") is None:
                continue
            if await self._wake(actor_id):
                woken += 1
        if woken:
            logger.info("Woke %d actor(s) with queued messages", woken)
        return woken

    async def _wake(self, actor_id: str) -> bool:
        try:
            await self.runtime.instance(actor_id)
            return True
        except Exception as exc:
            logger.warning("Could not wake actor %s for its queued messages: %r", actor_id, exc)
            return False

    def actor_destroyed(self, actor_id: str) -> None:
        """The actor and its queue are gone: its waiting senders get ``actor.not_found`` rather than waiting forever."""
        for message_id in self._waited.pop(actor_id, ()):
            future = self._senders.pop(message_id, None)
            if future is not None and not future.done():
                future.set_exception(
                    ActorNotFound(f"Actor {actor_id} was destroyed before queue message {message_id} was completed")
                )

    def _expect(self, actor_id: str, message_id: int) -> asyncio.Future[SendResult]:
        future: asyncio.Future[SendResult] = asyncio.get_running_loop().create_future()
        self._senders[message_id] = future
        self._waited.setdefault(actor_id, set()).add(message_id)
        # However the wait ends (answer, timeout, sender gone), the actor's index forgets it.
        future.add_done_callback(lambda _: self._unwait(actor_id, message_id))
        return future

    def _unwait(self, actor_id: str, message_id: int) -> None:
        waited = self._waited.get(actor_id)
        if waited is not None:
            waited.discard(message_id)
            if not waited:
                del self._waited[actor_id]

    def _resolve(self, message_id: int, result: SendResult) -> None:
        future = self._senders.pop(message_id, None)
        if future is not None and not future.done():
            future.set_result(result)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
