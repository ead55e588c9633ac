"""A private event loop in a daemon thread, so synchronous code can run the async client."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from concurrent.futures import Future
from typing import Any, TypeVar

__all__ = ["LoopThread"]

T = TypeVar("T")


class LoopThread:
    """Runs coroutines on an event loop owned by a daemon thread.

    Calls block the calling thread until the coroutine finishes, so they work
    from plain scripts, Django sync views and thread-pool workers of another
    running loop alike. The one place they cannot work is the loop's own
    thread (it would wait on itself), which raises ``RuntimeError``.
    """

    def __init__(self, name: str = "rivet-client-loop") -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._run_forever, name=name, daemon=True
        )
        self._lock = threading.Lock()
        self._stopped = False
        self._thread.start()

    def _run_forever(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_forever()
        finally:
            self._loop.run_until_complete(self._loop.shutdown_asyncgens())
            self._loop.close()

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The owned event loop."""
        return self._loop

    @property
    def closed(self) -> bool:
        """Whether :meth:`stop` has been called."""
        return self._stopped

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the owned loop and return its result (or raise its exception)."""
        if self._stopped:
            coro.close()
            raise RuntimeError("the client is closed")
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError(
                "the synchronous Client cannot be called from its own event loop; use AsyncClient"
            )
        future: Future[T] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result()
        except BaseException:
            # KeyboardInterrupt & co.: don't leave the call running behind our back.
            future.cancel()
            raise

    def in_loop_thread(self) -> bool:
        """Whether the caller runs on the owned loop's thread."""
        return threading.current_thread() is self._thread

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run the plain function ``fn(*args)`` on the owned loop and return its result.

        Unlike :meth:`run` this works from the loop's own thread too (it then
        calls ``fn`` directly), so callbacks running there may use it.
        """
        if self._stopped:
            raise RuntimeError("the client is closed")
        if self.in_loop_thread():
            return fn(*args)
        future: Future[T] = Future()

        def run() -> None:
            if not future.set_running_or_notify_cancel():
                return
            try:
                future.set_result(fn(*args))
            except BaseException as exc:
                future.set_exception(exc)

        self._loop.call_soon_threadsafe(run)
        return future.result()

    def stop(self) -> None:
        """Stop the loop and wait for its thread to end; idempotent."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            if threading.current_thread() is not self._thread:
                self._thread.join()
