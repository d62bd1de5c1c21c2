"""Estimated word and character timings on our own surfaces: the realtime socket's
segment.timestamps (opt-in in its config) and the OpenAI route's speech.audio.timestamps SSE events
(include_timestamps), against the real app."""

import base64
import json

import httpx
import numpy as np
import pytest
from websockets.sync.client import connect

from chatterbox_server.benchmark.server_process import serve_in_thread
from chatterbox_server.server import Settings, create_app
from tts_engine import TTSConfig, TTSEngine

pytestmark = pytest.mark.server

RECV_TIMEOUT_S = 60.0


@pytest.fixture(scope="module")
def base_url(model_dir, tmp_path_factory, voice_a):
    engine = TTSEngine(TTSConfig(model_dir=model_dir, model_dtype="fp32"))
    try:
        with serve_in_thread(
            create_app(Settings(voices_dir=tmp_path_factory.mktemp("voices"), warmup=False), engine)
        ) as url:
            with open(voice_a, "rb") as f:
                r = httpx.post(url + "/voices/register", files={"voice_file": f}, data={"voice_id": "v"})
            assert r.status_code == 200, r.text
            yield url
    finally:
        engine.close()


def check_timings(events: list[dict], text: str, audio_s: float) -> None:
    chars, starts, ends = [], [], []
    for event in events:
        assert event["estimated"] is True
        alignment = event["alignment"]
        chars += alignment["characters"]
        starts += alignment["character_start_times_seconds"]
        ends += alignment["character_end_times_seconds"]
    assert "".join(chars) == text
    assert starts == sorted(starts) and all(s <= e for s, e in zip(starts, ends))
    assert starts[0] >= 0 and ends[-1] == pytest.approx(audio_s, abs=1e-3)
    words = [w["word"] for event in events for w in event["words"]]
    assert words == text.split()


def test_realtime_segments_report_timings_when_asked(base_url):
    url = base_url.replace("http://", "ws://") + "/v1/audio/speech/realtime"
    with connect(url, open_timeout=10) as ws:
        ws.send(json.dumps({"type": "config", "voice": "v", "timestamps": True}))
        assert json.loads(ws.recv(timeout=RECV_TIMEOUT_S))["type"] == "ready"
        ws.send(json.dumps({"type": "text", "delta": "Hello there, friend. "}))
        ws.send(json.dumps({"type": "close"}))
        audio, events = bytearray(), []
        while True:
            frame = ws.recv(timeout=RECV_TIMEOUT_S)
            if isinstance(frame, bytes):
                audio += frame
                continue
            event = json.loads(frame)
            events.append(event)
            if event["type"] == "done":
                break
    kinds = [e["type"] for e in events]
    assert kinds[0] == "segment.start" and kinds[-2:] == ["segment.end", "done"]
    timings = [e for e in events if e["type"] == "segment.timestamps"]
    assert timings and all(e["segment"] == 0 for e in timings)
    check_timings(timings, "Hello there, friend.", len(audio) / 2 / 24_000)


def test_realtime_sends_no_timings_unless_asked(base_url):
    url = base_url.replace("http://", "ws://") + "/v1/audio/speech/realtime"
    with connect(url, open_timeout=10) as ws:
        ws.send(json.dumps({"type": "config", "voice": "v"}))
        json.loads(ws.recv(timeout=RECV_TIMEOUT_S))
        ws.send(json.dumps({"type": "text", "delta": "Quiet. "}))
        ws.send(json.dumps({"type": "close"}))
        kinds = []
        while not kinds or kinds[-1] != "done":
            frame = ws.recv(timeout=RECV_TIMEOUT_S)
            if isinstance(frame, str):
                kinds.append(json.loads(frame)["type"])
    assert "segment.timestamps" not in kinds


@pytest.mark.parametrize("fmt", ["pcm", "mp3"])
def test_openai_sse_carries_timestamps_events_when_asked(base_url, fmt):
    text = "One short sentence. And then, a second."
    body = {"model": "tts-1", "input": text, "voice": "v", "response_format": fmt}
    body |= {"stream_format": "sse", "include_timestamps": True}
    with httpx.stream("POST", base_url + "/v1/audio/speech", json=body, timeout=120) as r:
        assert r.status_code == 200
        events = [json.loads(line[len("data: ") :]) for line in r.iter_lines() if line.startswith("data: ")]
    kinds = [e["type"] for e in events]
    assert kinds[-1] == "speech.audio.done" and "speech.audio.timestamps" in kinds
    audio = b"".join(base64.b64decode(e["audio"]) for e in events if e["type"] == "speech.audio.delta")
    timings = [e for e in events if e["type"] == "speech.audio.timestamps"]
    if fmt == "pcm":
        check_timings(timings, text, np.frombuffer(audio, dtype="<i2").size / 24_000)
    else:
        assert "".join(c for e in timings for c in e["alignment"]["characters"]) == text


def test_openai_timestamps_need_sse(base_url):
    body = {"model": "tts-1", "input": "Hi.", "voice": "v", "include_timestamps": True}
    r = httpx.post(base_url + "/v1/audio/speech", json=body, timeout=60)
    assert r.status_code == 400
