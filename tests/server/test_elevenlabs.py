"""ElevenLabs' API against the real app (tiny stand-in) over real sockets: the multi-context and
single-context WebSockets as Pipecat and LiveKit drive them, the HTTP routes, /v1/voices, and the
xi-api-key header."""

import base64
import json
import re
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import numpy as np
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from chatterbox_server.benchmark.server_process import serve_in_thread
from chatterbox_server.server import Settings, create_app
from chatterbox_server.server.routers import elevenlabs as elevenlabs_router
from chatterbox_server.server.routes import Body, RouteFacts, facts_for
from tts_engine import TTSConfig, TTSEngine

pytestmark = pytest.mark.server

RECV_TIMEOUT_S = 60.0
KEY = "eleven-key"
XI = {"xi-api-key": KEY}
PIPECAT_QUERY = "model_id=eleven_flash_v2_5&output_format=pcm_16000&auto_mode=true"


@pytest.fixture(scope="module")
def base_url(model_dir, tmp_path_factory, voice_a):
    engine = TTSEngine(TTSConfig(model_dir=model_dir, model_dtype="fp32"))
    settings = Settings(voices_dir=tmp_path_factory.mktemp("voices"), warmup=False, api_keys=KEY, max_text_length=600)
    try:
        with serve_in_thread(create_app(settings, engine)) as url:
            with open(voice_a, "rb") as f:
                r = httpx.post(url + "/voices/register", files={"voice_file": f}, data={"voice_id": "v"}, headers=XI)
            assert r.status_code == 200, r.text
            yield url
    finally:
        engine.close()


def ws_url(base_url: str, path: str, query: str = PIPECAT_QUERY) -> str:
    return base_url.replace("http://", "ws://") + f"/v1/text-to-speech/v/{path}?{query}"


@contextmanager
def multi(base_url: str, query: str = PIPECAT_QUERY) -> Iterator[ClientConnection]:
    with connect(ws_url(base_url, "multi-stream-input", query), additional_headers=XI, open_timeout=10) as ws:
        yield ws


def send(ws: ClientConnection, **message) -> None:
    ws.send(json.dumps(message))


def receive_until(ws: ClientConnection, stop) -> list[dict]:
    messages = []
    while True:
        message = json.loads(ws.recv(timeout=RECV_TIMEOUT_S))
        messages.append(message)
        if stop(message):
            return messages


def audio_of(messages: list[dict]) -> bytes:
    return b"".join(base64.b64decode(m["audio"]) for m in messages if m.get("audio"))


def pipecat_clock(messages: list[dict]) -> tuple[str, list[float], float]:
    """What Pipecat makes of the alignments: the characters, their absolute start times (each
    message's times count from the end of the previous alignment), and where the last one ends."""
    chars, starts, clock = [], [], 0.0
    for m in messages:
        alignment = m.get("alignment")
        if not alignment:
            continue
        assert m["normalizedAlignment"] == alignment and m["alignmentEstimated"] is True
        assert len(alignment["chars"]) == len(alignment["charStartTimesMs"]) == len(alignment["charDurationsMs"])
        chars += alignment["chars"]
        starts += [clock + s / 1000 for s in alignment["charStartTimesMs"]]
        clock += (alignment["charStartTimesMs"][-1] + alignment["charDurationsMs"][-1]) / 1000
    return "".join(chars), starts, clock


def cancelled_total(base_url: str) -> float:
    text = httpx.get(base_url + "/metrics", headers=XI).text
    return sum(float(v) for v in re.findall(r"^tts_requests_cancelled_total\{[^}]*\} (\S+)$", text, re.M))


def test_two_contexts_each_speak_their_text_and_end_with_is_final(base_url):
    texts = {"a": "Hello there. How are you today?", "b": "Second context speaking."}
    with multi(base_url) as ws:
        for cid in texts:  # as Pipecat opens a context: a space, with its voice settings
            send(ws, text=" ", context_id=cid, voice_settings={"stability": 0.5, "speed": 1.0})
        send(ws, text="Hello there. ", context_id="a")  # sentences, as Pipecat sends them
        send(ws, text="Second context speaking. ", context_id="b")
        send(ws, text="How are you today? ", context_id="a")
        for cid in texts:  # the end of a turn: flush, then close_context
            send(ws, context_id=cid, flush=True)
            send(ws, context_id=cid, close_context=True)
        messages: list[dict] = []
        while len([m for m in messages if m.get("isFinal")]) < 2:
            messages.append(json.loads(ws.recv(timeout=RECV_TIMEOUT_S)))
    for cid, text in texts.items():
        mine = [m for m in messages if m.get("contextId") == cid]
        assert mine[-1] == {"isFinal": True, "contextId": cid}
        assert not [m for m in mine[:-1] if m.get("isFinal")]
        pcm = np.frombuffer(audio_of(mine), dtype="<i2")
        assert pcm.size > 0 and np.abs(pcm).max() > 0
        chars, starts, end_s = pipecat_clock(mine)
        # the text as sent, the space between the two sentences included, and a zero-length space at
        # the end (so a client closes the last word)
        assert chars == text + " "
        assert starts == sorted(starts)
        assert end_s == pytest.approx(pcm.size / 16_000, abs=0.05)  # 16-bit PCM at the rate asked for


def test_close_context_mid_sentence_stops_its_audio_and_the_engine_drops_it(base_url):
    before = cancelled_total(base_url)
    long_text = " ".join(["This sentence keeps the model busy for quite a while."] * 4) + " "
    with multi(base_url, "output_format=pcm_24000") as ws:
        send(ws, text=" ", context_id="talk")
        send(ws, text=long_text, context_id="talk")
        send(ws, text=" ", context_id="next")
        first = receive_until(ws, lambda m: bool(m.get("audio")))
        assert first[-1]["contextId"] == "talk"
        send(ws, context_id="talk", close_context=True)  # barge-in: no flush came before it
        closing = receive_until(ws, lambda m: m.get("isFinal") is True)
        assert closing[-1] == {"isFinal": True, "contextId": "talk"}
        # the other context goes on, and nothing more of "talk" arrives
        send(ws, text="Still here. ", context_id="next", flush=True)
        send(ws, context_id="next", flush=True)  # the end of its turn: a bare flush, then the close
        send(ws, context_id="next", close_context=True)
        after = receive_until(ws, lambda m: m.get("isFinal") is True)
        assert {m.get("contextId") for m in after} == {"next"}
        assert audio_of(after)
        send(ws, close_socket=True)
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=RECV_TIMEOUT_S)  # the server closes the socket
    assert cancelled_total(base_url) >= before + 1  # taken out of the running batch


def test_a_close_after_flushed_text_is_a_barge_in(base_url):
    """LiveKit flushes each sentence as it sends it and, interrupted, closes without the bare flush
    that ends a turn: the context stops at once (it was spoken to its end before)."""
    long_text = " ".join(["A sentence the agent had already sent and flushed."] * 4) + " "
    before = cancelled_total(base_url)
    with multi(base_url, "output_format=pcm_24000") as ws:
        send(ws, text=" ", context_id="turn")
        send(ws, text=long_text, context_id="turn", flush=True)
        receive_until(ws, lambda m: bool(m.get("audio")))
        send(ws, context_id="turn", close_context=True)  # the user interrupts
        messages = receive_until(ws, lambda m: m.get("isFinal") is True)
    chars, _, _ = pipecat_clock(messages)
    assert len(chars) < len(long_text.strip())  # stopped before the end
    assert cancelled_total(base_url) >= before + 1


def test_a_second_close_context_stops_a_flushed_context(base_url):
    long_text = " ".join(["A flushed turn that is still being spoken."] * 4) + " "
    with multi(base_url, "output_format=pcm_24000") as ws:
        send(ws, text=" ", context_id="turn")
        send(ws, text=long_text, context_id="turn")
        send(ws, context_id="turn", flush=True)  # Pipecat's end of turn: a bare flush, then the close
        send(ws, context_id="turn", close_context=True)  # so it keeps speaking
        receive_until(ws, lambda m: bool(m.get("audio")))
        send(ws, context_id="turn", close_context=True)  # then the user barges in
        messages = receive_until(ws, lambda m: m.get("isFinal") is True)
    chars, _, _ = pipecat_clock(messages)
    assert len(chars) < len(long_text.strip())  # stopped before the end


def test_keepalives_unknown_closes_and_bad_messages_leave_the_socket_usable(base_url):
    with multi(base_url, "output_format=pcm_24000") as ws:
        send(ws, text="")  # Pipecat's context-less keep-alive: no answer
        send(ws, context_id="never-opened", close_context=True)  # acknowledged
        assert json.loads(ws.recv(timeout=RECV_TIMEOUT_S)) == {"isFinal": True, "contextId": "never-opened"}
        ws.send("not json")
        ws.send(b"\x00")
        send(ws, context_id="x", text=5)
        send(ws, context_id="x")
        send(ws, context_id="x", text=" ", voice_settings={"speed": 9})
        errors = [json.loads(ws.recv(timeout=RECV_TIMEOUT_S)) for _ in range(5)]
        assert [e["error"] for e in errors] == [
            "invalid_message",
            "invalid_message",
            "invalid_message",
            "invalid_message",
            "validation_error",
        ]
        send(ws, text=" ", context_id="y")
        send(ws, text="x" * 601, context_id="y")  # over max_text_length waiting to be spoken
        error = json.loads(ws.recv(timeout=RECV_TIMEOUT_S))
        assert error["error"] == "text_too_long" and error["contextId"] == "y"
        send(ws, text="Fine. ", context_id="y", flush=True)
        send(ws, context_id="y", flush=True)
        send(ws, context_id="y", close_context=True)
        messages = receive_until(ws, lambda m: m.get("isFinal") is True)
        assert pipecat_clock(messages)[0] == "Fine. " and audio_of(messages)


def test_contexts_per_socket_are_bounded(base_url):
    with multi(base_url, "output_format=pcm_24000") as ws:
        for i in range(8):
            send(ws, text=" ", context_id=f"c{i}")
        send(ws, text=" ", context_id="one-too-many")
        error = json.loads(ws.recv(timeout=RECV_TIMEOUT_S))
        assert error["error"] == "too_many_contexts" and error["contextId"] == "one-too-many"


def test_stream_input_speaks_one_context_and_closes(base_url):
    url = ws_url(base_url, "stream-input", "output_format=pcm_24000&model_id=eleven_turbo_v2_5")
    with connect(url, additional_headers=XI, open_timeout=10) as ws:
        send(ws, text=" ", voice_settings={"speed": 1.0}, xi_api_key=KEY)
        send(ws, text="One sentence here. ")
        send(ws, text="And a second one")
        send(ws, text="")  # the end of the input
        messages = receive_until(ws, lambda m: m.get("isFinal") is True)
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=RECV_TIMEOUT_S)
    assert messages[-1]["isFinal"] is True and messages[-1]["audio"] is None
    assert all(m["isFinal"] is False and "contextId" not in m for m in messages[:-1])
    assert pipecat_clock(messages)[0] == "One sentence here. And a second one "  # its zero-length end space
    assert np.frombuffer(audio_of(messages), dtype="<i2").size > 0


def test_socket_query_and_voice_are_checked_at_the_upgrade(base_url):
    with pytest.raises(InvalidStatus) as refused:
        connect(ws_url(base_url, "multi-stream-input", "output_format=pcm_32000"), additional_headers=XI)
    assert refused.value.response.status_code == 400
    unknown = base_url.replace("http://", "ws://") + "/v1/text-to-speech/nobody/multi-stream-input"
    with pytest.raises(InvalidStatus) as refused:
        connect(unknown, additional_headers=XI)
    assert refused.value.response.status_code == 404


def test_keys_are_required_and_xi_api_key_is_one(base_url):
    body = {"text": "Hi.", "model_id": "eleven_flash_v2_5"}
    assert httpx.post(base_url + "/v1/text-to-speech/v/stream", json=body).status_code == 401
    assert (
        httpx.post(base_url + "/v1/text-to-speech/v/stream", json=body, headers={"xi-api-key": "wrong"}).status_code
        == 401
    )
    with pytest.raises(InvalidStatus) as refused:
        connect(ws_url(base_url, "multi-stream-input"), open_timeout=10)
    assert refused.value.response.status_code == 401
    bearer = {"Authorization": f"Bearer {KEY}"}
    assert httpx.get(base_url + "/v1/voices", headers=bearer).status_code == 200


def test_post_stream_sends_audio_in_the_asked_format(base_url):
    body = {"text": "Streaming over plain HTTP.", "model_id": "eleven_flash_v2_5", "voice_settings": {"stability": 1}}
    with httpx.stream(
        "POST", base_url + "/v1/text-to-speech/v/stream?output_format=pcm_22050", json=body, headers=XI, timeout=120
    ) as r:
        assert r.status_code == 200 and r.headers["content-type"] == "audio/pcm"
        data = r.read()
    assert len(data) % 2 == 0 and np.abs(np.frombuffer(data, dtype="<i2")).max() > 0
    default = httpx.post(base_url + "/v1/text-to-speech/v", json=body, headers=XI, timeout=120)
    assert default.status_code == 200 and default.headers["content-type"] == "audio/mpeg"  # ElevenLabs' default
    assert default.content[:3] == b"ID3" or default.content[0] == 0xFF


@pytest.mark.parametrize("speed", [1.0, 1.5])
def test_post_stream_with_timestamps_sends_json_lines_whose_timings_cover_the_text(base_url, speed):
    text = "First sentence. Then, after a comma, a second one!"
    with httpx.stream(
        "POST",
        base_url + "/v1/text-to-speech/v/stream/with-timestamps?output_format=pcm_24000",
        json={"text": text, "model_id": "eleven_flash_v2_5", "voice_settings": {"speed": speed}},
        headers=XI,
        timeout=120,
    ) as r:
        assert r.status_code == 200
        lines = [json.loads(line) for line in r.iter_lines() if line.strip()]
    audio = b"".join(base64.b64decode(line["audio_base64"]) for line in lines)
    chars, starts, ends = [], [], []
    for line in lines:
        if alignment := line["alignment"]:
            assert line["normalized_alignment"] == alignment and line["alignment_estimated"] is True
            chars += alignment["characters"]
            starts += alignment["character_start_times_seconds"]
            ends += alignment["character_end_times_seconds"]
    assert "".join(chars) == text
    assert starts == sorted(starts) and all(s <= e for s, e in zip(starts, ends))
    assert ends[-1] == pytest.approx(len(audio) / 2 / 24_000, abs=1e-3)  # times from the start of the audio

    whole = httpx.post(
        base_url + "/v1/text-to-speech/v/with-timestamps?output_format=pcm_24000",
        json={"text": text},
        headers=XI,
        timeout=120,
    )
    assert whole.status_code == 200
    payload = whole.json()
    assert "".join(payload["alignment"]["characters"]) == text and payload["alignment_estimated"] is True


def test_voices_in_elevenlabs_shape(base_url):
    voices = httpx.get(base_url + "/v1/voices", headers=XI).json()["voices"]
    assert {"voice_id": "v", "name": "v", "category": "cloned"}.items() <= voices[0].items()
    assert httpx.get(base_url + "/v1/voices/v", headers=XI).json()["voice_id"] == "v"
    assert httpx.get(base_url + "/v1/voices/nobody", headers=XI).status_code == 404


@pytest.mark.parametrize(
    ("path", "method", "facts"),
    [
        ("/v1/text-to-speech/v", "POST", RouteFacts(Body.JSON, synthesis=True)),
        ("/v1/text-to-speech/v/stream", "POST", RouteFacts(Body.JSON, synthesis=True)),
        ("/v1/text-to-speech/v/with-timestamps", "POST", RouteFacts(Body.JSON, synthesis=True)),
        ("/v1/text-to-speech/v/stream/with-timestamps", "POST", RouteFacts(Body.JSON, synthesis=True)),
        ("/v1/text-to-speech/v/multi-stream-input", None, RouteFacts()),
        ("/v1/text-to-speech/v/stream-input", None, RouteFacts()),
        ("/v1/voices", "GET", RouteFacts()),
    ],
)
def test_the_routes_declare_their_facts(path, method, facts):
    scope = {"type": "http" if method else "websocket", "path": path, "method": method, "root_path": "", "headers": []}
    assert facts_for(elevenlabs_router.router.routes, scope) == facts
