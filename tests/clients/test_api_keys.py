"""The same clients against a server with TTS_API_KEYS: each sends its key its own way (the OpenAI
SDK, Pipecat's and LiveKit's OpenAI services as `Authorization: Bearer`; the ElevenLabs services
as `xi-api-key`, on HTTP requests and on the WebSocket upgrade), is served with the right key, and
fails the way its own docs say with a wrong one."""

import asyncio

import aiohttp
import httpx
import openai as openai_sdk
import pytest

from chatterbox_server.benchmark.server_process import ServerProcess
from tests.clients.conftest import PIPECAT_HOW, TEXT, VOICE, require

pytestmark = [pytest.mark.server, pytest.mark.slow]

KEY = "the-right-key"
WRONG = "a-wrong-key"


@pytest.fixture(scope="module")
def server(model_dir, tmp_path_factory, voice_a):
    root = tmp_path_factory.mktemp("keys")
    with ServerProcess(
        model_dir, root / "voices", root / "server.log", warmup="false", api_keys=KEY, default_voice=VOICE
    ) as running:
        with open(voice_a, "rb") as f:
            r = httpx.post(
                running.url + "/voices/register",
                files={"voice_file": ("a.wav", f)},
                data={"voice_id": VOICE},
                headers={"Authorization": f"Bearer {KEY}"},
                timeout=120,
            )
        assert r.status_code == 200, r.text
        yield running


@pytest.fixture(scope="module")
def expected(server):
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {KEY}"}, timeout=120) as c:
        r = c.post("/tts/json", json={"text": TEXT, "voice_id": VOICE})
    assert r.status_code == 200, r.text
    return r.json()["audio_duration"]


# ----- the OpenAI SDK ------------------------------------------------------------------------


def sdk_speech(server, key: str) -> bytes:
    with openai_sdk.OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0) as client:
        return client.audio.speech.create(
            model="gpt-4o-mini-tts", voice=VOICE, input=TEXT, response_format="pcm"
        ).content


def test_openai_sdk_key(server, expected):
    assert len(sdk_speech(server, KEY)) / 2 / 24_000 == pytest.approx(expected, abs=1e-6)
    with pytest.raises(openai_sdk.AuthenticationError) as error:
        sdk_speech(server, WRONG)
    assert error.value.status_code == 401


# ----- Pipecat (imported here: without it, the other clients' tests still run) --------------


def pipecat_run(kind: str, server, key: str):
    require("pipecat", PIPECAT_HOW)
    from pipecat.services.elevenlabs.tts import ElevenLabsHttpTTSService, ElevenLabsTTSService
    from pipecat.services.openai.tts import OpenAITTSService

    from tests.clients.test_pipecat import run_pipeline, speak

    async def run():
        async with aiohttp.ClientSession() as session:
            if kind == "openai":
                service = OpenAITTSService(api_key=key, base_url=server.url + "/v1")
            elif kind == "websocket":
                service = ElevenLabsTTSService(
                    api_key=key,
                    url=server.url.replace("http://", "ws://"),
                    settings=ElevenLabsTTSService.Settings(voice=VOICE),
                )
            else:
                service = ElevenLabsHttpTTSService(
                    api_key=key,
                    base_url=server.url,
                    aiohttp_session=session,
                    settings=ElevenLabsHttpTTSService.Settings(voice=VOICE),
                )
            return await run_pipeline(service, speak(TEXT))

    return asyncio.run(run())


@pytest.mark.parametrize("kind", ["openai", "websocket", "http"])
def test_pipecat_key(server, expected, kind):
    collector = pipecat_run(kind, server, KEY)
    from pipecat.frames.frames import TTSAudioRawFrame

    from tests.clients.test_pipecat import audio_of

    assert not collector.errors(), collector.errors()
    seconds, _ = audio_of(collector.of(TTSAudioRawFrame))
    assert seconds == pytest.approx(expected, abs=1e-6)

    refused = pipecat_run(kind, server, WRONG)
    assert not refused.of(TTSAudioRawFrame)
    errors = refused.errors()
    assert errors and any("401" in e or "403" in e or "unauthorized" in e for e in errors), errors


# ----- LiveKit -------------------------------------------------------------------------------


def livekit_run(kind: str, server, key: str) -> float:
    require("livekit.plugins.openai")
    require("livekit.plugins.elevenlabs")
    from livekit.plugins import elevenlabs, openai

    async def run():
        async with aiohttp.ClientSession() as session:
            if kind == "openai":
                tts = openai.TTS(base_url=server.url + "/v1", api_key=key, response_format="pcm")
            else:
                tts = elevenlabs.TTS(
                    base_url=server.url + "/v1",
                    api_key=key,
                    voice_id=VOICE,
                    encoding="pcm_24000",
                    http_session=session,
                )
            try:
                if kind == "elevenlabs-stream":
                    stream = tts.stream()
                    stream.push_text(TEXT)
                    stream.end_input()
                else:
                    stream = tts.synthesize(TEXT)
                samples = 0
                async with stream:
                    async for event in stream:
                        samples += event.frame.samples_per_channel
                return samples / 24_000
            finally:
                await tts.aclose()

    return asyncio.run(run())


@pytest.mark.parametrize("kind", ["openai", "elevenlabs-synthesize", "elevenlabs-stream"])
def test_livekit_key(server, expected, kind):
    assert livekit_run(kind, server, KEY) == pytest.approx(expected, abs=0.0101)  # + LiveKit's 10 ms marker
    from livekit.agents import APIStatusError

    with pytest.raises(APIStatusError) as error:
        livekit_run(kind, server, WRONG)
    assert error.value.status_code in (401, 403)
