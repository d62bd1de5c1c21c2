"""The Wyoming server (Home Assistant's protocol) with the `wyoming` package's own client against
the real app: describe, synthesize, streamed synthesis, errors, a client that leaves, limits, drain."""

import asyncio
import json
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import SimpleNamespace

import httpx
import pytest
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.client import AsyncTcpClient
from wyoming.error import Error
from wyoming.event import Event
from wyoming.info import Describe, Info
from wyoming.ping import Ping, Pong
from wyoming.tts import Synthesize, SynthesizeChunk, SynthesizeStart, SynthesizeStop, SynthesizeVoice

from chatterbox_server.benchmark.server_process import ServerProcess, free_port, serve_in_thread
from chatterbox_server.server import Settings, create_app
from chatterbox_server.server import wyoming as wyoming_server
from chatterbox_server.server.auth import ApiKeys
from tests.support import LONG_PIECE, metric_value
from tts_engine import TTSConfig, TTSEngine

pytestmark = pytest.mark.server

READ_TIMEOUT_S = 60.0
RATE, BYTES_PER_SAMPLE = 24_000, 2


@contextmanager
def app_with_voice(model_dir, voices_dir, voice_a, **settings) -> Iterator[SimpleNamespace]:
    """The real app (tiny stand-in) with its Wyoming server on a free port and voice "v" registered
    over HTTP; yields its HTTP client and the Wyoming port."""
    engine = TTSEngine(TTSConfig(model_dir=model_dir, model_dtype="fp32"))
    port = free_port()
    try:
        app = create_app(Settings(voices_dir=voices_dir, warmup=False, wyoming_port=port, **settings), engine)
        with serve_in_thread(app) as url, httpx.Client(base_url=url, timeout=60) as http:
            with open(voice_a, "rb") as f:
                r = http.post("/voices/register", files={"voice_file": f}, data={"voice_id": "v"})
            assert r.status_code == 200, r.text
            yield SimpleNamespace(http=http, port=port)
    finally:
        engine.close()


@pytest.fixture(scope="module")
def server(model_dir, tmp_path_factory, voice_a):
    with app_with_voice(
        model_dir, tmp_path_factory.mktemp("voices"), voice_a, voice_aliases="alloy=v,ghost=nobody", max_text_length=400
    ) as running:
        yield running


def connect(port: int) -> AsyncTcpClient:
    return AsyncTcpClient("127.0.0.1", port, connect_timeout=10, read_timeout=READ_TIMEOUT_S)


async def read_until(client: AsyncTcpClient, *types: str) -> list[Event]:
    """Events up to and including the first of one of `types`."""
    events = []
    while True:
        event = await client.read_event()
        assert event is not None, f"the server closed the connection; events so far: {[e.type for e in events]}"
        events.append(event)
        if event.type in types:
            return events


def pcm_seconds(events: list[Event]) -> float:
    return sum(len(AudioChunk.from_event(e).audio) for e in events if AudioChunk.is_type(e.type)) / (
        RATE * BYTES_PER_SAMPLE
    )


def json_duration(http: httpx.Client, text: str, voice: str = "v") -> float:
    r = http.post("/tts/json", json={"text": text, "voice_id": voice})
    assert r.status_code == 200, r.text
    return float(r.json()["audio_duration"])


def summary(events: list[Event]) -> str:
    """audio-start, audio-chunk ×12, audio-stop: what a transcript needs, not 12 lines of chunks."""
    parts: list[list] = []
    for event in events:
        if parts and parts[-1][0] == event.type:
            parts[-1][1] += 1
        else:
            parts.append([event.type, 1])
    return ", ".join(name if n == 1 else f"{name} ×{n}" for name, n in parts)


def test_describe_lists_registered_voices_and_aliases_with_streaming(server):
    async def scenario():
        async with connect(server.port) as client:
            await client.write_event(Describe().event())
            (event,) = await read_until(client, "info")
            await client.write_event(Ping(text="hi").event())
            (pong,) = await read_until(client, "pong")
            return Info.from_event(event), Pong.from_event(pong)

    info, pong = asyncio.run(scenario())
    (program,) = info.tts
    assert program.installed and program.supports_synthesize_streaming and program.version
    assert program.attribution.name and program.attribution.url
    voices = {voice.name: voice for voice in program.voices}
    assert list(voices) == ["v", "alloy"]  # "ghost" names no registered voice: not offered
    assert voices["alloy"].description == "alloy → v" and voices["v"].description == "v"
    assert all(voice.installed and voice.languages == ["en"] for voice in voices.values())
    assert pong.text == "hi"


def test_synthesize_streams_the_whole_text_as_http_speaks_it(server):
    text = "Hello there. How are you today?"

    async def scenario():
        async with connect(server.port) as client:
            await client.write_event(Synthesize(text=text, voice=SynthesizeVoice(name="v")).event())
            return await read_until(client, "audio-stop")

    events = asyncio.run(scenario())
    start = AudioStart.from_event(events[0])
    assert (start.rate, start.width, start.channels) == (24_000, 2, 1)
    assert AudioStop.is_type(events[-1].type)
    assert all(AudioChunk.is_type(e.type) for e in events[1:-1]) and len(events) > 2
    assert pcm_seconds(events) == pytest.approx(json_duration(server.http, text), abs=0.01)
    print(f"synthesize: {summary(events)}; {pcm_seconds(events):.2f} s of audio")


def test_a_stream_speaks_each_sentence_as_it_completes_and_ignores_the_compatibility_synthesize(server):
    sentences = ["Hello there.", "How are you today?", "I am fine"]
    before = metric_value(server.http, "tts_requests_total", route="wyoming", status="200")

    async def scenario():
        async with connect(server.port) as client:
            await client.write_event(SynthesizeStart(voice=SynthesizeVoice(name="alloy")).event())
            await client.write_event(SynthesizeChunk(text="Hello there. ").event())
            first = await read_until(client, "audio-chunk")  # the first sentence speaks before more text comes
            for chunk in ["How are", " you today? I am", " fine"]:
                await client.write_event(SynthesizeChunk(text=chunk).event())
            # Home Assistant sends the whole text again "for compatibility", then synthesize-stop
            await client.write_event(Synthesize(text=" ".join(sentences), voice=SynthesizeVoice(name="alloy")).event())
            await client.write_event(SynthesizeStop().event())
            return first + await read_until(client, "synthesize-stopped")

    events = asyncio.run(scenario())
    types = [e.type for e in events]
    assert types[0] == "audio-start" and types.count("audio-start") == 1
    assert types[-2:] == ["audio-stop", "synthesize-stopped"] and types.count("audio-stop") == 1
    assert "error" not in types
    expected = sum(json_duration(server.http, s) for s in sentences)
    assert pcm_seconds(events) == pytest.approx(expected, abs=0.03)  # each sentence once: not twice
    after = metric_value(server.http, "tts_requests_total", route="wyoming", status="200")
    assert after - before == len(sentences)  # one request per sentence
    print(f"stream: {summary(events)}; {pcm_seconds(events):.2f} s of audio for {len(sentences)} sentences")


def test_bad_input_gets_error_events_and_the_connection_goes_on(server):
    async def scenario():
        async with connect(server.port) as client:
            errors = []
            for text, voice in [("", "v"), ("Hi.", "nobody"), ("x" * 401, "v"), ("Hi.", None)]:
                chosen = SynthesizeVoice(name=voice) if voice else None
                await client.write_event(Synthesize(text=text, voice=chosen).event())
                errors += await read_until(client, "error")
            await client.write_event(SynthesizeChunk(text="no stream is open").event())
            errors += await read_until(client, "error")
            await client.write_event(Event(type="synthesize", data={"text": 7}))
            errors += await read_until(client, "error")
            # a stream whose voice is refused: one error, then only synthesize-stopped
            await client.write_event(SynthesizeStart(voice=SynthesizeVoice(name="nobody")).event())
            await client.write_event(SynthesizeChunk(text="Hello there. And more.").event())
            await client.write_event(SynthesizeStop().event())
            refused_stream = await read_until(client, "synthesize-stopped")
            await client.write_event(Synthesize(text="Hi there.", voice=SynthesizeVoice(name="v")).event())
            spoken = await read_until(client, "audio-stop")
            return errors, refused_stream, spoken

    errors, refused_stream, spoken = asyncio.run(scenario())
    codes = [Error.from_event(e).code for e in errors]
    assert codes == [
        "invalid_input",
        "voice_not_found",
        "text_too_long",
        "missing_voice",
        "invalid_message",
        "invalid_message",
    ]
    assert all(Error.from_event(e).text for e in errors)
    assert [e.type for e in refused_stream] == ["error", "synthesize-stopped"]
    assert Error.from_event(refused_stream[0]).code == "voice_not_found"
    assert spoken[0].type == "audio-start" and pcm_seconds(spoken) > 0


def test_a_client_that_leaves_mid_sentence_cancels_it_and_frees_the_slot(server):
    http = server.http
    cancelled = metric_value(http, "tts_requests_cancelled_total", reason="client_disconnected")
    incomplete = metric_value(http, "tts_requests_total", route="wyoming", status="incomplete")

    async def scenario():
        async with connect(server.port) as client:
            await client.write_event(Synthesize(text=LONG_PIECE, voice=SynthesizeVoice(name="v")).event())
            return await read_until(client, "audio-chunk")  # speaking: then the client leaves

    events = asyncio.run(scenario())
    assert [e.type for e in events] == ["audio-start", "audio-chunk"]
    deadline = time.monotonic() + 20
    while metric_value(http, "tts_requests_cancelled_total", reason="client_disconnected") != cancelled + 1:
        assert time.monotonic() < deadline, "the synthesis was not cancelled"
        time.sleep(0.05)
    while http.get("/health").json()["in_flight"] != 0:
        assert time.monotonic() < deadline, "the slot was not released"
        time.sleep(0.05)
    assert metric_value(http, "tts_requests_total", route="wyoming", status="incomplete") == incomplete + 1


def test_connections_are_bounded_idle_ones_closed_and_bad_framing_refused(model_dir, tmp_path, voice_a):
    async def scenario(port):
        first = connect(port)
        await first.connect()
        await first.write_event(Describe().event())
        await read_until(first, "info")
        async with connect(port) as second:  # over the limit: refused at once
            refusal = await second.read_event()
            assert await second.read_event() is None
        idle = await read_until(first, "error")  # silent for the idle timeout
        assert await first.read_event() is None
        await first.disconnect()
        await asyncio.sleep(0.2)  # its slot is free again
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(json.dumps({"type": "synthesize", "data_length": 10**9}).encode() + b"\n")
        await writer.drain()
        framing = await wyoming_server.read_event(reader, 1 << 20)
        closed = await reader.read()
        writer.close()
        return refusal, idle[-1], framing, closed

    with app_with_voice(
        model_dir, tmp_path / "voices", voice_a, max_realtime_sessions=1, realtime_idle_timeout_s=1
    ) as running:
        refusal, idle, framing, closed = asyncio.run(scenario(running.port))
    assert Error.from_event(refusal).code == "queue_full"
    assert Error.from_event(idle).code == "idle_timeout"
    assert framing is not None and Error.from_event(framing).code == "invalid_message" and closed == b""


def test_exposure_warning_and_zeroconf_without_its_package(monkeypatch, caplog):
    keys = ApiKeys("secret")
    assert wyoming_server.exposure_warning("127.0.0.1", keys) is None
    assert wyoming_server.exposure_warning("0.0.0.0", ApiKeys("")) is None  # no keys: the HTTP warning says it all
    warning = wyoming_server.exposure_warning("0.0.0.0", keys)
    assert warning is not None and "TTS_API_KEYS do not protect it" in warning
    monkeypatch.setattr(wyoming_server.importlib.util, "find_spec", lambda name: None)
    with caplog.at_level(logging.WARNING, logger=wyoming_server.__name__):
        assert asyncio.run(wyoming_server.advertise("0.0.0.0", 10200)) is None
    assert "zeroconf package is not installed" in caplog.text


@pytest.mark.slow
def test_sigterm_refuses_new_syntheses_and_lets_the_one_in_flight_finish(model_dir, tmp_path, voice_a):
    port = free_port()
    server = ServerProcess(model_dir, tmp_path / "voices", tmp_path / "log", warmup="false", wyoming_port=port)

    async def scenario():
        async with connect(port) as speaking, connect(port) as late:
            await speaking.write_event(Synthesize(text=LONG_PIECE, voice=SynthesizeVoice(name="v")).event())
            first = await read_until(speaking, "audio-chunk")
            server.terminate()
            deadline = time.monotonic() + 10
            async with httpx.AsyncClient(base_url=server.url) as http:
                while (await http.get("/health/ready")).status_code != 503:
                    assert time.monotonic() < deadline, "readiness never turned 503"
                    await asyncio.sleep(0.05)
            await late.write_event(Synthesize(text="Hi there.", voice=SynthesizeVoice(name="v")).event())
            refused = await read_until(late, "error")
            rest = await read_until(speaking, "audio-stop")
            return first + rest, refused

    try:
        server.register(voice_a, "v")
        with server.client() as c:
            whole = json_duration(c, LONG_PIECE)
        events, refused = asyncio.run(scenario())
        assert Error.from_event(refused[-1]).code == "shutting_down"
        assert pcm_seconds(events) == pytest.approx(whole, abs=0.01)  # the one in flight finished whole
        assert server.process.wait(timeout=30) == 0
        assert "WYOMING synthesize 200" in server.log()
    finally:
        server.stop()
