"""A hostile client's probe, round 3, against the real app (uvicorn on a free port): clips refused
from their header with messages a user can act on, full queues refused before an upload is read,
invisible text that says nothing. Slots are held on the server's own event loop, so every
refusal is deterministic."""

import asyncio
import io
import json
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass

import httpx
import numpy as np
import pytest
import soundfile as sf
from fastapi import FastAPI

from chatterbox_server.benchmark.server_process import serve_in_thread
from chatterbox_server.server import Settings, create_app
from chatterbox_server.server.admission import Admission
from tests.clips import make_clip
from tests.support import metric_value

pytestmark = [pytest.mark.server]

CLIP_CEILING_HZ = 96_000
BIG_UPLOAD_BYTES = 30 * 1024 * 1024  # under the 50 MB limit: only a full queue may refuse it
READ_TIMEOUT_S = 10.0  # a refusal comes at once; a server that waits for the body never answers


class LoopSpy:
    """The app, noting the event loop it runs on (the lifespan's first message tells)."""

    def __init__(self, app):
        self.app = app
        self.loop: asyncio.AbstractEventLoop | None = None

    async def __call__(self, scope, receive, send):
        self.loop = asyncio.get_running_loop()
        await self.app(scope, receive, send)


@dataclass
class Served:
    url: str
    app: FastAPI
    loop: asyncio.AbstractEventLoop

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    @contextmanager
    def holding(self, which: str) -> Iterator[None]:
        """Hold every slot of the app's `which` admission ("admission" or "encodes") and leave
        its queue with no room, for the body of the `with`."""
        admission: Admission = getattr(self.app.state.tts, which)
        release = threading.Event()

        async def hold() -> None:
            async with admission.slot():
                await asyncio.get_running_loop().run_in_executor(None, release.wait)

        holders: list[Future] = [
            asyncio.run_coroutine_threadsafe(hold(), self.loop) for _ in range(admission.max_running)
        ]
        try:
            deadline = time.monotonic() + 10
            while admission.running < admission.max_running:  # every holder in its slot
                assert time.monotonic() < deadline, "the slots were not taken"
                time.sleep(0.01)
            assert admission.running + admission.queued >= admission.max_running + admission.max_queue
            yield
        finally:
            release.set()
            for holder in holders:
                holder.result(timeout=10)


@pytest.fixture(scope="module")
def served(engine, tmp_path_factory, voice_a) -> Iterator[Served]:
    settings = Settings(
        voices_dir=tmp_path_factory.mktemp("voices"),
        warmup=False,
        max_concurrent_requests=1,
        max_queue=0,
        max_concurrent_encodes=1,
        max_encode_queue=0,
        max_clip_sample_rate_hz=CLIP_CEILING_HZ,
    )
    app = create_app(settings, engine)
    spy = LoopSpy(app)
    with serve_in_thread(spy) as url:
        with open(voice_a, "rb") as f:
            registered = httpx.post(
                url + "/voices/register", files={"voice_file": f}, data={"voice_id": "v"}, timeout=60
            )
        assert registered.status_code == 200, registered.text
        assert spy.loop is not None
        yield Served(url, app, spy.loop)


def headers_only(port: int, path: str, content_type: str, length: int) -> tuple[int, dict[str, str], bytes]:
    """Send a request's headers announcing a `length`-byte body, send none of it, and read the
    response: only a server that answers before reading the body answers at all."""
    with socket.create_connection(("127.0.0.1", port), timeout=READ_TIMEOUT_S) as sock:
        head = f"POST {path} HTTP/1.1\r\nHost: test\r\nContent-Type: {content_type}\r\nContent-Length: {length}\r\n\r\n"
        sock.sendall(head.encode())
        reader = sock.makefile("rb")
        try:
            status_line = reader.readline()
        except TimeoutError:
            pytest.fail(f"no answer to {path} within {READ_TIMEOUT_S:g} s: the server waits for the body")
        status = int(status_line.split()[1])
        headers = {}
        while (line := reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            headers[name.strip().lower()] = value.strip()
        return status, headers, reader.read(int(headers.get("content-length", "0")))


MULTIPART = "multipart/form-data; boundary=probe"


# ----- (5) a full queue refuses an upload before its body is read ---------------------------


def test_a_registration_over_a_full_encode_queue_gets_429_before_its_body(served):
    rejected = metric_value(
        httpx.Client(base_url=served.url), "tts_requests_rejected_total", reason="encode_queue_full"
    )
    with served.holding("encodes"):
        status, headers, body = headers_only(served.port, "/voices/register", MULTIPART, BIG_UPLOAD_BYTES)
    assert status == 429 and headers["retry-after"] == "1"
    error = json.loads(body)["error"]
    assert error["type"] == "queue_full" and error["message"] == "server busy: 1 encode requests running and 0 waiting"
    client = httpx.Client(base_url=served.url)
    assert metric_value(client, "tts_requests_rejected_total", reason="encode_queue_full") == rejected + 1
    assert metric_value(client, "tts_requests_total", route="/voices/register", status="429") >= 1


def test_a_client_that_sends_its_big_upload_anyway_still_reads_the_429(served):
    with served.holding("encodes"):
        r = httpx.post(
            served.url + "/voices/register", files={"voice_file": ("big.wav", b"\0" * BIG_UPLOAD_BYTES)}, timeout=60
        )
    assert r.status_code == 429 and r.json()["error"]["type"] == "queue_full"


def test_a_tts_upload_over_a_full_encode_queue_gets_429_and_a_tts_without_a_clip_is_served(served):
    with served.holding("encodes"):
        status, _, body = headers_only(served.port, "/tts", MULTIPART, BIG_UPLOAD_BYTES)
        assert status == 429 and json.loads(body)["error"]["type"] == "queue_full"
        spoken = httpx.post(
            served.url + "/tts", data={"text": "Hi there.", "voice_id": "v", "stream": "false"}, timeout=60
        )
        assert spoken.status_code == 200, spoken.text  # a registered voice needs no encode slot


def test_synthesis_over_a_full_queue_gets_429_before_its_body_in_each_routes_shape(served):
    with served.holding("admission"):
        status, headers, body = headers_only(served.port, "/tts", MULTIPART, BIG_UPLOAD_BYTES)
        assert status == 429 and headers["retry-after"] == "1"
        assert json.loads(body) == {
            "error": {"type": "queue_full", "message": "server busy: 1 requests running and 0 waiting"}
        }
        status, _, body = headers_only(served.port, "/v1/audio/speech", "application/json", 4000)
        assert status == 429
        assert json.loads(body)["error"] == {
            "message": "server busy: 1 requests running and 0 waiting",
            "type": "invalid_request_error",
            "param": None,
            "code": "queue_full",
        }
    spoken = httpx.post(served.url + "/tts", data={"text": "Hi there.", "voice_id": "v", "stream": "false"}, timeout=60)
    assert spoken.status_code == 200  # with the slot back, the same request is served


# ----- (5) and (11) clips refused from their header, with a message a user can act on ------------


def wav(samples: np.ndarray, rate: int, fmt: str = "WAV", subtype: str | None = None) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, samples, rate, format=fmt, subtype=subtype)
    return buffer.getvalue()


def register(served: Served, data: bytes, name: str = "clip.wav") -> httpx.Response:
    return httpx.post(served.url + "/voices/register", files={"voice_file": (name, data)}, timeout=60)


def test_a_clip_claiming_10_mhz_gets_422_naming_the_ceiling(served):
    r = register(served, wav(np.full(50_000, 0.5, dtype=np.float32), 10_000_000, subtype="FLOAT"))
    assert r.status_code == 422
    assert r.json()["error"] == {
        "type": "invalid_audio",
        "message": f"sample rate 10000000 Hz is too high; at most {CLIP_CEILING_HZ} Hz is accepted",
    }
    above = register(served, wav(make_clip(6.0, 192_000, 150.0, seed=4), 192_000))  # the setting, not the default
    assert above.status_code == 422 and "192000 Hz is too high; at most 96000 Hz" in above.json()["error"]["message"]


def _clip(fmt: str, subtype: str | None = None) -> bytes:
    return wav(make_clip(6.0, 24_000, 150.0, seed=5), 24_000, fmt, subtype)


UNDECODABLE = "cannot decode audio: the file is truncated, corrupt or not WAV, FLAC, OGG or MP3"


@pytest.mark.parametrize(
    ("name", "data", "expected"),
    [
        pytest.param("cut.mp3", _clip("MP3")[:100], UNDECODABLE, id="mp3-cut-in-its-header"),
        pytest.param("cut.mp3", _clip("MP3")[:1000], "the file is truncated: its header promises 6.00 s", id="mp3-cut"),
        pytest.param("cut.wav", _clip("WAV")[:30], UNDECODABLE, id="wav-cut"),
        pytest.param(
            "cut.flac", _clip("FLAC")[:1000], "cannot decode audio: the file is truncated or corrupt", id="flac-cut"
        ),
        pytest.param("cut.ogg", _clip("OGG", "VORBIS")[:1000], UNDECODABLE, id="ogg-cut"),
        pytest.param("noise.wav", np.random.default_rng(1).bytes(5000), UNDECODABLE, id="random-bytes"),
        pytest.param("empty.wav", b"", "the audio file is empty (0 bytes)", id="empty"),
    ],
)
def test_an_upload_that_does_not_decode_gets_422_saying_what_to_do(served, name, data, expected):
    r = register(served, data, name)
    assert r.status_code == 422
    error = r.json()["error"]
    assert error["type"] == "invalid_audio" and error["message"].startswith(expected), error
    assert "regular file" not in error["message"] and "psf_fseek" not in error["message"]


# ----- (6) invisible text says nothing --------------------------------------------------------


@pytest.mark.parametrize("route", ["/tts", "/tts/json"])
def test_4999_zero_width_spaces_are_an_empty_text(served, route):
    text = "\u200b" * 4999
    if route == "/tts":
        r = httpx.post(served.url + route, data={"text": text, "voice_id": "v"}, timeout=30)
    else:
        r = httpx.post(served.url + route, json={"text": text, "voice_id": "v"}, timeout=30)
    assert r.status_code == 422
    error = r.json()["error"]
    assert error["type"] == "invalid_input" and "only invisible characters" in error["message"]


def test_zero_width_spaces_between_words_speak_the_same_pieces(served):
    plain = "Hello there. How are you today?"
    hidden = "Hello\u200b there.\u200b\u200b How\u200b are\ufeff you\u2060 today?"
    replies = [
        httpx.post(
            served.url + "/tts/json", json={"text": text, "voice_id": "v", "max_new_tokens": 8}, timeout=60
        ).json()
        for text in (plain, hidden)
    ]
    assert replies[1]["normalized_text"] == replies[0]["normalized_text"]
    spans = [[(p["text"], p["text_start"], p["text_end"]) for p in reply["pieces"]] for reply in replies]
    assert spans[1] == spans[0]
