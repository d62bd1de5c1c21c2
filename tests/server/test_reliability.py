"""Hostile input against the real app (uvicorn on a free port): no 500 without our error shape,
no broken keep-alive connection, no unbounded allocation."""

import json
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from chatterbox_server.benchmark.server_process import serve_in_thread
from chatterbox_server.engine import TTSConfig, TTSEngine
from chatterbox_server.server import Settings, create_app

pytestmark = [pytest.mark.server, pytest.mark.slow]


class FaultyEngine(TTSEngine):
    """The real engine, except that some texts fail the way a bug would (not a typed error), and
    voice encoding can be held at a gate (to fill the encode slots deterministically)."""

    encode_gate = threading.Event()
    encoding = threading.Event()

    def encode_audio(self, clip, content_hash=""):
        self.encoding.set()
        assert self.encode_gate.wait(60)
        return super().encode_audio(clip, content_hash)

    def prepare(self, text, *args, **kwargs):
        if text.startswith("explode"):
            raise RuntimeError("a bug")
        return super().prepare(text, *args, **kwargs)

    async def generate(self, request):
        explode_later = request.plan.pieces[0].piece.text.startswith("Crash")
        async for item in super().generate(request):
            yield item
            if explode_later:
                raise RuntimeError("a bug after the first chunk")


@pytest.fixture(scope="module")
def app_url(model_dir, tmp_path_factory, voice_a) -> Iterator[str]:
    engine = FaultyEngine(TTSConfig(model_dir=model_dir, model_dtype="fp32"))
    settings = Settings(
        voices_dir=tmp_path_factory.mktemp("voices"),
        warmup=False,
        max_text_length=2000,
        max_concurrent_encodes=1,
        max_encode_queue=0,
    )
    FaultyEngine.encode_gate.set()
    with serve_in_thread(create_app(settings, engine)) as url:
        with open(voice_a, "rb") as f:
            registered = httpx.post(
                url + "/voices/register", files={"voice_file": f}, data={"voice_id": "v"}, timeout=60
            )
        assert registered.status_code == 200
        yield url
    engine.close()


def http_exchange(
    sock: socket.socket, method: str, path: str, body: bytes = b"", content_type: str = "application/json"
) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 request on an open keep-alive socket; reads exactly one response."""
    head = (
        f"{method} {path} HTTP/1.1\r\nHost: test\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    sock.sendall(head + body)
    reader = sock.makefile("rb")
    status_line = reader.readline()
    assert status_line, "the server closed the connection"
    status = int(status_line.split()[1])
    headers = {}
    while (line := reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode().partition(":")
        headers[name.strip().lower()] = value.strip()
    if "content-length" in headers:
        payload = reader.read(int(headers["content-length"]))
    else:  # chunked
        payload = b""
        while (size := int(reader.readline().strip(), 16)) > 0:
            payload += reader.read(size)
            reader.readline()
        reader.readline()
    return status, headers, payload


def test_an_unexpected_error_is_a_500_in_our_shape_and_keeps_the_connection(app_url):
    port = int(app_url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        body = json.dumps({"text": "explode now", "voice_id": "v"}).encode()
        status, _, payload = http_exchange(sock, "POST", "/tts/json", body)
        assert status == 500
        assert json.loads(payload) == {"error": {"type": "internal_error", "message": "internal server error"}}
        for _ in range(3):  # the same connection keeps working
            status, _, payload = http_exchange(sock, "GET", "/health/live")
            assert status == 200 and json.loads(payload) == {"status": "alive"}


def test_a_stream_that_fails_midway_ends_cleanly_and_is_not_counted_a_success(app_url):
    port = int(app_url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        form = "text=Crash+after+the+first+chunk+of+this+long+enough+sentence&voice_id=v"
        status, headers, payload = http_exchange(
            sock, "POST", "/tts", form.encode(), "application/x-www-form-urlencoded"
        )
        assert status == 200 and headers["transfer-encoding"] == "chunked"
        assert payload.startswith(b"RIFF") and len(payload) > 44  # the first chunk arrived, then it ended
        status, _, _ = http_exchange(sock, "GET", "/health/live")
        assert status == 200
    counted = 'tts_requests_total{route="/tts",status="incomplete"} 1.0'
    deadline = time.monotonic() + 10  # counted as the response ends, just after the client has it
    while counted not in httpx.get(app_url + "/metrics").text:
        assert time.monotonic() < deadline, "the cut-short stream was not counted as incomplete"
        time.sleep(0.05)


@pytest.mark.parametrize("route", ["/tts/json", "/v1/audio/speech"])
def test_text_that_is_not_unicode_is_a_422(app_url, route):
    raw = '{"text": "hi \\ud800 there", "voice_id": "v", "model": "tts-1", "input": "hi \\ud800 there", "voice": "v"}'
    body = json.loads(raw)
    if route == "/tts/json":
        body = {"text": body["text"], "voice_id": "v"}
    else:
        body = {k: body[k] for k in ("model", "input", "voice")}
    payload = json.dumps(body)  # ensure_ascii keeps the lone surrogate as \\ud800
    r = httpx.post(app_url + route, content=payload, headers={"content-type": "application/json"}, timeout=60)
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    # our shape names the kind in `type`; OpenAI's (on /v1) in `code`, its `type` being OpenAI's class
    kind = error["type"] if route == "/tts/json" else error["code"]
    assert kind == "invalid_input" and "Unicode" in error["message"]
    if route != "/tts/json":
        assert error["type"] == "invalid_request_error"


def test_tiny_temperatures_and_penalties_are_numerically_safe(app_url):
    for fields in ({"temperature": 1e-38}, {"temperature": 5e-324}, {"temperature": 0.7, "repetition_penalty": 1e-38}):
        r = httpx.post(
            app_url + "/tts/json",
            json={"text": "Hello there.", "voice_id": "v", "seed": 1, "max_new_tokens": 60, **fields},
            timeout=60,
        )
        assert r.status_code == 200, (fields, r.text)
        assert r.json()["tokens_generated"] > 0


def test_a_word_without_spaces_is_split_and_stays_small(app_url):
    r = httpx.post(app_url + "/tts/json", json={"text": "a" * 2000, "voice_id": "v", "max_new_tokens": 4}, timeout=120)
    assert r.status_code == 200, r.text
    pieces = r.json()["pieces"]
    assert len(pieces) >= 8 and max(p["text_end"] - p["text_start"] for p in pieces) <= 250


def test_an_oversized_json_body_is_refused_before_it_is_read(app_url):
    huge = b'{"text": "' + b"x" * (30 * 1024 * 1024) + b'", "voice_id": "v"}'
    r = httpx.post(app_url + "/tts/json", content=huge, headers={"content-type": "application/json"}, timeout=60)
    assert r.status_code == 413 and r.json()["error"]["type"] == "body_too_large"


def test_voice_ids_are_matched_whole(app_url, voice_a):
    with open(voice_a, "rb") as f:
        r = httpx.post(app_url + "/voices/register", files={"voice_file": f}, data={"voice_id": "evil\n"}, timeout=60)
    assert r.status_code == 422 and r.json()["error"]["type"] == "invalid_input"
    assert "evil" not in [v["voice_id"].strip() for v in httpx.get(app_url + "/voices").json()["voices"]]


def test_voice_encoding_is_behind_its_own_admission(app_url, voice_a):
    """One encode slot and no queue: while a registration encodes, the next upload gets 429 at
    once instead of decoding and encoding beside it."""
    FaultyEngine.encoding.clear()
    FaultyEngine.encode_gate.clear()
    data = voice_a.read_bytes()
    try:
        with ThreadPoolExecutor(1) as pool:
            first = pool.submit(
                httpx.post,
                app_url + "/voices/register",
                files={"voice_file": data},
                data={"voice_id": "held"},
                timeout=60,
            )
            assert FaultyEngine.encoding.wait(30)
            second = httpx.post(app_url + "/voices/register", files={"voice_file": data}, timeout=60)
            assert second.status_code == 429 and second.headers["retry-after"]
            third = httpx.post(
                app_url + "/tts", data={"text": "Hi.", "stream": "false"}, files={"voice_file": data}, timeout=60
            )
            assert third.status_code == 429
            FaultyEngine.encode_gate.set()
            assert first.result().status_code == 200
    finally:
        FaultyEngine.encode_gate.set()
    metrics = httpx.get(app_url + "/metrics").text
    assert 'tts_requests_rejected_total{reason="encode_queue_full"} 2.0' in metrics
