"""An asyncio event loop in a daemon thread, for callers that run a grpc.aio server next to blocking
code (benchmarks and tests): ``run(coro)`` schedules a coroutine on the loop and waits for it."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["LoopThread"]

T = TypeVar("T")


class LoopThread:
    """An asyncio loop in a daemon thread; ``run(coro)`` waits for a coroutine scheduled on it.

    Example::

        loop = LoopThread()
        server = loop.run(start_server(config))   # the server lives on the loop's thread
        ...                                        # blocking calls against it from this thread
        loop.run(server.stop(None)); loop.close()
    """

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="server-loop", daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 300) -> T:
        """Run ``coro`` on the loop and return its result (``TimeoutError`` after ``timeout`` s)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        """Stop the loop, join its thread and close it."""
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()
