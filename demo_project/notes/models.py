"""A user's notes: ordinary Django models whose rows live in each notebook actor's own
database (``RIVET["DB_APPS"] = ["notes"]`` and ``ActorDatabaseRouter``), never in the
project's database."""

from django.db import models
from django.utils import timezone


class Note(models.Model):
    text = models.CharField(max_length=500)
    done = models.BooleanField(default=False)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["id"]

    def as_dict(self) -> dict:
        return {"id": self.pk, "text": self.text, "done": self.done, "created_at": self.created_at.isoformat()}


class Tag(models.Model):
    note = models.ForeignKey(Note, related_name="tags", on_delete=models.CASCADE)
    name = models.SlugField(max_length=50)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["note", "name"], name="notes_tag_once_per_note")]
