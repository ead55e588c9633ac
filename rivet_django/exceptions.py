"""The one exception hierarchy of rivet_django.

Every error that can reach a caller maps 1:1 onto the protocol's ``group.code``
pair and carries the HTTP status it is served with::

    RivetError                      (group, code, status_code; internal by default)
     +-- PublicError                 shown to callers as is
     |    +-- UserError              user.<code>, raised by actor code  500
     |    +-- InvalidRequest         actor.invalid_request          400
     |    +-- InvalidEncoding        encoding.invalid               400
     |    +-- ActorNotFound          actor.not_found                404
     |    |    +-- ActorGone          (the resolved actor was destroyed: resolve the key again)
     |    |    +-- NoRequestHandler   (raw HTTP to an actor without on_request: a bare 404)
     |    +-- ActionNotFound         actor.action_not_found         404
     |    +-- MethodNotAllowed       actor.method_not_allowed       405
     |    +-- ActionTimedOut         actor.action_timed_out         408
     |    +-- DuplicateKey           actor.duplicate_key            400
     |    +-- IncomingTooLong        message.incoming_too_long      400
     |    +-- OutgoingTooLong        message.outgoing_too_long      400
     |    +-- GuardError             guard.*                        400
     |    +-- Forbidden              auth.forbidden                 403
     |    +-- StateNotEnabled        actor.state_not_enabled        400
     |    +-- DatabaseNotEnabled     actor.database_not_enabled     400
     |    +-- DatabaseClosed         actor.database_closed          503
     |    +-- DatabaseFull           actor.database_full            400
     |    +-- StateNotSerializable   state.not_serializable         500
     |    +-- StateMutationReentrant actor.state_mutation_reentrant 500
     |    +-- InvalidSchedule        schedule.invalid               400
     |    +-- TooManySchedules       schedule.limit_exceeded        400
     |    +-- ActorStopping          actor.stopping                 503
     |    |    +-- ActorElsewhere     (another node holds the actor's lease: forward there)
     |    +-- ActorAborted           actor.aborted                  503
     |    +-- LostOwnership          actor.lost_ownership           503
     |    +-- QueueFull              queue.full                     400
     |    +-- QueueMessageTooLarge   queue.message_too_large        400
     |    +-- QueueNotDeclared       queue.not_declared             400
     |    +-- QueueAlreadyCompleted  queue.already_completed        400
     |    +-- QueuePreviousMessageNotCompleted
     |                               queue.previous_message_not_completed 400
     |    +-- WorkflowHistoryDivergence workflow.history_divergence 500
     |    +-- WorkflowOutsideStep    workflow.outside_step          500
     |    +-- WorkflowStepFailed     workflow.step_failed           500
     +-- InternalError               rivetkit.internal_error, masked  500

Anything that is not a :class:`PublicError` is masked on the wire as
``rivetkit.internal_error`` with the message "An internal error occurred".
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "INTERNAL_ERROR_GROUP",
    "INTERNAL_ERROR_MESSAGE",
    "ActionNotFound",
    "ActionTimedOut",
    "ActorAborted",
    "ActorElsewhere",
    "ActorGone",
    "ActorNotFound",
    "ActorStopping",
    "AlreadyRegistered",
    "DatabaseClosed",
    "DatabaseFull",
    "DatabaseNotEnabled",
    "DuplicateKey",
    "Forbidden",
    "GuardError",
    "IncomingTooLong",
    "InternalError",
    "InvalidEncoding",
    "InvalidRequest",
    "InvalidSchedule",
    "LostOwnership",
    "MethodNotAllowed",
    "NoRequestHandler",
    "OutgoingTooLong",
    "PublicError",
    "QueueAlreadyCompleted",
    "QueueFull",
    "QueueMessageTooLarge",
    "QueueNotDeclared",
    "QueuePreviousMessageNotCompleted",
    "RivetError",
    "StateConflict",
    "StateMutationReentrant",
    "StateNotEnabled",
    "StateNotSerializable",
    "TooManySchedules",
    "UserError",
    "WorkflowHistoryDivergence",
    "WorkflowInFlight",
    "WorkflowOutsideStep",
    "WorkflowStepFailed",
    "public_error_of",
]

INTERNAL_ERROR_MESSAGE = "An internal error occurred"

#: Group of a masked internal error: RivetKit 2.3.19 answers ``rivetkit.internal_error`` for an
#: exception thrown by actor code (the runtime's own are ``core.internal_error``).
INTERNAL_ERROR_GROUP = "rivetkit"


class RivetError(Exception):
    """Base of every rivet_django error; internal (masked) unless public."""

    group = "actor"
    code = "internal_error"
    status_code = 500
    default_message = INTERNAL_ERROR_MESSAGE
    public = False

    def __init__(
        self,
        message: str | None = None,
        *,
        metadata: Any = None,
        group: str | None = None,
        code: str | None = None,
        status_code: int | None = None,
    ) -> None:
        self.message = message if message is not None else self.default_message
        self.metadata = metadata
        if group is not None:
            self.group = group
        if code is not None:
            self.code = code
        if status_code is not None:
            self.status_code = status_code
        super().__init__(self.message)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.group}.{self.code}: {self.message!r})"


class InternalError(RivetError):
    """An unexpected failure; callers only ever see the masked form."""


class PublicError(RivetError):
    """An error whose group, code, message and metadata reach the caller."""

    public = True
    status_code = 400
    default_message = "Request failed"


class UserError(PublicError):
    """Raised by actor code to send a message, code and metadata to the caller (HTTP 500, as
    RivetKit 2.3.19 answers it)."""

    group = "user"
    status_code = 500

    def __init__(self, message: str, code: str = "user_error", metadata: Any = None) -> None:
        super().__init__(message, code=code, metadata=metadata)


class InvalidRequest(PublicError):
    code = "invalid_request"
    default_message = "Invalid request"


class InvalidEncoding(PublicError):
    group = "encoding"
    code = "invalid"
    default_message = "Invalid encoding"


class ActorNotFound(PublicError):
    code = "not_found"
    status_code = 404
    default_message = "Actor not found"


class ActorGone(ActorNotFound):
    """The actor an address resolved to does not exist (any more): a key names a new actor
    once the old one is destroyed, so the gateway may resolve it again. Raised by the
    runtime only, never for ``ActorNotFound`` raised by actor code."""

    default_message = "The actor does not exist or was destroyed."


class NoRequestHandler(ActorNotFound):
    """Raw HTTP (``.../request/...``) to an actor that has no ``on_request``."""


class ActionNotFound(PublicError):
    code = "action_not_found"
    status_code = 404
    default_message = "Action not found"


class MethodNotAllowed(PublicError):
    code = "method_not_allowed"
    status_code = 405
    default_message = "Method not allowed"


class ActionTimedOut(PublicError):
    code = "action_timed_out"
    status_code = 408
    default_message = "Action timed out"


class DuplicateKey(PublicError):
    code = "duplicate_key"
    default_message = "An actor with this key already exists"


class IncomingTooLong(PublicError):
    group = "message"
    code = "incoming_too_long"
    default_message = "Incoming message too long"


class OutgoingTooLong(PublicError):
    group = "message"
    code = "outgoing_too_long"
    default_message = "Outgoing message too long"


class GuardError(PublicError):
    """Errors of the gateway's request guard (``rvt-*`` parameters, targets)."""

    group = "guard"
    code = "invalid_request"


class Forbidden(PublicError):
    group = "auth"
    code = "forbidden"
    status_code = 403
    default_message = "Forbidden"


class StateNotEnabled(PublicError):
    code = "state_not_enabled"
    default_message = "State is not enabled for this actor: declare `state` or `create_state`"


class StateNotSerializable(PublicError):
    group = "state"
    code = "not_serializable"
    status_code = 500


class StateMutationReentrant(PublicError):
    """The state was mutated inside ``on_state_change`` (not applied: the hook must not re-trigger itself)."""

    code = "state_mutation_reentrant"
    status_code = 500
    default_message = "State mutations are not allowed inside on_state_change."


class InvalidSchedule(PublicError):
    """``self.schedule`` was given something it cannot schedule; nothing was stored."""

    group = "schedule"
    code = "invalid"
    default_message = "Invalid schedule"


class TooManySchedules(PublicError):
    """The actor already holds ``MAX_SCHEDULES_PER_ACTOR`` schedules."""

    group = "schedule"
    code = "limit_exceeded"
    default_message = "Too many schedules for this actor"


class ActorStopping(PublicError):
    code = "stopping"
    status_code = 503
    default_message = "Actor is stopping"


class ActorElsewhere(ActorStopping):
    """Another node holds a live lease on the actor (raised by a claim). The gateway
    forwards the operation to that node; a caller only sees it as ``actor.stopping``
    when the owner cannot be reached (it is dying, or hosts without an address)."""

    def __init__(self, actor_id: str, node_id: str) -> None:
        super().__init__(f"Actor {actor_id} is owned by node {node_id!r}")
        self.node_id = node_id


class DatabaseNotEnabled(PublicError):
    """``self.db`` of an actor without ``on_migrate``."""

    code = "database_not_enabled"
    default_message = "This actor has no database: define on_migrate(self, db) to enable it"


class DatabaseClosed(PublicError):
    """``self.db`` (or a handle to it) used after its actor stopped."""

    code = "database_closed"
    status_code = 503
    default_message = "The actor's database is closed: the actor stopped"


class DatabaseFull(PublicError):
    """An actor's database reached ``RIVET["DB_MAX_SIZE"]``; the statement changed nothing."""

    code = "database_full"
    default_message = "The actor's database reached its size limit"


class DatabaseError(PublicError):
    """A statement on an actor's own database failed (SQL syntax, a constraint): SQLite's
    message reaches the caller; the statement (or its transaction) changed nothing.

    Raised as a subclass of the driver's own exception too (``sqlite3.IntegrityError``,
    ``django.db.IntegrityError`` inside ``db.run``), so ``except`` clauses for those work.
    """

    code = "database_error"
    default_message = "A statement on the actor's database failed"


class ActorAborted(PublicError):
    """A wait (``self.queue.next``) ended because the actor started stopping; ``run`` loops may let it end them."""

    code = "aborted"
    status_code = 503
    default_message = "Actor aborted"


class LostOwnership(PublicError):
    """This node no longer owns the actor (its generation was superseded)."""

    code = "lost_ownership"
    status_code = 503
    default_message = "The actor moved to another node; retry the request"


class QueueFull(PublicError):
    """A send to a queue that holds its limit of messages (PROTOCOL.md section 7)."""

    group = "queue"
    code = "full"

    def __init__(self, limit: int) -> None:
        super().__init__(f"Queue is full. Limit is {limit} messages.")
        self.limit = limit


class QueueMessageTooLarge(PublicError):
    group = "queue"
    code = "message_too_large"
    default_message = "Queue message is too large"


class QueueNotDeclared(PublicError):
    """A send to (or receive from) a queue name the actor does not declare in ``queues``."""

    group = "queue"
    code = "not_declared"
    default_message = "Queue is not declared"


class QueueAlreadyCompleted(PublicError):
    group = "queue"
    code = "already_completed"
    default_message = "Queue message was already completed."


class QueuePreviousMessageNotCompleted(PublicError):
    """A consumer asked for more messages while a ``completable`` one it holds is not completed."""

    group = "queue"
    code = "previous_message_not_completed"
    default_message = (
        "Previous completable queue message is not completed. "
        "Call `message.complete(...)` before receiving the next message."
    )


class WorkflowHistoryDivergence(PublicError):
    """The workflow's code no longer matches its recorded history (a step renamed, moved or removed)."""

    group = "workflow"
    code = "history_divergence"
    status_code = 500
    default_message = "The workflow does not match its recorded history"


class StateConflict(PublicError):
    """A state replacement based on a state that changed since it was read (the admin's edit form)."""

    group = "inspector"
    code = "state_conflict"
    status_code = 409
    default_message = "The state changed since it was read; reload it and edit again"


class WorkflowInFlight(PublicError):
    """The inspector's workflow replay, asked while the workflow runs (RivetKit's code and text)."""

    group = "actor"
    code = "workflow_in_flight"
    status_code = 409
    default_message = "Workflow replay is unavailable while the workflow is currently in flight."


class WorkflowOutsideStep(PublicError):
    """``self.state`` or ``self.client()`` used in a workflow's body outside ``ctx.step``."""

    group = "workflow"
    code = "outside_step"
    status_code = 500
    default_message = "In a workflow, self.state and self.client() may only be used inside ctx.step"


class WorkflowStepFailed(PublicError):
    """A workflow step failed on every attempt; the failure is recorded and the workflow stops there."""

    group = "workflow"
    code = "step_failed"
    status_code = 500
    default_message = "A workflow step failed"

    def __init__(self, message: str | None = None, *, location: str = "", attempts: int = 0, error: str = "") -> None:
        super().__init__(message, metadata={"location": location, "attempts": attempts, "error": error})
        self.location = location
        self.attempts = attempts
        self.error = error


class AlreadyRegistered(Exception):
    """Two actor classes claim the same registered name."""


def public_error_of(exc: BaseException) -> PublicError:
    """The error a caller may see for ``exc``: itself if public, else masked."""
    if isinstance(exc, PublicError):
        return exc
    masked = PublicError(INTERNAL_ERROR_MESSAGE, group=INTERNAL_ERROR_GROUP, code="internal_error", status_code=500)
    return masked
