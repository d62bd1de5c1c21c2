"""WebSocket /v1/audio/speech/realtime with a real WebSocket client against the real app:
text deltas in, audio out sentence by sentence, while more text is still to come."""

import json
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import numpy as np
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import ClientConnection, connect

from chatterbox_server.benchmark.server_process import serve_in_thread
from chatterbox_server.server import Settings, create_app
from tts_engine import TTSConfig, TTSEngine

pytestmark = pytest.mark.server

RECV_TIMEOUT_S = 60.0
KEY = "realtime-key"
AUTH = {"Authorization": f"Bearer {KEY}"}


@contextmanager
def app_with_voice(model_dir, voices_dir, voice_a, **settings) -> Iterator[str]:
    """The real app (tiny stand-in) served on a free port with voice "v" registered; yields its base URL."""
    engine = TTSEngine(TTSConfig(model_dir=model_dir, model_dtype="fp32"))
    try:
        with serve_in_thread(create_app(Settings(voices_dir=voices_dir, warmup=False, **settings), engine)) as url:
            with open(voice_a, "rb") as f:
                r = httpx.post(url + "/voices/register", files={"voice_file": f}, data={"voice_id": "v"}, headers=AUTH)
            assert r.status_code == 200, r.text
            yield url
    finally:
        engine.close()


def socket_url(url: str) -> str:
    return url.replace("http://", "ws://") + "/v1/audio/speech/realtime"


@pytest.fixture(scope="module")
def server(model_dir, tmp_path_factory, voice_a):
    with app_with_voice(
        model_dir, tmp_path_factory.mktemp("voices"), voice_a, api_keys=KEY, max_text_length=400
    ) as url:
        yield socket_url(url)


@contextmanager
def open_session(url: str, **config) -> Iterator[ClientConnection]:
    with connect(url, additional_headers=AUTH, open_timeout=10, max_size=2**22) as ws:
        ws.send(json.dumps({"type": "config", "voice": "v", "seed": 1, **config}))
        ready = json.loads(ws.recv(timeout=RECV_TIMEOUT_S))
        fmt = config.get("response_format", "pcm")
        assert ready == {"type": "ready", "sample_rate": 24_000, "format": fmt, "voice": "v"}
        yield ws


def send_text(ws: ClientConnection, text: str) -> None:
    ws.send(json.dumps({"type": "text", "delta": text}))


def events_until(ws: ClientConnection, stop) -> tuple[list[dict], bytes]:
    """Read frames until an event satisfies `stop`; returns (events, audio bytes) seen."""
    events, audio = [], bytearray()
    while True:
        frame = ws.recv(timeout=RECV_TIMEOUT_S)
        if isinstance(frame, bytes):
            audio += frame
            continue
        event = json.loads(frame)
        events.append(event)
        if stop(event):
            return events, bytes(audio)


def test_first_audio_arrives_before_the_last_text_delta_is_sent(server):
    with open_session(server) as ws:
        for delta in ["Hello", " there", ", how are", " you today?", " "]:  # an LLM's first sentence
            send_text(ws, delta)
        first = ws.recv(timeout=RECV_TIMEOUT_S)
        assert json.loads(first) == {"type": "segment.start", "segment": 0, "text": "Hello there, how are you today?"}
        audio = ws.recv(timeout=RECV_TIMEOUT_S)
        assert isinstance(audio, bytes) and len(audio) > 0  # speaking, and the reply is not finished yet
        for delta in ["I am", " fine, thanks", " for asking."]:
            send_text(ws, delta)
        ws.send(json.dumps({"type": "close"}))
        events, rest = events_until(ws, lambda e: e["type"] == "done")
    starts = [e for e in events if e["type"] == "segment.start"]
    ends = [e for e in events if e["type"] == "segment.end"]
    assert [e["text"] for e in starts] == ["I am fine, thanks for asking."]
    assert [e["segment"] for e in ends] == [0, 1] and all(e["audio_seconds"] > 0 for e in ends)
    samples = np.frombuffer(audio + rest, dtype="<i2")
    assert samples.shape[0] == pytest.approx(sum(e["audio_seconds"] for e in ends) * 24_000, abs=2)
    assert np.abs(samples).max() > 0


def test_wav_format_sends_one_header_then_pcm(server):
    with open_session(server, response_format="wav") as ws:
        send_text(ws, "One. Two.")
        ws.send(json.dumps({"type": "close"}))
        events, audio = events_until(ws, lambda e: e["type"] == "done")
    assert audio[:4] == b"RIFF" and audio.count(b"RIFF") == 1
    assert len([e for e in events if e["type"] == "segment.end"]) == 2


def test_cancel_stops_the_segment_at_once_and_the_session_goes_on(server):
    with open_session(server) as ws:
        send_text(ws, " ".join(["This sentence keeps the model busy for a while."] * 4))
        send_text(ws, " And this one waits in the queue. ")
        ws.send(json.dumps({"type": "flush"}))
        events, audio = events_until(ws, lambda e: e["type"] == "segment.start")
        assert isinstance(ws.recv(timeout=RECV_TIMEOUT_S), bytes)  # it is speaking
        ws.send(json.dumps({"type": "cancel"}))
        events, _ = events_until(ws, lambda e: e["type"] == "cancelled")
        assert events[-1]["segment"] == 0
        assert not [e for e in events if e["type"] == "segment.end"]  # segment 0 never finished
        # after "cancelled" nothing of segment 0 or the dropped segment arrives; the session still speaks
        send_text(ws, "Still here. ")
        events, audio = events_until(ws, lambda e: e["type"] == "segment.end")
        assert [e["type"] for e in events] == ["segment.start", "segment.end"]
        assert events[0]["text"] == "Still here." and len(audio) > 0
        ws.send(json.dumps({"type": "close"}))
        events_until(ws, lambda e: e["type"] == "done")


def test_bad_messages_get_error_events_and_change_nothing(server):
    with open_session(server) as ws:
        ws.send("not json")
        ws.send(b"\x00\x01")
        ws.send(json.dumps({"type": "shout"}))
        ws.send(json.dumps({"type": "text", "delta": 5}))
        send_text(ws, "x" * 401)  # over max_text_length waiting to be spoken
        errors = [json.loads(ws.recv(timeout=RECV_TIMEOUT_S)) for _ in range(5)]
        assert [e["error"]["type"] for e in errors] == [
            "invalid_message",
            "invalid_message",
            "invalid_message",
            "invalid_message",
            "text_too_long",
        ]
        send_text(ws, "Fine. ")
        ws.send(json.dumps({"type": "close"}))
        events, audio = events_until(ws, lambda e: e["type"] == "done")
        assert [e["text"] for e in events if e["type"] == "segment.start"] == ["Fine."] and audio


@pytest.mark.parametrize(
    ("config", "kind"),
    [
        ({"type": "config", "voice": "nobody"}, "voice_not_found"),
        ({"type": "config", "voice": "v", "temperature": -1}, "validation_error"),
        ({"type": "text", "delta": "config first"}, "validation_error"),
    ],
)
def test_a_bad_config_is_refused_with_a_reason(server, config, kind):
    with connect(server, additional_headers=AUTH, open_timeout=10) as ws:
        ws.send(json.dumps(config))
        error = json.loads(ws.recv(timeout=RECV_TIMEOUT_S))
        assert error["type"] == "error" and error["error"]["type"] == kind
        with pytest.raises(Exception, match="1008"):
            ws.recv(timeout=RECV_TIMEOUT_S)


def test_api_keys_are_required(server):
    with pytest.raises(InvalidStatus) as refused:
        connect(server, open_timeout=10)
    assert refused.value.response.status_code == 401
    with open_session(server):  # the key in the Authorization header, as the HTTP routes take it
        pass


@pytest.fixture(scope="module")
def one_slot_server(model_dir, tmp_path_factory, voice_a):
    """A server with one synthesis slot, so a segment can be made to wait in the queue."""
    voices = tmp_path_factory.mktemp("voices")
    with app_with_voice(model_dir, voices, voice_a, max_concurrent_requests=1, queue_timeout_s=120) as url:
        yield url


def test_cancel_while_a_segment_waits_for_a_slot_never_speaks_it(one_slot_server):
    url = one_slot_server
    ws_url = socket_url(url)
    hold = {"text": "Holding the only slot. " * 20, "voice_id": "v"}
    with httpx.Client(base_url=url, timeout=120) as http, http.stream("POST", "/tts", data=hold) as held:
        chunks = held.iter_bytes()
        next(chunks)  # an HTTP stream holds the one slot (unread, it cannot finish)
        with connect(ws_url, open_timeout=10) as ws:
            ws.send(json.dumps({"type": "config", "voice": "v"}))
            assert json.loads(ws.recv(timeout=RECV_TIMEOUT_S))["type"] == "ready"
            send_text(ws, "Waiting for a slot. ")
            while http.get("/metrics?format=json").json()["queued_requests"] != 1:
                pass  # the segment is queued behind the HTTP stream
            ws.send(json.dumps({"type": "cancel"}))
            assert json.loads(ws.recv(timeout=RECV_TIMEOUT_S)) == {"type": "cancelled", "segment": 0}
            assert http.get("/metrics?format=json").json()["queued_requests"] == 0  # it left the queue
            held.close()  # the slot frees up; nothing of segment 0 may start now
            send_text(ws, "Next one. ")
            events, audio = events_until(ws, lambda e: e["type"] == "segment.end")
            assert events[0] == {"type": "segment.start", "segment": 1, "text": "Next one."}
            assert len(audio) > 0


@pytest.fixture(scope="module")
def small_server(model_dir, tmp_path_factory, voice_a):
    """One realtime session at most, closed after a second of silence."""
    voices = tmp_path_factory.mktemp("voices")
    with app_with_voice(model_dir, voices, voice_a, max_realtime_sessions=1, realtime_idle_timeout_s=1.0) as url:
        yield socket_url(url)


def test_sessions_are_bounded_and_a_silent_one_is_closed(small_server):
    with open_session(small_server) as ws:
        with pytest.raises(InvalidStatus) as refused:
            connect(small_server, open_timeout=10)
        assert refused.value.response.status_code == 429
        assert json.loads(refused.value.response.body)["error"]["type"] == "queue_full"
        events, _ = events_until(ws, lambda e: e["type"] == "done")  # say nothing: the server gives up
        assert events[0]["error"]["type"] == "idle_timeout"
    with open_session(small_server):  # the slot is free again
        pass
