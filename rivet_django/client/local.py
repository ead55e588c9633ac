"""In-process transport for ``Client.local()`` / ``AsyncClient.local()``.

Calls go straight to this process's actor router (no HTTP, no encoding). When
the caller's event loop is not the runtime's (the sync ``Client`` runs its own
loop thread), each call is handed over to the runtime's loop. A process with no
running node (a script, a WSGI worker) starts one on a background loop thread.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import httpx

from ..exceptions import INTERNAL_ERROR_MESSAGE, PublicError
from .errors import ActorError
from .transport import ActorQuery, Transport

if TYPE_CHECKING:
    from ..node import LocalNode

__all__ = ["LocalTransport"]

T = TypeVar("T")

_background_lock = threading.Lock()


class LocalTransport(Transport):
    """Routes client calls to this project's actor runtime without HTTP."""

    def __init__(self, *, namespace: str | None = None, node: LocalNode | None = None) -> None:
        self._namespace = namespace
        self._fixed_node = node

    @property
    def namespace(self) -> str:
        if self._namespace is None:
            from ..conf import rivet_settings

            return str(rivet_settings.NAMESPACE)
        return self._namespace

    async def _run(self, call: Callable[[LocalNode], Awaitable[T]]) -> T:
        node = self._fixed_node or await _current_node()
        try:
            loop = asyncio.get_running_loop()
            if node.loop is None or node.loop is loop:
                return await call(node)
            future = asyncio.run_coroutine_threadsafe(_awaitable(call, node), node.loop)
            return await asyncio.wrap_future(future)
        except PublicError as exc:
            raise ActorError(exc.group, exc.code, exc.message, exc.metadata) from exc
        except ActorError:
            raise
        except Exception as exc:
            raise ActorError("actor", "internal_error", INTERNAL_ERROR_MESSAGE) from exc

    async def _resolve(self, node: LocalNode, query: ActorQuery) -> str:
        if query.method == "id":
            if not query.actor_id:
                raise ActorError("actor", "invalid_request", "Missing actor id")
            record = await node.router.get_by_id(query.actor_id)
            if record is None or record.name != query.name:
                raise ActorError("actor", "not_found", f"Actor {query.actor_id} not found")
            return record.actor_id
        return await node.router.resolve(
            namespace=self.namespace,
            method=query.method,
            name=query.name,
            key=query.key or (),
            input=query.input if query.has_input else None,
        )

    async def create(self, name: str, key: Sequence[str], input: Any = None, has_input: bool = False) -> str:
        async def call(node: LocalNode) -> str:
            record = await node.router.create(self.namespace, name, list(key), input if has_input else None)
            return record.actor_id

        return await self._run(call)

    async def resolve(self, query: ActorQuery) -> str:
        return await self._run(lambda node: self._resolve(node, query))

    async def call_action(self, query: ActorQuery, name: str, args: list[Any], params: Any = None) -> Any:
        async def call(node: LocalNode) -> Any:
            actor_id = await self._resolve(node, query)
            return await node.router.call_action(actor_id, name, list(args), params=params)

        return await self._run(call)

    async def send_queue(
        self, query: ActorQuery, name: str, body: Any, wait: bool, timeout: float | None, params: Any = None
    ) -> dict[str, Any]:
        raise ActorError("feature", "unsupported", "Queues arrive with the durable background work issue")

    async def destroy(self, actor_id: str) -> None:
        async def call(node: LocalNode) -> None:
            await node.router.destroy(actor_id)

        await self._run(call)

    async def fetch(
        self,
        query: ActorQuery,
        path: str,
        method: str = "GET",
        headers: Mapping[str, str] | None = None,
        body: bytes | None = None,
        params: Any = None,
    ) -> httpx.Response:
        raise ActorError("feature", "unsupported", "Raw requests through the local client are not supported yet")

    async def close(self) -> None:
        """Nothing to release: the node outlives its clients."""


async def _awaitable(call: Callable[[LocalNode], Awaitable[T]], node: LocalNode) -> T:
    return await call(node)


async def _current_node() -> LocalNode:
    """This process's running node; started on a background loop thread if there is none."""
    from ..node import get_node

    node = get_node()
    if node is not None and node.runtime.started and node.loop is not None and not node.loop.is_closed():
        return node
    with _background_lock:
        node = get_node()
        if node is not None and node.runtime.started and node.loop is not None and not node.loop.is_closed():
            return node
        return _start_background_node()


def _start_background_node() -> LocalNode:
    from ..node import LocalNode, set_node

    loop = asyncio.new_event_loop()
    ready = threading.Event()
    holder: dict[str, Any] = {}

    def run() -> None:
        asyncio.set_event_loop(loop)
        node = LocalNode()
        holder["node"] = node

        async def boot() -> None:
            try:
                await node.start()
            except BaseException as exc:  # pragma: no cover - surfaced to the caller below
                holder["error"] = exc
            ready.set()

        loop.run_until_complete(boot())
        if "error" not in holder:
            loop.run_forever()

    threading.Thread(target=run, name="rivet-local-node", daemon=True).start()
    ready.wait(timeout=30)
    if "error" in holder:
        raise holder["error"]
    node = holder["node"]
    set_node(node)
    return node
