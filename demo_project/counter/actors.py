"""The demo counter (API.md) and a few actors showing the foundation's features."""

from rivet_django import Actor, UserError, action


class Counter(Actor):
    """Registered as "counter"."""

    state = {"count": 0}

    def create_state(self, input):
        start = (input or {}).get("start", 0) if isinstance(input, dict) else 0
        return {"count": start, "input": input}

    @action
    def increment(self, amount: int = 1) -> int:
        self.state["count"] += amount
        self.broadcast("count", self.state["count"])
        return self.state["count"]

    @action(name="getCount")
    async def get_count(self) -> int:
        return self.state["count"]

    @action(name="getInput")
    def get_input(self):
        return self.state.get("input")

    @action
    def fail(self, code: str = "counter_error"):
        raise UserError("Counting failed on purpose", code=code, metadata={"count": self.state["count"]})

    @action
    def crash(self):
        raise RuntimeError("secret internal detail")

    @action
    def echo(self, *values):
        return list(values)

    def on_request(self, request):
        """Raw HTTP: ``GET .../request/count`` answers the count as JSON."""
        from django.http import JsonResponse

        if request.path == "/count":
            return JsonResponse({"count": self.state["count"], "method": request.method})
        return JsonResponse({"error": "not found", "path": request.path}, status=404)

    async def on_websocket(self, ws):
        """Raw WebSocket: echoes messages; ``"count"`` answers the current count."""
        await ws.send(f"welcome {ws.path}")
        async for message in ws:
            await ws.send(str(self.state["count"]) if message == "count" else message)
