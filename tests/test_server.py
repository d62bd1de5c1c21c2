"""The HTTP API end to end: a real uvicorn server on the tiny stand-in, spoken to over HTTP."""

import io
import json
import shutil
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

import httpx
import numpy as np
import pytest
import soundfile as sf
from prometheus_client.parser import text_string_to_metric_families

from tests.clips import make_clip
from tests.server_process import ServerProcess

pytestmark = pytest.mark.server

TEXT = "Hello, how are you today?"
# one piece (no sentence end, no clause break, < 250 characters): the stand-in speaks
# 8 + 6 × ~50 text tokens ≈ 300+ tokens for it, unless max_new_tokens caps it
LONG_PIECE = (
    "This sentence keeps the language model busy for a while and then it goes on and on "
    "without a single pause so that the whole of it stays in one piece for the engine to speak"
)
# many sentences: ~25 pieces, several seconds of work on the tiny stand-in
LONG_TEXT = " ".join(["This sentence keeps the language model busy for a while."] * 25)


@pytest.fixture(scope="module")
def server(model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("server")
    with ServerProcess(model_dir, root / "voices", root / "server.log") as running:
        yield running


@pytest.fixture(scope="module")
def client(server):
    with server.client() as c:
        yield c


@pytest.fixture(scope="module")
def voice_ids(client, voice_a, voice_b):
    ids = {}
    for name, path in (("a", voice_a), ("b", voice_b)):
        with open(path, "rb") as f:
            r = client.post(
                "/voices/register", files={"voice_file": (path.name, f)}, data={"voice_id": f"voice-{name}"}
            )
        assert r.status_code == 200, r.text
        ids[name] = r.json()["voice_id"]
    return ids


def decode_wav(data: bytes) -> tuple[np.ndarray, sf._SoundFileInfo]:
    info = sf.info(io.BytesIO(data))
    audio, _ = sf.read(io.BytesIO(data), dtype="float32")
    return audio, info


def assert_error(response: httpx.Response, status: int, kind: str | None = None) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"type", "message"}
    assert body["error"]["message"]
    if kind:
        assert body["error"]["type"] == kind
    return body["error"]


def metric_value(client, name: str, **labels) -> float:
    text = client.get("/metrics").text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return 0.0


# ----- the README's curl lines, verbatim ---------------------------------------------------


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


# ----- synthesis ---------------------------------------------------------------------------


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
        "pieces",
    }
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


def strongest_partials(audio: np.ndarray) -> np.ndarray:
    """The loudest FFT bin of each 960-sample token, int [tokens]."""
    frames = audio[: audio.shape[0] // 960 * 960].reshape(-1, 960)
    return np.argmax(np.abs(np.fft.rfft(frames, axis=1)), axis=1)


# ----- voices ------------------------------------------------------------------------------


def test_voice_listing_get_and_delete(client, voice_a):
    with open(voice_a, "rb") as f:
        r = client.post("/voices/register", files={"voice_file": ("v.wav", f)}, data={"voice_id": "to_delete"})
    assert r.status_code == 200
    listed = {v["voice_id"]: v for v in client.get("/voices").json()["voices"]}
    assert listed["to_delete"]["duration"] == pytest.approx(6.0)
    assert datetime.fromisoformat(listed["to_delete"]["created_at"]).timestamp() > 0
    assert client.get("/voices/to_delete").json()["voice_id"] == "to_delete"
    assert client.delete("/voices/to_delete").status_code == 200
    assert_error(client.get("/voices/to_delete"), 404, "voice_not_found")
    assert_error(client.delete("/voices/to_delete"), 404)
    assert_error(client.post("/tts", data={"text": TEXT, "voice_id": "to_delete"}), 404)


@pytest.mark.parametrize("bad_id", ["has space", "x" * 65, "dots.not.allowed", "ünï"])
def test_register_rejects_bad_voice_ids(client, voice_a, bad_id):
    before = client.get("/voices").json()
    with open(voice_a, "rb") as f:
        r = client.post("/voices/register", files={"voice_file": ("v.wav", f)}, data={"voice_id": bad_id})
    assert_error(r, 422, "invalid_input")
    assert client.get("/voices").json() == before


def test_register_rejects_bad_audio_with_reason(client, tmp_path):
    before = client.get("/voices").json()
    short = io.BytesIO()
    sf.write(short, make_clip(2.0, 24_000, 150.0, seed=1), 24_000, format="WAV")
    cases = [(short.getvalue(), "at least 5 s"), (b"not audio at all" * 50, "cannot decode"), (b"", "empty")]
    for data, reason in cases:
        r = client.post("/voices/register", files={"voice_file": ("v.wav", data)}, data={"voice_id": "bad"})
        assert reason in assert_error(r, 422, "invalid_audio")["message"]
    assert client.get("/voices").json() == before


# ----- errors ------------------------------------------------------------------------------


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


# ----- health and metrics -------------------------------------------------------------------


def test_health_endpoints(client, voice_ids):
    body = client.get("/health").json()
    assert body["status"] == "ok"
    assert body["providers"] == ["CPUExecutionProvider"]
    assert body["dtype"] == "fp32" and body["stand_in"] is True and "tones" in body["note"]
    assert body["voices_registered"] >= 2
    assert {"model_id", "in_flight", "queued", "max_concurrent_requests"} <= set(body)
    assert client.get("/health/ready").status_code == 200
    assert client.get("/health/live").json() == {"status": "alive"}


def test_prometheus_text_parses_and_has_every_family(client, voice_ids):
    client.post("/tts", data={"text": TEXT, "voice_id": voice_ids["a"]})
    families = {f.name for f in text_string_to_metric_families(client.get("/metrics").text)}
    for name in (
        "tts_requests",
        "tts_request_duration_seconds",
        "tts_rtf",
        "tts_time_to_first_audio_seconds",
        "tts_audio_seconds",
        "tts_tokens_generated",
        "tts_requests_in_flight",
        "tts_requests_queued",
        "tts_queue_wait_seconds",
        "tts_voice_cache_hits",
        "tts_voice_cache_misses",
        "tts_voice_cache_evictions",
        "tts_engine_stage_seconds",
    ):
        assert name in families, name
    assert metric_value(client, "tts_requests_total", route="/tts", status="200") >= 1
    assert metric_value(client, "tts_engine_stage_seconds_count", stage="decode") >= 1


def test_engine_loop_metrics(client, voice_ids):
    """Batch size and time per step, prefill tokens, prefix-cache use, queue to first token."""
    client.post("/tts", data={"text": "Warm.", "voice_id": voice_ids["a"], "stream": "false"})  # prefix cached
    before = {
        name: metric_value(client, name)
        for name in (
            "tts_engine_batch_size_count",
            "tts_engine_step_seconds_count",
            "tts_engine_prefill_tokens_total",
            "tts_queue_to_first_token_seconds_count",
            "tts_prefix_cache_hits_total",
        )
    }
    texts = ["One sentence for the first stream.", "Another for the second.", "And a third one, to be sure."]
    with ThreadPoolExecutor(3) as pool:
        jobs = [
            pool.submit(client.post, "/tts", data={"text": t, "voice_id": voice_ids["a"], "stream": "false"})
            for t in texts
        ]
        assert all(j.result().status_code == 200 for j in jobs)
    steps = metric_value(client, "tts_engine_batch_size_count") - before["tts_engine_batch_size_count"]
    assert steps > 0 and metric_value(client, "tts_engine_step_seconds_count") > before["tts_engine_step_seconds_count"]
    rows = metric_value(client, "tts_engine_batch_size_sum")
    assert rows >= steps  # at least one row per step
    assert metric_value(client, "tts_engine_prefill_tokens_total") > before["tts_engine_prefill_tokens_total"]
    first_tokens = metric_value(client, "tts_queue_to_first_token_seconds_count")
    assert first_tokens - before["tts_queue_to_first_token_seconds_count"] == 3
    # the voice's conditioning was prefilled once; these three requests reused it
    assert metric_value(client, "tts_prefix_cache_hits_total") - before["tts_prefix_cache_hits_total"] == 3
    assert metric_value(client, "tts_prefix_cache_bytes") > 0
    assert metric_value(client, "tts_engine_sequences_running") == 0


def test_decoder_metrics(client, voice_ids):
    """Decoder calls, seconds, rows per call and audio per call; the vocoder queue and its wait."""
    names = ("tts_decoder_calls_total", "tts_decoder_seconds_total", "tts_decoder_audio_seconds_total")
    before = {name: metric_value(client, name) for name in (*names, "tts_vocoder_wait_seconds_count")}
    response = client.post("/tts", data={"text": TEXT, "voice_id": voice_ids["a"], "stream": "false"})
    assert response.status_code == 200
    audio_s = len(sf.read(io.BytesIO(response.content))[0]) / 24_000
    calls = metric_value(client, "tts_decoder_calls_total") - before["tts_decoder_calls_total"]
    assert calls == 1  # stream=false: one call for its one piece
    produced = metric_value(client, "tts_decoder_audio_seconds_total") - before["tts_decoder_audio_seconds_total"]
    assert produced == pytest.approx(audio_s, abs=0.05)
    assert metric_value(client, "tts_decoder_seconds_total") > before["tts_decoder_seconds_total"]
    assert metric_value(client, "tts_decoder_rows_per_call_count") >= calls
    assert metric_value(client, "tts_vocoder_wait_seconds_count") > before["tts_vocoder_wait_seconds_count"]
    assert metric_value(client, "tts_vocoder_queue_windows") == 0


def test_metrics_json_summary(client, voice_ids):
    before = client.get("/metrics", params={"format": "json"}).json()
    client.post("/tts", data={"text": TEXT, "voice_id": voice_ids["a"]})
    client.post("/tts", data={"text": TEXT, "voice_id": "nobody"})
    after = client.get("/metrics", headers={"Accept": "application/json"}).json()
    assert set(after) == {
        "total_requests",
        "successful_requests",
        "failed_requests",
        "total_audio_seconds",
        "total_generation_time",
        "average_rtf",
        "concurrent_requests",
        "queued_requests",
        "peak_concurrent_requests",
        "max_concurrent_allowed",
    }
    assert after["total_requests"] == before["total_requests"] + 2
    assert after["successful_requests"] == before["successful_requests"] + 1
    assert after["failed_requests"] == before["failed_requests"] + 1
    assert after["total_audio_seconds"] > before["total_audio_seconds"]
    assert after["average_rtf"] > 0 and after["max_concurrent_allowed"] == 8


def test_health_answers_while_synthesising(client, voice_ids, server):
    with ThreadPoolExecutor(1) as pool, server.client() as other:
        job = pool.submit(
            client.post, "/tts", data={"text": LONG_PIECE, "voice_id": voice_ids["a"], "max_new_tokens": "300"}
        )
        seen_busy = False
        while not job.done():
            body = other.get("/health").json()
            seen_busy |= body["in_flight"] == 1
            time.sleep(0.05)
        assert job.result().status_code == 200
    assert seen_busy


# ----- persistence --------------------------------------------------------------------------


@pytest.mark.slow
def test_voices_persist_across_restart_and_torn_writes_are_ignored(model_dir, tmp_path, voice_a, voice_b):
    voices = tmp_path / "voices"
    with ServerProcess(model_dir, voices, tmp_path / "log1") as server, server.client() as c:
        for vid, path in (("keep", voice_a), ("other", voice_b)):
            with open(path, "rb") as f:
                assert (
                    c.post("/voices/register", files={"voice_file": ("v", f)}, data={"voice_id": vid}).status_code
                    == 200
                )
        before = c.post("/tts", data={"text": TEXT, "voice_id": "keep", "stream": "false"})
    # a torn write: files without their meta.json, and a meta whose source was cut short
    torn = voices / "torn"
    shutil.copytree(voices / "keep", torn)
    (torn / "meta.json").unlink()
    cut = voices / "cut"
    shutil.copytree(voices / "other", cut)
    meta = json.loads((cut / "meta.json").read_text())
    (cut / "meta.json").write_text(json.dumps({**meta, "voice_id": "cut"}))
    (cut / "source.audio").write_bytes((cut / "source.audio").read_bytes()[:1000])
    # a voice encoded by another model must be re-encoded, not reused
    meta = json.loads((voices / "other" / "meta.json").read_text())
    (voices / "other" / "meta.json").write_text(json.dumps({**meta, "model": "some-other-model:q4"}))

    with ServerProcess(model_dir, voices, tmp_path / "log2") as server, server.client() as c:
        listed = sorted(v["voice_id"] for v in c.get("/voices").json()["voices"])
        assert listed == ["keep", "other"]
        after = c.post("/tts", data={"text": TEXT, "voice_id": "keep", "stream": "false"})
        assert after.status_code == 200
        assert after.headers["X-Tokens-Generated"] == before.headers["X-Tokens-Generated"]
        assert c.post("/tts", data={"text": TEXT, "voice_id": "other"}).status_code == 200
        assert "some-other-model" not in (voices / "other" / "meta.json").read_text()
        assert_error(c.post("/tts", data={"text": TEXT, "voice_id": "torn"}), 404)
        assert "torn" in server.log() and "cut" in server.log()


@pytest.mark.slow
def test_evicted_voice_reloads_from_disk(model_dir, tmp_path, voice_a, voice_b):
    with (
        ServerProcess(model_dir, tmp_path / "voices", tmp_path / "log", voice_cache_size=1, warmup="false") as server,
        server.client() as c,
    ):
        for vid, path in (("first", voice_a), ("second", voice_b)):
            with open(path, "rb") as f:
                assert (
                    c.post("/voices/register", files={"voice_file": ("v", f)}, data={"voice_id": vid}).status_code
                    == 200
                )
        assert metric_value(c, "tts_voice_cache_evictions_total") >= 1
        assert c.post("/tts", data={"text": TEXT, "voice_id": "first"}).status_code == 200
        assert c.post("/tts", data={"text": TEXT, "voice_id": "second"}).status_code == 200
        assert metric_value(c, "tts_voice_cache_size") == 1
        assert c.get("/health").json()["voices_registered"] == 2


# ----- backpressure, timeouts, disconnects, shutdown ---------------------------------------


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


# ----- streaming ----------------------------------------------------------------------------

MULTI_SENTENCE = (
    "Good morning everyone. Thanks for joining the call today. We have three topics. "
    "First the budget. Then the schedule. Finally, questions [chuckle] if we have time."
)


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
