"""ElevenLabs' text-to-speech API, so ElevenLabs clients (Pipecat's ElevenLabsTTSService and
ElevenLabsHttpTTSService, LiveKit's elevenlabs.TTS, the ElevenLabs SDKs) work with their base URL
pointed here:

    POST /v1/text-to-speech/{voice_id}                               the whole file
    POST /v1/text-to-speech/{voice_id}/stream                        audio bytes as they are spoken
    POST /v1/text-to-speech/{voice_id}/with-timestamps               JSON: audio and character timings
    POST /v1/text-to-speech/{voice_id}/stream/with-timestamps        JSON lines: audio chunks with timings
    WS   /v1/text-to-speech/{voice_id}/multi-stream-input            text in, audio out, contexts
    WS   /v1/text-to-speech/{voice_id}/stream-input                  the same, one context
    GET  /v1/voices, GET /v1/voices/{voice_id}                       the registered voices

The sockets' protocol is in server/elevenlabs.py. Timings are estimated (text/alignment.py) and
flagged so (`alignment_estimated`). `/v1/models` stays the OpenAI router's (ElevenLabs clients do
not call it).
"""

import base64
import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Query, Request, WebSocket
from fastapi.responses import Response
from pydantic import BaseModel, Field

from chatterbox_server.audio import formats as audio_formats
from chatterbox_server.errors import TTSError
from chatterbox_server.server import elevenlabs as el
from chatterbox_server.server.admission import ShuttingDownError
from chatterbox_server.server.auth import ApiKeys
from chatterbox_server.server.protocol import SYNTHESIS_ERRORS, audio_response, error_responses
from chatterbox_server.server.routes import Body, route_facts
from chatterbox_server.server.serving import Service, Speech, SpeechService, Voices, streaming_speech
from chatterbox_server.server.sessions import client_of, refuse_upgrade
from chatterbox_server.server.state import ServerState
from chatterbox_server.server.timings import SpeechTimings
from chatterbox_server.text.alignment import Alignment

router = APIRouter(prefix="/v1", tags=["elevenlabs"])

NDJSON_MEDIA_TYPE = "application/x-ndjson"
AUDIO_MEDIA_TYPES = ["audio/mpeg", "audio/pcm", "audio/basic"]
OUTPUT_FORMAT_QUERY = Query(
    None,
    description=f"one of {', '.join(el.OUTPUT_FORMATS)} (default {el.DEFAULT_OUTPUT_FORMAT}); pcm is raw 16-bit "
    "little-endian mono, ulaw 8-bit mu-law",
)


# ----- voices ----------------------------------------------------------------------------------


class ElevenLabsVoice(BaseModel):
    voice_id: str = Field(description="what to send as voice_id: a registered voice, or an alias of one")
    name: str
    category: str = Field("cloned", description="every voice here is cloned from a reference clip")
    description: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    preview_url: str | None = None


class ElevenLabsVoiceList(BaseModel):
    voices: list[ElevenLabsVoice]


def _voice(name: str, voice_id: str) -> ElevenLabsVoice:
    alias = name != voice_id
    return ElevenLabsVoice(voice_id=name, name=name, description=f"alias of {voice_id}" if alias else None)


@router.get(
    "/voices",
    summary="Voices (ElevenLabs)",
    description="Registered voices, then the aliases (TTS_VOICE_ALIASES) whose voice is registered, in "
    "ElevenLabs' shape (`category` is always `cloned`).",
    response_model=ElevenLabsVoiceList,
    responses=error_responses(503),
)
async def voices(voice_service: Voices) -> ElevenLabsVoiceList:
    return ElevenLabsVoiceList(voices=[_voice(name, target) for name, target in await voice_service.named()])


@router.get(
    "/voices/{voice_id}",
    summary="One voice (ElevenLabs)",
    description="A registered voice or alias in ElevenLabs' shape; 404 if it is neither.",
    response_model=ElevenLabsVoice,
    responses=error_responses(404, 503),
)
async def voice(voice_id: str, voice_service: Voices) -> ElevenLabsVoice:
    target = voice_service.resolve(voice_id)
    await voice_service.record(target)  # VoiceNotFoundError: 404
    return _voice(voice_id, target)


# ----- speech over HTTP -------------------------------------------------------------------------


async def _open(
    service: SpeechService, request: Request, voice_id: str, body: el.TextToSpeechRequest, chunked: bool
) -> Speech:
    job = await service.prepare(body.text, body.options(), voice_id=voice_id, speed=body.speed, chunked=chunked)
    return await service.open(job, request)


def _timestamped(audio_bytes: bytes, alignment: Alignment | None) -> dict[str, Any]:
    """One object of /with-timestamps: base64 audio and the (estimated) timings, in seconds."""
    shape = alignment.as_seconds() if alignment is not None else None
    payload: dict[str, Any] = {
        "audio_base64": base64.b64encode(audio_bytes).decode(),
        "alignment": shape,
        "normalized_alignment": shape,
    }
    if shape is not None:
        payload["alignment_estimated"] = True
    return payload


@router.post(
    "/text-to-speech/{voice_id}",
    summary="Speak text (ElevenLabs)",
    description="ElevenLabs' text-to-speech: the whole file in `output_format`. `voice_id` is a registered "
    "voice or alias; any `model_id` is accepted; `voice_settings.speed` is applied, the other voice "
    "settings are accepted and have no effect.",
    response_class=Response,
    responses={**audio_response(AUDIO_MEDIA_TYPES, "audio in the requested output_format"), **SYNTHESIS_ERRORS},
)
@route_facts(body=Body.JSON, synthesis=True)
async def text_to_speech(
    request: Request,
    voice_id: str,
    body: el.TextToSpeechRequest,
    service: Service,
    output_format: str | None = OUTPUT_FORMAT_QUERY,
) -> Response:
    fmt = el.output_format(output_format)
    content_type = el.open_encoder(fmt).content_type  # the format checked before any work
    async with await _open(service, request, voice_id, body, chunked=False) as speech:
        _, waveform = await speech.collect()
    data = await service.state.run(el.encode_whole, waveform, fmt)
    return Response(data, media_type=content_type)


@router.post(
    "/text-to-speech/{voice_id}/stream",
    summary="Stream speech (ElevenLabs)",
    description="As `POST /v1/text-to-speech/{voice_id}`, the audio sent while it is spoken.",
    response_class=Response,
    responses={**audio_response(AUDIO_MEDIA_TYPES, "audio in the requested output_format"), **SYNTHESIS_ERRORS},
)
@route_facts(body=Body.JSON, synthesis=True)
async def stream(
    request: Request,
    voice_id: str,
    body: el.TextToSpeechRequest,
    service: Service,
    output_format: str | None = OUTPUT_FORMAT_QUERY,
) -> Response:
    encoder = el.open_encoder(el.output_format(output_format))
    speech = await _open(service, request, voice_id, body, chunked=True)
    return streaming_speech(speech, speech.encoded(encoder), encoder.content_type)


@router.post(
    "/text-to-speech/{voice_id}/with-timestamps",
    summary="Speak text with timings (ElevenLabs)",
    description='One JSON object: `{"audio_base64", "alignment": {"characters", "character_start_times_seconds", '
    '"character_end_times_seconds"}, "normalized_alignment", "alignment_estimated": true}`. The timings cover '
    "every character of `text`; they are estimated (exact only where the text was split into pieces).",
    responses=SYNTHESIS_ERRORS,
)
@route_facts(body=Body.JSON, synthesis=True)
async def with_timestamps(
    request: Request,
    voice_id: str,
    body: el.TextToSpeechRequest,
    service: Service,
    output_format: str | None = OUTPUT_FORMAT_QUERY,
) -> dict[str, Any]:
    fmt = el.output_format(output_format)
    el.open_encoder(fmt)  # the format checked before any work
    async with await _open(service, request, voice_id, body, chunked=False) as speech:
        timings = SpeechTimings(body.text, speech)
        _, waveform = await speech.collect()
        alignment = timings.poll()
    data = await service.state.run(el.encode_whole, waveform, fmt)
    return _timestamped(data, alignment)


async def ndjson_lines(speech: Speech, text: str, encoder: audio_formats.StreamEncoder) -> AsyncIterator[bytes]:
    """One JSON object per line for each audio chunk; a piece's timings ride on the line that
    ends its audio (null before), times in seconds from the start of the response's audio."""
    timings = SpeechTimings(text, speech)
    async for chunk in speech.encoded(encoder):
        yield (json.dumps(_timestamped(chunk, timings.poll())) + "\n").encode()
    if (rest := timings.poll()) is not None:  # pieces whose audio the encoder sent with an earlier line
        yield (json.dumps(_timestamped(b"", rest)) + "\n").encode()


@router.post(
    "/text-to-speech/{voice_id}/stream/with-timestamps",
    summary="Stream speech with timings (ElevenLabs)",
    description="As `/with-timestamps`, streamed: one JSON object per line, each with a chunk of base64 audio "
    "(`audio_base64`); a piece's timings (`alignment`, `normalized_alignment`, seconds from the start of "
    "the audio) come on the line that ends its audio, null on the others.",
    response_class=Response,
    responses={
        200: {"description": "JSON lines", "content": {NDJSON_MEDIA_TYPE: {"schema": {"type": "string"}}}},
        **SYNTHESIS_ERRORS,
    },
)
@route_facts(body=Body.JSON, synthesis=True)
async def stream_with_timestamps(
    request: Request,
    voice_id: str,
    body: el.TextToSpeechRequest,
    service: Service,
    output_format: str | None = OUTPUT_FORMAT_QUERY,
) -> Response:
    encoder = el.open_encoder(el.output_format(output_format))
    speech = await _open(service, request, voice_id, body, chunked=True)
    return streaming_speech(speech, ndjson_lines(speech, body.text, encoder), NDJSON_MEDIA_TYPE)


# ----- the sockets ------------------------------------------------------------------------------


async def _serve_socket(websocket: WebSocket, voice_id: str, multi: bool) -> None:
    state: ServerState = websocket.app.state.tts
    client = client_of(websocket.scope, ApiKeys(state.settings.api_keys))
    try:
        if state.draining:
            raise ShuttingDownError("server is shutting down")
        session = state.sessions.acquire(client)  # shared with the realtime socket and Wyoming (sessions.py)
    except TTSError as e:
        return await refuse_upgrade(websocket, e)
    with session:
        try:
            params = el.SocketParams.from_query(websocket.query_params)
            resolved = state.voices.resolve(voice_id)
            await state.voices.record(resolved)  # an unknown voice is refused now, not at the first text
        except TTSError as e:
            return await refuse_upgrade(websocket, e)
        await el.ElevenLabsSession(websocket.app.state.service, websocket, resolved, params, multi).run()


@router.websocket("/text-to-speech/{voice_id}/multi-stream-input")
async def multi_stream_input(websocket: WebSocket, voice_id: str) -> None:
    """ElevenLabs' multi-context socket; see chatterbox_server/server/elevenlabs.py."""
    await _serve_socket(websocket, voice_id, multi=True)


@router.websocket("/text-to-speech/{voice_id}/stream-input")
async def stream_input(websocket: WebSocket, voice_id: str) -> None:
    """ElevenLabs' single-context socket; see chatterbox_server/server/elevenlabs.py."""
    await _serve_socket(websocket, voice_id, multi=False)
