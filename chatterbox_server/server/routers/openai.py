"""OpenAI's speech API (`POST /v1/audio/speech`, `GET /v1/models`, `GET /v1/audio/voices`), so
Open WebUI, Home Assistant, SillyTavern and the OpenAI SDKs work unchanged."""

import base64
import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from chatterbox_server.audio import formats as audio_formats
from chatterbox_server.engine import GenerationOptions
from chatterbox_server.errors import UnsupportedOptionError
from chatterbox_server.server.protocol import (
    MODELS,
    SPEECH_MEDIA_TYPES,
    SSE_MEDIA_TYPE,
    SYNTHESIS_ERRORS,
    ModelInfo,
    ModelList,
    SpeechRequest,
    VoiceNames,
    audio_response,
)
from chatterbox_server.server.routes import Body, route_facts
from chatterbox_server.server.serving import Service, Speech, Voices, streaming_speech

router = APIRouter(prefix="/v1", tags=["openai"])


@router.get(
    "/models",
    summary="Models (OpenAI)",
    description="The model names OpenAI clients may send.",
    response_model=ModelList,
)
async def models() -> ModelList:
    return ModelList(data=[ModelInfo(id=m) for m in MODELS])


@router.get(
    "/audio/voices",
    summary="Voice names (OpenAI)",
    description="Registered voice ids, then the configured aliases (TTS_VOICE_ALIASES) whose voice is registered.",
    response_model=VoiceNames,
)
async def voices(voice_service: Voices) -> VoiceNames:
    return VoiceNames(voices=await voice_service.names())


def sse_event(payload: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(payload)}\n\n".encode()


async def sse_events(speech: Speech, fmt: str) -> AsyncIterator[bytes]:
    """speech.audio.delta events with base64 audio, then speech.audio.done with usage in tokens
    (text tokens in, speech tokens out)."""
    async for chunk in speech.encoded(audio_formats.StreamEncoder(fmt)):
        yield sse_event({"type": "speech.audio.delta", "audio": base64.b64encode(chunk).decode()})
    if speech.completed:
        text_tokens, speech_tokens = speech.job.plan.text_tokens, speech.tokens_generated
        usage = {
            "input_tokens": text_tokens,
            "output_tokens": speech_tokens,
            "total_tokens": text_tokens + speech_tokens,
        }
        yield sse_event({"type": "speech.audio.done", "usage": usage})


@router.post(
    "/audio/speech",
    summary="Speak text (OpenAI)",
    description="OpenAI's speech endpoint. `voice` is a registered voice id; `response_format` lists the "
    "formats this install can encode (wav and pcm stream as they are spoken, the others are sent when "
    "the text is done); `stream_format=sse` sends base64 audio in server-sent events.",
    response_class=Response,
    responses={**audio_response(SPEECH_MEDIA_TYPES, "audio in the requested format"), **SYNTHESIS_ERRORS},
)
@route_facts(body=Body.JSON, synthesis=True)
async def speech(request: Request, body: SpeechRequest, service: Service) -> Response:
    if body.model not in MODELS:
        raise UnsupportedOptionError(f"unknown model {body.model!r}; use one of {', '.join(MODELS)}")
    fmt = body.response_format
    working = audio_formats.available_formats()
    if fmt not in working:
        raise UnsupportedOptionError(
            f"response_format {fmt!r} cannot be produced here; available: {', '.join(working)}"
        )
    record = audio_formats.FORMATS[fmt]
    progressive, content_type = record.progressive, record.content_type
    # token windows where bytes can leave at once; whole pieces where they are encoded at the end
    job = await service.prepare(
        body.input, GenerationOptions(), voice_id=body.voice, speed=body.speed, chunked=progressive
    )
    speech = await service.open(job, request)
    if body.stream_format == "sse":
        return streaming_speech(speech, sse_events(speech, fmt), SSE_MEDIA_TYPE)
    if progressive:
        return streaming_speech(speech, speech.encoded(audio_formats.StreamEncoder(fmt)), content_type)
    async with speech:
        _, waveform = await speech.collect()
    data = await service.state.run(audio_formats.encode, waveform, fmt)
    return Response(data, media_type=content_type)
