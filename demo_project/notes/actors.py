"""``notebook``: one per user (key ``[username]``); each keeps its notes in its own SQLite
database, through the Django models of ``notes/models.py``.

``on_migrate`` runs the app's Django migrations against the notebook's database (one
query when they are applied already); actions use the ORM inside ``await self.db.run(fn)``,
which runs ``fn`` on the database's thread in one transaction, committed before the
action replies.
"""

from django.db.models import Count, Q

from rivet_django import Actor, UserError, action

from .models import Note, Tag


class Notebook(Actor):
    async def on_migrate(self, db):
        await db.migrate_models("notes")

    @action
    async def add(self, text: str, tags: list[str] | None = None) -> dict:
        text = (text or "").strip()
        if not text:
            raise UserError("A note needs some text", code="empty_note")

        def create() -> dict:
            note = Note.objects.create(text=text)
            Tag.objects.bulk_create([Tag(note=note, name=name) for name in tags or []])
            return note.as_dict()

        return await self.db.run(create)

    @action
    async def notes(self, tag: str | None = None) -> list[dict]:
        def query() -> list[dict]:
            notes = Note.objects.prefetch_related("tags")
            if tag:
                notes = notes.filter(tags__name=tag)
            return [{**note.as_dict(), "tags": [t.name for t in note.tags.all()]} for note in notes]

        return await self.db.run(query)

    @action
    async def complete(self, note_id: int) -> dict:
        def mark() -> dict:
            if not Note.objects.filter(pk=note_id).update(done=True):
                raise UserError(f"No note {note_id}", code="no_such_note")
            return Note.objects.get(pk=note_id).as_dict()

        return await self.db.run(mark)

    @action
    async def stats(self) -> dict:
        def count() -> dict:
            return Note.objects.aggregate(total=Count("id"), done=Count("id", filter=Q(done=True)))

        return await self.db.run(count)

    @action
    async def search(self, words: str) -> list[str]:
        """Raw SQL beside the ORM: same database, same connection."""
        rows = await self.db.execute("SELECT text FROM notes_note WHERE text LIKE ? ORDER BY id", f"%{words}%")
        return [row["text"] for row in rows]
