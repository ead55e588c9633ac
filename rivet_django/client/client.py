"""The entry points: :class:`AsyncClient` and its blocking twin :class:`Client`.

::

    async with AsyncClient("http://127.0.0.1:8000/api/rivet") as client:
        counter = client.counter.get_or_create(["my-counter"])
        await counter.increment(5)

    with Client("http://127.0.0.1:8000/api/rivet") as client:
        client.counter.get_or_create(["my-counter"]).increment(5)

``client.<name>``, ``client["<name>"]`` and ``client.actor("<name>")`` give the
accessor for actors registered under ``<name>`` (the item form for names that
clash with client methods, e.g. ``client["actor"]``).
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping
from types import TracebackType
from typing import Self

import httpx

from .handle import ActorAccessor, SyncActorAccessor
from .loop import LoopThread
from .transport import DEFAULT_TIMEOUT, HttpTransport, Transport

__all__ = ["AsyncClient", "Client"]


def _build_transport(
    endpoint: str | None,
    transport: Transport | None,
    namespace: str,
    encoding: str,
    headers: Mapping[str, str] | None,
    timeout: float | httpx.Timeout | None,
) -> Transport:
    if transport is not None:
        if endpoint is not None:
            raise TypeError("pass either an endpoint or a transport, not both")
        return transport
    if endpoint is None:
        raise TypeError("an endpoint is required (or a transport, or use .local())")
    return HttpTransport(endpoint, namespace, encoding, headers, timeout)


def _local_transport(namespace: str | None) -> Transport:
    from .local import LocalTransport

    return LocalTransport(namespace=namespace)


class AsyncClient:
    """Reaches actors from asyncio code, over HTTP or any other :class:`Transport`."""

    def __init__(
        self,
        endpoint: str | None = None,
        *,
        namespace: str = "default",
        encoding: str = "bare",
        headers: Mapping[str, str] | None = None,
        timeout: float | httpx.Timeout | None = DEFAULT_TIMEOUT,
        transport: Transport | None = None,
    ) -> None:
        self._transport = _build_transport(
            endpoint, transport, namespace, encoding, headers, timeout
        )
        self._closed = False

    @classmethod
    def local(cls, *, namespace: str | None = None) -> Self:
        """A client that calls the actors of this Django project in-process, without HTTP."""
        return cls(transport=_local_transport(namespace))

    @property
    def transport(self) -> Transport:
        """How this client's calls travel."""
        return self._transport

    def actor(self, name: str) -> ActorAccessor:
        """The accessor for actors registered under ``name``."""
        return ActorAccessor(self._transport, name)

    def __getitem__(self, name: str) -> ActorAccessor:
        return self.actor(name)

    def __getattr__(self, name: str) -> ActorAccessor:
        # Only reached for names the class does not define: those are actor names.
        if name.startswith("_"):
            raise AttributeError(name)
        return self.actor(name)

    async def aclose(self) -> None:
        """Dispose the connections opened through this client, then close the transport; idempotent."""
        if not self._closed:
            self._closed = True
            try:
                for connection in list(self._transport.connections):
                    await connection.dispose()
            finally:
                await self._transport.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"<AsyncClient {self._transport!r}>"


class Client:
    """The blocking client: :class:`AsyncClient` run on a private loop in a daemon thread.

    Safe to use from plain scripts, Django sync views and worker threads of a
    running event loop; not from that private loop itself. Close it with
    :meth:`close` or a ``with`` block.
    """

    def __init__(
        self,
        endpoint: str | None = None,
        *,
        namespace: str = "default",
        encoding: str = "bare",
        headers: Mapping[str, str] | None = None,
        timeout: float | httpx.Timeout | None = DEFAULT_TIMEOUT,
        transport: Transport | None = None,
    ) -> None:
        # Build (and validate) the async client first, so a bad argument leaves no thread behind.
        self._async = AsyncClient(
            endpoint,
            namespace=namespace,
            encoding=encoding,
            headers=headers,
            timeout=timeout,
            transport=transport,
        )
        self._runner = LoopThread()
        # A forgotten client still ends its thread when it is garbage collected.
        self._finalizer = weakref.finalize(self, self._runner.stop)

    @classmethod
    def local(cls, *, namespace: str | None = None) -> Self:
        """A client that calls the actors of this Django project in-process, without HTTP."""
        return cls(transport=_local_transport(namespace))

    @property
    def async_client(self) -> AsyncClient:
        """The wrapped :class:`AsyncClient` (only usable on this client's loop)."""
        return self._async

    @property
    def transport(self) -> Transport:
        """How this client's calls travel."""
        return self._async.transport

    def actor(self, name: str) -> SyncActorAccessor:
        """The accessor for actors registered under ``name``."""
        return SyncActorAccessor(self._async.actor(name), self._runner, self)

    def __getitem__(self, name: str) -> SyncActorAccessor:
        return self.actor(name)

    def __getattr__(self, name: str) -> SyncActorAccessor:
        if name.startswith("_"):
            raise AttributeError(name)
        return self.actor(name)

    def close(self) -> None:
        """Close the transport and stop the private loop; idempotent."""
        if self._runner.closed:
            return
        try:
            self._runner.run(self._async.aclose())
        finally:
            self._finalizer()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Client {self._async.transport!r}>"
