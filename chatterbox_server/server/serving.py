"""The serving layer between thin routes and the engine: check a request once, admit it, speak it.

A route parses its input, calls `SpeechService`, and shapes the response. Every speaking route
goes through `prepare` (text, voice and options checked once, before any byte is sent) and
`open` (the one admission path, for streamed and whole responses alike).
"""

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Annotated, Any

import numpy as np
from fastapi import Depends
from fastapi.responses import StreamingResponse
from starlette.background import BackgroundTask
from starlette.requests import HTTPConnection, Request

from chatterbox_server import audio
from chatterbox_server.audio.formats import StreamEncoder
from chatterbox_server.audio.loudness import LoudnessNormalizer
from chatterbox_server.engine import (
    GenerationOptions,
    GenerationRequest,
    Output,
    SpeechCollector,
    SpeechPlan,
    SpeechResult,
    StageTimings,
    VoiceEmbedding,
)
from chatterbox_server.errors import (
    GenerationCancelledError,
    MissingVoiceError,
    SynthesisTimeoutError,
    TextTooLongError,
    TTSError,
    UploadTooLargeError,
)
from chatterbox_server.server.context import RequestContext, SpeechSummary
from chatterbox_server.server.state import ServerState, get_state
from chatterbox_server.server.voice_service import VoiceService

logger = logging.getLogger(__name__)

DISCONNECT_POLL_S = 0.2
STREAM_HEADERS = {"X-Accel-Buffering": "no", "Cache-Control": "no-cache"}  # no proxy may buffer a stream


@dataclass(frozen=True)
class SpeechJob:
    """A checked request: what to say (planned once), in which voice, how fast, how delivered."""

    plan: SpeechPlan
    voice: VoiceEmbedding
    speed: float = 1.0
    chunked: bool = False  # token windows (first audio after a dozen tokens) rather than whole pieces
    voice_id: str = "upload"  # for the request's log line: the registered voice, or an uploaded clip
    chars: int = 0


_END = object()  # the engine is done with a request: every output is in its Speech's queue


class Speech:
    """One admitted request's speech: the engine loop speaks it (batched with every other
    request) and this reads its chunks as they come, under the request deadline, keeping what
    the response needs.

    Its admission slot (`slot`: the slot and the in-flight gauge) goes back as soon as the engine
    is done with the request, however fast the response is read: the engine's outputs are taken
    into this Speech as they are made, so a client that reads slowly, or not at all, holds its
    connection and its own audio, never a synthesis slot. `aclose()` (an `async with` calls it)
    stops whatever is still running and frees everything."""

    def __init__(
        self,
        state: ServerState,
        job: SpeechJob,
        slot: AsyncExitStack,
        context: RequestContext,
    ):
        self.state = state
        self.job = job
        self._slot = slot
        self.context = context
        self.started = time.perf_counter()  # synthesis start: after any queueing
        self.request_started = context.started_at  # arrival, for the time-to-first-audio metric
        self.collected = SpeechCollector(self.started)  # the engine's outputs, before any speed change
        self.audio_samples = 0  # at the requested speed
        # a phase vocoder over short chunks would smear the seams: speed changes take whole pieces
        chunked = job.chunked and job.speed == 1.0
        self.request = GenerationRequest(
            job.plan,
            job.voice,
            chunked=chunked,
            deadline=self.started + state.settings.request_timeout_s,
            request_id=context.request_id,
        )
        self._outputs: asyncio.Queue[object] = asyncio.Queue()  # Output, then _END or the error that ended it
        self._pump: asyncio.Task | None = None
        self._watcher: asyncio.Task | None = None
        self._finished = False
        self.cancelled = False  # cancel() was called (a client that left, a realtime cancel)
        self.completed = False  # every piece spoken (not cancelled, timed out or failed)
        # what the request's log line reports (RequestMetricsMiddleware writes it when the response ends)
        self.summary = context.speech = SpeechSummary(voice=job.voice_id, chars=job.chars)

    async def __aenter__(self) -> "Speech":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def cancel(self) -> None:
        """Stop the synthesis: the engine drops it at its next step and the reader gets
        GenerationCancelledError (idempotent)."""
        self.cancelled = True
        if not self._finished:
            self.state.engine.abort(self.request.request_id)

    def start(self, request: Request | None = None) -> None:
        """Submit to the engine now; an HTTP `request` that disconnects cancels the speech."""
        self._pump = asyncio.create_task(self._take_outputs(), name=f"speech-{self.request.request_id}")
        if request is not None:
            self._watcher = asyncio.create_task(_watch_disconnect(request, self))

    async def _take_outputs(self) -> None:
        """Move the engine's outputs into this Speech's queue as they come; then free the slot."""
        end: object = _END
        try:
            async for output in self.state.engine.generate(self.request):
                self._outputs.put_nowait(output)
        except Exception as e:  # cancelled, timed out or failed: the reader raises it
            end = e
        except asyncio.CancelledError:  # aclose(): nobody reads any more, but say so if one does
            end = GenerationCancelledError("the speech was closed")
            raise
        finally:  # also when aclose() cancels this task
            self._outputs.put_nowait(end)
            await self._slot.aclose()

    async def aclose(self) -> None:
        """Stop the synthesis if it is still running and give the slot back (idempotent)."""
        if not self._finished:
            self.cancel()
        if self._pump is not None and not self._pump.done():
            self._pump.cancel()
            await asyncio.wait([self._pump])  # its own cancellation is not ours to raise
        if self._watcher is not None:
            self._watcher.cancel()
        await self._slot.aclose()

    async def waveforms(self) -> AsyncIterator[np.ndarray]:
        """float32 [samples] at the requested speed, as each piece or chunk is spoken; with a
        target loudness (TTS_TARGET_LUFS), at the voice's constant gain and peak-limited, the same
        way streamed or whole (server/loudness.py)."""
        timeout_s = self.state.settings.request_timeout_s
        try:
            normalizer = await self._normalizer()
            while (output := await self._next_output()) is not None:
                waveform = output.waveform
                if self.job.speed != 1.0:
                    waveform = await self.state.run(audio.change_speed, waveform, self.job.speed)
                if normalizer is not None:
                    waveform = normalizer.process(waveform)
                self._account(output, waveform)
                yield waveform
            self._finished = self.completed = True
            self._record()
        except SynthesisTimeoutError:
            self._count_cancel("timeout")
            raise SynthesisTimeoutError(f"synthesis took longer than {timeout_s:g} s") from None
        except GenerationCancelledError:
            self._count_cancel("client_disconnected")
            raise
        except asyncio.CancelledError:  # the response was torn down: the client went away
            self._count_cancel("client_disconnected")
            raise
        finally:
            if not self._finished:
                self.cancel()

    async def _next_output(self) -> Output | None:
        """The engine's next output; None after the last; raises what ended the request early."""
        item = await self._outputs.get()
        if item is _END:
            self._outputs.put_nowait(_END)  # a second reader ends too
            return None
        if isinstance(item, BaseException):
            raise item
        return item  # type: ignore[return-value]

    async def _normalizer(self) -> LoudnessNormalizer | None:
        """This response's gain and limiter (None: loudness is left as spoken). An uploaded clip is
        normalised too, measured on its first use (then kept by its content hash)."""
        loudness = self.state.voices.loudness
        return None if loudness is None else await loudness.normalizer(self.job.voice)

    async def encoded(self, encoder: StreamEncoder) -> AsyncIterator[bytes]:
        """The speech as bytes in the encoder's format; an error after the first byte ends the
        stream (the status is already sent) and is logged. A codec (or resampler) encodes on the
        thread pool; 24 kHz PCM is a copy, done here."""
        try:
            async for waveform in self.waveforms():
                data = await self.state.run(encoder.add, waveform) if encoder.blocking else encoder.add(waveform)
                if data:
                    yield data
            tail = await self.state.run(encoder.finish) if encoder.blocking else encoder.finish()
            if tail:
                yield tail
        except TTSError as e:
            logger.warning("stream ended early: %s", e)
        finally:
            if not self.completed:  # the status line said 200, but the audio is cut short
                self.context.stream_incomplete = True
            await self.aclose()

    async def collect(self) -> tuple[SpeechResult, np.ndarray]:
        """Every piece, joined: (figures, waveform at the requested speed)."""
        waves = [waveform async for waveform in self.waveforms()]
        return self.result(), np.concatenate(waves)

    @property
    def tokens_generated(self) -> int:
        return sum(p.result.tokens_generated for p in self.collected.pieces)

    def result(self) -> SpeechResult:
        """The whole text's figures, per piece."""
        return self.collected.result()

    def _account(self, output: Output, waveform: np.ndarray) -> None:
        if self.collected.first_audio_s is None:
            self.state.metrics.time_to_first_byte.observe(time.perf_counter() - self.request_started)
        self.collected.add(output)
        self.audio_samples += waveform.shape[0]

    def _count_cancel(self, reason: str) -> None:
        if not self._finished:
            self._finished = True
            self.state.metrics.cancelled.labels(reason=reason).inc()
            self._summarize(
                time.perf_counter() - self.started, outcome="timeout" if reason == "timeout" else "cancelled"
            )

    def _summarize(self, generation_time_s: float, outcome: str) -> None:
        audio_s = self.audio_samples / audio.SAMPLE_RATE_HZ
        self.summary.outcome, self.summary.audio_s = outcome, audio_s
        self.summary.first_audio_s = self.collected.first_audio_s
        self.summary.rtf = generation_time_s / audio_s if audio_s > 0 else None

    def _record(self) -> None:
        generation_time_s = time.perf_counter() - self.started
        self._summarize(generation_time_s, outcome="ok")
        self.state.metrics.record_synthesis(
            audio_duration_s=self.audio_samples / audio.SAMPLE_RATE_HZ,
            generation_time_s=generation_time_s,
            tokens_generated=self.tokens_generated,
            timings=StageTimings.combined([p.result.timings for p in self.collected.pieces], generation_time_s),
        )


class SpeechService:
    """What the speaking routes call: request checks, admission and speech (voices come from
    `state.voices`, the VoiceService)."""

    def __init__(self, state: ServerState):
        self.state = state

    # ----- speaking ---------------------------------------------------------------------------

    async def prepare(
        self,
        text: str,
        options: GenerationOptions,
        voice_id: str | None = None,
        voice_upload: bytes | None = None,
        speed: float = 1.0,
        chunked: bool = False,
    ) -> SpeechJob:
        """Check the text, options and voice once; raises a typed error before anything is sent."""
        limit = self.state.settings.max_text_length
        if len(text) > limit:
            raise TextTooLongError(f"text has {len(text)} characters; the limit is {limit}")
        plan = self.state.engine.prepare(text, options)
        voices = self.state.voices
        if voice_upload is not None:
            voice = await voices.upload_embedding(voice_upload)
            voice_id = "upload"
        elif voice_id := voice_id or self.state.settings.default_voice:
            voice_id = voices.resolve(voice_id)
            voice = await voices.embedding(voice_id)
        else:
            raise MissingVoiceError(
                "send voice_id (a registered voice) or voice_file (a reference clip); "
                "or start the server with a default voice (TTS_DEFAULT_VOICE)"
            )
        self._refuse_what_cannot_finish(plan, chunked and speed == 1.0)
        return SpeechJob(plan, voice, speed, chunked, voice_id, len(text))

    def _refuse_what_cannot_finish(self, plan: SpeechPlan, chunked: bool) -> None:
        """413 at once for a text that would outlast the request deadline even alone, at the
        engine's measured costs (engine/cost.py), rather than a slot held until a 504."""
        timeout_s = self.state.settings.request_timeout_s
        estimate_s = self.state.engine.estimate_s(plan, chunked)
        if estimate_s is not None and estimate_s > timeout_s:
            self.state.metrics.rejected.labels(reason="would_time_out").inc()
            raise TextTooLongError(
                f"this text would take about {estimate_s:.0f} s to speak on this server ({len(plan.pieces)} pieces), "
                f"more than the request timeout of {timeout_s:g} s: send it in shorter requests, or sentence by "
                "sentence over a streaming socket"
            )

    async def open(
        self, job: SpeechJob, request: HTTPConnection | None, context: RequestContext | None = None
    ) -> Speech:
        """Admit the job (429/503 are raised here, as real statuses) and start speaking it.

        The slot is held until the Speech is closed; an HTTP client's disconnect cancels it (a
        WebSocket session watches its own connection and calls `speech.cancel()`). A caller that is
        no HTTP connection (the Wyoming server) passes None, and its own `context` if it has one.
        """
        slot = AsyncExitStack()
        await slot.enter_async_context(self.state.admission.slot())
        metrics = self.state.metrics
        metrics.started()
        slot.callback(metrics.finished)
        # each segment of a socket is a request of its own (its own id, its own timing)
        if context is None:
            context = RequestContext.of(request) if isinstance(request, Request) else RequestContext()
        speech = Speech(self.state, job, slot, context)
        speech.start(request if isinstance(request, Request) else None)
        return speech

    # ----- uploads ----------------------------------------------------------------------------

    async def read_upload(self, upload: Any) -> bytes:
        """An UploadFile's bytes, refused past the configured size without reading further."""
        limit = self.state.settings.max_voice_file_size
        data: bytes = await upload.read(limit + 1)
        if len(data) > limit:
            raise UploadTooLargeError(f"upload exceeds {limit} bytes")
        return data


def streaming_speech(speech: Speech, body: AsyncIterator[bytes], media_type: str) -> StreamingResponse:
    """The one way a route streams speech: `body` (speech.encoded(...), or events made of it) is
    sent as it comes, and the admission slot goes back when it ends, whatever ends it."""
    return StreamingResponse(
        body, media_type=media_type, headers=STREAM_HEADERS, background=BackgroundTask(speech.aclose)
    )


async def _watch_disconnect(request: Request, speech: Speech, poll_s: float = DISCONNECT_POLL_S) -> None:
    while not speech.cancelled:
        if await request.is_disconnected():
            speech.cancel()
            return
        await asyncio.sleep(poll_s)


def get_service(request: Request) -> SpeechService:
    """The app's serving layer (a route's dependency)."""
    service: SpeechService = request.app.state.service
    return service


Service = Annotated[SpeechService, Depends(get_service)]


def get_voices(request: Request) -> VoiceService:
    """The app's voice service (a route's dependency)."""
    return get_state(request).voices


Voices = Annotated[VoiceService, Depends(get_voices)]
