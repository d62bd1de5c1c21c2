"""The official OpenAI Python SDK against /v1/audio/speech, used as its README shows: every
response_format the server lists, as a whole file, streamed with
`client.audio.speech.with_streaming_response.create(...)`, and as server-sent events
(`stream_format="sse"`). Each body is decoded here and its length held against what the server
says the same text lasts."""

import base64
import json
import time

import httpx
import pytest
from openai import OpenAI

from tests.clients.conftest import (
    API_KEY,
    TEXT,
    VOICE,
    Exchange,
    decode,
    reference,
    running_server,
    soundfile_reads,
    tolerance_s,
)

pytestmark = [pytest.mark.server, pytest.mark.slow]

# OpenAI's six formats and the server's µ-law; a format the server lists beyond these fails
# test_every_listed_format_is_covered until a case is added for it
KNOWN_FORMATS = ["mp3", "opus", "aac", "flac", "wav", "pcm", "ulaw"]
MODEL = "gpt-4o-mini-tts"  # the SDK's example model; OpenAI serves `sse` only for this family


@pytest.fixture(scope="module")
def server(model_dir, tmp_path_factory, voice_a):
    with running_server(model_dir, tmp_path_factory.mktemp("openai-sdk"), voice_a) as running:
        yield running


@pytest.fixture(scope="module")
def sdk(server):
    client = OpenAI(base_url=server.url + "/v1", api_key=API_KEY)  # the SDK requires a key; any will do
    yield client
    client.close()


@pytest.fixture(scope="module")
def expected(server):
    return reference(server)


@pytest.fixture(scope="module")
def listed_formats(server) -> list[str]:
    """The response_format enum of /v1/audio/speech's request body in the server's OpenAPI document."""
    doc = httpx.get(server.url + "/openapi.json", timeout=30).json()
    body = doc["paths"]["/v1/audio/speech"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    schema = doc["components"]["schemas"][body["$ref"].rsplit("/", 1)[-1]]
    return list(schema["properties"]["response_format"]["enum"])


def test_every_listed_format_is_covered(listed_formats):
    assert "mp3" in listed_formats and "pcm" in listed_formats
    assert set(listed_formats) <= set(KNOWN_FORMATS), "add a decoder and a case for the new format"


def sse_audio(lines) -> tuple[bytes, float | None, list[dict]]:
    """The audio of an OpenAI speech SSE stream (speech.audio.delta events), its first-delta time, and every event."""
    audio = b""
    first = None
    events = []
    for line in lines:
        if not line.startswith("data: "):
            continue
        event = json.loads(line[len("data: ") :])
        events.append(event)
        if event["type"] == "speech.audio.delta":
            if first is None:
                first = time.monotonic()
            audio += base64.b64decode(event["audio"])
    return audio, first, events


@pytest.mark.parametrize("mode", ["file", "stream", "sse"])
@pytest.mark.parametrize("fmt", KNOWN_FORMATS)
def test_sdk_speech(sdk, expected, listed_formats, record, fmt, mode):
    if fmt not in listed_formats:
        pytest.skip(f"{fmt} is not listed by this server")
    kwargs = dict(model=MODEL, voice=VOICE, input=TEXT, response_format=fmt)
    started = time.monotonic()
    first = None
    if mode == "file":
        response = sdk.audio.speech.create(**kwargs)
        data = response.content
        content_type = response.response.headers["content-type"]
    elif mode == "stream":
        with sdk.audio.speech.with_streaming_response.create(**kwargs) as response:
            content_type = response.headers["content-type"]
            data = b""
            for chunk in response.iter_bytes():
                if first is None and chunk:
                    first = time.monotonic()
                data += chunk
    else:
        with sdk.audio.speech.with_streaming_response.create(**kwargs, stream_format="sse") as response:
            content_type = response.headers["content-type"]
            data, first, events = sse_audio(response.iter_lines())
        assert events and events[-1]["type"] == "speech.audio.done", events[-1:]
        assert {"input_tokens", "output_tokens", "total_tokens"} <= set(events[-1]["usage"])
        assert {e["type"] for e in events} == {"speech.audio.delta", "speech.audio.done"}
    seconds, rate = decode(data, fmt)
    note = content_type.split(";")[0]
    if fmt in ("wav", "flac") and not soundfile_reads(data):
        note += "; soundfile.read refuses it (length unknown)"
    expected_rate = 8000 if fmt == "ulaw" else 24_000
    ok = rate == expected_rate and abs(seconds - expected.duration_s) <= tolerance_s(fmt)
    record(
        Exchange(
            client="openai SDK",
            request=f"POST /v1/audio/speech ({mode})",
            fmt=fmt,
            requested_rate=None,
            received_s=seconds,
            received_rate=rate,
            expected_s=expected.duration_s,
            ttfa_s=None if first is None else first - started,
            ok=ok,
            note=note,
        )
    )
    assert content_type.startswith("text/event-stream" if mode == "sse" else "audio/")
    assert rate == expected_rate
    assert seconds == pytest.approx(expected.duration_s, abs=tolerance_s(fmt))


@pytest.mark.parametrize(("fmt", "sample_rate"), [("pcm", 16_000), ("wav", 48_000), ("mp3", 44_100)])
def test_sdk_sample_rate_through_extra_body(sdk, expected, record, fmt, sample_rate):
    """The server's one non-OpenAI field, sent the way the SDK documents for extra fields."""
    response = sdk.audio.speech.create(
        model=MODEL, voice=VOICE, input=TEXT, response_format=fmt, extra_body={"sample_rate": sample_rate}
    )
    seconds, rate = decode(response.content, fmt, pcm_rate=sample_rate)
    # resampling rounds the length to the new rate
    tolerance = max(tolerance_s(fmt), 2 / sample_rate)
    record(
        Exchange(
            "openai SDK",
            "POST /v1/audio/speech (extra_body sample_rate)",
            fmt,
            sample_rate,
            seconds,
            rate,
            expected.duration_s,
            None,
            rate == sample_rate and abs(seconds - expected.duration_s) <= tolerance,
        )
    )
    assert rate == sample_rate
    assert seconds == pytest.approx(expected.duration_s, abs=tolerance)
