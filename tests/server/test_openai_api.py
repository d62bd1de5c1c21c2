"""The OpenAI speech route, spoken to by the official `openai` client and by plain HTTP."""

import base64
import io
import json
import time

import numpy as np
import pytest
import soundfile as sf
import soxr
from openai import NotFoundError, OpenAI

from chatterbox_server.audio import av_stream
from chatterbox_server.audio import formats as audio_formats
from chatterbox_server.audio.mulaw import decode_ulaw
from chatterbox_server.benchmark.server_process import ServerProcess

pytestmark = pytest.mark.server

TEXT = "Hello from the OpenAI route. This is the second sentence."


@pytest.fixture(scope="module")
def server(model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("openai")
    with ServerProcess(model_dir, root / "voices", root / "log", warmup="false") as running:
        yield running


@pytest.fixture(scope="module")
def voice(server, voice_a):
    with server.client() as c, open(voice_a, "rb") as f:
        r = c.post("/voices/register", files={"voice_file": ("v.wav", f)}, data={"voice_id": "alloy"})
        assert r.status_code == 200
    return "alloy"


@pytest.fixture(scope="module")
def openai_client(server):
    return OpenAI(base_url=server.url + "/v1", api_key="not-needed", max_retries=0)


@pytest.fixture(scope="module")
def reference_samples(server, voice):
    with server.client() as c:
        r = c.post("/tts", data={"text": TEXT, "voice_id": voice, "stream": "false"})
    return sf.read(io.BytesIO(r.content), dtype="float32")[0].shape[0]


def decode(data: bytes, fmt: str) -> np.ndarray:
    """float32 at 24 kHz: PCM and WAV read as they are, µ-law (8 kHz) resampled, the rest by FFmpeg."""
    if fmt == "pcm":
        return np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768
    if fmt == "ulaw":
        return soxr.resample(decode_ulaw(data), 8_000, 24_000)
    if fmt == "wav":
        audio, rate = sf.read(io.BytesIO(data), dtype="float32")
        assert rate == 24_000
        return audio
    audio, _ = av_stream.decode(data, sample_rate_hz=24_000)  # Ogg Opus decodes at 48 kHz
    return audio


@pytest.mark.parametrize("fmt", audio_formats.available_formats())
@pytest.mark.parametrize("streaming", [False, True])
def test_every_format_decodes_through_the_sdk(openai_client, voice, reference_samples, fmt, streaming):
    kwargs = dict(model="tts-1", voice=voice, input=TEXT, response_format=fmt)
    if streaming:
        with openai_client.audio.speech.with_streaming_response.create(**kwargs) as response:
            assert response.headers["content-type"] == audio_formats.FORMATS[fmt].content_type
            data = b"".join(response.iter_bytes())
    else:
        response = openai_client.audio.speech.create(**kwargs)
        data = response.content
    audio = decode(data, fmt)
    # lossy codecs pad a frame or two; lossless ones are exact; µ-law is 8 kHz (a sample is 3 here)
    tolerance = {"wav": 0, "pcm": 0, "flac": 0, "ulaw": 3}.get(fmt, 4000)
    assert abs(audio.shape[0] - reference_samples) <= tolerance
    assert 0.05 < np.abs(audio).max() <= 1.0


def test_pcm_is_raw_16_bit_little_endian(server, voice, reference_samples):
    with server.client() as c:
        r = c.post(
            "/v1/audio/speech",
            json={"model": "chatterbox-turbo", "input": TEXT, "voice": voice, "response_format": "pcm"},
        )
    assert r.status_code == 200 and r.headers["content-type"] == "audio/pcm"
    assert len(r.content) == 2 * reference_samples and not r.content.startswith(b"RIFF")


def test_default_format_is_mp3(server, voice):
    with server.client() as c:
        r = c.post("/v1/audio/speech", json={"model": "tts-1-hd", "input": TEXT, "voice": voice})
    assert r.headers["content-type"] == "audio/mpeg"
    assert sf.info(io.BytesIO(r.content)).format == "MP3"


@pytest.mark.parametrize("speed", [0.5, 2.0])
def test_speed_changes_duration_not_pitch(server, voice, reference_samples, speed):
    with server.client() as c:
        r = c.post(
            "/v1/audio/speech",
            json={"model": "tts-1", "input": TEXT, "voice": voice, "response_format": "wav", "speed": speed},
        )
    audio = decode(r.content, "wav")
    assert audio.shape[0] == pytest.approx(reference_samples / speed, rel=0.05)


def spectral_centroid_hz(audio: np.ndarray) -> float:
    """The power-weighted mean frequency of the whole clip.

    The stand-in speaks a tone per token, many of them of similar loudness, so which one is
    loudest can flip after a phase vocoder; the centroid moves with the pitch (× 1.5 for audio
    played 1.5 times faster) and barely with a pitch-preserving time stretch."""
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(audio.shape[0]))) ** 2
    hz = np.fft.rfftfreq(audio.shape[0], 1 / 24_000)
    return float((spectrum * hz).sum() / spectrum.sum())


def test_speed_keeps_pitch(server, voice):
    with server.client() as c:
        normal, fast = (
            decode(
                c.post(
                    "/v1/audio/speech",
                    json={
                        "model": "tts-1",
                        "input": "Hello there.",
                        "voice": voice,
                        "response_format": "wav",
                        "speed": speed,
                    },
                ).content,
                "wav",
            )
            for speed in (1.0, 1.5)
        )
    assert spectral_centroid_hz(fast) == pytest.approx(spectral_centroid_hz(normal), rel=0.1)
    sped_up = np.interp(np.arange(0, normal.shape[0], 1.5), np.arange(normal.shape[0]), normal)  # pitch × 1.5
    assert spectral_centroid_hz(sped_up) > 1.3 * spectral_centroid_hz(normal)


def test_sse_events_concatenate_to_a_valid_stream(server, voice, reference_samples):
    for fmt in ("wav", "mp3"):
        with (
            server.client() as c,
            c.stream(
                "POST",
                "/v1/audio/speech",
                json={"model": "tts-1", "input": TEXT, "voice": voice, "response_format": fmt, "stream_format": "sse"},
            ) as r,
        ):
            assert r.headers["content-type"].startswith("text/event-stream")
            events = [json.loads(line[len("data: ") :]) for line in r.iter_lines() if line.startswith("data: ")]
        assert [e["type"] for e in events[:-1]] == ["speech.audio.delta"] * (len(events) - 1)
        usage = events[-1]["usage"]
        assert events[-1]["type"] == "speech.audio.done" and usage["output_tokens"] > 0
        # usage counts text tokens in (fewer than the characters), speech tokens out
        assert 0 < usage["input_tokens"] < len(TEXT)
        assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
        audio = decode(b"".join(base64.b64decode(e["audio"]) for e in events[:-1]), fmt)
        assert abs(audio.shape[0] - reference_samples) <= (0 if fmt == "wav" else 4000)
    assert len(events) >= 2


def test_speech_requests_count_in_the_json_summary(server, voice):
    with server.client() as c:
        before = c.get("/metrics?format=json").json()
        r = c.post("/v1/audio/speech", json={"model": "tts-1", "input": TEXT, "voice": voice, "response_format": "wav"})
        assert r.status_code == 200
        # a streamed response is counted once its body has ended, just after the client has it
        deadline = time.monotonic() + 10
        while (after := c.get("/metrics?format=json").json())["total_requests"] == before["total_requests"]:
            assert time.monotonic() < deadline, "the request was never counted"
            time.sleep(0.05)
    assert after["total_requests"] == before["total_requests"] + 1
    assert after["successful_requests"] == before["successful_requests"] + 1
    assert after["total_audio_seconds"] > before["total_audio_seconds"]


def test_errors(server, voice, openai_client):
    with pytest.raises(NotFoundError):
        openai_client.audio.speech.create(model="tts-1", voice="nobody", input=TEXT)
    with server.client() as c:

        def post(**fields):
            return c.post("/v1/audio/speech", json={"model": "tts-1", "input": TEXT, "voice": voice, **fields})

        r = post(model="whisper-1")
        assert r.status_code == 400 and "tts-1" in r.json()["error"]["message"]
        for bad in ({"speed": 5.0}, {"speed": 0.1}, {"response_format": "ogg"}, {"input": ""}):
            assert post(**bad).status_code == 422, bad
        if "aac" not in audio_formats.available_formats():
            r = post(response_format="aac")
            message = r.json()["error"]["message"]
            assert r.status_code == 400 and r.json()["error"]["code"] == "unsupported_option"  # OpenAI's shape
            assert "aac" in message and "wav" in message


def test_models_and_voices(server, voice):
    with server.client() as c:
        models = c.get("/v1/models").json()
        assert {m["id"] for m in models["data"]} == {"tts-1", "tts-1-hd", "gpt-4o-mini-tts", "chatterbox-turbo"}
        assert {"id": voice, "name": voice} in c.get("/v1/audio/voices").json()["voices"]
        assert voice in c.get("/v1/audio/voices?format=names").json()["voices"]
