"""Every response format streams from the OpenAI route over real HTTP: the first bytes arrive while
the rest of the text is still being spoken, and the whole body decodes to the audio's length."""

import base64
import io
import json
import time

import numpy as np
import pytest
import soundfile as sf

from chatterbox_server.audio import av_stream
from chatterbox_server.audio.formats import FORMATS
from chatterbox_server.audio.mulaw import decode_ulaw
from chatterbox_server.benchmark.server_process import ServerProcess

pytestmark = pytest.mark.server

# several sentences: the engine speaks them in token windows, so a streamed body comes in many parts
TEXT = "The first sentence starts the reply. A second one follows it closely. And this third one ends it."
RATE_HZ = 24_000
# how much longer (24 kHz samples) a bare stream may decode: a codec frame plus its priming
EXTRA_SAMPLES = {"mp3": 576 + 1105, "aac": 1024 + 1024, "opus": 480, "flac": 0}


@pytest.fixture(scope="module")
def server(model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("openai-formats")
    with ServerProcess(model_dir, root / "voices", root / "log", warmup="false") as running:
        yield running


@pytest.fixture(scope="module")
def voice(server, voice_a):
    with server.client() as c, open(voice_a, "rb") as f:
        r = c.post("/voices/register", files={"voice_file": ("v.wav", f)}, data={"voice_id": "formats-voice"})
        assert r.status_code == 200, r.text
    return "formats-voice"


@pytest.fixture(scope="module")
def reference_samples(server, voice) -> int:
    """The text's length in 24 kHz samples, as a whole WAV."""
    with server.client() as c:
        r = c.post("/tts", data={"text": TEXT, "voice_id": voice, "stream": "false"})
    assert r.status_code == 200
    return int(sf.info(io.BytesIO(r.content)).frames)


def timed_post(server, body: dict) -> tuple[str, list[tuple[float, bytes]], float]:
    """(content type, [(arrival, bytes)] as each part came off the socket, when the request left)."""
    parts: list[tuple[float, bytes]] = []
    with server.client() as c:
        sent = time.perf_counter()
        with c.stream("POST", "/v1/audio/speech", json=body) as r:
            assert r.status_code == 200, r.read()
            for chunk in r.iter_raw():
                parts.append((time.perf_counter(), chunk))
    return r.headers["content-type"], parts, sent


def assert_streamed(parts: list[tuple[float, bytes]], sent: float) -> None:
    """The first bytes came while the synthesis still had far to go: in the first half of the time
    the whole body took, and the last bytes clearly after them."""
    first, last = parts[0][0] - sent, parts[-1][0] - sent
    assert len(parts) >= 2
    assert first < 0.5 * last, f"first bytes after {first:.3f} s, last after {last:.3f} s"


def samples_24k(data: bytes, fmt: str) -> int:
    if fmt == "pcm":
        assert len(data) % 2 == 0
        return len(data) // 2
    if fmt == "wav":
        return int(sf.read(io.BytesIO(data), dtype="int16")[0].shape[0])
    decoded, rate = av_stream.decode(data, sample_rate_hz=RATE_HZ)
    assert rate == RATE_HZ and 0.05 < np.abs(decoded).max() <= 1.0
    return int(decoded.size)


@pytest.mark.parametrize("fmt", ["mp3", "opus", "aac", "flac", "wav", "pcm"])
def test_every_format_streams_and_decodes_to_the_audio_length(server, voice, reference_samples, fmt):
    body = {"model": "tts-1", "input": TEXT, "voice": voice, "response_format": fmt}
    content_type, parts, sent = timed_post(server, body)
    assert content_type == FORMATS[fmt].content_type
    assert_streamed(parts, sent)
    print(f"{fmt}: first bytes after {parts[0][0] - sent:.3f} s, last after {parts[-1][0] - sent:.3f} s")
    samples = samples_24k(b"".join(chunk for _, chunk in parts), fmt)
    assert 0 <= samples - reference_samples <= EXTRA_SAMPLES.get(fmt, 0), (samples, reference_samples)


def test_ulaw_streams_8_khz_mu_law(server, voice, reference_samples):
    body = {"model": "tts-1", "input": TEXT, "voice": voice, "response_format": "ulaw"}
    content_type, parts, sent = timed_post(server, body)
    assert content_type == "audio/basic"
    assert_streamed(parts, sent)
    data = b"".join(chunk for _, chunk in parts)
    assert abs(len(data) - round(reference_samples * 8_000 / RATE_HZ)) <= 1  # one byte a sample at 8 kHz
    audio = decode_ulaw(data)
    assert 0.05 < np.abs(audio).max() <= 1.0


@pytest.mark.parametrize("rate", [16_000, 44_100])
def test_pcm_at_a_requested_sample_rate_has_that_many_samples(server, voice, reference_samples, rate):
    body = {"model": "tts-1", "input": TEXT, "voice": voice, "response_format": "pcm", "sample_rate": rate}
    _, parts, sent = timed_post(server, body)
    assert_streamed(parts, sent)
    data = b"".join(chunk for _, chunk in parts)
    assert abs(len(data) // 2 - round(reference_samples * rate / RATE_HZ)) <= 1


def test_sse_deltas_carry_mp3(server, voice, reference_samples):
    body = {"model": "tts-1", "input": TEXT, "voice": voice, "response_format": "mp3", "stream_format": "sse"}
    with server.client() as c, c.stream("POST", "/v1/audio/speech", json=body) as r:
        assert r.status_code == 200
        events = [json.loads(line[len("data: ") :]) for line in r.iter_lines() if line.startswith("data: ")]
    deltas = [e for e in events if e["type"] == "speech.audio.delta"]
    assert len(deltas) >= 2 and events[-1]["type"] == "speech.audio.done"
    data = b"".join(base64.b64decode(e["audio"]) for e in deltas)
    assert 0 <= samples_24k(data, "mp3") - reference_samples <= EXTRA_SAMPLES["mp3"]


def test_a_sample_rate_the_format_cannot_take_is_a_400(server, voice):
    with server.client() as c:

        def post(**fields):
            return c.post("/v1/audio/speech", json={"model": "tts-1", "input": TEXT, "voice": voice, **fields})

        r = post(response_format="ulaw", sample_rate=16_000)
        assert r.status_code == 400, r.text
        assert "8000" in r.json()["error"]["message"] and r.json()["error"]["param"] == "sample_rate"
        assert post(response_format="opus", sample_rate=44_100).status_code == 400
        assert post(response_format="pcm", sample_rate=12_345).status_code == 422  # not a listed rate
        r = post(response_format="mp3", sample_rate=44_100, stream=False)  # a whole file at 44.1 kHz
        assert r.status_code == 200 and av_stream.decode(r.content)[1] == 44_100
