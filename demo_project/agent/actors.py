"""The demo agent: a queue of prompts and a ``run`` loop that streams tokens as events.

    h = client.agent.get_or_create(["helper"])
    conn = h.connect()
    conn.on("token", lambda t: print(t["token"], end=" "))
    conn.on("done", lambda d: print("\\n", d["text"]))
    conn.ask("tell me about durable actors")

The token source is a local, deterministic generator (no network, no model):
the same prompt always streams the same reply. Prompts wait in the durable
``prompts`` queue, so a prompt sent while the actor sleeps, or during a
restart, is answered when it wakes; each answer is kept in ``history``.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
from collections.abc import Iterator

from rivet_django import Actor, UserError, action, event, queue

#: Answers kept in the state.
KEEP = 20

_TEXT = (
    "actors keep their state close to the code and wake on demand while queues hold the work "
    "durably until someone is ready to take it and every step is recorded so nothing runs twice "
    "after a crash the workflow replays its history and carries on exactly where it stopped"
)
VOCABULARY = _TEXT.split()


def generate(prompt: str, max_tokens: int = 24) -> Iterator[str]:
    """Tokens of the reply to ``prompt``: seeded by the prompt, so always the same."""
    seed = int.from_bytes(hashlib.sha256(prompt.encode()).digest()[:8], "big")
    rng = random.Random(seed)
    count = 8 + seed % (max_tokens - 7)
    for _ in range(count):
        yield rng.choice(VOCABULARY)


class Agent(Actor):
    """Registered as "agent"."""

    state = {"history": [], "answered": 0}
    queues = {"prompts": queue(max_size=100)}
    events = {"token": event(), "done": event()}

    #: Seconds between two streamed tokens (a real model's pace, roughly).
    token_delay = 0.03

    async def run(self) -> None:
        async for message in self.queue.iter("prompts", completable=True):
            prompt = str(message.body.get("prompt", ""))
            tokens: list[str] = []
            for token in generate(prompt):
                tokens.append(token)
                self.broadcast("token", {"id": message.id, "index": len(tokens) - 1, "token": token})
                await asyncio.sleep(self.token_delay)
                if self.aborted:
                    return  # stopping: the prompt (not completed) goes back to the queue for the next wake
            text = " ".join(tokens)
            self.state["history"] = [*self.state["history"], {"id": message.id, "prompt": prompt, "text": text}][
                -KEEP:
            ]
            self.state["answered"] += 1
            self.broadcast("done", {"id": message.id, "prompt": prompt, "text": text, "tokens": len(tokens)})
            # Answers a sender that waits (``h.queue.send("prompts", ..., wait=True)``) too.
            await message.complete({"text": text})

    @action
    async def ask(self, prompt: str) -> int:
        """Queue a prompt; its tokens stream as ``token`` events, then ``done``. Returns the prompt's id."""
        if not isinstance(prompt, str) or not prompt.strip():
            raise UserError("prompt must be a non-empty string", code="invalid_prompt")
        return await self.queue.send("prompts", {"prompt": prompt})

    @action
    def history(self) -> list[dict]:
        return self.state["history"]
