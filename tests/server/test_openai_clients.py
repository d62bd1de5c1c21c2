"""The OpenAI route as real clients use it, unchanged (issue 17): OpenAI's model and voice names,
the `{"id": ...}` voice object, `instructions`, Open WebUI's voice list, errors in OpenAI's shape,
and a WAV with its real length (`stream: false`). Spoken to by the official `openai` client and by
plain HTTP, against real server processes."""

import io
import json
import struct
import wave

import numpy as np
import pytest
import soundfile as sf
from openai import BadRequestError, NotFoundError, OpenAI
from websockets.sync.client import connect

from chatterbox_server.audio import formats as audio_formats
from chatterbox_server.benchmark.server_process import ServerProcess
from chatterbox_server.server.protocol import OPENAI_VOICES

pytestmark = pytest.mark.server

TEXT = "Hello from an unchanged client. This is the second sentence."
MAX_TEXT = 300
OPENAI_ERROR_KEYS = {"message", "type", "param", "code"}


def test_the_voice_names_are_the_sdks():
    from typing import get_args

    from openai.types.audio.speech_create_params import Voice

    literal = next(arg for arg in get_args(Voice) if get_args(arg) and all(isinstance(a, str) for a in get_args(arg)))
    assert set(get_args(literal)) == set(OPENAI_VOICES)


# ----- a server with aliases and no default voice ----------------------------------------------


@pytest.fixture(scope="module")
def aliased(model_dir, tmp_path_factory, voice_a):
    root = tmp_path_factory.mktemp("openai-aliased")
    with ServerProcess(
        model_dir,
        root / "voices",
        root / "log",
        warmup="false",
        voice_aliases="alloy=alice,echo=ghost",  # ghost is never registered
        max_text_length=MAX_TEXT,
    ) as running:
        with running.client() as c, open(voice_a, "rb") as f:
            r = c.post("/voices/register", files={"voice_file": ("a.wav", f)}, data={"voice_id": "alice"})
            assert r.status_code == 200, r.text
        yield running


@pytest.fixture(scope="module")
def sdk(aliased):
    return OpenAI(base_url=aliased.url + "/v1", api_key="not-needed", max_retries=0)


def whole_wav(server: ServerProcess, path: str, fields: dict) -> np.ndarray:
    with server.client() as c:
        r = c.post(path, **fields)
    assert r.status_code == 200, r.text
    return sf.read(io.BytesIO(r.content), dtype="int16")[0]


def speech_samples(server: ServerProcess, **fields) -> np.ndarray:
    """The whole WAV's samples (greedy: the same every time for the same voice)."""
    body = {"model": "gpt-4o-mini-tts", "input": TEXT, "response_format": "wav", "stream": False, **fields}
    return whole_wav(server, "/v1/audio/speech", {"json": body})


def tts_samples(server: ServerProcess, voice_id: str) -> np.ndarray:
    """What a registered voice id says, named as such."""
    return speech_samples(server, voice=voice_id, model="chatterbox-turbo")


def same_speech(x: np.ndarray, y: np.ndarray) -> bool:
    """The same voice saying the same text: equal lengths and all but equal samples (a rerun is not
    bit-exact, within 1% of the signal; another voice differs by about its whole size)."""
    x, y = x.astype(np.float64), y.astype(np.float64)
    return x.shape == y.shape and np.sqrt(np.mean((x - y) ** 2)) < 0.05 * np.sqrt(np.mean(x**2))


def openai_error(response, status: int) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == OPENAI_ERROR_KEYS, body
    return body["error"]


def test_the_sdk_with_openai_defaults_speaks_in_the_aliased_voice(aliased, sdk):
    response = sdk.audio.speech.create(
        model="gpt-4o-mini-tts",
        voice="alloy",
        input=TEXT,
        instructions="Speak in a cheerful and positive tone.",  # accepted, ignored
        response_format="wav",
        extra_body={"stream": False},
    )
    audio = sf.read(io.BytesIO(response.content), dtype="int16")[0]
    assert same_speech(audio, tts_samples(aliased, "alice"))


def test_dated_snapshots_and_our_model_are_accepted(aliased):
    reference = speech_samples(aliased, voice="alice")
    for model in ("gpt-4o-mini-tts-2025-03-20", "gpt-4o-mini-tts-2025-12-15", "tts-1-1106", "tts-1-hd", "tts-1"):
        assert same_speech(speech_samples(aliased, voice="alice", model=model), reference), model


def test_the_voice_object_form(aliased, sdk):
    reference = tts_samples(aliased, "alice")
    response = sdk.audio.speech.create(
        model="tts-1", voice={"id": "alice"}, input=TEXT, response_format="wav", extra_body={"stream": False}
    )
    assert same_speech(sf.read(io.BytesIO(response.content), dtype="int16")[0], reference)
    # an alias works inside the object too
    assert same_speech(speech_samples(aliased, voice={"id": "alloy"}), reference)


def test_streaming_through_the_sdk(aliased, sdk):
    with sdk.audio.speech.with_streaming_response.create(
        model="gpt-4o-mini-tts", voice="alloy", input=TEXT, response_format="pcm", instructions="Whisper."
    ) as response:
        assert response.headers["content-type"] == "audio/pcm"
        data = b"".join(response.iter_bytes())
    # the streamed windows are spliced, so compare lengths: the same speech as the whole file
    assert len(data) == 2 * tts_samples(aliased, "alice").shape[0]


def test_an_openai_name_without_alias_or_default_is_a_404_that_says_what_to_set(aliased, sdk):
    with pytest.raises(NotFoundError) as refused:
        sdk.audio.speech.create(model="gpt-4o-mini-tts", voice="ash", input=TEXT)
    assert (refused.value.code, refused.value.param) == ("voice_not_found", "voice")
    message = str(refused.value)
    assert "TTS_VOICE_ALIASES=ash=" in message and "TTS_DEFAULT_VOICE" in message
    # an alias whose voice is not registered is not papered over either
    with aliased.client() as c:
        error = openai_error(c.post("/v1/audio/speech", json={"model": "tts-1", "input": TEXT, "voice": "echo"}), 404)
    assert error["code"] == "voice_not_found" and "ghost" in error["message"]


def test_voices_in_open_webuis_shape_and_as_names(aliased):
    with aliased.client() as c:
        objects = c.get("/v1/audio/voices").json()
        names = c.get("/v1/audio/voices", params={"format": "names"}).json()
        bad = c.get("/v1/audio/voices", params={"format": "xml"})
    # aliases whose voice is registered are listed after the voices; echo → ghost is not
    assert objects == {"voices": [{"id": "alice", "name": "alice"}, {"id": "alloy", "name": "alloy → alice"}]}
    assert names == {"voices": ["alice", "alloy"]}
    assert openai_error(bad, 422)["param"] == "format"


def test_models_list_openais_names_and_ours(aliased):
    with aliased.client() as c:
        ids = [m["id"] for m in c.get("/v1/models").json()["data"]]
    assert ids == ["tts-1", "tts-1-hd", "gpt-4o-mini-tts", "chatterbox-turbo"]


def test_errors_come_in_openais_shape_with_code_and_param(aliased, sdk):
    with aliased.client() as c:

        def post(**fields):
            return c.post("/v1/audio/speech", json={"model": "tts-1", "input": TEXT, "voice": "alice", **fields})

        error = openai_error(post(model="whisper-1"), 400)
        assert (error["type"], error["param"], error["code"]) == (
            "invalid_request_error",
            "model",
            "unsupported_option",
        )
        assert "gpt-4o-mini-tts" in error["message"] and "chatterbox-turbo" in error["message"]
        error = openai_error(post(input=""), 422)
        assert (error["type"], error["param"], error["code"]) == ("invalid_request_error", "input", "invalid_input")
        error = openai_error(post(input="word " * MAX_TEXT), 413)
        assert (error["param"], error["code"]) == ("input", "text_too_long")
        for fields, param in (
            ({"response_format": "ogg"}, "response_format"),
            ({"speed": 5.0}, "speed"),
            ({"voice": 7}, "voice"),
            ({"voice": {"name": "alice"}}, "voice"),
        ):
            error = openai_error(post(**fields), 422)
            assert (error["param"], error["code"]) == (param, "validation_error"), fields
        error = openai_error(c.post("/v1/audio/speech", json={"model": "tts-1", "input": TEXT}), 422)
        assert error["param"] == "voice"
        error = openai_error(post(stream=False, stream_format="sse"), 400)
        assert error["param"] == "stream"
        if "aac" not in audio_formats.available_formats():
            error = openai_error(post(response_format="aac"), 400)
            assert (error["param"], error["code"]) == ("response_format", "unsupported_option")
        # the body limit answers before routing, in the shape of the route it is for
        error = openai_error(post(input="x" * 200_000), 413)
        assert (error["param"], error["code"]) == (None, "body_too_large")
        error = openai_error(c.get("/v1/audio/speech"), 405)
        assert error["code"] == "http_error"
        # every other route keeps ours
        for r in (
            c.post("/tts", data={"text": "", "voice_id": "alice"}),
            c.post("/tts/json", json={"text": "Hi.", "voice_id": "nobody"}),
            c.post("/tts/json", json={"text": "x" * 200_000, "voice_id": "alice"}),
        ):
            assert set(r.json()) == {"error"} and set(r.json()["error"]) == {"type", "message"}, r.text
    with pytest.raises(BadRequestError) as refused:
        sdk.audio.speech.create(model="gpt-5", voice="alice", input=TEXT)
    assert (refused.value.code, refused.value.param) == ("unsupported_option", "model")


def riff_sizes(data: bytes) -> tuple[int, int, int]:
    """(RIFF size, data chunk size, data chunk offset) as the header states them."""
    assert data[:4] == b"RIFF" and data[8:12] == b"WAVE"
    riff_size = struct.unpack("<I", data[4:8])[0]
    offset = 12
    while offset + 8 <= len(data):
        chunk, size = data[offset : offset + 4], struct.unpack("<I", data[offset + 4 : offset + 8])[0]
        if chunk == b"data":
            return riff_size, size, offset + 8
        offset += 8 + size + (size & 1)
    raise AssertionError("no data chunk")


def test_stream_false_sends_a_wav_whose_header_has_its_length(aliased):
    body = {"model": "tts-1", "input": TEXT, "voice": "alloy", "response_format": "wav"}
    with aliased.client() as c:
        streamed = c.post("/v1/audio/speech", json=body)
        whole = c.post("/v1/audio/speech", json={**body, "stream": False})
    assert riff_sizes(streamed.content)[1] == 0xFFFFFFFF  # the streamed header's "unknown length"
    data = whole.content
    riff_size, data_size, data_offset = riff_sizes(data)
    assert int(whole.headers["content-length"]) == len(data)
    assert riff_size == len(data) - 8 and data_size == len(data) - data_offset
    with wave.open(io.BytesIO(data)) as w:  # Python's wave reads the real length
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (24_000, 1, 2)
        assert w.getnframes() * 2 == data_size
    samples = sf.read(io.BytesIO(data), dtype="int16")[0]
    assert samples.shape[0] == sf.read(io.BytesIO(streamed.content), dtype="int16")[0].shape[0]
    with aliased.client() as c:
        pcm = c.post("/v1/audio/speech", json={**body, "response_format": "pcm", "stream": False})
    assert int(pcm.headers["content-length"]) == len(pcm.content) == 2 * samples.shape[0]


# ----- a server with only a default voice --------------------------------------------------------


@pytest.fixture(scope="module")
def defaulted(model_dir, tmp_path_factory, voice_a, voice_b):
    root = tmp_path_factory.mktemp("openai-default")
    with ServerProcess(model_dir, root / "voices", root / "log", warmup="false", default_voice="carol") as running:
        with running.client() as c:
            for voice_id, clip in (("carol", voice_b), ("ash", voice_a), ("dave", voice_a)):
                with open(clip, "rb") as f:
                    r = c.post("/voices/register", files={"voice_file": (clip.name, f)}, data={"voice_id": voice_id})
                    assert r.status_code == 200, r.text
        yield running


def test_openai_names_speak_in_the_default_voice(defaulted):
    client = OpenAI(base_url=defaulted.url + "/v1", api_key="not-needed", max_retries=0)
    carol = tts_samples(defaulted, "carol")
    for voice in ("alloy", "cedar"):
        response = client.audio.speech.create(
            model="gpt-4o-mini-tts", voice=voice, input=TEXT, response_format="wav", extra_body={"stream": False}
        )
        assert same_speech(sf.read(io.BytesIO(response.content), dtype="int16")[0], carol), voice
    # a voice registered under one of OpenAI's names is that voice, not the default (dave: the same clip)
    ash = speech_samples(defaulted, voice="ash")
    assert same_speech(ash, tts_samples(defaulted, "dave")) and not same_speech(ash, carol)
    # any other unknown name is still a 404, not the default
    with pytest.raises(NotFoundError):
        client.audio.speech.create(model="tts-1", voice="nobody", input=TEXT)


def test_only_the_openai_route_maps_openais_names(defaulted):
    url = defaulted.url.replace("http://", "ws://") + "/v1/audio/speech/realtime"
    with connect(url, open_timeout=10) as ws:
        ws.send(json.dumps({"type": "config", "voice": "alloy"}))
        event = json.loads(ws.recv(timeout=30))
    assert event["type"] == "error" and event["error"]["type"] == "voice_not_found"
