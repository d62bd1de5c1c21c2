"""POST /tts (WAV, streamed or whole) and POST /tts/json (figures per piece)."""

from typing import Annotated

from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.responses import Response

from chatterbox_server.audio.formats import FORMATS, StreamEncoder, encode
from chatterbox_server.engine import SpeechResult, SpokenPiece
from chatterbox_server.server.context import RequestContext
from chatterbox_server.server.protocol import (
    JSON_SYNTHESIS_ERRORS,
    SYNTHESIS_ERRORS,
    PieceInfo,
    TTSForm,
    TTSJsonRequest,
    TTSJsonResponse,
    audio_response,
)
from chatterbox_server.server.routes import Body, route_facts
from chatterbox_server.server.serving import Service, streaming_speech

router = APIRouter(tags=["speech"])

WAV = FORMATS["wav"]  # what /tts speaks in, streamed or whole


def result_headers(request_id: str, result: SpeechResult) -> dict[str, str]:
    return {
        "X-Request-ID": request_id,
        "X-Audio-Duration": f"{result.audio_duration_s:.3f}",
        "X-Generation-Time": f"{result.generation_time_s:.3f}",
        "X-RTF": f"{result.rtf:.4f}",
        "X-Tokens-Generated": str(result.tokens_generated),
    }


@router.post(
    "/tts",
    summary="Speak text as WAV",
    description="Speak `text` in a registered voice (`voice_id`) or in the voice of an uploaded clip "
    "(`voice_file`). By default the WAV streams: one header with unknown length, then 16-bit PCM as each "
    "part is spoken, so playback can start after the first dozen tokens. `stream=false` sends one finished "
    "file with its length and the X-Audio-Duration, X-Generation-Time, X-RTF and X-Tokens-Generated headers "
    "(use it when saving to a file).",
    response_class=Response,
    responses={**audio_response([WAV.content_type], "16-bit mono WAV at 24 kHz"), **SYNTHESIS_ERRORS},
)
@route_facts(body=Body.UPLOAD, synthesis=True)
async def tts(
    request: Request,
    form: Annotated[TTSForm, Form()],
    service: Service,
    voice_file: UploadFile | None = File(None, description="a reference clip to speak in, instead of voice_id"),
) -> Response:
    upload = await service.read_upload(voice_file) if voice_file is not None else None
    job = await service.prepare(
        form.text, form.options(), voice_id=form.voice_id, voice_upload=upload, speed=form.speed, chunked=form.stream
    )
    speech = await service.open(job, request)
    if form.stream:
        return streaming_speech(speech, speech.encoded(StreamEncoder(WAV.name)), WAV.content_type)
    async with speech:
        result, waveform = await speech.collect()
    wav = encode(waveform, WAV.name)  # a whole WAV that carries its sizes
    headers = result_headers(RequestContext.of(request).request_id, result) | {"Content-Length": str(len(wav))}
    return Response(wav, media_type=WAV.content_type, headers=headers)


def piece_info(spoken: SpokenPiece) -> PieceInfo:
    return PieceInfo(
        text=spoken.piece.text,
        text_start=spoken.piece.start,
        text_end=spoken.piece.end,
        audio_start=round(spoken.start_s, 4),
        audio_end=round(spoken.end_s, 4),
        generation_time=round(spoken.result.generation_time_s, 4),
        tokens_generated=spoken.result.tokens_generated,
        pause_after=round(spoken.pause_s, 4),
        truncated=spoken.result.truncated,
    )


@router.post(
    "/tts/json",
    summary="Speak text, report figures",
    description="Speak `text` and return the figures instead of the audio: duration, generation time, time "
    "to first audio, RTF, the text as spoken (`normalized_text`, after the clean-up), each piece's text span and "
    "audio span, and `truncated` where a piece ended early (a runaway guard stopped it, or max_new_tokens did).",
    response_model=TTSJsonResponse,
    responses=JSON_SYNTHESIS_ERRORS,
)
@route_facts(body=Body.JSON, synthesis=True)
async def tts_json(request: Request, body: TTSJsonRequest, service: Service) -> TTSJsonResponse:
    job = await service.prepare(body.text, body.options(), voice_id=body.voice_id)
    async with await service.open(job, request) as speech:
        result, _ = await speech.collect()
    return TTSJsonResponse(
        request_id=RequestContext.of(request).request_id,
        audio_duration=round(result.audio_duration_s, 4),
        generation_time=round(result.generation_time_s, 4),
        time_to_first_audio=round(result.time_to_first_audio_s, 4),
        rtf=round(result.rtf, 4),
        tokens_generated=result.tokens_generated,
        sample_rate=result.sample_rate,
        normalized_text=job.plan.text,
        pieces=[piece_info(p) for p in result.pieces],
        truncated=result.truncated,
    )
