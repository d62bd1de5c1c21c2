"""Health, readiness and metrics over HTTP (a real server on the tiny stand-in)."""

import io
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import soundfile as sf
from prometheus_client.parser import text_string_to_metric_families

from tests.support import (
    LONG_PIECE,
    TEXT,
    metric_value,
)

pytestmark = pytest.mark.server


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
