"""The FastAPI app factory: lifespan (engine, voice service, warm-up, drain), middleware, routers, errors.

app = create_app(settings)            # loads the engine from settings
app = create_app(settings, engine)    # serves an engine you built (not closed on shutdown)
"""

import asyncio
import logging
import threading
from collections.abc import AsyncIterator
from concurrent.futures import Executor, ThreadPoolExecutor
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi_offline import FastAPIOffline

from chatterbox_server import __version__, audio
from chatterbox_server.audio.demo_clip import demo_clip
from chatterbox_server.engine import TTSEngine
from chatterbox_server.server.admission import Admission
from chatterbox_server.server.auth import DOC_PATHS, ApiKeyMiddleware, ApiKeys, exposure_warning, is_open
from chatterbox_server.server.drain import drain
from chatterbox_server.server.http_errors import install_error_handlers, internal_error, routed_error
from chatterbox_server.server.loudness import VoiceLoudness
from chatterbox_server.server.metrics import Metrics
from chatterbox_server.server.middleware import (
    AdmissionPrecheckMiddleware,
    BodyLimitMiddleware,
    RequestMetricsMiddleware,
)
from chatterbox_server.server.openapi import install_openapi
from chatterbox_server.server.routers import elevenlabs, health, openai, realtime, tts, voices, web
from chatterbox_server.server.routes import Body, ErrorShape, paths_where
from chatterbox_server.server.serving import SpeechService
from chatterbox_server.server.settings import Settings
from chatterbox_server.server.state import ServerState
from chatterbox_server.server.voice_service import VoiceService
from chatterbox_server.server.wyoming import WyomingServer
from chatterbox_server.voice_store import VoiceStore, open_backend

logger = logging.getLogger(__name__)

WARMUP_TEXT = "Warming up."
DOCS_ASSETS_PREFIX = "/static-offline-docs/"  # where FastAPIOffline serves Swagger UI's and ReDoc's files
UPLOAD_OVERHEAD_BYTES = 64 * 1024  # multipart boundaries and the small form fields
JSON_BYTES_PER_CHAR = 12  # the worst JSON spelling of one character: a surrogate pair as two \uXXXX
API_DESCRIPTION = (
    "Text to speech in a cloned voice with Resemble AI's Chatterbox Turbo on ONNX Runtime. Register a voice "
    "once, then speak any text in it; audio streams while it is generated. Every error has the shape "
    '`{"error": {"type": ..., "message": ...}}`, except on the OpenAI-compatible routes (/v1/audio/speech, '
    '/v1/models, /v1/audio/voices), which answer in OpenAI\'s `{"error": {"message", "type", "param", "code"}}`.'
)


def model_identity(engine: TTSEngine, settings: Settings) -> str:
    """What a stored embedding must have been made with to be reused: model and encoder dtype."""
    source = str(engine.files.root) if settings.model_dir or settings.stand_in else settings.model_id
    return f"{source}@{settings.revision or 'main'}:{engine.encoder_dtype}"


def ensure_stand_in(settings: Settings) -> None:
    """With --stand-in and no model dir, generate the tiny stand-in once."""
    if settings.stand_in and settings.model_dir is None:
        from chatterbox_server.model.stand_in import ensure_tiny_stand_in

        ensure_tiny_stand_in(settings.stand_in_dir)


def voice_service(settings: Settings, engine: TTSEngine, encodes: Admission, executor: Executor) -> VoiceService:
    """The voice service the settings describe: their store (for this engine's model), cache size,
    aliases and, with a target loudness, the voices' loudness."""
    store = VoiceStore(
        open_backend(settings.voice_store, settings.voices_dir),
        model_identity(engine, settings),
        revalidate_s=settings.voice_revalidate_s,
    )
    loudness = None
    if settings.target_lufs is not None:  # steady loudness: each voice measured once
        loudness = VoiceLoudness(engine, settings.target_lufs, executor, timeout_s=settings.request_timeout_s)
    return VoiceService(
        store,
        engine,
        encodes,
        executor,
        cache_size=settings.voice_cache_size,
        max_voice_seconds=settings.max_voice_seconds,
        max_sample_rate_hz=settings.max_clip_sample_rate_hz,
        aliases=settings.voice_alias_map,
        loudness=loudness,
    )


def create_app(settings: Settings | None = None, engine: TTSEngine | None = None) -> FastAPI:
    """The API around `engine` (loaded from `settings` in the lifespan when None)."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        executor = ThreadPoolExecutor(settings.worker_threads, thread_name_prefix="tts")
        loop = asyncio.get_running_loop()
        owned = engine is None
        if engine is None:
            await loop.run_in_executor(executor, ensure_stand_in, settings)
            the_engine = await loop.run_in_executor(executor, TTSEngine, settings.engine_config())
        else:
            the_engine = engine
        metrics: Metrics = app.state.metrics
        metrics.attach_engine(the_engine)
        encodes = Admission(
            settings.max_concurrent_encodes, settings.max_encode_queue, settings.queue_timeout_s, metrics, kind="encode"
        )
        voices = voice_service(settings, the_engine, encodes, executor)
        metrics.attach_voices(voices.cache)
        state = ServerState(
            settings=settings,
            engine=the_engine,
            voices=voices,
            admission=Admission(
                settings.max_concurrent_requests, settings.max_queue, settings.queue_timeout_s, metrics
            ),
            encodes=encodes,
            metrics=metrics,
            executor=executor,
        )
        app.state.tts = state
        app.state.service = SpeechService(state)
        await voices.open()
        if settings.warmup:
            await state.run(lambda: the_engine.synthesize(WARMUP_TEXT, the_engine.encode_audio(demo_clip())))
        # librosa JIT-compiles on its first call (~17 s on a fresh install): do it now, off the
        # request path, without holding up readiness.
        threading.Thread(target=audio.warm_speed_change, name="warm-librosa", daemon=True).start()
        if the_engine.is_stand_in:
            logger.warning("serving the STAND-IN model: it speaks tones, not words")
        if warning := exposure_warning(settings.host, keys):
            logger.warning(warning)
        state.ready = True
        wyoming = None  # Home Assistant's protocol on its own port (TTS_WYOMING_PORT), the same admission
        if settings.wyoming_port is not None:
            wyoming = WyomingServer(
                app.state.service, JSON_BYTES_PER_CHAR * settings.max_text_length + UPLOAD_OVERHEAD_BYTES
            )
            await wyoming.start()
        logger.info("ready: %s on %s", the_engine.model_dtype, the_engine.active_providers)
        try:
            yield
        finally:
            await drain(state, settings.shutdown_grace_s)  # at once if a SIGTERM drained it already
            if wyoming is not None:  # after the drain: its syntheses in flight had their grace too
                await wyoming.close()
            executor.shutdown(wait=False, cancel_futures=True)
            if owned:
                the_engine.close()

    # FastAPIOffline serves /docs and /redoc with Swagger UI and ReDoc assets from its own package.
    app = FastAPIOffline(
        title="Chatterbox Turbo TTS", version=__version__, description=API_DESCRIPTION, lifespan=lifespan
    )
    app.state.settings = settings
    app.state.metrics = Metrics(settings.max_concurrent_requests)
    routers = (
        health.router,
        voices.router,
        tts.router,
        openai.router,
        realtime.router,
        elevenlabs.router,
        web.router,
    )
    for router in routers:
        app.include_router(router)
    app.mount(web.ASSETS_PATH, web.assets(), name="ui")
    # our routes as declared (app.routes holds FastAPI's wrappers of the included routers)
    api_routes = [route for router in routers for route in router.routes]
    # Middleware, innermost first (Starlette wraps each new one around the previous ones):
    # full admission queues → body limits → API keys → CORS → request ids, metrics and the
    # last-resort error guard. Each reads what the matched route declares about itself (routes.py),
    # its error shape too.
    form_limit = 4 * settings.max_text_length + UPLOAD_OVERHEAD_BYTES  # a multipart form without a clip
    upload_limit = settings.max_voice_file_size + form_limit
    app.add_middleware(
        AdmissionPrecheckMiddleware,
        routes=api_routes,
        state=lambda: getattr(app.state, "tts", None),
        clip_threshold_bytes=form_limit,
    )
    json_limit = JSON_BYTES_PER_CHAR * settings.max_text_length + UPLOAD_OVERHEAD_BYTES
    app.add_middleware(
        BodyLimitMiddleware,
        routes=api_routes,
        limits={
            Body.UPLOAD: (
                upload_limit,
                lambda: routed_error(
                    api_routes, 413, "upload_too_large", f"upload exceeds {settings.max_voice_file_size} bytes"
                ),
            ),
            Body.JSON: (
                json_limit,
                lambda: routed_error(api_routes, 413, "body_too_large", f"request body exceeds {json_limit} bytes"),
            ),
        },
    )
    keys = ApiKeys(settings.api_keys)
    metrics_open = not settings.metrics_require_key
    app.add_middleware(
        ApiKeyMiddleware,
        keys=keys,
        routes=api_routes,
        respond=lambda: routed_error(
            api_routes,
            401,
            "unauthorized",
            "missing or wrong API key: send Authorization: Bearer <key> (or xi-api-key: <key>)",
            {"WWW-Authenticate": "Bearer"},
        ),
        metrics_open=metrics_open,
        static_prefixes=(DOCS_ASSETS_PREFIX, web.ASSETS_PATH + "/"),
    )
    if settings.cors_origin_list:  # browsers on these origins may call the API (and read its errors)
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origin_list,
            allow_methods=["GET", "POST", "DELETE", "OPTIONS"],
            allow_headers=["Authorization", "Content-Type", "X-Request-ID", "xi-api-key"],
            expose_headers=["X-Request-ID", "X-Audio-Duration", "X-Generation-Time", "X-RTF", "X-Tokens-Generated"],
        )
    app.add_middleware(RequestMetricsMiddleware, metrics=app.state.metrics, internal_error=internal_error)
    install_error_handlers(app)
    open_paths = DOC_PATHS | paths_where(api_routes, lambda facts: is_open(facts, metrics_open))
    openai_paths = paths_where(api_routes, lambda facts: facts.errors is ErrorShape.OPENAI)
    install_openapi(app, open_paths if keys.enabled else None, openai_paths)
    return app
