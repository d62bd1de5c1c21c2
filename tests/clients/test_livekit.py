"""LiveKit Agents' TTS plugins against this server, with their defaults but for the base URL and the
key they require: livekit.plugins.openai.TTS (POST /v1/audio/speech; its default model asks for
server-sent events, `tts-1` for plain audio) and livekit.plugins.elevenlabs.TTS (`synthesize`:
POST /v1/text-to-speech/{voice}/stream; `stream`: WS .../multi-stream-input, with timed words).

Outside an agent worker the plugins' docs have the caller supply the HTTP session (the ElevenLabs
plugin takes `http_session`; the OpenAI one builds its own client). Both keep their default voice
(OpenAI's `ash`, ElevenLabs' DEFAULT_VOICE_ID), which TTS_VOICE_ALIASES maps to the registered voice."""

import asyncio
import time

import aiohttp
import httpx
import pytest

from tests.clients.conftest import (
    API_KEY,
    LOSSY_TOLERANCE_S,
    TEXT,
    VOICE,
    Exchange,
    metric,
    reference,
    require,
    running_server,
    wait_idle,
    wait_metric_change,
)

require("livekit.plugins.openai")
require("livekit.plugins.elevenlabs")

from livekit.agents.types import USERDATA_TIMED_TRANSCRIPT  # noqa: E402
from livekit.plugins import elevenlabs, openai  # noqa: E402
from livekit.plugins.elevenlabs.tts import DEFAULT_VOICE_ID  # noqa: E402
from livekit.plugins.openai.tts import DEFAULT_VOICE as OPENAI_DEFAULT_VOICE  # noqa: E402

pytestmark = [pytest.mark.server, pytest.mark.slow]

# LiveKit ends a raw-PCM segment whose audio was already flushed with a 10 ms silent marker frame
MARKER_S = 0.010
LONG_REPLY = (
    "Sure, here is the plan for tomorrow. We meet at nine in the small room on the second floor. "
    "First we look at the numbers from last week, then we decide who takes the new customer. "
    "After lunch the team reviews the release notes and tests the installer on every machine. "
    "If anything breaks we fix it before five, and we write down what we learned. "
    "Bring your laptop, your charger and all questions you still have about the new process. "
    "See you all there, and thanks again for all your help this spring."
)
LONG = " ".join(f"This is sentence number {i} of a long answer that the user interrupts." for i in range(1, 9))
SHORT = "Short reply."


def test_the_long_reply_is_500_characters():
    assert len(LONG_REPLY) == 500


@pytest.fixture(scope="module")
def server(model_dir, tmp_path_factory, voice_a):
    aliases = f"{OPENAI_DEFAULT_VOICE}={VOICE},{DEFAULT_VOICE_ID}={VOICE}"
    with running_server(model_dir, tmp_path_factory.mktemp("livekit"), voice_a, voice_aliases=aliases) as running:
        yield running


@pytest.fixture(scope="module")
def expected(server):
    return reference(server)


async def collect(stream) -> tuple[list, float | None]:
    """Every SynthesizedAudio of a ChunkedStream/SynthesizeStream, and the time to the first."""
    started = time.monotonic()
    events = []
    first = None
    async with stream:
        async for event in stream:
            if first is None:
                first = time.monotonic() - started
            events.append(event)
    return events, first


def audio_of(events) -> tuple[float, set[int]]:
    rates = {e.frame.sample_rate for e in events}
    samples = sum(e.frame.samples_per_channel for e in events)
    return (samples / min(rates) if rates else 0.0), rates


# ----- livekit.plugins.openai.TTS --------------------------------------------------------------

OPENAI_CASES = [
    # (model, response_format): None keeps the plugin's default (gpt-4o-mini-tts, mp3)
    (None, None),
    (None, "opus"),
    (None, "aac"),
    (None, "flac"),
    (None, "wav"),
    (None, "pcm"),
    ("tts-1", "mp3"),
    ("tts-1", "pcm"),
]


def openai_tts(server, model: str | None = None, response_format: str | None = None) -> openai.TTS:
    kwargs = {k: v for k, v in (("model", model), ("response_format", response_format)) if v}
    return openai.TTS(base_url=server.url + "/v1", api_key=API_KEY, **kwargs)


def openai_request(model: str | None, fmt: str) -> str:
    # the plugin asks for sse except for tts-1/tts-1-hd (OpenAI's rule)
    stream_format = "audio" if model in ("tts-1", "tts-1-hd") else "sse"
    return f"POST /v1/audio/speech ({model or 'gpt-4o-mini-tts'}, {stream_format})"


# LiveKit's streaming decoder (livekit.agents.utils.codecs.AudioStreamDecoder) drops the last
# FLAC frame of any FLAC stream, this server's or one soundfile wrote: up to one block (4608 samples)
FLAC_LAST_FRAME_S = 4608 / 24_000


def livekit_tolerance(fmt: str) -> float:
    if fmt == "flac":
        return MARKER_S + FLAC_LAST_FRAME_S
    return MARKER_S + (1e-6 if fmt in ("pcm", "wav") else LOSSY_TOLERANCE_S)


@pytest.mark.parametrize(("model", "response_format"), OPENAI_CASES)
def test_openai_plugin_synthesize(server, expected, record, model, response_format):
    async def run():
        tts = openai_tts(server, model, response_format)
        try:
            return await collect(tts.synthesize(TEXT))
        finally:
            await tts.aclose()

    events, first = asyncio.run(run())
    fmt = response_format or "mp3"
    seconds, rates = audio_of(events)
    ok = rates == {24_000} and abs(seconds - expected.duration_s) <= livekit_tolerance(fmt)
    record(
        Exchange(
            "livekit openai.TTS",
            openai_request(model, fmt),
            fmt,
            None,
            seconds,
            min(rates, default=None),
            expected.duration_s,
            first,
            ok,
            "LiveKit's decoder drops the last FLAC frame" if fmt == "flac" else "",
        )
    )
    assert rates == {24_000}
    assert seconds == pytest.approx(expected.duration_s, abs=livekit_tolerance(fmt))


@pytest.mark.parametrize("response_format", ["mp3", "pcm"])
def test_openai_plugin_long_reply_completes(server, record, response_format):
    """A 500-character reply (a minute of the stand-in's audio) within the plugin's own timeouts
    (30 s between reads). The server's figure is the audio it counted for the request."""
    wait_idle(server)
    before = metric(server, "tts_audio_seconds_total")

    async def run():
        tts = openai_tts(server, response_format=response_format)
        try:
            return await collect(tts.synthesize(LONG_REPLY))
        finally:
            await tts.aclose()

    events, first = asyncio.run(run())
    spoken = wait_metric_change(server, "tts_audio_seconds_total", before) - before
    seconds, rates = audio_of(events)
    ok = rates == {24_000} and abs(seconds - spoken) <= livekit_tolerance(response_format)
    record(
        Exchange(
            "livekit openai.TTS (500 chars)",
            openai_request(None, response_format),
            response_format,
            None,
            seconds,
            min(rates, default=None),
            spoken,
            first,
            ok,
        )
    )
    assert rates == {24_000}
    assert seconds == pytest.approx(spoken, abs=livekit_tolerance(response_format))


# ----- livekit.plugins.elevenlabs.TTS ---------------------------------------------------------


def elevenlabs_tts(server, session: aiohttp.ClientSession, encoding: str | None) -> elevenlabs.TTS:
    kwargs = {"encoding": encoding} if encoding else {}
    return elevenlabs.TTS(base_url=server.url + "/v1", api_key=API_KEY, http_session=session, **kwargs)


def encoding_rate(encoding: str | None) -> tuple[str, int]:
    name = encoding or "mp3_22050_32"  # the plugin's default
    return name, int(name.split("_")[1])


@pytest.mark.parametrize("encoding", [None, "pcm_24000"])
def test_elevenlabs_plugin_synthesize(server, expected, record, encoding):
    async def run():
        async with aiohttp.ClientSession() as session:
            tts = elevenlabs_tts(server, session, encoding)
            try:
                return await collect(tts.synthesize(TEXT))
            finally:
                await tts.aclose()

    events, first = asyncio.run(run())
    name, rate = encoding_rate(encoding)
    seconds, rates = audio_of(events)
    tolerance = livekit_tolerance(name.split("_")[0])
    ok = rates == {rate} and abs(seconds - expected.duration_s) <= tolerance
    record(
        Exchange(
            "livekit elevenlabs.TTS synthesize",
            f"POST /v1/text-to-speech/{DEFAULT_VOICE_ID}/stream",
            name,
            rate,
            seconds,
            min(rates, default=None),
            expected.duration_s,
            first,
            ok,
        )
    )
    assert rates == {rate}
    assert seconds == pytest.approx(expected.duration_s, abs=tolerance)


def timed_words(events) -> list:
    return [word for e in events for word in e.frame.userdata.get(USERDATA_TIMED_TRANSCRIPT, [])]


@pytest.mark.parametrize("encoding", [None, "pcm_24000"])
def test_elevenlabs_plugin_stream_with_timed_words(server, expected, record, encoding):
    async def run():
        async with aiohttp.ClientSession() as session:
            tts = elevenlabs_tts(server, session, encoding)
            try:
                stream = tts.stream()
                stream.push_text(TEXT)
                stream.end_input()
                return await collect(stream)
            finally:
                await tts.aclose()

    events, first = asyncio.run(run())
    name, rate = encoding_rate(encoding)
    seconds, rates = audio_of(events)
    words = timed_words(events)
    tolerance = livekit_tolerance(name.split("_")[0])
    ok = rates == {rate} and abs(seconds - expected.duration_s) <= tolerance
    record(
        Exchange(
            "livekit elevenlabs.TTS stream",
            f"WS /v1/text-to-speech/{DEFAULT_VOICE_ID}/multi-stream-input",
            name,
            rate,
            seconds,
            min(rates, default=None),
            expected.duration_s,
            first,
            ok,
            f"{len(words)} timed words",
        )
    )
    assert rates == {rate}
    assert seconds == pytest.approx(expected.duration_s, abs=tolerance)

    # the transcript LiveKit syncs to the audio: every word, in order, on the context's clock
    assert [str(w).strip() for w in words if str(w).strip()] == TEXT.split()
    starts = [w.start_time for w in words if str(w).strip()]
    assert starts == sorted(starts) and starts[-1] < expected.duration_s
    second = len(expected.pieces[0]["text"].split())
    assert starts[second] == pytest.approx(expected.pieces[1]["audio_start"], abs=0.1)


def test_elevenlabs_plugin_lists_voices(server):
    async def run():
        async with aiohttp.ClientSession() as session:
            tts = elevenlabs_tts(server, session, None)
            try:
                return await tts.list_voices()
            finally:
                await tts.aclose()

    voices = {v.id: v for v in asyncio.run(run())}
    assert VOICE in voices and DEFAULT_VOICE_ID in voices
    assert voices[VOICE].name == VOICE


def test_elevenlabs_plugin_interrupted_stream_then_next_turn(server, record):
    """LiveKit's barge-in: the agent closes the SynthesizeStream of the reply being spoken (the plugin
    sends close_context on the shared socket); the next turn on the same TTS is spoken whole."""
    short = reference(server, SHORT)
    wait_idle(server)
    busy: list[int] = []

    async def run():
        async with aiohttp.ClientSession() as session:
            tts = elevenlabs_tts(server, session, "pcm_24000")
            try:
                stream = tts.stream()
                stream.push_text(LONG)  # the LLM is still talking: no end_input
                async for _ in stream:
                    break  # the user speaks on the first audio
                await stream.aclose()
                stream = tts.stream()
                stream.push_text(SHORT)
                stream.end_input()
                collected = await collect(stream)
                # still speaking the interrupted reply's flushed sentences? (close_context keeps
                # flushed text, and the plugin flushes every sentence in auto_mode)
                busy.append(httpx.get(server.url + "/health", timeout=30).json()["in_flight"])
                return collected
            finally:
                await tts.aclose()

    events, first = asyncio.run(run())
    wait_idle(server)
    seconds, rates = audio_of(events)
    ok = rates == {24_000} and abs(seconds - short.duration_s) <= livekit_tolerance("pcm")
    record(
        Exchange(
            "livekit elevenlabs.TTS barge-in",
            f"WS /v1/text-to-speech/{DEFAULT_VOICE_ID}/multi-stream-input",
            "pcm_24000",
            24_000,
            seconds,
            min(rates, default=None),
            short.duration_s,
            first,
            ok,
            f"in flight after the next turn: {busy[0]} (the interrupted reply's flushed sentences)",
        )
    )
    assert rates == {24_000}
    assert seconds == pytest.approx(short.duration_s, abs=livekit_tolerance("pcm"))
