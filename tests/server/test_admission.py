"""Admission control, deterministically: the event loop is driven by hand, no sleeps or timing."""

import asyncio

import pytest

from chatterbox_server.server.admission import Admission, QueueFullError, QueueTimeoutError, ShuttingDownError


async def burst(admission: Admission, size: int, release: asyncio.Event) -> tuple[list[asyncio.Task], int]:
    """Start `size` requests in one tick; each holds its slot until `release`. Returns the tasks
    and how many were refused at once (before any slot was released)."""

    async def request() -> str:
        async with admission.slot():
            await release.wait()
        return "done"

    tasks = [asyncio.create_task(request()) for _ in range(size)]
    for _ in range(5):  # let every task reach its first await
        await asyncio.sleep(0)
    refused = sum(1 for t in tasks if t.done() and isinstance(t.exception(), QueueFullError))
    return tasks, refused


@pytest.mark.parametrize("size", [4, 5, 12, 16, 64])
def test_a_burst_admits_at_most_slots_plus_queue_and_refuses_the_rest_at_once(size):
    async def main():
        admission = Admission(max_running=2, max_queue=2, queue_timeout_s=60)
        release = asyncio.Event()
        tasks, refused = await burst(admission, size, release)
        assert refused == max(0, size - 4)
        assert (admission.running, admission.queued) == (min(size, 2), min(max(size - 2, 0), 2))
        release.set()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert results.count("done") == min(size, 4)
        assert (admission.running, admission.queued) == (0, 0)

    asyncio.run(main())


def test_waiters_get_slots_in_turn_and_the_queue_refills():
    async def main():
        admission = Admission(max_running=1, max_queue=1, queue_timeout_s=60)
        release = asyncio.Event()
        tasks, refused = await burst(admission, 3, release)
        assert refused == 1
        release.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        # with everything finished the full capacity is available again
        tasks, refused = await burst(admission, 2, asyncio.Event())
        assert refused == 0 and (admission.running, admission.queued) == (1, 1)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        assert (admission.running, admission.queued) == (0, 0)

    asyncio.run(main())


def test_queue_timeout_and_draining():
    async def main():
        admission = Admission(max_running=1, max_queue=1, queue_timeout_s=0.01)
        release = asyncio.Event()
        holder = asyncio.create_task(_hold(admission, release))
        await asyncio.sleep(0)
        with pytest.raises(QueueTimeoutError):
            async with admission.slot():
                pass
        assert admission.queued == 0
        release.set()
        await holder
        assert await admission.drain(1.0)
        with pytest.raises(ShuttingDownError):
            async with admission.slot():
                pass

    asyncio.run(main())


async def _hold(admission: Admission, release: asyncio.Event) -> None:
    async with admission.slot():
        await release.wait()
