"""Where a request's audio goes: a per-request mailbox with a non-blocking `put` from the engine's
threads, read synchronously (scripts, tests) or asynchronously (the server). An error travels
through it like an output; after `finish`, later puts are dropped."""

import asyncio
import contextlib
import queue
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")

_DONE = object()


class OutputSink(Generic[T]):
    """The engine side: `put(item)` any number of times, then `finish(error or None)` once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._finished = False

    def put(self, item: T) -> None:
        with self._lock:
            if self._finished:
                return
        self._deliver(item)

    def finish(self, error: BaseException | None = None) -> None:
        with self._lock:
            if self._finished:
                return
            self._finished = True
        self._deliver(_DONE if error is None else error)

    @property
    def finished(self) -> bool:
        return self._finished

    def _deliver(self, item: object) -> None:
        raise NotImplementedError


class SyncOutputs(OutputSink[T]):
    """Read with a plain iterator, blocking between items."""

    def __init__(self) -> None:
        super().__init__()
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()

    def _deliver(self, item: object) -> None:
        self._queue.put(item)

    def __iter__(self) -> Iterator[T]:
        while True:
            item = self._queue.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item  # type: ignore[misc]


class AsyncOutputs(OutputSink[T]):
    """Read with `async for` on the event loop that created it; puts come from any thread."""

    def __init__(self) -> None:
        super().__init__()
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[object] = asyncio.Queue()

    def _deliver(self, item: object) -> None:
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody is listening any more
            self._loop.call_soon_threadsafe(self._queue.put_nowait, item)

    async def __aiter__(self) -> AsyncIterator[T]:
        while True:
            item = await self._queue.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item  # type: ignore[misc]
