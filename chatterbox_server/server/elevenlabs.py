"""ElevenLabs' text-to-speech WebSockets, so the ElevenLabs services of Pipecat (ElevenLabsTTSService)
and LiveKit Agents (elevenlabs.TTS) work against this server unchanged: streaming text in,
barge-in, word-aligned transcripts. The routes are in routers/elevenlabs.py.

WS /v1/text-to-speech/{voice_id}/multi-stream-input   several contexts (voice-agent turns) on one socket
WS /v1/text-to-speech/{voice_id}/stream-input         one context

`voice_id` is a registered voice or alias (TTS_VOICE_ALIASES maps an ElevenLabs id to one). Query
parameters: `output_format` (OUTPUT_FORMATS; default mp3_44100_128, as ElevenLabs), `model_id` (any
name: every model speaks Chatterbox Turbo), `inactivity_timeout` (seconds, default 20, at most
180), `auto_mode` (true: every text message is spoken as it is, without waiting for a sentence
end), `sync_alignment` (the clock of the timings, below), `seed`; others are accepted and ignored.
The API key goes in the `xi-api-key` header (or `Authorization: Bearer`) of the upgrade request.

Client → server, multi-stream-input (JSON text frames; `context_id` omitted means "default"):
    {"text": " ", "context_id": "c1", "voice_settings": {"speed": 1.0}}   first message: opens c1
    {"text": "Hello there. How ", "context_id": "c1"}   more text; each completed sentence (or clause of
                                                        a long one) starts speaking at once, in order
    {"context_id": "c1", "flush": true}                 speak what is pending now (may carry text)
    {"text": "", "context_id": "c1"}                    keep-alive (resets c1's inactivity timeout)
    {"context_id": "c1", "close_context": true}         close c1, see below
    {"close_socket": true}                              close every context as above, then the socket
Server → client:
    {"audio": "<base64>", "alignment": {...}|null, "normalizedAlignment": {...}|null,
     "alignmentEstimated": true, "contextId": "c1"}
    {"isFinal": true, "contextId": "c1"}                c1 is done: no audio of it follows
    {"error": "<type>", "message": "...", "contextId": "c1"}   a bad message or a refused segment; the
                                                        socket goes on

close_context ends a context. After a bare flush ({"flush": true} with no text: the end of a turn,
which Pipecat and LiveKit both send before they close a finished turn) its flushed text is still
spoken, then isFinal. A close after text is a barge-in (LiveKit flushes every sentence as it sends
it, and on an interruption closes without that bare flush; Pipecat closes without a flush), and so
is a second close_context for a context still finishing: the segment being spoken is cancelled
(the engine drops it within one decode step), queued and pending text is dropped, and isFinal
follows at once.

stream-input (one context, no context ids): the first message {"text": " ", "voice_settings": ...},
then text messages and flush as above; {"text": ""} ends the input: everything is spoken, then
{"isFinal": true} and the server closes the socket. Audio messages are
{"audio", "isFinal": false, "alignment", "normalizedAlignment", "alignmentEstimated"}.

Timings (text/alignment.py: estimated, exact only at piece boundaries): a piece's alignment comes
with its last audio message (null before). `alignment` and `normalizedAlignment` are the same
estimate over the text as sent, and a segment's last alignment ends with a zero-length space (the
whitespace the segmenter took off; a client closes a word at the space after it). Times
are in milliseconds and count, by default, from where the context's previous alignment ended, as
ElevenLabs' times count from each chunk: a client that advances its clock by each message's last
start + duration (Pipecat) stays on the audio. With sync_alignment=true (what LiveKit sends) they
count from the start of the context's audio, which is what LiveKit's transcript synchroniser reads.

Limits: each segment is admitted like an HTTP request (a synthesis slot; 429/503 become error
messages); text waiting to be spoken per context is bounded by TTS_MAX_TEXT_LENGTH; at most
MAX_CONTEXTS_PER_SOCKET contexts are open or finishing on one socket; these sockets, the
realtime socket and Wyoming share TTS_MAX_REALTIME_SESSIONS and TTS_MAX_REALTIME_SESSIONS_PER_CLIENT
(sessions.py); a socket with no context and no message for `inactivity_timeout` is closed.
"""

import asyncio
import base64
import contextlib
import functools
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from chatterbox_server import audio
from chatterbox_server.audio import formats as audio_formats
from chatterbox_server.audio.formats import StreamEncoder
from chatterbox_server.engine import GenerationOptions
from chatterbox_server.engine.prepare import SEED_LIMIT
from chatterbox_server.errors import (
    GenerationCancelledError,
    InvalidInputError,
    TextTooLongError,
    TTSError,
    UnsupportedOptionError,
)
from chatterbox_server.server.http_errors import error_type
from chatterbox_server.server.messages import InvalidMessageError, parse_message
from chatterbox_server.server.serving import Speech, SpeechService
from chatterbox_server.server.timings import SpeechTimings
from chatterbox_server.text.alignment import Alignment, at
from chatterbox_server.text.incremental import TextSegmenter

logger = logging.getLogger(__name__)

MAX_CONTEXTS_PER_SOCKET = 8  # open or still finishing; ElevenLabs allows 5
DEFAULT_CONTEXT_ID = "default"
MAX_CONTEXT_ID_CHARS = 256
DEFAULT_INACTIVITY_TIMEOUT_S = 20.0
MAX_INACTIVITY_TIMEOUT_S = 180.0
CLOSE_INTERNAL_ERROR = 1011
_END = object()  # queued after a closing context's last segment


# ----- output formats ---------------------------------------------------------------------------


@dataclass(frozen=True)
class OutputFormat:
    """One ElevenLabs `output_format`: the StreamEncoder format, its rate and bitrate."""

    name: str
    codec: str  # StreamEncoder's format name
    sample_rate_hz: int
    bitrate_bps: int | None = None


OUTPUT_FORMATS: dict[str, OutputFormat] = {
    f.name: f
    for f in (
        *(OutputFormat(f"pcm_{rate}", "pcm", rate) for rate in (8000, 16000, 22050, 24000, 44100, 48000)),
        OutputFormat("ulaw_8000", "ulaw", 8000),
        OutputFormat("mp3_22050_32", "mp3", 22050, 32_000),
        OutputFormat("mp3_44100_128", "mp3", 44100, 128_000),
    )
}
DEFAULT_OUTPUT_FORMAT = "mp3_44100_128"


def output_format(name: str | None) -> OutputFormat:
    """The format named (the default when None); UnsupportedOptionError lists those that exist."""
    name = name or DEFAULT_OUTPUT_FORMAT
    if name not in OUTPUT_FORMATS:
        raise UnsupportedOptionError(
            f"output_format {name!r} is not served here; use one of {', '.join(OUTPUT_FORMATS)}",
            param="output_format",
        )
    return OUTPUT_FORMATS[name]


def open_encoder(fmt: OutputFormat) -> StreamEncoder:
    """A fresh encoder for one stream in `fmt`; UnsupportedOptionError (a 400) if this install cannot make it."""
    return StreamEncoder(fmt.codec, sample_rate_hz=fmt.sample_rate_hz, bitrate_bps=fmt.bitrate_bps)


def encode_whole(waveform: np.ndarray, fmt: OutputFormat) -> bytes:
    """float32 at 24 kHz → one complete file (or raw samples) in `fmt` (blocking: run it on the pool)."""
    return audio_formats.encode(waveform, fmt.codec, fmt.sample_rate_hz, fmt.bitrate_bps)


# ----- request fields ---------------------------------------------------------------------------


class VoiceSettings(BaseModel):
    """ElevenLabs' voice_settings: `speed` is applied (pitch kept); the others are accepted and
    have no effect (a cloned voice has no stability or style knobs here)."""

    model_config = ConfigDict(extra="ignore")

    speed: float | None = Field(None, ge=0.25, le=4.0, description="playback speed, pitch kept")
    stability: float | None = None
    similarity_boost: float | None = None
    style: float | None = None
    use_speaker_boost: bool | None = None


class TextToSpeechRequest(BaseModel):
    """The body of ElevenLabs' POST /v1/text-to-speech/{voice_id}[...]; fields this server has no
    use for (previous_text, language_code, pronunciation dictionaries, ...) are ignored."""

    model_config = ConfigDict(extra="ignore")

    text: str = Field(description="text to speak")
    model_id: str | None = Field(None, description="any name: every model speaks Chatterbox Turbo")
    voice_settings: VoiceSettings | None = None
    seed: int | None = Field(None, ge=0, description="sampler seed (greedy decoding ignores it)")

    @property
    def speed(self) -> float:
        return speed_of(self.voice_settings)

    def options(self) -> GenerationOptions:
        return generation_options(self.seed)


def speed_of(settings: VoiceSettings | None) -> float:
    return settings.speed if settings is not None and settings.speed is not None else 1.0


def generation_options(seed: int | None) -> GenerationOptions:
    return GenerationOptions(seed=None if seed is None else seed % SEED_LIMIT)


def _flag(query: Mapping[str, str], name: str, default: bool) -> bool:
    value = query.get(name)
    if value is None or value == "":
        return default
    if value.lower() in ("true", "1", "yes", "on"):
        return True
    if value.lower() in ("false", "0", "no", "off"):
        return False
    raise InvalidInputError(f"{name} must be true or false, not {value!r}", param=name)


@dataclass(frozen=True)
class SocketParams:
    """The query parameters of an ElevenLabs socket, checked before the upgrade is accepted."""

    output: OutputFormat
    inactivity_timeout_s: float = DEFAULT_INACTIVITY_TIMEOUT_S
    auto_mode: bool = False
    sync_alignment: bool = False
    seed: int | None = None

    @classmethod
    def from_query(cls, query: Mapping[str, str]) -> "SocketParams":
        fmt = output_format(query.get("output_format"))
        open_encoder(fmt)  # refuse a format this install cannot make now, not at the first audio
        timeout_s = DEFAULT_INACTIVITY_TIMEOUT_S
        if raw := query.get("inactivity_timeout"):
            try:
                timeout_s = float(raw)
            except ValueError:
                raise InvalidInputError(f"inactivity_timeout must be seconds, not {raw!r}") from None
            if not 0 < timeout_s <= MAX_INACTIVITY_TIMEOUT_S:
                raise InvalidInputError(f"inactivity_timeout must be in (0, {MAX_INACTIVITY_TIMEOUT_S:g}] seconds")
        seed = None
        if raw := query.get("seed"):
            if not raw.isdigit():
                raise InvalidInputError(f"seed must be a non-negative integer, not {raw!r}")
            seed = int(raw)
        return cls(
            fmt,
            timeout_s,
            auto_mode=_flag(query, "auto_mode", False),
            sync_alignment=_flag(query, "sync_alignment", False),
            seed=seed,
        )


def describe(exc: Exception) -> tuple[str, str]:
    """(type, message) of an error, as the HTTP API names them."""
    if isinstance(exc, ValidationError):
        parts = [f"{'.'.join(str(p) for p in e['loc']) or 'message'}: {e['msg']}" for e in exc.errors()]
        return "validation_error", "; ".join(parts)
    if isinstance(exc, TTSError):
        return error_type(exc), str(exc)
    return "invalid_message", str(exc)


def alignment_payload(alignment: Alignment | None) -> dict[str, Any]:
    """The alignment fields of a socket audio message."""
    if alignment is None:
        return {"alignment": None, "normalizedAlignment": None}
    shape = alignment.as_milliseconds()
    return {"alignment": shape, "normalizedAlignment": shape, "alignmentEstimated": True}


# ----- one context ------------------------------------------------------------------------------


class Context:
    """One context's text, in order: a segmenter, a queue of segments and the task speaking them."""

    def __init__(self, session: "ElevenLabsSession", context_id: str | None, speed: float):
        self.session = session
        self.id = context_id  # None on stream-input (its messages carry no context id)
        self.speed = speed
        self.segmenter = TextSegmenter()
        self.queue: asyncio.Queue[Any] = asyncio.Queue()
        self.encoder = open_encoder(session.params.output)
        self.next_segment = 0
        self.flushed_through = 0  # segments numbered below this were flushed
        self.ended_turn = False  # the last message was a bare flush: the client's "end of turn"
        self.keep_below: int | None = None  # once closing: segments numbered from this on are dropped
        self.waiting_chars = 0  # characters of queued segments not yet started
        self.closing = False
        self.stopped = False  # stopped at once (barge-in): no encoder tail, isFinal at once
        self.current: int | None = None
        self.speaking: Speech | None = None
        self.admitting: asyncio.Future[Speech] | None = None
        self.last_message = time.monotonic()
        self.clock_s = 0.0  # seconds of this context's audio sent
        self.aligned_s = 0.0  # where (on that clock) the last alignment sent ends
        self.task = asyncio.create_task(self._speak_all())

    # ----- input (from the receive loop) ----------------------------------------------------------

    @property
    def idle(self) -> bool:
        """Nothing queued or being spoken: only text that waits for a sentence end, if any."""
        return self.current is None and self.queue.empty() and not self.closing

    def feed(self, text: str, flush: bool) -> None:
        self.last_message = time.monotonic()
        self.ended_turn = flush and not text.strip()
        self._enqueue(self.segmenter.feed(text))
        if flush or self.session.params.auto_mode:
            self._enqueue(self.segmenter.flush())
        if flush:
            self.flushed_through = self.next_segment

    def pending_chars(self) -> int:
        return len(self.segmenter.pending) + self.waiting_chars

    def _enqueue(self, segments: list[str]) -> None:
        for text in segments:
            self.queue.put_nowait((self.next_segment, text))
            self.waiting_chars += len(text)
            self.next_segment += 1

    def close(self, at_once: bool) -> None:
        """No more input. Flushed segments are still spoken unless `at_once`; the rest is dropped
        and the segment being spoken is cancelled if it is among the dropped."""
        self.segmenter.clear()
        self.keep_below = 0 if at_once else self.flushed_through
        if not self.closing:
            self.closing = True
            self.queue.put_nowait(_END)
        if self.current is not None and self._dropped(self.current):
            self.stopped = True  # the encoder holds audio of the cancelled segment: its tail is not sent
            self._cancel_current()
        elif at_once:
            self.stopped = True

    def cancel(self) -> None:
        """The socket is gone: stop everything."""
        self.stopped = True
        self.keep_below = 0
        self._cancel_current()
        self.task.cancel()

    def _dropped(self, segment: int) -> bool:
        return self.keep_below is not None and segment >= self.keep_below

    def _cancel_current(self) -> None:
        if self.admitting is not None:
            self.admitting.cancel()
        if self.speaking is not None:
            self.speaking.cancel()

    # ----- speaking (its own task) ----------------------------------------------------------------

    async def _speak_all(self) -> None:
        session = self.session
        try:
            while True:
                item = await self.queue.get()
                if item is _END:
                    break
                segment, text = item
                self.waiting_chars = max(0, self.waiting_chars - len(text))
                if self._dropped(segment):
                    continue
                self.current = segment
                try:
                    await self._speak(segment, text)
                finally:
                    self.current = self.speaking = None
            if not self.stopped and (tail := await self._encode(None)):
                await session.send_audio(self, tail, None)
            await session.send_final(self)
        except asyncio.CancelledError:
            raise
        except WebSocketDisconnect:
            return  # the client is gone: the receive loop ends the session
        except Exception:
            if session.websocket.application_state == WebSocketState.CONNECTED:
                logger.exception("ElevenLabs socket context %s failed", self.id)
                await session.send_error("internal_error", "internal error", self.id)
        finally:
            session.context_done(self)

    async def _speak(self, segment: int, text: str) -> None:
        session = self.session
        admitting = self.admitting = asyncio.ensure_future(session.admit(text, self.speed))
        try:
            speech = await admitting
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():  # the socket is ending
                raise
            return  # dropped while it waited for a slot
        except TTSError as e:
            await session.send_error(*describe(e), self.id)
            return
        finally:
            self.admitting = None
        if self._dropped(segment):  # dropped just as it was admitted: never start it
            await speech.aclose()
            return
        self.speaking = speech
        timings = SpeechTimings(text, speech)
        segment_start_s = self.clock_s
        try:
            async with speech:
                async for waveform in speech.waveforms():
                    if speech.cancelled or self._dropped(segment):
                        raise GenerationCancelledError("context closed")
                    data = await self._encode(waveform)
                    self.clock_s += waveform.shape[0] / audio.SAMPLE_RATE_HZ
                    alignment = timings.poll()
                    if alignment is not None:
                        if timings.complete:  # the whitespace the segmenter took off, zero-length at the
                            # end: a client closes a word at the space after it (ElevenLabs' text ends in one)
                            alignment = alignment + at(" ", alignment.end_s)
                        alignment = self._on_clock(alignment.shifted(segment_start_s))
                    if data or alignment is not None:
                        await session.send_audio(self, data, alignment)
        except GenerationCancelledError:
            return
        except TTSError as e:
            await session.send_error(*describe(e), self.id)

    async def _encode(self, waveform: np.ndarray | None) -> bytes:
        """The encoder's bytes for `waveform` (None: its tail), on the thread pool when it is real work."""
        encoder = self.encoder
        step = encoder.finish if waveform is None else functools.partial(encoder.add, waveform)
        return await self.session.service.state.run(step) if encoder.blocking else step()

    def _on_clock(self, alignment: Alignment) -> Alignment:
        """`alignment` (on the context's audio clock) as it is sent: from the end of the previous
        alignment by default, from the start of the context with sync_alignment."""
        origin = 0.0 if self.session.params.sync_alignment else self.aligned_s
        self.aligned_s = max(self.aligned_s, alignment.end_s)
        return alignment.shifted(-origin)


# ----- one socket -------------------------------------------------------------------------------


class ElevenLabsSession:
    """One ElevenLabs socket: a receive loop that routes messages to contexts, each speaking in order."""

    def __init__(self, service: SpeechService, websocket: WebSocket, voice_id: str, params: SocketParams, multi: bool):
        self.service = service
        self.websocket = websocket
        self.voice_id = voice_id
        self.params = params
        self.multi = multi  # multi-stream-input (contexts) or stream-input (one)
        self.contexts: dict[str, Context] = {}  # open contexts by id
        self.live: set[Context] = set()  # open or finishing
        self.closing = False  # close_socket (or stream-input's end) received
        self.last_message = time.monotonic()
        self._send_lock = asyncio.Lock()  # every context's task sends
        self._all_done = asyncio.Event()
        self._closer: asyncio.Task[None] | None = None

    async def run(self) -> None:
        await self.websocket.accept()
        failed = False
        try:
            await self._receive_all()
        except WebSocketDisconnect:
            pass
        except Exception:  # a bug must not leave the client on a silent socket
            logger.exception("ElevenLabs socket failed")
            failed = True
        finally:
            for context in list(self.live):
                context.cancel()
            await asyncio.gather(*(c.task for c in list(self.live)), return_exceptions=True)
            if self._closer is not None:
                self._closer.cancel()
        if failed:
            with contextlib.suppress(Exception):  # the socket may be what broke
                await self.send_error("internal_error", "internal error")
                if self.websocket.application_state == WebSocketState.CONNECTED:
                    await self.websocket.close(CLOSE_INTERNAL_ERROR)

    async def admit(self, text: str, speed: float) -> Speech:
        """Check one segment and wait for a synthesis slot, as an HTTP request would."""
        options = generation_options(self.params.seed)
        job = await self.service.prepare(text, options, voice_id=self.voice_id, speed=speed, chunked=True)
        return await self.service.open(job, self.websocket)

    # ----- receiving ------------------------------------------------------------------------------

    async def _receive_all(self) -> None:
        while True:
            try:
                message = await asyncio.wait_for(self.websocket.receive(), timeout=self._until_next_deadline())
            except asyncio.TimeoutError:
                if await self._on_inactivity():
                    return
                continue
            if message["type"] == "websocket.disconnect":
                raise WebSocketDisconnect(message.get("code", 1000))
            self.last_message = time.monotonic()
            if self.closing:
                continue  # the socket is closing: nothing more is taken
            if message.get("text") is None:
                await self.send_error("invalid_message", "send JSON text frames, not binary")
                continue
            try:
                event = parse_message(message["text"])
            except InvalidMessageError as e:
                await self.send_error(*describe(e))
                continue
            if not isinstance(event, dict):
                await self.send_error("invalid_message", "a message must be a JSON object")
                continue
            await self._handle(event)

    async def _handle(self, event: dict[str, Any]) -> None:
        if event.get("close_socket") is True:
            self._close_socket()
            return
        context_id: str | None = None
        if self.multi:
            raw_id = event.get("context_id", DEFAULT_CONTEXT_ID)
            if not isinstance(raw_id, str) or not 0 < len(raw_id) <= MAX_CONTEXT_ID_CHARS:
                await self.send_error(
                    "invalid_message", f"context_id must be a string of 1-{MAX_CONTEXT_ID_CHARS} characters"
                )
                return
            context_id = raw_id
        if event.get("close_context") is True:
            if self.multi:
                await self._close_context(context_id)
            else:
                await self.send_error(
                    "invalid_message", 'close_context is for multi-stream-input; end with {"text": ""}'
                )
            return
        text = event.get("text")
        flush = event.get("flush") is True
        if text is not None and not isinstance(text, str):
            await self.send_error("invalid_message", "text must be a string", context_id)
            return
        if text is None and not flush:
            if event.get("keep_alive") is True:
                self._touch(context_id)
                return
            await self.send_error(
                "invalid_message", "a message needs text, flush, close_context or close_socket", context_id
            )
            return
        text = text or ""
        if not self.multi and text == "" and not flush:  # stream-input: the end of the input
            self._close_socket()
            return
        context = self.contexts.get(context_id or DEFAULT_CONTEXT_ID)
        if context is None:
            if text == "":  # a keep-alive or an empty flush opens nothing
                return
            context = await self._open_context(context_id, event)
            if context is None:
                return
            if text == " " and not flush:  # the context's initialising message
                return
        if text == "" and not flush:  # keep-alive
            context.last_message = time.monotonic()
            return
        limit = self.service.state.settings.max_text_length
        if context.pending_chars() + len(text) > limit:
            error = TextTooLongError(f"more than {limit} characters waiting to be spoken; this text was dropped")
            await self.send_error(*describe(error), context_id)
            return
        context.feed(text, flush)

    def _touch(self, context_id: str | None) -> None:
        if (context := self.contexts.get(context_id or DEFAULT_CONTEXT_ID)) is not None:
            context.last_message = time.monotonic()

    async def _open_context(self, context_id: str | None, event: dict[str, Any]) -> Context | None:
        if len(self.live) >= MAX_CONTEXTS_PER_SOCKET:
            message = f"at most {MAX_CONTEXTS_PER_SOCKET} contexts per socket: close one first"
            await self.send_error("too_many_contexts", message, context_id)
            return None
        try:
            settings = VoiceSettings.model_validate(event.get("voice_settings") or {})
        except ValidationError as e:
            await self.send_error(*describe(e), context_id)
            return None
        context = Context(self, context_id, speed_of(settings))
        self.contexts[context_id or DEFAULT_CONTEXT_ID] = context
        self.live.add(context)
        return context

    async def _close_context(self, context_id: str | None) -> None:
        key = context_id or DEFAULT_CONTEXT_ID
        context = self.contexts.pop(key, None)
        if context is not None:
            # a turn the client ended (a bare flush, then the close) is spoken to its end; a close
            # after text is a barge-in (LiveKit flushes every sentence and closes on an interruption)
            context.close(at_once=not context.ended_turn)
            return
        finishing = [c for c in self.live if (c.id or DEFAULT_CONTEXT_ID) == key]
        if finishing:  # closed already, still speaking its flushed text: a barge-in, stop it now
            for c in finishing:
                c.close(at_once=True)
            return
        await self.send_final_id(context_id)  # nothing open under that id: acknowledge the close

    def _close_socket(self) -> None:
        """Close every context (flushed text is still spoken), then the socket once they are done."""
        self.closing = True
        for context in list(self.contexts.values()):
            if not self.multi:  # stream-input's end of input speaks everything
                context.feed("", flush=True)
            context.close(at_once=False)
        self.contexts.clear()
        if not self.live:
            self._all_done.set()
        self._closer = asyncio.create_task(self._close_when_done())

    async def _close_when_done(self) -> None:
        await self._all_done.wait()
        if self.websocket.application_state == WebSocketState.CONNECTED:
            with contextlib.suppress(WebSocketDisconnect, RuntimeError):  # the client may have gone first
                await self.websocket.close()

    def context_done(self, context: Context) -> None:
        self.live.discard(context)
        if self.contexts.get(context.id or DEFAULT_CONTEXT_ID) is context:
            del self.contexts[context.id or DEFAULT_CONTEXT_ID]
        if self.closing and not self.live:
            self._all_done.set()

    # ----- inactivity -----------------------------------------------------------------------------

    def _until_next_deadline(self) -> float:
        timeout = self.params.inactivity_timeout_s
        now = time.monotonic()
        deadlines = [c.last_message + timeout for c in self.contexts.values() if c.idle]
        if not self.live:
            deadlines.append(self.last_message + timeout)
        return max(0.05, min(deadlines, default=now + timeout) - now)

    async def _on_inactivity(self) -> bool:
        """Close contexts that have been silent too long (speaking what they hold); close the
        socket (True) when it has had no message and nothing to say for that long."""
        timeout = self.params.inactivity_timeout_s
        now = time.monotonic()
        for context in list(self.contexts.values()):
            if context.idle and now - context.last_message >= timeout:
                if not self.multi:
                    self._close_socket()
                    return False
                del self.contexts[context.id or DEFAULT_CONTEXT_ID]
                context.feed("", flush=True)
                context.close(at_once=False)
        if not self.live and not self.closing and now - self.last_message >= timeout:
            await self.send_error("input_timeout_exceeded", f"no input for {timeout:g} s: closing")
            await self.websocket.close()
            return True
        return False

    # ----- sending --------------------------------------------------------------------------------

    async def _send(self, payload: dict[str, Any]) -> None:
        if self.websocket.application_state != WebSocketState.CONNECTED:
            return
        async with self._send_lock:
            await self.websocket.send_text(json.dumps(payload))

    async def send_audio(self, context: Context, data: bytes, alignment: Alignment | None) -> None:
        payload: dict[str, Any] = {"audio": base64.b64encode(data).decode()}
        if not self.multi:
            payload["isFinal"] = False
        payload.update(alignment_payload(alignment))
        if self.multi:
            payload["contextId"] = context.id
        await self._send(payload)

    async def send_final(self, context: Context) -> None:
        await self.send_final_id(context.id)

    async def send_final_id(self, context_id: str | None) -> None:
        if self.multi:
            await self._send({"isFinal": True, "contextId": context_id})
        else:
            await self._send({"audio": None, "isFinal": True, "alignment": None, "normalizedAlignment": None})

    async def send_error(self, kind: str, message: str, context_id: str | None = None) -> None:
        payload: dict[str, Any] = {"error": kind, "message": message}
        if self.multi and context_id is not None:
            payload["contextId"] = context_id
        await self._send(payload)
