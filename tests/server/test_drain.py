"""Graceful drain: on SIGTERM readiness turns 503 at once, the listener stays open, new work gets
503 + Retry-After, work in flight finishes, and the process exits 0."""

import asyncio
import signal
import subprocess
import time
from types import SimpleNamespace

import httpx
import pytest

from chatterbox_server.benchmark.server_process import ServerProcess
from chatterbox_server.server.admission import Admission, ShuttingDownError
from chatterbox_server.server.drain import drain
from tests.support import LONG_PIECE, decode_wav

FRAME_SAMPLES = 960  # samples per speech token at 24 kHz


def fake_state() -> SimpleNamespace:
    return SimpleNamespace(
        ready=True,
        draining=False,
        admission=Admission(2, 2, 10.0),
        encodes=Admission(1, 1, 10.0, kind="encode"),
    )


async def until(condition) -> None:
    """Let the loop run until `condition()` holds (no clock involved)."""
    while not condition():
        await asyncio.sleep(0)


def test_drain_refuses_new_work_at_once_and_waits_for_running_work():
    async def scenario():
        state = fake_state()
        release = asyncio.Event()

        async def in_flight(admission):
            async with admission.slot():
                await release.wait()

        running = [asyncio.create_task(in_flight(state.admission)), asyncio.create_task(in_flight(state.encodes))]
        await until(lambda: state.admission.running == 1 and state.encodes.running == 1)
        draining = asyncio.create_task(drain(state, grace_s=10.0))
        await asyncio.sleep(0)
        assert (state.ready, state.draining) == (False, True)  # before anything finished
        for admission in (state.admission, state.encodes):
            with pytest.raises(ShuttingDownError):
                async with admission.slot():
                    pass
        assert not draining.done()  # both kinds of work still in flight
        release.set()
        assert await draining is True
        await asyncio.gather(*running)

    asyncio.run(scenario())


def test_a_request_queued_when_the_drain_begins_is_turned_away_not_started():
    async def scenario():
        state = fake_state()
        release = asyncio.Event()
        started = []

        async def request(name):
            async with state.admission.slot():
                started.append(name)
                await release.wait()

        tasks = [asyncio.create_task(request(n)) for n in ("a", "b", "queued")]
        await until(lambda: state.admission.running == 2 and state.admission.queued == 1)
        draining = asyncio.create_task(drain(state, grace_s=10.0))
        await asyncio.sleep(0)
        release.set()
        assert await draining is True
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert started == ["a", "b"]
        assert isinstance(results[2], ShuttingDownError)

    asyncio.run(scenario())


def test_drain_gives_up_after_the_grace_period():
    async def scenario():
        state = fake_state()
        forever = asyncio.Event()

        async def stuck():
            async with state.admission.slot():
                await forever.wait()

        task = asyncio.create_task(stuck())
        await until(lambda: state.admission.running == 1)
        assert await drain(state, grace_s=0.05) is False
        task.cancel()

    asyncio.run(scenario())


@pytest.mark.slow
def test_sigterm_drains_a_live_stream_and_exits_zero(model_dir, tmp_path, voice_a):
    server = ServerProcess(model_dir, tmp_path / "voices", tmp_path / "log", warmup="false", shutdown_grace_s=30)
    form = {"text": LONG_PIECE, "voice_id": "v", "max_new_tokens": "150", "seed": "7"}
    with server.client() as c, httpx.Client(base_url=server.url, timeout=60) as other:
        with open(voice_a, "rb") as f:
            assert c.post("/voices/register", files={"voice_file": ("v", f)}, data={"voice_id": "v"}).is_success
        whole = c.post("/tts", data={**form, "stream": "false"})
        with c.stream("POST", "/tts", data=form) as stream:
            chunks = stream.iter_bytes()
            received = [next(chunks)]  # the stream is live; it cannot end before we read it
            server.terminate()
            deadline = time.monotonic() + 10
            while (ready := other.get("/health/ready")).status_code != 503:
                assert time.monotonic() < deadline, "readiness never turned 503"
                time.sleep(0.05)
            assert ready.json()["status"] == "draining"
            assert other.get("/health/live").status_code == 200  # the listener is still open
            refused = other.post("/tts", data=form)
            assert refused.status_code == 503 and refused.headers["Retry-After"]
            assert refused.json()["error"]["type"] == "shutting_down"
            assert server.process.poll() is None  # still serving the stream
            received += list(chunks)
    streamed, _ = decode_wav(b"".join(received))
    assert streamed.shape[0] == decode_wav(whole.content)[0].shape[0]  # the whole text, not cut short
    try:
        code = server.process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        pytest.fail("the server did not exit after draining")
    assert code == 0, f"exit status {code} ({signal.Signals(-code).name if code < 0 else ''})"
    assert "draining before shutdown" in server.log()
    server.stop()
