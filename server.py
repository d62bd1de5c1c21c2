"""The HTTP API: FastAPI app factory, lifespan, routes, and the one place errors become HTTP.

    python server.py [--model-dir DIR] [--host H] [--port P] [--stand-in] ...   (or ./run.sh)
"""

import asyncio
import hashlib
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager

import numpy as np
from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

import audio_io
from admission import Admission, QueueFullError, QueueTimeoutError, ShuttingDownError
from errors import (
    GenerationCancelledError,
    InvalidAudioError,
    InvalidInputError,
    MissingVoiceError,
    ModelLoadError,
    SynthesisTimeoutError,
    TextTooLongError,
    TTSError,
    UnsupportedOptionError,
    UploadTooLargeError,
    VoiceNotFoundError,
)
from audio_formats import StreamEncoder
from speech_service import (
    ServerState,
    Speech,
    admitted,
    check_text,
    read_upload,
    streaming_response,
    tts_state,
    voice_by_id,
)
from http_middleware import RequestMetricsMiddleware, UploadLimitMiddleware
from metrics import Metrics
from openai_api import install_openai_routes
from settings import Settings, settings_from_cli
from tts_engine import GenerationOptions, LongSynthesisResult, SpokenPiece, TTSEngine, locate_model
from voice_store import VoiceStore, validate_voice_id

logger = logging.getLogger(__name__)

RETRY_AFTER_S = 1
WARMUP_TEXT = "Warming up."
UPLOAD_ROUTES = ("/voices/register", "/tts")
SYNTHESIS_ROUTES = ("/tts", "/tts/json")

# The one mapping from typed errors to HTTP statuses (most specific class first).
ERROR_STATUS: list[tuple[type[Exception], int]] = [
    (TextTooLongError, 413),
    (UploadTooLargeError, 413),
    (MissingVoiceError, 400),
    (UnsupportedOptionError, 400),
    (InvalidAudioError, 422),
    (InvalidInputError, 422),
    (VoiceNotFoundError, 404),
    (QueueFullError, 429),
    (QueueTimeoutError, 503),
    (ShuttingDownError, 503),
    (SynthesisTimeoutError, 504),
    (GenerationCancelledError, 499),
    (ModelLoadError, 503),
]
RETRYABLE = (QueueFullError, QueueTimeoutError, ShuttingDownError)


def error_type(exc: Exception) -> str:
    """InvalidAudioError → 'invalid_audio'."""
    name = type(exc).__name__.removesuffix("Error")
    return "".join("_" + c.lower() if c.isupper() else c for c in name).lstrip("_")


def error_response(status: int, kind: str, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": {"type": kind, "message": message}}, status_code=status, headers=headers)


class TTSJsonRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str
    voice_id: str
    temperature: float | None = Field(None, ge=0)
    top_k: int | None = Field(None, ge=0)
    top_p: float | None = Field(None, gt=0, le=1)
    repetition_penalty: float | None = Field(None, gt=0)
    seed: int | None = Field(None, ge=0)
    max_new_tokens: int | None = Field(None, ge=1)


def model_identity(engine: TTSEngine, settings: Settings) -> str:
    """What a stored embedding must have been made with to be reused: model and encoder dtype."""
    source = str(engine.files.root) if settings.model_dir or settings.stand_in else settings.model_id
    return f"{source}@{settings.revision or 'main'}:{engine.encoder_dtype}"


def warmup_clip(seconds: float = 6.0) -> np.ndarray:
    t = np.arange(int(seconds * audio_io.SAMPLE_RATE_HZ)) / audio_io.SAMPLE_RATE_HZ
    return (0.3 * np.sin(2 * np.pi * 160 * t) * (1 + 0.3 * np.sin(2 * np.pi * 3 * t))).astype(np.float32)


def ensure_stand_in(settings: Settings) -> None:
    if settings.stand_in and settings.model_dir is None and not (settings.stand_in_dir / "tokenizer.json").is_file():
        from tools.make_stand_in_model import make_stand_in_model

        logger.warning("generating the tiny stand-in model in %s", settings.stand_in_dir)
        make_stand_in_model(settings.stand_in_dir, profile="tiny", dtypes=("fp32",))


def load_voices(state: ServerState) -> None:
    """Index the voices folder; warm the cache; re-encode voices made by another model."""
    for record, usable in state.store.scan():
        voice = state.store.load_embedding(record.voice_id) if usable else None
        if voice is None:
            logger.info("re-encoding voice %r for %s", record.voice_id, state.store.model)
            try:
                audio = audio_io.prepare_reference_audio(
                    state.store.source_audio(record.voice_id), max_seconds=state.settings.max_voice_seconds)
            except (InvalidAudioError, OSError) as e:
                logger.warning("voice %r cannot be re-encoded: %s", record.voice_id, e)
                continue
            voice = state.engine.encode_audio(audio, record.content_hash)
            state.store.save(record.voice_id, state.store.source_audio(record.voice_id), voice)
        if len(state.engine.voices) < state.engine.voices.maxsize:
            state.engine.voices.put(record.voice_id, voice)
    logger.info("%d registered voices", len(state.store))


def create_app(settings: Settings | None = None, engine: TTSEngine | None = None) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        executor = ThreadPoolExecutor(settings.worker_threads, thread_name_prefix="tts")
        loop = asyncio.get_running_loop()
        owned = engine is None
        if owned:
            await loop.run_in_executor(executor, ensure_stand_in, settings)
            the_engine = await loop.run_in_executor(executor, TTSEngine, settings.engine_config())
        else:
            the_engine = engine
        metrics = app.state.metrics
        metrics.attach_voice_cache(the_engine.voices)
        state = ServerState(
            settings=settings,
            engine=the_engine,
            store=VoiceStore(settings.voices_dir, model_identity(the_engine, settings)),
            admission=Admission(settings.max_concurrent_requests, settings.max_queue,
                                settings.queue_timeout_s, metrics),
            metrics=metrics,
            executor=executor,
        )
        app.state.tts = state
        await state.run(load_voices, state)
        if settings.warmup:
            await state.run(lambda: the_engine.synthesize(WARMUP_TEXT, the_engine.encode_audio(warmup_clip())))
        # librosa JIT-compiles on its first call (~17 s on a fresh install): do it now, off the
        # request path, without holding up readiness.
        threading.Thread(target=audio_io.warm_speed_change, name="warm-librosa", daemon=True).start()
        if the_engine.is_stand_in:
            logger.warning("serving the STAND-IN model: it speaks tones, not words")
        state.ready = True
        logger.info("ready: %s on %s", the_engine.model_dtype, the_engine.active_providers)
        try:
            yield
        finally:
            state.ready, state.draining = False, True
            if not await state.admission.drain(settings.shutdown_grace_s):
                logger.warning("shutdown grace of %g s ran out with work in flight", settings.shutdown_grace_s)
            executor.shutdown(wait=False, cancel_futures=True)
            if owned:
                the_engine.close()

    app = FastAPI(title="Chatterbox Turbo TTS", lifespan=lifespan)
    app.state.settings = settings
    app.state.metrics = Metrics(settings.max_concurrent_requests)
    app.add_middleware(
        UploadLimitMiddleware,
        max_body_bytes=settings.max_voice_file_size + 4 * settings.max_text_length + 64 * 1024,
        paths=UPLOAD_ROUTES,
        respond=lambda: error_response(
            413, "upload_too_large", f"upload exceeds {settings.max_voice_file_size} bytes"),
    )
    app.add_middleware(RequestMetricsMiddleware, metrics=app.state.metrics, synthesis_routes=SYNTHESIS_ROUTES)
    install_error_handlers(app)
    install_routes(app)
    return app


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(TTSError)
    async def tts_error(request: Request, exc: TTSError):
        status = next((code for cls, code in ERROR_STATUS if isinstance(exc, cls)), 500)
        headers = {"Retry-After": str(RETRY_AFTER_S)} if isinstance(exc, RETRYABLE) else None
        if status >= 500 and status not in (503, 504):
            logger.error("request failed: %s", exc)
        return error_response(status, error_type(exc), str(exc), headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        parts = [f"{'.'.join(str(p) for p in e['loc'][1:]) or 'body'}: {e['msg']}" for e in exc.errors()]
        return error_response(422, "validation_error", "; ".join(parts))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        return error_response(exc.status_code, "http_error", str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception):
        logger.exception("unexpected error")
        return error_response(500, "internal_error", "internal server error")


def result_headers(request_id: str, result: LongSynthesisResult) -> dict[str, str]:
    return {
        "X-Request-ID": request_id,
        "X-Audio-Duration": f"{result.audio_duration_s:.3f}",
        "X-Generation-Time": f"{result.generation_time_s:.3f}",
        "X-RTF": f"{result.rtf:.4f}",
        "X-Tokens-Generated": str(result.tokens_generated),
    }


def install_routes(app: FastAPI) -> None:
    @app.get("/health/live")
    async def live():
        return {"status": "alive"}

    @app.get("/health")
    @app.get("/health/ready")
    async def health(request: Request):
        state: ServerState | None = getattr(request.app.state, "tts", None)
        if state is None:
            return JSONResponse({"status": "loading"}, status_code=503)
        engine = state.engine
        body = {
            "status": "ok" if state.ready else ("draining" if state.draining else "loading"),
            "model_id": state.settings.model_id if not engine.files.is_stand_in else "stand-in",
            "model_dir": str(engine.files.root),
            "dtype": engine.model_dtype,
            "encoder_dtype": engine.encoder_dtype,
            "device": engine.device,
            "providers": engine.active_providers,
            "stand_in": engine.is_stand_in,
            "voices_registered": len(state.store),
            "voices_cached": len(engine.voices),
            "in_flight": state.admission.running,
            "queued": state.admission.queued,
            "max_concurrent_requests": state.settings.max_concurrent_requests,
        }
        if engine.is_stand_in:
            body["note"] = "stand-in model with random weights: it speaks tones, not words"
        return JSONResponse(body, status_code=200 if state.ready else 503)

    @app.get("/metrics")
    async def metrics(request: Request, format: str | None = None):
        m: Metrics = request.app.state.metrics
        if format == "json" or "application/json" in request.headers.get("accept", ""):
            return m.summary()
        return Response(generate_latest(m.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/voices")
    async def list_voices(request: Request):
        store = tts_state(request).store
        return {"voices": [voice_json(r) for r in store.records()]}

    @app.get("/voices/{voice_id}")
    async def get_voice(request: Request, voice_id: str):
        record = tts_state(request).store.get(voice_id)
        if record is None:
            raise VoiceNotFoundError(f"voice {voice_id!r} is not registered")
        return voice_json(record)

    @app.delete("/voices/{voice_id}")
    async def delete_voice(request: Request, voice_id: str):
        state = tts_state(request)
        if not await state.run(state.store.delete, voice_id):
            raise VoiceNotFoundError(f"voice {voice_id!r} is not registered")
        state.engine.voices.remove(voice_id)
        return {"voice_id": voice_id, "message": "Voice deleted"}

    @app.post("/voices/register")
    async def register_voice(
        request: Request,
        voice_file: UploadFile = File(..., description="reference clip, 5-30 s"),
        voice_id: str | None = Form(None, description="letters, digits, - and _, at most 64"),
    ):
        state = tts_state(request)
        if voice_id is not None:
            validate_voice_id(voice_id)
        data = await read_upload(state, voice_file)
        audio = await state.run(
            lambda: audio_io.prepare_reference_audio(data, max_seconds=state.settings.max_voice_seconds))
        content_hash = hashlib.sha256(data).hexdigest()
        voice_id = voice_id or content_hash[:16]
        voice = await state.run(state.engine.encode_audio, audio, content_hash)
        record = await state.run(state.store.save, voice_id, data, voice)
        state.engine.voices.put(voice_id, voice)
        return {"voice_id": voice_id, "message": "Voice registered successfully",
                "duration": record.duration_s}

    @app.post("/tts")
    async def tts(
        request: Request,
        text: str = Form(...),
        voice_id: str | None = Form(None),
        voice_file: UploadFile | None = File(None),
        stream: bool = Form(True, description="send audio while later sentences are generated"),
        temperature: float | None = Form(None),
        top_k: int | None = Form(None),
        top_p: float | None = Form(None),
        repetition_penalty: float | None = Form(None),
        seed: int | None = Form(None),
        max_new_tokens: int | None = Form(None),
    ):
        state = tts_state(request)
        check_text(state, text)
        if voice_file is not None:
            data = await read_upload(state, voice_file)
            voice = (await state.run(state.engine.encode_voice, data))[1]
        elif voice_id:
            voice = await voice_by_id(state, voice_id)
        else:
            raise MissingVoiceError("send voice_id (a registered voice) or voice_file (a reference clip)")
        options = GenerationOptions(temperature=temperature, top_k=top_k, top_p=top_p,
                                    repetition_penalty=repetition_penalty, seed=seed,
                                    max_new_tokens=max_new_tokens)
        state.engine.check_request(text, options)  # fail before any byte is sent
        if stream:
            async def wav_stream(speech: Speech):
                encoder = StreamEncoder("wav")
                async for _, waveform in speech.pieces_as_ready():
                    yield encoder.add(waveform)
                if tail := encoder.finish():
                    yield tail

            return await streaming_response(
                state, request, lambda cancel: Speech(state, text, voice, options, cancel, chunked=True),
                wav_stream, "audio/wav")
        async with admitted(state, request) as cancel:
            speech = Speech(state, text, voice, options, cancel, request_started=request.state.started_at)
            result, waveform = await speech.collect()
        wav = audio_io.encode_wav(waveform)
        headers = result_headers(request.state.request_id, result) | {"Content-Length": str(len(wav))}
        return Response(wav, media_type="audio/wav", headers=headers)

    @app.post("/tts/json")
    async def tts_json(request: Request, body: TTSJsonRequest):
        state = tts_state(request)
        check_text(state, body.text)
        voice = await voice_by_id(state, body.voice_id)
        options = GenerationOptions(**body.model_dump(exclude={"text", "voice_id"}))
        async with admitted(state, request) as cancel:
            speech = Speech(state, body.text, voice, options, cancel, request_started=request.state.started_at)
            result, _ = await speech.collect()
        return {
            "request_id": request.state.request_id,
            "audio_duration": round(result.audio_duration_s, 4),
            "generation_time": round(result.generation_time_s, 4),
            "time_to_first_audio": round(result.time_to_first_audio_s, 4),
            "rtf": round(result.rtf, 4),
            "tokens_generated": result.tokens_generated,
            "sample_rate": result.sample_rate,
            "pieces": [piece_json(p) for p in result.pieces],
        }

    install_openai_routes(app)


def piece_json(spoken: SpokenPiece) -> dict:
    return {
        "text": spoken.piece.text,
        "text_start": spoken.piece.start,
        "text_end": spoken.piece.end,
        "audio_start": round(spoken.start_s, 4),
        "audio_end": round(spoken.end_s, 4),
        "generation_time": round(spoken.result.generation_time_s, 4),
        "tokens_generated": spoken.result.tokens_generated,
    }


def voice_json(record) -> dict:
    return {"voice_id": record.voice_id, "duration": record.duration_s, "created_at": record.created_at}


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    settings = settings_from_cli(argv)
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:  # missing files or no network: one clear line and exit 2, not a startup traceback
        ensure_stand_in(settings)
        locate_model(settings.engine_config())
    except ModelLoadError as e:
        logger.error("cannot start: %s", e)
        raise SystemExit(2) from None
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        workers=1,
        log_level=settings.log_level,
        timeout_graceful_shutdown=int(settings.shutdown_grace_s) or None,
    )


if __name__ == "__main__":
    main()
