"""What every speaking route shares: the server state, admission with disconnect watching,
and `Speech`, which drives the engine's piece generator on the thread pool."""

import asyncio
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

import numpy as np
from fastapi import Request, UploadFile
from fastapi.responses import StreamingResponse
from starlette.background import BackgroundTask

import audio_io
from admission import Admission
from errors import (
    GenerationCancelledError,
    InvalidInputError,
    SynthesisTimeoutError,
    TextTooLongError,
    TTSError,
    UploadTooLargeError,
    VoiceNotFoundError,
)
from metrics import Metrics
from settings import Settings
from tts_engine import (
    GenerationOptions,
    LongSynthesisResult,
    SpokenPiece,
    StageTimings,
    SynthesisResult,
    TTSEngine,
)
from voice_cache import VoiceEmbedding
from voice_store import VoiceStore

logger = logging.getLogger(__name__)


@dataclass
class ServerState:
    """Everything a route needs, kept on app.state.tts."""

    settings: Settings
    engine: TTSEngine
    store: VoiceStore
    admission: Admission
    metrics: Metrics
    executor: ThreadPoolExecutor
    ready: bool = False
    draining: bool = False

    async def run(self, fn, *args):
        """Run blocking engine work on the pool, never on the event loop."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)


def tts_state(request: Request) -> ServerState:
    return request.app.state.tts


async def watch_disconnect(request: Request, cancel: threading.Event, poll_s: float = 0.2) -> None:
    while not cancel.is_set():
        if await request.is_disconnected():
            cancel.set()
            return
        await asyncio.sleep(poll_s)


@asynccontextmanager
async def admitted(state: ServerState, request: Request):
    """Hold a synthesis slot; yields the cancel event that a client disconnect sets."""
    async with state.admission.slot():
        state.metrics.started()
        cancel = threading.Event()
        watcher = asyncio.create_task(watch_disconnect(request, cancel))
        try:
            yield cancel
        finally:
            watcher.cancel()
            state.metrics.finished()


class Speech:
    """One admitted request's speech: drives an engine generator on the pool, one item per
    step, under the request deadline, and keeps what the response needs.

    Whole pieces (SpokenPiece, one decoder call each) by default; with `chunked`, token-window
    AudioChunks, so a stream's first audio leaves after a dozen tokens. Speed changes need
    whole pieces (a phase vocoder over short chunks would smear the seams)."""

    def __init__(self, state: ServerState, text: str, voice: VoiceEmbedding, options: GenerationOptions,
                 cancel: threading.Event, speed: float = 1.0, request_started: float | None = None,
                 chunked: bool = False):
        self.state = state
        self.cancel = cancel
        self.speed = speed
        self.started = time.perf_counter()  # synthesis start: after any queueing
        self.request_started = request_started or self.started  # arrival, for the TTFA metric
        self.pieces: list[SpokenPiece] = []
        self.results: list[SynthesisResult] = []  # one per finished piece
        self.audio_samples = 0
        self.first_audio_s: float | None = None
        engine = state.engine
        chunked = chunked and speed == 1.0
        self._generator = (engine.stream_chunks if chunked else engine.synthesize_stream)(
            text, voice, options, cancel)
        self._finished = False

    async def pieces_as_ready(self):
        """Yield (piece or chunk, waveform at the requested speed) as each is spoken."""
        loop = asyncio.get_running_loop()
        deadline = self.started + self.state.settings.request_timeout_s
        try:
            while True:
                step = loop.run_in_executor(self.state.executor, next, self._generator, None)
                try:
                    piece = await asyncio.wait_for(asyncio.shield(step), max(deadline - time.perf_counter(), 0))
                except asyncio.TimeoutError:
                    self.cancel.set()
                    await asyncio.wait([step])  # stops within one decode step
                    self._count_cancel("timeout")
                    raise SynthesisTimeoutError(
                        f"synthesis took longer than {self.state.settings.request_timeout_s:g} s") from None
                except GenerationCancelledError:
                    self._count_cancel("client_disconnected")
                    raise
                if piece is None:
                    break
                waveform = piece.waveform
                if self.speed != 1.0:
                    waveform = await self.state.run(audio_io.change_speed, waveform, self.speed)
                if self.first_audio_s is None:
                    now = time.perf_counter()
                    self.first_audio_s = now - self.started
                    self.state.metrics.time_to_first_byte.observe(now - self.request_started)
                if isinstance(piece, SpokenPiece):
                    self.pieces.append(piece)
                if piece.result is not None:
                    self.results.append(piece.result)
                self.audio_samples += waveform.shape[0]
                yield piece, waveform
            self._finished = True
            self._record()
        except asyncio.CancelledError:  # the response was torn down: the client went away
            self._count_cancel("client_disconnected")
            raise
        finally:
            if not self._finished:
                self.cancel.set()

    def _count_cancel(self, reason: str) -> None:
        if not self._finished:
            self._finished = True
            self.state.metrics.cancelled.labels(reason=reason).inc()

    async def collect(self) -> tuple[LongSynthesisResult, np.ndarray]:
        """Every piece, joined: (figures, waveform at the requested speed)."""
        waves = [waveform async for _, waveform in self.pieces_as_ready()]
        return self.result(), np.concatenate(waves)

    @property
    def tokens_generated(self) -> int:
        return sum(r.tokens_generated for r in self.results)

    def _record(self) -> None:
        generation_time_s = time.perf_counter() - self.started
        self.state.metrics.record_synthesis(
            audio_duration_s=self.audio_samples / audio_io.SAMPLE_RATE_HZ,
            generation_time_s=generation_time_s,
            tokens_generated=self.tokens_generated,
            timings=StageTimings.combined([r.timings for r in self.results], generation_time_s),
        )

    def result(self) -> LongSynthesisResult:
        """The whole text's figures (whole-piece mode)."""
        return LongSynthesisResult(
            waveform=np.concatenate([p.waveform for p in self.pieces]) if self.pieces else np.zeros(0, np.float32),
            pieces=self.pieces,
            total_s=time.perf_counter() - self.started,
            time_to_first_audio_s=self.first_audio_s or 0.0,
        )


async def streaming_response(state: ServerState, request: Request, make_speech, body, media_type: str,
                             headers: dict | None = None) -> StreamingResponse:
    """Admit now (so 429/503 are real statuses), then stream `body(speech)`; the slot is held
    until the stream ends or the client leaves."""
    stack = AsyncExitStack()
    cancel = await stack.enter_async_context(admitted(state, request))
    speech = make_speech(cancel)
    speech.request_started = getattr(request.state, "started_at", speech.started)

    async def chunks():
        try:
            async for chunk in body(speech):
                yield chunk
        except TTSError as e:  # the status is already sent: end the stream, say why in the log
            logger.warning("stream %s ended early: %s", request.state.request_id, e)
        finally:
            await stack.aclose()

    headers = {"X-Accel-Buffering": "no", "Cache-Control": "no-cache", **(headers or {})}
    return StreamingResponse(chunks(), media_type=media_type, headers=headers,
                             background=BackgroundTask(stack.aclose))


def check_text(state: ServerState, text: str) -> str:
    if not text or not text.strip():
        raise InvalidInputError("text is empty")
    if len(text) > state.settings.max_text_length:
        raise TextTooLongError(f"text has {len(text)} characters; the limit is {state.settings.max_text_length}")
    return text


async def read_upload(state: ServerState, upload: UploadFile) -> bytes:
    data = await upload.read(state.settings.max_voice_file_size + 1)
    if len(data) > state.settings.max_voice_file_size:
        raise UploadTooLargeError(f"upload exceeds {state.settings.max_voice_file_size} bytes")
    return data


async def voice_by_id(state: ServerState, voice_id: str) -> VoiceEmbedding:
    """The voice's encoder outputs: from the LRU cache, else from disk (reloaded after eviction)."""
    if state.store.get(voice_id) is None:
        raise VoiceNotFoundError(f"voice {voice_id!r} is not registered")
    voice = state.engine.voices.get(voice_id)
    if voice is None:
        voice = await state.run(state.store.load_embedding, voice_id)
        if voice is None:
            raise VoiceNotFoundError(f"voice {voice_id!r} has no usable stored data")
        state.engine.voices.put(voice_id, voice)
    return voice
