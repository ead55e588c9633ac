"""Durable storage of actors: records, key-value entries and nodes.

State is stored as CBOR bytes (see :mod:`rivet_django.protocol`). The runtime
never touches these models directly: it goes through
:class:`rivet_django.storage.store.DjangoActorStore`.
"""

from __future__ import annotations

from django.db import models
from django.utils.translation import gettext_lazy as _

__all__ = [
    "Actor",
    "ActorKV",
    "ActorQueueMessage",
    "ActorSchedule",
    "ActorStatus",
    "MisfirePolicy",
    "Node",
    "ScheduleKind",
    "WorkflowEntry",
]


class ActorStatus(models.TextChoices):
    SLEEPING = "sleeping", _("sleeping")
    AWAKE = "awake", _("awake")
    DESTROYED = "destroyed", _("destroyed")


class Actor(models.Model):
    """One actor: identity, creation input, durable state and ownership."""

    id = models.CharField(primary_key=True, max_length=32, editable=False)
    namespace = models.CharField(max_length=64, default="default")
    name = models.CharField(max_length=64)
    key = models.JSONField(default=list, help_text=_("The actor's key, a list of strings."))
    # sha256 of (namespace, name, key). NULL once destroyed, which frees the key.
    key_hash = models.CharField(max_length=64, unique=True, null=True, editable=False)
    input = models.BinaryField(null=True, editable=False, help_text=_("CBOR of the creation input."))
    state = models.BinaryField(null=True, editable=False, help_text=_("CBOR of the durable state."))
    # create_state/on_create have run and their state is committed.
    initialized = models.BooleanField(default=False)
    status = models.CharField(max_length=16, choices=ActorStatus.choices, default=ActorStatus.SLEEPING)
    node = models.CharField(max_length=128, null=True, blank=True, help_text=_("Owning node while awake."))
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    # Fencing token: bumped on every claim; every state write is conditional on it.
    generation = models.BigIntegerField(default=0)
    inspector_token = models.CharField(max_length=64, blank=True, default="", editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    last_active_at = models.DateTimeField(null=True, blank=True)
    slept_at = models.DateTimeField(null=True, blank=True)
    destroyed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            models.Index(fields=["namespace", "name"], name="rivet_actor_ns_name"),
            models.Index(fields=["node", "status"], name="rivet_actor_node_status"),
        ]
        verbose_name = _("actor")
        verbose_name_plural = _("actors")

    def __str__(self) -> str:
        return f"{self.name}{self.key} ({self.id})"

    @property
    def state_size(self) -> int:
        return len(self.state or b"")


class ActorKV(models.Model):
    """One entry of an actor's key-value store (``self.kv``)."""

    actor = models.ForeignKey(Actor, on_delete=models.CASCADE, related_name="kv_entries")
    key = models.BinaryField()
    value = models.BinaryField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["actor", "key"], name="rivet_actorkv_unique_key")]
        verbose_name = _("actor KV entry")
        verbose_name_plural = _("actor KV entries")

    def __str__(self) -> str:
        return f"{self.actor_id}:{bytes(self.key)!r}"


class ActorDatabaseSegment(models.Model):
    """A piece of an actor's own SQLite database (``self.db``) on the shared backend: a
    snapshot of the file (``base``) or WAL frames committed on the owning node (``wal``),
    each at a byte offset of its epoch (an epoch is one WAL file, from its header on)."""

    actor = models.ForeignKey(Actor, on_delete=models.CASCADE, related_name="database_segments")
    kind = models.CharField(max_length=4, choices=[("base", "base"), ("wal", "wal")])
    epoch = models.IntegerField()
    offset = models.BigIntegerField()
    #: ``offset`` + the length of ``data``.
    end = models.BigIntegerField()
    data = models.BinaryField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["actor", "kind", "epoch", "offset"], name="rivet_dbsegment_unique")
        ]
        verbose_name = _("actor database segment")
        verbose_name_plural = _("actor database segments")

    def __str__(self) -> str:
        return f"{self.actor_id} {self.kind} {self.epoch}@{self.offset}"


class Node(models.Model):
    """A runtime process (``runactors``) hosting actors."""

    id = models.CharField(primary_key=True, max_length=128)
    address = models.CharField(max_length=255, blank=True, default="")
    version = models.CharField(max_length=32, blank=True, default="")
    started_at = models.DateTimeField(auto_now_add=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = _("node")
        verbose_name_plural = _("nodes")

    def __str__(self) -> str:
        return self.id


class ScheduleKind(models.TextChoices):
    AT = "at", _("one-shot")
    CRON = "cron", _("cron")
    EVERY = "every", _("interval")


class MisfirePolicy(models.TextChoices):
    RUN_ONCE = "run_once", _("run once")
    SKIP = "skip", _("skip")
    RUN_ALL = "run_all", _("run all (bounded)")


class ActorSchedule(models.Model):
    """A scheduled action call of an actor: one-shot (``at``/``after``), cron or interval."""

    id = models.CharField(primary_key=True, max_length=32, editable=False)
    actor = models.ForeignKey(Actor, on_delete=models.CASCADE, related_name="schedules")
    # Named schedules (cron/every) are unique per actor; one-shots have no name.
    name = models.CharField(max_length=128, null=True, blank=True)
    kind = models.CharField(max_length=8, choices=ScheduleKind.choices)
    action = models.CharField(max_length=128)
    args = models.BinaryField(help_text=_("CBOR of the action's arguments."))
    due_at = models.DateTimeField(db_index=True)
    cron = models.CharField(max_length=128, blank=True, default="")
    tz = models.CharField(max_length=64, blank=True, default="")
    interval = models.FloatField(null=True, blank=True, help_text=_("Seconds, for interval schedules."))
    misfire = models.CharField(max_length=16, choices=MisfirePolicy.choices, default=MisfirePolicy.RUN_ONCE)
    attempts = models.IntegerField(default=0, help_text=_("Failed attempts of the current run."))
    max_attempts = models.IntegerField(default=5)
    last_error = models.TextField(blank=True, default="")
    # A dispatcher (embedded loop or Celery task) holds a due schedule until this time.
    locked_until = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_run_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["actor", "name"], name="rivet_schedule_unique_name"),
        ]
        verbose_name = _("actor schedule")
        verbose_name_plural = _("actor schedules")

    def __str__(self) -> str:
        return f"{self.actor_id}:{self.name or self.id} {self.action} @ {self.due_at}"


class ActorQueueMessage(models.Model):
    """A message in an actor's durable queue; it leaves storage only when completed."""

    id = models.BigAutoField(primary_key=True)
    actor = models.ForeignKey(Actor, on_delete=models.CASCADE, related_name="queue_messages")
    name = models.CharField(max_length=128)
    body = models.BinaryField(help_text=_("CBOR of the message body."))
    created_at = models.DateTimeField(auto_now_add=True)
    # Times the message was handed to a consumer (redelivered after a crash).
    attempts = models.IntegerField(default=0)
    # A sender waits for the completion (``wait=True``).
    waiting = models.BooleanField(default=False)
    completed_at = models.DateTimeField(null=True, blank=True)
    response = models.BinaryField(null=True, blank=True, help_text=_("CBOR of the completion response."))

    class Meta:
        indexes = [models.Index(fields=["actor", "name", "id"], name="rivet_queue_actor_name_id")]
        verbose_name = _("actor queue message")
        verbose_name_plural = _("actor queue messages")

    def __str__(self) -> str:
        return f"{self.actor_id}:{self.name}#{self.id}"


class WorkflowEntry(models.Model):
    """One recorded entry of an actor's workflow history (a step, loop, sleep, queue wait...)."""

    id = models.BigAutoField(primary_key=True)
    actor = models.ForeignKey(Actor, on_delete=models.CASCADE, related_name="workflow_entries")
    # Path of the entry in the workflow, e.g. "task-loop/3/process".
    location = models.CharField(max_length=512)
    kind = models.CharField(max_length=16)
    status = models.CharField(max_length=16, default="completed")
    output = models.BinaryField(null=True, blank=True, help_text=_("CBOR of the recorded result."))
    error = models.TextField(blank=True, default="")
    attempts = models.IntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["actor", "location"], name="rivet_workflow_unique_location")]
        verbose_name = _("workflow entry")
        verbose_name_plural = _("workflow entries")

    def __str__(self) -> str:
        return f"{self.actor_id}:{self.location} ({self.kind}, {self.status})"
