"""OpenAI's speech API (`POST /v1/audio/speech`, `GET /v1/models`, `GET /v1/audio/voices`), so
Open WebUI, Home Assistant, SillyTavern and the OpenAI SDKs work unchanged."""

import base64
import json
from typing import Literal

from fastapi import FastAPI, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

import audio_formats
from errors import UnsupportedOptionError
from speech_service import Speech, admitted, check_text, streaming_response, tts_state, voice_by_id
from tts_engine import GenerationOptions

MODELS = ("tts-1", "tts-1-hd", "chatterbox-turbo")


class SpeechRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")  # SDKs send fields we do not use (instructions)

    model: str
    input: str
    voice: str
    response_format: Literal["mp3", "opus", "aac", "flac", "wav", "pcm"] = "mp3"
    speed: float = Field(1.0, ge=0.25, le=4.0)
    stream_format: Literal["audio", "sse"] = "audio"


def sse_event(payload: dict) -> bytes:
    return f"data: {json.dumps(payload)}\n\n".encode()


def install_openai_routes(app: FastAPI) -> None:
    @app.get("/v1/models")
    async def models():
        return {"object": "list",
                "data": [{"id": m, "object": "model", "created": 0, "owned_by": "resemble-ai"} for m in MODELS]}

    @app.get("/v1/audio/voices")
    async def voices(request: Request):
        return {"voices": [r.voice_id for r in tts_state(request).store.records()]}

    @app.post("/v1/audio/speech")
    async def speech(request: Request, body: SpeechRequest):
        state = tts_state(request)
        if body.model not in MODELS:
            raise UnsupportedOptionError(f"unknown model {body.model!r}; use one of {', '.join(MODELS)}")
        working = audio_formats.available_formats()
        if body.response_format not in working:
            raise UnsupportedOptionError(
                f"response_format {body.response_format!r} cannot be produced here; "
                f"available: {', '.join(working)}")
        check_text(state, body.input)
        voice = await voice_by_id(state, body.voice)
        options = GenerationOptions()
        state.engine.check_request(body.input, options)
        fmt = body.response_format
        content_type = audio_formats.CONTENT_TYPES[fmt]

        def make_speech(cancel):
            # token windows where bytes can leave at once; whole pieces where they are encoded at the end
            chunked = fmt in audio_formats.PROGRESSIVE_FORMATS
            return Speech(state, body.input, voice, options, cancel, speed=body.speed, chunked=chunked)

        if body.stream_format == "sse":
            async def events(speech: Speech):
                encoder = audio_formats.StreamEncoder(fmt)
                async for _, waveform in speech.pieces_as_ready():
                    if chunk := encoder.add(waveform):
                        yield sse_event({"type": "speech.audio.delta", "audio": base64.b64encode(chunk).decode()})
                if tail := encoder.finish():
                    yield sse_event({"type": "speech.audio.delta", "audio": base64.b64encode(tail).decode()})
                tokens = speech.tokens_generated
                yield sse_event({"type": "speech.audio.done",
                                 "usage": {"input_tokens": len(body.input), "output_tokens": tokens,
                                           "total_tokens": len(body.input) + tokens}})

            return await streaming_response(state, request, make_speech, events, "text/event-stream")

        if fmt in audio_formats.PROGRESSIVE_FORMATS:
            async def audio(speech: Speech):
                encoder = audio_formats.StreamEncoder(fmt)
                async for _, waveform in speech.pieces_as_ready():
                    yield encoder.add(waveform)
                if tail := encoder.finish():
                    yield tail

            return await streaming_response(state, request, make_speech, audio, content_type)

        async with admitted(state, request) as cancel:
            speech = make_speech(cancel)
            speech.request_started = request.state.started_at
            _, waveform = await speech.collect()
        data = await state.run(audio_formats.encode, waveform, fmt)
        return Response(data, media_type=content_type)
