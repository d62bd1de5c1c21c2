"""OpenAI's speech API (`POST /v1/audio/speech`, `GET /v1/models`, `GET /v1/audio/voices`), so
Open WebUI, Home Assistant, SillyTavern, Pipecat, LiveKit and the OpenAI SDKs work unchanged:
OpenAI's model and voice names are accepted, and errors come in OpenAI's shape (each route here
declares `errors=ErrorShape.OPENAI`)."""

import base64
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from chatterbox_server.audio import formats as audio_formats
from chatterbox_server.engine import GenerationOptions
from chatterbox_server.errors import UnsupportedOptionError, VoiceNotFoundError
from chatterbox_server.server.protocol import (
    MODELS,
    MODELS_ACCEPTED,
    OPENAI_SYNTHESIS_ERRORS,
    OPENAI_VOICES,
    SPEECH_MEDIA_TYPES,
    SSE_MEDIA_TYPE,
    ModelInfo,
    ModelList,
    OpenAIVoice,
    OpenAIVoiceList,
    SpeechRequest,
    VoiceNames,
    accepted_model,
    audio_response,
)
from chatterbox_server.server.routes import Body, ErrorShape, route_facts
from chatterbox_server.server.serving import Service, Speech, SpeechService, Voices, streaming_speech
from chatterbox_server.server.timings import SpeechTimings, timestamps_payload

router = APIRouter(prefix="/v1", tags=["openai"])


@router.get(
    "/models",
    summary="Models (OpenAI)",
    description="The model names OpenAI clients may send.",
    response_model=ModelList,
)
@route_facts(errors=ErrorShape.OPENAI)
async def models() -> ModelList:
    return ModelList(data=[ModelInfo(id=m) for m in MODELS])


@router.get(
    "/audio/voices",
    summary="Voices (OpenAI)",
    description="Registered voice ids, then the configured aliases (TTS_VOICE_ALIASES) whose voice is "
    'registered, as `{"voices": [{"id": "alice", "name": "alice"}, {"id": "alloy", "name": "alloy → alice"}]}` '
    '(what Open WebUI reads); `format=names` sends the names alone, `{"voices": ["alice", "alloy"]}`.',
    response_model=OpenAIVoiceList | VoiceNames,
)
@route_facts(errors=ErrorShape.OPENAI)
async def voices(
    voice_service: Voices,
    shape: Literal["objects", "names"] = Query(
        "objects", alias="format", description="objects: {id, name} per voice; names: the names alone"
    ),
) -> OpenAIVoiceList | VoiceNames:
    named = await voice_service.named()
    if shape == "names":
        return VoiceNames(voices=[name for name, _ in named])
    return OpenAIVoiceList(
        voices=[OpenAIVoice(id=name, name=name if name == target else f"{name} → {target}") for name, target in named]
    )


async def openai_voice(service: SpeechService, name: str) -> str:
    """The voice an OpenAI request names: an alias or a registered id as on every route; one of
    OpenAI's own names (alloy, ...) that is neither speaks in the default voice (TTS_DEFAULT_VOICE),
    and without one gets a 404 saying how to configure it. This is the OpenAI route's policy: the
    realtime socket and the other routes map no such names."""
    voices = service.state.voices
    if name not in OPENAI_VOICES or name in voices.aliases:
        return name
    with contextlib.suppress(VoiceNotFoundError):
        return (await voices.record(name)).voice_id  # a voice registered under OpenAI's name is itself
    if default := service.state.settings.default_voice:
        return default
    raise VoiceNotFoundError(
        f"voice {name!r} is one of OpenAI's voice names and none is configured here: map it to a registered "
        f"voice with TTS_VOICE_ALIASES={name}=<voice_id>, set TTS_DEFAULT_VOICE=<voice_id> for every OpenAI "
        f"name without an alias, or register a voice named {name!r}"
    )


def sse_event(payload: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(payload)}\n\n".encode()


async def sse_events(
    speech: Speech, encoder: audio_formats.StreamEncoder, timings: SpeechTimings | None = None
) -> AsyncIterator[bytes]:
    """speech.audio.delta events with base64 audio (any format: the bytes a stream would send), then
    speech.audio.done with usage in tokens (text tokens in, speech tokens out). With `timings`
    (include_timestamps), a speech.audio.timestamps event follows the delta that ends each piece."""
    async for chunk in speech.encoded(encoder):
        yield sse_event({"type": "speech.audio.delta", "audio": base64.b64encode(chunk).decode()})
        if timings is not None and (alignment := timings.poll()) is not None:
            yield sse_event({"type": "speech.audio.timestamps", **timestamps_payload(alignment)})
    if timings is not None and (alignment := timings.poll()) is not None:
        yield sse_event({"type": "speech.audio.timestamps", **timestamps_payload(alignment)})
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
    description="OpenAI's speech endpoint. `model`: OpenAI's TTS model names or chatterbox-turbo, all the "
    "same model. `voice`: a registered voice id or alias, a string or OpenAI's object with an `id`; OpenAI's voice "
    "names without an alias speak in the default voice (TTS_DEFAULT_VOICE). `instructions` is accepted and "
    "ignored (write tags such as [laugh] in `input`). `response_format` lists the formats this install can "
    "encode, each streamed as it is spoken (mp3, opus in Ogg, aac in ADTS and flac frame by frame; ulaw is "
    "G.711 µ-law at 8 kHz for telephony); `sample_rate` (Hz) resamples (pcm, wav, mp3, aac, flac: any listed "
    "rate; opus 8000-48000; ulaw only 8000); "
    "`stream=false` sends one whole file with its real length (a streamed WAV's header says unknown length); "
    "`stream_format=sse` sends base64 audio in server-sent events. Errors come in OpenAI's shape.",
    response_class=Response,
    responses={**audio_response(SPEECH_MEDIA_TYPES, "audio in the requested format"), **OPENAI_SYNTHESIS_ERRORS},
)
@route_facts(body=Body.JSON, synthesis=True, errors=ErrorShape.OPENAI)
async def speech(request: Request, body: SpeechRequest, service: Service) -> Response:
    if not accepted_model(body.model):
        raise UnsupportedOptionError(f"unknown model {body.model!r}; use one of {MODELS_ACCEPTED}", param="model")
    fmt = body.response_format
    working = audio_formats.available_formats()
    if fmt not in working:
        raise UnsupportedOptionError(
            f"response_format {fmt!r} cannot be produced here; available: {', '.join(working)}",
            param="response_format",
        )
    if body.include_timestamps and body.stream_format != "sse":
        raise UnsupportedOptionError("include_timestamps needs stream_format=sse", param="include_timestamps")
    if body.stream_format == "sse" and not body.stream:
        raise UnsupportedOptionError("stream=false sends one whole file: not with stream_format=sse", param="stream")
    record = audio_formats.FORMATS[fmt]
    try:  # the format's options, checked before any work
        encoder = audio_formats.StreamEncoder(fmt, sample_rate_hz=body.sample_rate)
    except audio_formats.UnsupportedEncodingError as e:
        raise UnsupportedOptionError(str(e), param="sample_rate") from None
    # stream=false: one whole file, its length known (collected below, like the non-progressive formats)
    progressive, content_type = record.progressive and body.stream, record.content_type
    # token windows where bytes can leave at once; whole pieces where they are encoded at the end
    voice_id = await openai_voice(service, body.voice_id)
    job = await service.prepare(
        body.input, GenerationOptions(), voice_id=voice_id, speed=body.speed, chunked=progressive
    )
    speech = await service.open(job, request)
    if body.stream_format == "sse":
        timings = SpeechTimings(body.input, speech) if body.include_timestamps else None
        return streaming_speech(speech, sse_events(speech, encoder, timings), SSE_MEDIA_TYPE)
    if progressive:
        return streaming_speech(speech, speech.encoded(encoder), content_type)
    async with speech:
        _, waveform = await speech.collect()
    data = await service.state.run(audio_formats.encode, waveform, fmt, body.sample_rate)
    return Response(data, media_type=content_type)
