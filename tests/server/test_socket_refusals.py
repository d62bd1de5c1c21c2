"""Refused WebSocket upgrades and the per-client session limit, against real servers (tiny stand-in).

`python server.py` (uvicorn with this server's own protocols, its log captured): every refused
upgrade (401 without a key, 429 with the sessions taken, per key or in all, 403 for a socket path
no route has) is one INFO line with its request id, path, status and reason, and no ERROR line.
The app in-process, without keys, with its Wyoming server: one address holds at most
TTS_MAX_REALTIME_SESSIONS_PER_CLIENT sessions across the realtime, ElevenLabs and Wyoming sockets,
and a socket that never says anything gives its session back within its deadline."""

import asyncio
import json
import re
import time
from collections.abc import Iterator
from contextlib import ExitStack
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect
from wyoming.error import Error
from wyoming.event import async_read_event, async_write_event
from wyoming.info import Describe

from chatterbox_server.benchmark.server_process import ServerProcess, free_port, serve_in_thread
from chatterbox_server.server import Settings, create_app
from chatterbox_server.server import realtime as realtime_session
from tests.support import metric_value
from tts_engine import TTSConfig, TTSEngine

pytestmark = pytest.mark.server

RECV_TIMEOUT_S = 30.0
KEYS = ("key-one", "key-two")
REALTIME = "/v1/audio/speech/realtime"
ELEVENLABS = "/v1/text-to-speech/v/stream-input?output_format=pcm_24000"
REFUSAL_LINE = re.compile(
    r" INFO chatterbox_server\.server\.middleware: (?P<id>\S+) WEBSOCKET (?P<path>\S+) (?P<status>\d{3}) "
    r"[\d.]+s reason=(?P<reason>\S+)$"
)


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def refused(url: str, **kwargs) -> tuple[int, Any, Headers]:
    """Status, JSON body and headers of an upgrade the server refuses."""
    with pytest.raises(InvalidStatus) as caught:
        connect(url, open_timeout=10, proxy=None, **kwargs).close()
    response = caught.value.response
    return response.status_code, json.loads(response.body or b"null"), response.headers


def opened(url: str, stack: ExitStack, **kwargs) -> ClientConnection:
    return stack.enter_context(connect(url, open_timeout=10, proxy=None, **kwargs))


def wait_until(condition, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


# ----- python server.py: what a refusal logs ------------------------------------------------------


@pytest.fixture(scope="module")
def keyed(model_dir, tmp_path_factory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("refusals")
    with ServerProcess(
        model_dir,
        root / "voices",
        root / "server.log",
        warmup="false",
        api_keys=",".join(KEYS),
        max_realtime_sessions=3,
        max_realtime_sessions_per_client=2,
    ) as server:
        yield server


def test_refused_upgrades_log_one_info_line_each_and_never_an_error(keyed):
    ws = keyed.url.replace("http://", "ws://")
    log_before = len(keyed.log().splitlines())
    expected = []
    for _ in range(20):  # an anonymous client in a loop
        status, body, _ = refused(ws + REALTIME)
        assert (status, body["error"]["type"]) == (401, "unauthorized")
        expected.append((REALTIME, "401", "unauthorized"))
    status, _, headers = refused(
        ws + "/v1/text-to-speech/v/multi-stream-input", additional_headers={"X-Request-ID": "probe-7"}
    )
    assert status == 401 and headers["x-request-id"] == "probe-7"
    expected.append(("/v1/text-to-speech/v/multi-stream-input", "401", "unauthorized"))
    with ExitStack() as stack:
        for _ in range(2):
            opened(ws + REALTIME, stack, additional_headers=bearer(KEYS[0]))
        status, body, headers = refused(ws + REALTIME, additional_headers=bearer(KEYS[0]))  # this key's share
        assert (status, body["error"]["type"], headers["retry-after"]) == (429, "too_many_sessions", "1")
        expected.append((REALTIME, "429", "too_many_sessions"))
        opened(ws + REALTIME, stack, additional_headers=bearer(KEYS[1]))  # another key gets in
        status, body, _ = refused(ws + REALTIME, additional_headers=bearer(KEYS[1]))  # now every session is taken
        assert (status, body["error"]["type"]) == (429, "queue_full")
        expected.append((REALTIME, "429", "queue_full"))
    status, _, _ = refused(ws + "/no/such/socket", additional_headers=bearer(KEYS[0]))
    assert status == 403
    expected.append(("/no/such/socket", "403", "-"))

    with keyed.client() as http:
        assert metric_value(http, "tts_requests_rejected_total", reason="too_many_sessions") == 1
        assert metric_value(http, "tts_requests_rejected_total", reason="sessions_full") == 1
        assert metric_value(http, "tts_requests_total", route="unmatched", status="401") == 21
        assert metric_value(http, "tts_requests_total", route=REALTIME, status="429") == 2
    log = keyed.log().splitlines()[log_before:]
    assert [line for line in log if "ERROR" in line or "Traceback" in line] == []
    refusals = [m for line in log if (m := REFUSAL_LINE.search(line))]
    assert [(m["path"], m["status"], m["reason"]) for m in refusals] == expected
    assert len({m["id"] for m in refusals}) == len(refusals) and "probe-7" in {m["id"] for m in refusals}
    # uvicorn's and websockets' own lines about a refusal are at debug (not shown at the info level)
    assert not [line for line in log if "connection rejected" in line or '" 401' in line or '" 429' in line]


# ----- the app in-process, no keys: the limit per client across the three kinds of socket ----------


@pytest.fixture(scope="module")
def open_app(model_dir, tmp_path_factory, voice_a) -> Iterator[SimpleNamespace]:
    engine = TTSEngine(TTSConfig(model_dir=model_dir, model_dtype="fp32"))
    port = free_port()
    settings = Settings(
        voices_dir=tmp_path_factory.mktemp("voices"),
        warmup=False,
        wyoming_port=port,
        max_realtime_sessions_per_client=2,
    )
    try:
        with serve_in_thread(create_app(settings, engine)) as url, httpx.Client(base_url=url, timeout=60) as http:
            with open(voice_a, "rb") as f:
                r = http.post("/voices/register", files={"voice_file": f}, data={"voice_id": "v"})
            assert r.status_code == 200, r.text
            yield SimpleNamespace(http=http, ws=url.replace("http://", "ws://"), wyoming_port=port)
    finally:
        engine.close()


def wyoming_answer(port: int, source: str = "127.0.0.1") -> tuple[str, str]:
    """(type, code or "") of the first event a Wyoming connection from `source` gets to a describe."""

    async def scenario() -> tuple[str, str]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
        try:
            await async_write_event(Describe().event(), writer)
            event = await asyncio.wait_for(async_read_event(reader), RECV_TIMEOUT_S)
            assert event is not None
            return event.type, (Error.from_event(event).code or "") if Error.is_type(event.type) else ""
        finally:
            writer.close()

    return asyncio.run(scenario())


def test_one_address_holds_at_most_its_share_of_sessions_across_every_kind_of_socket(open_app):
    app = open_app
    rejected = metric_value(app.http, "tts_requests_rejected_total", reason="too_many_sessions")
    with ExitStack() as stack:
        first = opened(app.ws + REALTIME, stack)  # connected, never configured: it holds a session
        opened(app.ws + ELEVENLABS, stack)
        status, body, _ = refused(app.ws + REALTIME)
        assert (status, body["error"]["type"]) == (429, "too_many_sessions")
        status, body, _ = refused(app.ws + ELEVENLABS)
        assert (status, body["error"]["type"]) == (429, "too_many_sessions")
        assert wyoming_answer(app.wyoming_port) == ("error", "too_many_sessions")
        # another address is another client
        opened(app.ws + REALTIME, stack, source_address=("127.0.0.2", 0))
        assert wyoming_answer(app.wyoming_port, source="127.0.0.2") == ("info", "")
        first.close()
        assert wait_until(lambda: wyoming_answer(app.wyoming_port) == ("info", ""))  # its session came back
    assert metric_value(app.http, "tts_requests_rejected_total", reason="too_many_sessions") == rejected + 3


def test_a_socket_that_never_speaks_gives_its_session_back_within_its_deadline(open_app, monkeypatch):
    app = open_app
    monkeypatch.setattr(realtime_session, "CONFIG_TIMEOUT_S", 0.5)
    with ExitStack() as stack:
        silent = [
            opened(app.ws + REALTIME, stack),
            opened(app.ws + ELEVENLABS.replace("?", "?inactivity_timeout=0.5&"), stack),
        ]
        status, _, _ = refused(app.ws + REALTIME)  # both of this address's sessions are taken
        assert status == 429
        realtime_error = json.loads(silent[0].recv(timeout=RECV_TIMEOUT_S))
        assert realtime_error["error"]["type"] == "timeout"
        eleven_error = json.loads(silent[1].recv(timeout=RECV_TIMEOUT_S))
        assert eleven_error["error"] == "input_timeout_exceeded"
        for ws in silent:
            with pytest.raises(ConnectionClosed):
                ws.recv(timeout=RECV_TIMEOUT_S)
        assert wait_until(lambda: wyoming_answer(app.wyoming_port) == ("info", ""))  # both came back

        # The Wyoming probe's own session is given back when the server reads its close, a moment after the
        # answer: so both places are asked for together until they are free, never one left open on a failure.
        def both_open() -> bool:
            attempt = ExitStack()
            try:
                opened(app.ws + REALTIME, attempt)
                opened(app.ws + REALTIME, attempt)
            except InvalidStatus:
                attempt.close()
                return False
            stack.enter_context(attempt)
            return True

        assert wait_until(both_open)
