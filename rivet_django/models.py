"""Durable storage of actors: records, key-value entries and nodes.

State is stored as CBOR bytes (see :mod:`rivet_django.protocol`). The runtime
never touches these models directly: it goes through
:class:`rivet_django.storage.store.DjangoActorStore`.
"""

from __future__ import annotations

from django.db import models
from django.utils.translation import gettext_lazy as _

__all__ = ["Actor", "ActorKV", "ActorStatus", "Node"]


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
