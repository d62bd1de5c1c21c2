"""POST /tts and /tts/json end to end: a real uvicorn server on the tiny stand-in, spoken to over HTTP."""

import json
import shutil
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest

from chatterbox_server.benchmark.server_process import ServerProcess
from tests.support import (
    LONG_PIECE,
    LONG_TEXT,
    MULTI_SENTENCE,
    TEXT,
    assert_error,
    decode_wav,
    metric_value,
    strongest_partials,
)

pytestmark = pytest.mark.server


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl not installed")
def test_curl_flows_verbatim(server, voice_a, tmp_path):
    def curl(*args):
        proc = subprocess.run(
            ["curl", "-s", "-S", "--fail-with-body", *args], cwd=tmp_path, capture_output=True, timeout=120
        )
        assert proc.returncode == 0, proc.stderr + proc.stdout
        return proc.stdout

    shutil.copy(voice_a, tmp_path / "voice.wav")
    registered = json.loads(curl("-X", "POST", f"{server.url}/voices/register", "-F", "voice_file=@voice.wav"))
    assert registered["message"] == "Voice registered successfully"
    voice_id = registered["voice_id"]
    again = json.loads(curl("-X", "POST", f"{server.url}/voices/register", "-F", "voice_file=@voice.wav"))
    assert again["voice_id"] == voice_id  # content-derived id

    curl(
        "-X",
        "POST",
        f"{server.url}/tts",
        "-F",
        "text=Hello, how are you today?",
        "-F",
        f"voice_id={voice_id}",
        "--output",
        "output.wav",
    )
    audio, info = decode_wav((tmp_path / "output.wav").read_bytes())
    assert (info.samplerate, info.channels, info.subtype) == (24_000, 1, "PCM_16")
    assert audio.shape[0] > 0 and audio.shape[0] % 960 == 0

    curl(
        "-X",
        "POST",
        f"{server.url}/tts",
        "-F",
        "text=Hello, how are you today?",
        "-F",
        "voice_file=@voice.wav",
        "--output",
        "output2.wav",
    )
    audio2, _ = decode_wav((tmp_path / "output2.wav").read_bytes())
    assert audio2.shape == audio.shape  # same voice, same text, greedy: same length


def test_tts_returns_wav_with_seed_headers(client, voice_ids):
    r = client.post("/tts", data={"text": TEXT, "voice_id": voice_ids["a"], "stream": "false"})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "audio/wav"
    audio, info = decode_wav(r.content)
    assert (info.samplerate, info.channels, info.subtype) == (24_000, 1, "PCM_16")
    assert float(r.headers["X-Audio-Duration"]) == pytest.approx(audio.shape[0] / 24_000, abs=1e-3)
    tokens = int(r.headers["X-Tokens-Generated"])
    assert audio.shape[0] == (tokens - 1 + 3) * 960  # STOP dropped, 3 SILENCE added
    assert float(r.headers["X-Generation-Time"]) > 0
    assert float(r.headers["X-RTF"]) == pytest.approx(
        float(r.headers["X-Generation-Time"]) / float(r.headers["X-Audio-Duration"]), rel=0.01
    )
    assert len(r.headers["X-Request-ID"]) >= 8
    assert 0.05 < np.abs(audio).max() <= 1.0


def test_tts_sampling_fields_and_seed(client, voice_ids):
    fields = {
        "text": TEXT,
        "voice_id": voice_ids["a"],
        "temperature": "0.9",
        "top_k": "100",
        "top_p": "0.9",
        "repetition_penalty": "1.3",
        "seed": "42",
        "max_new_tokens": "500",
        "stream": "false",
    }
    first = client.post("/tts", data=fields)
    second = client.post("/tts", data=fields)
    assert first.status_code == second.status_code == 200
    assert first.headers["X-Tokens-Generated"] == second.headers["X-Tokens-Generated"]
    capped = client.post(
        "/tts", data={"text": TEXT, "voice_id": voice_ids["a"], "max_new_tokens": "4", "stream": "false"}
    )
    assert capped.headers["X-Tokens-Generated"] == "4"
    assert decode_wav(capped.content)[0].shape[0] == (4 + 3) * 960


def test_tts_json(client, voice_ids):
    r = client.post("/tts/json", json={"text": TEXT, "voice_id": voice_ids["b"], "seed": 1})
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {
        "request_id",
        "audio_duration",
        "generation_time",
        "rtf",
        "tokens_generated",
        "sample_rate",
        "time_to_first_audio",
        "normalized_text",
        "pieces",
        "truncated",
    }
    assert body["truncated"] is None  # it ended on STOP (tests/server/test_truncated.py for the other cases)
    assert body["sample_rate"] == 24_000 and body["tokens_generated"] > 8
    assert body["audio_duration"] == pytest.approx((body["tokens_generated"] - 1 + 3) * 0.04, abs=1e-3)
    assert r.headers["X-Request-ID"] == body["request_id"]


def test_request_id_is_echoed(client):
    assert client.get("/health/live", headers={"X-Request-ID": "trace-123"}).headers["X-Request-ID"] == "trace-123"


@pytest.mark.slow
def test_two_voices_in_parallel_never_cross(client, voice_ids):
    def speak(voice):
        r = client.post("/tts", data={"text": TEXT, "voice_id": voice_ids[voice]})
        assert r.status_code == 200
        return decode_wav(r.content)[0]

    reference = {v: speak(v) for v in "ab"}
    jobs = list("abababab")
    with ThreadPoolExecutor(8) as pool:
        outputs = list(pool.map(speak, jobs))
    # the strongest partial of each token, not samples: under load the vocoder stage cuts a
    # stream's windows elsewhere, which moves the tones' phases (and blends seams) but not their pitch
    for voice, audio in zip(jobs, outputs):
        other = "b" if voice == "a" else "a"
        n = min(audio.shape[0], reference[other].shape[0])
        own = np.mean(strongest_partials(audio[:n]) == strongest_partials(reference[voice][:n]))
        cross = np.mean(strongest_partials(audio[:n]) == strongest_partials(reference[other][:n]))
        assert own >= 0.9 and cross <= 0.2, (voice, own, cross)


def test_error_cases_map_to_clear_4xx(client, voice_ids, server):
    v = voice_ids["a"]
    assert_error(client.post("/tts", data={"text": TEXT}), 400, "missing_voice")
    assert_error(client.post("/tts", data={"text": TEXT, "voice_id": "nobody"}), 404, "voice_not_found")
    assert_error(client.post("/tts", data={"text": "", "voice_id": v}), 422)
    assert_error(client.post("/tts", data={"text": "   ", "voice_id": v}), 422, "invalid_input")
    assert_error(client.post("/tts", data={"text": "x" * 5001, "voice_id": v}), 413, "text_too_long")
    assert_error(client.post("/tts", data={"text": TEXT, "voice_id": v, "temperature": "hot"}), 422)
    assert_error(client.post("/tts", data={"text": TEXT, "voice_id": v, "top_p": "0"}), 422)
    assert_error(client.post("/tts", data={"text": TEXT, "voice_id": v, "max_new_tokens": "100000"}), 422)
    assert_error(
        client.post("/tts", files={"voice_file": ("x.wav", b"junk")}, data={"text": TEXT}), 422, "invalid_audio"
    )
    assert_error(client.post("/tts/json", json={"text": TEXT}), 422, "validation_error")
    assert_error(client.post("/tts/json", json={"text": TEXT, "voice_id": v, "bogus": 1}), 422)
    assert_error(client.post("/tts/json", content=b"{not json", headers={"content-type": "application/json"}), 422)
    assert_error(client.post("/tts/json", json={"text": "x" * 5001, "voice_id": v}), 413)
    assert_error(client.get("/no/such/route"), 404)
    assert "Traceback" not in server.log()


def test_oversize_upload_is_refused_while_streaming(model_dir, tmp_path, voice_a):
    limit = 100_000
    with (
        ServerProcess(
            model_dir, tmp_path / "voices", tmp_path / "log", max_voice_file_size=limit, warmup="false"
        ) as server,
        server.client() as c,
    ):
        big = voice_a.read_bytes() + b"\0" * limit  # a valid WAV header, then too many bytes
        r = c.post("/voices/register", files={"voice_file": ("big.wav", big)})
        assert_error(r, 413, "upload_too_large")

        def chunked():  # no Content-Length: the limit must bite while the body streams in
            boundary = b'--xyz\r\nContent-Disposition: form-data; name="voice_file"; filename="a.wav"\r\n\r\n'
            yield boundary
            for _ in range(50):
                yield b"\0" * 10_000
            yield b"\r\n--xyz--\r\n"

        r = c.post("/voices/register", content=chunked(), headers={"content-type": "multipart/form-data; boundary=xyz"})
        assert_error(r, 413, "upload_too_large")
        assert c.get("/voices").json()["voices"] == []
        assert c.get("/health").status_code == 200


@pytest.mark.slow
def test_overload_gets_429_with_retry_after(model_dir, tmp_path, voice_a):
    with (
        ServerProcess(
            model_dir, tmp_path / "voices", tmp_path / "log", max_concurrent_requests=1, max_queue=1, warmup="false"
        ) as server,
        server.client() as c,
    ):
        with open(voice_a, "rb") as f:
            c.post("/voices/register", files={"voice_file": ("v", f)}, data={"voice_id": "v"})
        barrier = threading.Barrier(6)

        def request(_):
            with server.client() as own:
                barrier.wait()
                return own.post(
                    "/tts", data={"text": LONG_PIECE, "voice_id": "v", "max_new_tokens": "150", "stream": "false"}
                )

        with ThreadPoolExecutor(6) as pool:
            responses = list(pool.map(request, range(6)))
        statuses = sorted(r.status_code for r in responses)
        assert set(statuses) <= {200, 429}, statuses
        assert statuses.count(200) >= 2 and statuses.count(429) >= 1, statuses
        for r in responses:
            if r.status_code == 429:
                assert_error(r, 429, "queue_full")
                assert r.headers["Retry-After"] == "1"
            else:
                assert decode_wav(r.content)[0].shape[0] == (150 + 3) * 960
        assert metric_value(c, "tts_requests_rejected_total", reason="queue_full") == statuses.count(429)


@pytest.mark.slow
def test_queue_timeout_gives_503_and_slow_synthesis_504(model_dir, tmp_path, voice_a):
    with (
        ServerProcess(
            model_dir,
            tmp_path / "voices",
            tmp_path / "log",
            max_concurrent_requests=1,
            queue_timeout_s=0.2,
            request_timeout_s=1.0,
            warmup="false",
        ) as server,
        server.client() as c,
    ):
        with open(voice_a, "rb") as f:
            c.post("/voices/register", files={"voice_file": ("v", f)}, data={"voice_id": "v"})
        with ThreadPoolExecutor(2) as pool:
            slow = pool.submit(c.post, "/tts", data={"text": LONG_TEXT, "voice_id": "v", "stream": "false"})
            while metric_value(c, "tts_requests_in_flight") < 1:
                time.sleep(0.02)
            waiting = pool.submit(c.post, "/tts", data={"text": TEXT, "voice_id": "v"})
            r = waiting.result()
            assert_error(r, 503, "queue_timeout")
            assert r.headers["Retry-After"] == "1"
            assert_error(slow.result(), 504, "synthesis_timeout")
        assert metric_value(c, "tts_requests_cancelled_total", reason="timeout") == 1
        assert metric_value(c, "tts_requests_in_flight") == 0
        assert c.post("/tts", data={"text": "Short.", "voice_id": "v"}).status_code == 200


def test_client_disconnect_cancels_synthesis(client, voice_ids):
    before = metric_value(client, "tts_requests_cancelled_total", reason="client_disconnected")
    with pytest.raises(httpx.TimeoutException):
        client.post("/tts", data={"text": LONG_TEXT, "voice_id": voice_ids["a"], "stream": "false"}, timeout=0.5)
    deadline = time.monotonic() + 30
    while metric_value(client, "tts_requests_cancelled_total", reason="client_disconnected") <= before:
        assert time.monotonic() < deadline, "the synthesis was not cancelled"
        time.sleep(0.1)
    assert metric_value(client, "tts_requests_in_flight") == 0


@pytest.mark.slow
def test_stream_sends_one_header_then_pcm_and_matches_the_whole_file(client, voice_ids):
    with client.stream("POST", "/tts", data={"text": MULTI_SENTENCE, "voice_id": voice_ids["a"]}) as r:
        assert r.status_code == 200 and r.headers["content-type"] == "audio/wav"
        streamed = b"".join(r.iter_bytes())
    assert streamed.count(b"RIFF") == 1 and streamed[:4] == b"RIFF"
    whole = client.post("/tts", data={"text": MULTI_SENTENCE, "voice_id": voice_ids["a"], "stream": "false"})
    a, info = decode_wav(streamed)
    b, _ = decode_wav(whole.content)
    assert info.samplerate == 24_000
    assert abs(a.shape[0] - b.shape[0]) <= 960  # within one seam's tolerance (here: equal)


@pytest.mark.slow
def test_first_audio_leaves_before_generation_ends(client, voice_ids):
    """Server-side proof: the time to first audio is a fraction of the request's duration."""
    r = client.post("/tts/json", json={"text": MULTI_SENTENCE, "voice_id": voice_ids["b"]})
    body = r.json()
    assert len(body["pieces"]) >= 5
    assert 0 < body["time_to_first_audio"] < body["generation_time"] / 2
    first, last = body["pieces"][0], body["pieces"][-1]
    assert first["audio_start"] == 0 and last["audio_end"] == pytest.approx(body["audio_duration"], abs=1e-3)
    for piece in body["pieces"]:
        assert MULTI_SENTENCE[piece["text_start"] : piece["text_end"]] == piece["text"]
    assert any("[chuckle]" in p["text"] for p in body["pieces"])

    ttfa_before = metric_value(client, "tts_time_to_first_audio_seconds_sum")
    duration_before = metric_value(client, "tts_request_duration_seconds_sum", route="/tts")
    with client.stream("POST", "/tts", data={"text": MULTI_SENTENCE, "voice_id": voice_ids["b"]}) as s:
        b"".join(s.iter_bytes())
    ttfa = metric_value(client, "tts_time_to_first_audio_seconds_sum") - ttfa_before
    duration = metric_value(client, "tts_request_duration_seconds_sum", route="/tts") - duration_before
    assert 0 < ttfa < duration / 2


def test_disconnect_mid_stream_frees_the_slot(client, voice_ids):
    before = metric_value(client, "tts_requests_cancelled_total", reason="client_disconnected")
    with client.stream("POST", "/tts", data={"text": LONG_TEXT, "voice_id": voice_ids["a"]}) as r:
        first = next(r.iter_bytes())
        assert first.startswith(b"RIFF")
    deadline = time.monotonic() + 30
    while metric_value(client, "tts_requests_cancelled_total", reason="client_disconnected") <= before:
        assert time.monotonic() < deadline, "the stream's synthesis was not cancelled"
        time.sleep(0.1)
    while metric_value(client, "tts_requests_in_flight") != 0:
        assert time.monotonic() < deadline
        time.sleep(0.05)


@pytest.mark.slow
def test_long_text_at_the_limit(client, voice_ids):
    text = (MULTI_SENTENCE + " ") * 40
    text = text[:5000]
    r = client.post("/tts/json", json={"text": text, "voice_id": voice_ids["a"], "max_new_tokens": 12})
    assert r.status_code == 200, r.text
    body = r.json()
    assert len(body["pieces"]) > 20
    assert body["pieces"][-1]["text_end"] <= 5000
