"""Admission control: at most N syntheses run, at most Q wait, nobody waits forever."""

import asyncio
import contextlib
import time

from chatterbox_server.errors import TTSError


class QueueFullError(TTSError):
    """More requests are waiting than the queue holds (HTTP 429)."""


class QueueTimeoutError(TTSError):
    """A request waited longer than the queue timeout for a slot (HTTP 503)."""


class ShuttingDownError(TTSError):
    """The server is draining and admits nothing new (HTTP 503)."""


class Admission:
    """An asyncio semaphore of `max_running` slots in front of a bounded, timed wait queue.

    Lives on one event loop; counters are plain ints because only that loop touches them.
    """

    def __init__(self, max_running: int, max_queue: int, queue_timeout_s: float, metrics=None, kind: str = ""):
        """kind: "" for synthesis (its queue gauge and wait histogram); another name (e.g.
        "encode") only counts its rejections, as reason "<kind>_queue_full" and so on."""
        self._slots = asyncio.Semaphore(max_running)
        self.kind = kind
        self.max_running = max_running
        self.max_queue = max_queue
        self.queue_timeout_s = queue_timeout_s
        self.running = 0
        self.queued = 0
        self.draining = False
        self._idle = asyncio.Event()
        self._idle.set()
        self._metrics = metrics

    @contextlib.asynccontextmanager
    async def slot(self):
        """Hold one synthesis slot for the body of the `async with`."""
        if self.draining:
            raise ShuttingDownError("server is shutting down")
        # Count holders and waiters together, with no await between the check and the increment:
        # a burst arriving in one tick sees every request before it (the semaphore alone does not,
        # since none of them has acquired it yet).
        if self.full:
            raise self.refuse_full()
        self.queued += 1
        self._gauge()
        waited_from = time.perf_counter()
        try:
            await asyncio.wait_for(self._slots.acquire(), timeout=self.queue_timeout_s)
        except asyncio.TimeoutError:
            self._reject("queue_timeout")
            raise QueueTimeoutError(f"no {self.kind or 'synthesis'} slot within {self.queue_timeout_s:g} s") from None
        finally:
            self.queued -= 1
            self._gauge()
        if self.draining:  # the drain began while this request waited: turn it away, never start it
            self._slots.release()
            raise ShuttingDownError("server is shutting down")
        if self._metrics is not None and not self.kind:
            self._metrics.queue_wait.observe(time.perf_counter() - waited_from)
        self.running += 1
        self._idle.clear()
        try:
            yield
        finally:
            self.running -= 1
            self._slots.release()
            if self.running == 0:
                self._idle.set()

    @property
    def full(self) -> bool:
        """Every slot held and every queue place taken: a request arriving now is refused."""
        return self.running + self.queued >= self.max_running + self.max_queue

    def refuse_full(self) -> QueueFullError:
        """Count a refusal for a full queue and return its error (slot() raises it; the pre-check
        that answers before a body is read sends it)."""
        self._reject("queue_full")
        what = f"{self.kind} requests" if self.kind else "requests"
        return QueueFullError(f"server busy: {self.running} {what} running and {self.queued} waiting")

    async def drain(self, grace_s: float) -> bool:
        """Stop admitting; wait up to grace_s for running work. True if everything finished."""
        self.draining = True
        try:
            await asyncio.wait_for(self._idle.wait(), timeout=grace_s)
            return True
        except asyncio.TimeoutError:
            return False

    def _reject(self, reason: str) -> None:
        if self._metrics is not None:
            self._metrics.rejected.labels(reason=f"{self.kind}_{reason}" if self.kind else reason).inc()

    def _gauge(self) -> None:
        if self._metrics is not None and not self.kind:
            self._metrics.set_queued(self.queued)
