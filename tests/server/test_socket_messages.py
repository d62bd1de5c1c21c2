"""Messages no JSON parser should choke on, sent to every socket and JSON route of the real app
(tiny stand-in): 60000 `[` (nested past the interpreter's recursion limit), bytes that are not
UTF-8, text that is not JSON. Each protocol answers with its own `invalid_message` error and the
connection goes on; a JSON route answers a 4xx in its error shape. And a realtime session whose
receive loop fails for an unexpected reason ends its speaker and closes with 1011."""

import asyncio
import json
import logging
import threading
from collections.abc import Iterator
from types import SimpleNamespace

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect
from wyoming.error import Error
from wyoming.event import async_read_event, async_write_event
from wyoming.info import Describe

from chatterbox_server.benchmark.server_process import free_port, serve_in_thread
from chatterbox_server.server import Settings, create_app
from chatterbox_server.server.elevenlabs import ElevenLabsSession
from chatterbox_server.server.messages import InvalidMessageError, parse_message
from chatterbox_server.server.realtime import RealtimeSession
from tests.support import assert_error
from tts_engine import TTSConfig, TTSEngine

pytestmark = pytest.mark.server

RECV_TIMEOUT_S = 60.0
DEEP = "[" * 60_000  # 60 KB: well under a frame's limit, far past json's recursion limit


@pytest.fixture(scope="module")
def served(model_dir, tmp_path_factory, voice_a) -> Iterator[SimpleNamespace]:
    """The real app with its Wyoming server, voice "v" registered; its HTTP and WebSocket URLs and Wyoming port."""
    engine = TTSEngine(TTSConfig(model_dir=model_dir, model_dtype="fp32"))
    port = free_port()
    settings = Settings(voices_dir=tmp_path_factory.mktemp("voices"), warmup=False, wyoming_port=port)
    try:
        with serve_in_thread(create_app(settings, engine)) as url:
            with open(voice_a, "rb") as f:
                r = httpx.post(url + "/voices/register", files={"voice_file": f}, data={"voice_id": "v"}, timeout=60)
            assert r.status_code == 200, r.text
            yield SimpleNamespace(http=url, ws=url.replace("http://", "ws://"), wyoming_port=port)
    finally:
        engine.close()


@pytest.fixture
def errors_logged(caplog) -> Iterator[list[logging.LogRecord]]:
    """ERROR records logged while the test runs, uvicorn's included (its loggers do not propagate)."""
    uvicorn_logger = logging.getLogger("uvicorn")
    uvicorn_logger.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.INFO):
            yield caplog.records
    finally:
        uvicorn_logger.removeHandler(caplog.handler)


def errors_in(records: list[logging.LogRecord]) -> list[str]:
    return [f"{r.name}: {r.getMessage()}" for r in records if r.levelno >= logging.ERROR]


def receive_json(ws: ClientConnection) -> dict:
    while True:
        frame = ws.recv(timeout=RECV_TIMEOUT_S)
        if isinstance(frame, str):
            return json.loads(frame)


# ----- the parser -------------------------------------------------------------------------------


def test_every_way_json_fails_is_one_invalid_message_error():
    assert parse_message('{"type": "text"}') == {"type": "text"}
    assert parse_message(b'{"a": [1]}') == {"a": [1]}
    for raw, reason in [
        (DEEP, "nested too deeply"),
        ("{" + '"a":{' * 30_000, "nested too deeply"),
        ("not json", "not valid JSON"),
        ("", "not valid JSON"),
        (b"\xff\xfe{", "not UTF-8"),
        (b'{"text": "\xc3"}', "not UTF-8"),
    ]:
        with pytest.raises(InvalidMessageError, match=reason) as caught:
            parse_message(raw, "an event header")
        assert str(caught.value).startswith("an event header")
    assert parse_message("[" * 500 + "]" * 500) is not None  # deep, but within the limit: parsed


# ----- the sockets ------------------------------------------------------------------------------


def test_realtime_answers_a_deeply_nested_frame_with_an_error_and_goes_on(served, errors_logged):
    with connect(served.ws + "/v1/audio/speech/realtime", open_timeout=10, max_size=2**22) as ws:
        ws.send(json.dumps({"type": "config", "voice": "v"}))
        assert receive_json(ws)["type"] == "ready"
        ws.send(DEEP)
        error = receive_json(ws)
        assert error["type"] == "error" and error["error"]["type"] == "invalid_message"
        assert "nested too deeply" in error["error"]["message"]
        ws.send(json.dumps({"type": "text", "delta": "Still here. "}))
        ws.send(json.dumps({"type": "close"}))
        events = []
        while (event := receive_json(ws))["type"] != "done":
            events.append(event)
    assert [e["text"] for e in events if e["type"] == "segment.start"] == ["Still here."]
    assert errors_in(errors_logged) == []


def test_realtime_refuses_a_deeply_nested_config_with_1008(served, errors_logged):
    with connect(served.ws + "/v1/audio/speech/realtime", open_timeout=10) as ws:
        ws.send(DEEP)
        error = receive_json(ws)
        assert error["type"] == "error" and error["error"]["type"] == "validation_error"
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=RECV_TIMEOUT_S)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
    assert errors_in(errors_logged) == []


@pytest.mark.parametrize("path", ["multi-stream-input", "stream-input"])
def test_elevenlabs_answers_a_deeply_nested_frame_with_an_error_and_goes_on(served, path, errors_logged):
    url = served.ws + f"/v1/text-to-speech/v/{path}?output_format=pcm_24000"
    with connect(url, open_timeout=10, max_size=2**22) as ws:
        ws.send(DEEP)
        assert receive_json(ws) == {"error": "invalid_message", "message": "a message is nested too deeply"}
        ws.send("not json")
        assert receive_json(ws)["error"] == "invalid_message"
        ws.send(json.dumps({"text": " "}))
        ws.send(json.dumps({"text": "Still here. ", "flush": True}))
        ws.send(json.dumps({"text": ""} if path == "stream-input" else {"close_socket": True}))
        messages = []
        while not (message := receive_json(ws)).get("isFinal"):
            messages.append(message)
    assert any(m.get("audio") for m in messages)
    assert errors_in(errors_logged) == []


def test_wyoming_answers_bad_headers_and_data_with_invalid_message_and_goes_on(served, errors_logged):
    async def scenario() -> list[str]:
        reader, writer = await asyncio.open_connection("127.0.0.1", served.wyoming_port)
        bad = [
            DEEP.encode() + b"\n",  # a header nested too deeply
            b"\xff\xfe not utf-8\n",  # a header that is not UTF-8
            b"not json\n",
            json.dumps({"type": "describe", "data_length": len(DEEP), "payload_length": 3}).encode()
            + b"\n"
            + DEEP.encode()
            + b"abc",  # data nested too deeply, then its payload: the framing holds
        ]
        texts = []
        try:
            for raw in bad:
                writer.write(raw)
                await writer.drain()
                event = await asyncio.wait_for(async_read_event(reader), RECV_TIMEOUT_S)
                assert event is not None and Error.is_type(event.type), event
                error = Error.from_event(event)
                assert error.code == "invalid_message"
                texts.append(error.text)
            await async_write_event(Describe().event(), writer)  # the connection goes on
            info = await asyncio.wait_for(async_read_event(reader), RECV_TIMEOUT_S)
            assert info is not None and info.type == "info"
        finally:
            writer.close()
        return texts

    texts = asyncio.run(scenario())
    assert texts == [
        "an event header is nested too deeply",
        "an event header is not UTF-8 text",
        "an event header is not valid JSON",
        "an event's data is nested too deeply",
    ]
    assert errors_in(errors_logged) == []


@pytest.mark.parametrize(
    ("path", "openai"),
    [("/tts/json", False), ("/v1/audio/speech", True), ("/v1/text-to-speech/v", False)],
)
@pytest.mark.parametrize("body", [DEEP, '{"text": ' + DEEP, '{"text": "Hi.", "voice_settings": ' + DEEP])
def test_json_routes_answer_a_deeply_nested_body_with_a_4xx_in_their_shape(served, path, openai, body):
    r = httpx.post(served.http + path, content=body, headers={"content-type": "application/json"}, timeout=60)
    assert 400 <= r.status_code < 500, r.text
    if openai:
        error = r.json()["error"]
        assert set(error) == {"message", "type", "param", "code"} and error["type"] == "invalid_request_error"
    else:
        assert_error(r, r.status_code)


# ----- a receive loop that fails ----------------------------------------------------------------


def test_a_realtime_receive_loop_that_fails_ends_the_speaker_and_closes_with_1011(served, monkeypatch):
    speaker_ended = threading.Event()
    speak_all = RealtimeSession._speak_all

    async def recorded_speak_all(self: RealtimeSession) -> None:
        try:
            await speak_all(self)
        finally:
            speaker_ended.set()

    async def broken_accept_text(self: RealtimeSession, delta: str) -> None:
        raise RuntimeError("a bug in the receive loop")

    monkeypatch.setattr(RealtimeSession, "_speak_all", recorded_speak_all)
    monkeypatch.setattr(RealtimeSession, "_accept_text", broken_accept_text)
    with connect(served.ws + "/v1/audio/speech/realtime", open_timeout=10) as ws:
        ws.send(json.dumps({"type": "config", "voice": "v"}))
        assert receive_json(ws)["type"] == "ready"
        ws.send(json.dumps({"type": "text", "delta": "Hello. "}))
        error = receive_json(ws)
        assert error == {"type": "error", "error": {"type": "internal_error", "message": "internal error"}}
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=RECV_TIMEOUT_S)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1011  # a close frame, not a dropped socket
    assert speaker_ended.wait(10), "the speaker task was left waiting"


def test_an_elevenlabs_receive_loop_that_fails_closes_with_1011(served, monkeypatch):
    async def broken_handle(self: ElevenLabsSession, event: dict) -> None:
        raise RuntimeError("a bug in the receive loop")

    monkeypatch.setattr(ElevenLabsSession, "_handle", broken_handle)
    with connect(served.ws + "/v1/text-to-speech/v/multi-stream-input", open_timeout=10) as ws:
        ws.send(json.dumps({"text": " ", "context_id": "c1"}))
        assert receive_json(ws) == {"error": "internal_error", "message": "internal error"}
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=RECV_TIMEOUT_S)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1011
