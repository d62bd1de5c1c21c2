"""Pipecat's TTS services against this server, unchanged but for their base URL: OpenAITTSService
(POST /v1/audio/speech, pcm), ElevenLabsTTSService (WS /v1/text-to-speech/{voice}/multi-stream-input)
and ElevenLabsHttpTTSService (POST /v1/text-to-speech/{voice}/stream/with-timestamps).

Each runs as Pipecat runs it: in a Pipeline driven by a PipelineWorker, with TTSSpeakFrames queued
in and the frames the service pushes collected behind it (TTSAudioRawFrame: the audio and its
rate; TTSTextFrame: the words, timed by the alignment the server sent). Barge-in is what a
transport does when the user speaks: an InterruptionFrame mid-reply.

Pipecat's OpenAI service refuses any voice that is not one of OpenAI's names before it sends a
request, so it keeps its default (`alloy`) and the server speaks it in TTS_DEFAULT_VOICE."""

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence

import aiohttp
import pytest

from tests.clients.conftest import (
    API_KEY,
    PIPECAT_HOW,
    TEXT,
    VOICE,
    Exchange,
    metric,
    pcm_seconds,
    reference,
    require,
    running_server,
    wait_idle,
)

require("pipecat", PIPECAT_HOW)

from pipecat.frames.frames import (  # noqa: E402
    EndFrame,
    ErrorFrame,
    Frame,
    InterruptionFrame,
    TTSAudioRawFrame,
    TTSSpeakFrame,
    TTSTextFrame,
)
from pipecat.pipeline.pipeline import Pipeline  # noqa: E402
from pipecat.pipeline.worker import PipelineParams, PipelineWorker  # noqa: E402
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor  # noqa: E402
from pipecat.services.elevenlabs.tts import ElevenLabsHttpTTSService, ElevenLabsTTSService  # noqa: E402
from pipecat.services.openai.tts import OpenAITTSService  # noqa: E402
from pipecat.workers.runner import WorkerRunner  # noqa: E402

pytestmark = [pytest.mark.server, pytest.mark.slow]

SAMPLE_RATE = 24_000  # PipelineParams' default audio_out_sample_rate: what every service asks for
# a reply long enough that the server cannot have spoken it before the interruption lands
LONG = " ".join(f"This is sentence number {i} of a long answer that the user interrupts." for i in range(1, 9))
SHORT = "Short reply."


@pytest.fixture(scope="module")
def server(model_dir, tmp_path_factory, voice_a):
    root = tmp_path_factory.mktemp("pipecat")
    with running_server(model_dir, root, voice_a, default_voice=VOICE) as running:
        yield running


@pytest.fixture(scope="module")
def expected(server):
    return reference(server)


@pytest.fixture(scope="module")
def long_and_short(server):
    return reference(server, LONG), reference(server, SHORT)


class Collector(FrameProcessor):
    """Keeps the frames that pass it in one direction, with their arrival time; calls on_frame for
    each. Last in the pipeline it sees what the service pushes downstream (audio, words); first, it
    sees what goes upstream (ErrorFrames). `started`: when the script queued its first text (time
    to first audio counts from there)."""

    def __init__(
        self,
        on_frame: Callable[[Frame], None] | None = None,
        direction: FrameDirection = FrameDirection.DOWNSTREAM,
    ):
        super().__init__()
        self.frames: list[tuple[float, Frame]] = []
        self.upstream: Collector | None = None
        self.started = 0.0
        self._on_frame = on_frame
        self._direction = direction

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        if direction == self._direction:
            self.frames.append((time.monotonic(), frame))
            if self._on_frame:
                self._on_frame(frame)
        await self.push_frame(frame, direction)

    def of(self, kind: type, after: float = 0.0) -> list:
        return [f for t, f in self.frames if isinstance(f, kind) and t > after]

    def errors(self) -> list[str]:
        """The errors the service reported, up- or downstream."""
        frames = self.of(ErrorFrame) + (self.upstream.of(ErrorFrame) if self.upstream else [])
        return [f.error for f in frames]


async def run_pipeline(service, script: Callable[[PipelineWorker, "Collector"], Awaitable[None]], collector=None):
    """Run [upstream collector, service, collector] until `script` has queued its frames and an
    EndFrame went through; returns the (downstream) collector, its .upstream the other."""
    collector = collector or Collector()
    collector.upstream = Collector(direction=FrameDirection.UPSTREAM)
    pipeline = Pipeline([collector.upstream, service, collector])
    worker = PipelineWorker(pipeline, params=PipelineParams(), cancel_on_idle_timeout=False)
    started = asyncio.Event()

    @worker.event_handler("on_pipeline_started")
    async def _started(worker, frame):
        started.set()

    async def drive():
        await asyncio.wait_for(started.wait(), timeout=60)
        await script(worker, collector)

    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(worker)
    await asyncio.wait_for(asyncio.gather(runner.run(), drive()), timeout=300)
    return collector


def speak(*texts: str):
    async def script(worker: PipelineWorker, collector: Collector):
        collector.started = time.monotonic()
        await worker.queue_frames([*(TTSSpeakFrame(t) for t in texts), EndFrame()])

    return script


def audio_of(frames: Sequence[TTSAudioRawFrame]) -> tuple[float, set[int]]:
    return pcm_seconds(b"".join(f.audio for f in frames), SAMPLE_RATE), {f.sample_rate for f in frames}


def first_audio_after(collector: Collector, started: float) -> float | None:
    times = [t for t, f in collector.frames if isinstance(f, TTSAudioRawFrame) and t > started]
    return times[0] - started if times else None


# ----- OpenAITTSService ----------------------------------------------------------------------


def test_openai_tts_service(server, expected, record):
    service = OpenAITTSService(api_key=API_KEY, base_url=server.url + "/v1")  # defaults: gpt-4o-mini-tts, alloy
    collector = asyncio.run(run_pipeline(service, speak(TEXT)))
    seconds, rates = audio_of(collector.of(TTSAudioRawFrame))
    errors = collector.errors()
    ok = not errors and rates == {SAMPLE_RATE} and seconds == pytest.approx(expected.duration_s, abs=1e-6)
    record(
        Exchange(
            "pipecat OpenAITTSService",
            "POST /v1/audio/speech (voice alloy → TTS_DEFAULT_VOICE)",
            "pcm",
            SAMPLE_RATE,
            seconds,
            min(rates, default=None),
            expected.duration_s,
            first_audio_after(collector, collector.started),
            ok,
            "; ".join(errors),
        )
    )
    assert not errors, errors
    assert rates == {SAMPLE_RATE}
    assert seconds == pytest.approx(expected.duration_s, abs=1e-6)  # raw PCM: sample-exact


# ----- ElevenLabsTTSService (WebSocket) and ElevenLabsHttpTTSService ---------------------------


def websocket_service(server) -> ElevenLabsTTSService:
    return ElevenLabsTTSService(
        api_key=API_KEY,
        url=server.url.replace("http://", "ws://"),
        settings=ElevenLabsTTSService.Settings(voice=VOICE),
    )


def http_service(server, session: aiohttp.ClientSession) -> ElevenLabsHttpTTSService:
    return ElevenLabsHttpTTSService(
        api_key=API_KEY,
        base_url=server.url,
        aiohttp_session=session,
        settings=ElevenLabsHttpTTSService.Settings(voice=VOICE),
    )


ROUTES = {
    "websocket": f"WS /v1/text-to-speech/{VOICE}/multi-stream-input",
    "http": f"POST /v1/text-to-speech/{VOICE}/stream/with-timestamps",
}


async def with_service(kind: str, server, body):
    """body(service) with the service built as its docs show (the HTTP one needs an aiohttp session)."""
    async with aiohttp.ClientSession() as session:
        service = websocket_service(server) if kind == "websocket" else http_service(server, session)
        return await body(service)


@pytest.mark.parametrize("kind", ["websocket", "http"])
def test_elevenlabs_service_speaks_with_word_timestamps(server, expected, record, kind):
    collector = asyncio.run(with_service(kind, server, lambda service: run_pipeline(service, speak(TEXT))))
    seconds, rates = audio_of(collector.of(TTSAudioRawFrame))
    errors = collector.errors()
    words = [(f.text, f.pts) for f in collector.of(TTSTextFrame)]
    ok = not errors and rates == {SAMPLE_RATE} and abs(seconds - expected.duration_s) < 1e-6
    record(
        Exchange(
            f"pipecat ElevenLabs ({kind})",
            ROUTES[kind],
            "pcm_24000",
            SAMPLE_RATE,
            seconds,
            min(rates, default=None),
            expected.duration_s,
            first_audio_after(collector, collector.started),
            ok,
            f"{len(words)} timed words" + "".join(f"; {e}" for e in errors),
        )
    )
    assert not errors, errors
    assert rates == {SAMPLE_RATE}
    assert seconds == pytest.approx(expected.duration_s, abs=1e-6)

    # alignment → words: every word of the text, in order, on the audio's clock
    assert [w for w, _ in words] == TEXT.split()
    times = [(pts - words[0][1]) / 1e9 for _, pts in words]
    assert times == sorted(times) and times[-1] < expected.duration_s
    # the second sentence's first word starts where the server says its piece starts (the
    # estimate is exact at piece boundaries)
    second = len(expected.pieces[0]["text"].split())
    assert times[second] == pytest.approx(expected.pieces[1]["audio_start"] - times[0], abs=0.1)


@pytest.mark.parametrize("kind", ["websocket", "http"])
def test_elevenlabs_service_barge_in(server, long_and_short, record, kind):
    """An InterruptionFrame on the first audio of a long reply: the server stops that synthesis
    (Pipecat closes the WebSocket context / drops the HTTP response), and the next reply on the
    same service is spoken whole."""
    long, short = long_and_short
    wait_idle(server)
    cancelled_before = metric(server, "tts_requests_cancelled_total")
    audio_before = metric(server, "tts_audio_seconds_total")
    marks: dict[str, float] = {}
    first_audio = asyncio.Event()

    async def script(worker: PipelineWorker, collector: Collector):
        collector.started = time.monotonic()
        await worker.queue_frame(TTSSpeakFrame(LONG))
        await asyncio.wait_for(first_audio.wait(), timeout=120)
        marks["interrupted"] = time.monotonic()
        await worker.queue_frame(InterruptionFrame())
        await asyncio.sleep(0.5)  # let the interruption reach the service before the next turn
        marks["second"] = time.monotonic()
        await worker.queue_frames([TTSSpeakFrame(SHORT), EndFrame()])

    def on_frame(frame: Frame):
        if isinstance(frame, TTSAudioRawFrame):
            first_audio.set()

    collector = asyncio.run(
        with_service(kind, server, lambda service: run_pipeline(service, script, Collector(on_frame)))
    )
    wait_idle(server)
    cancelled = metric(server, "tts_requests_cancelled_total") - cancelled_before
    generated = metric(server, "tts_audio_seconds_total") - audio_before
    second, rates = audio_of(collector.of(TTSAudioRawFrame, after=marks["second"]))
    errors = collector.errors()
    ok = not errors and cancelled >= 1 and generated < long.duration_s and abs(second - short.duration_s) < 1e-6
    record(
        Exchange(
            f"pipecat ElevenLabs ({kind}) barge-in",
            ROUTES[kind],
            "pcm_24000",
            SAMPLE_RATE,
            second,
            min(rates, default=None),
            short.duration_s,
            first_audio_after(collector, marks["second"]),
            ok,
            f"cancelled +{cancelled:g}; server spoke {generated:.2f} s of the {long.duration_s:.2f} s reply + next",
        )
    )
    assert not errors, errors
    assert cancelled >= 1, "the interrupted synthesis was not cancelled"
    assert generated < long.duration_s, "the server spoke the whole interrupted reply"
    assert rates == {SAMPLE_RATE}
    assert second == pytest.approx(short.duration_s, abs=1e-6)
