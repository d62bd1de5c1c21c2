"""A realtime text-in, audio-out session over a WebSocket, for voice agents.

The client sends a `config` message, then text deltas as its LLM produces them; each sentence (or
clause of a long one) is spoken as soon as it is complete, in order, while more text arrives.

Client → server (JSON text frames):
    {"type": "config", "voice": "alice", "response_format": "pcm"|"wav", "speed": 1.0,
     "temperature": ..., "top_p": ..., "top_k": ..., "seed": ..., "repetition_penalty": ...,
     "timestamps": false}                       true: segment.timestamps events (below)
    {"type": "text", "delta": "Hello the"}      more text; complete segments start speaking
    {"type": "flush"}                           speak what is pending now, complete or not
    {"type": "cancel"}                          stop speaking at once and drop pending text
    {"type": "close"}                           flush, finish speaking, then "done" and close
Server → client:
    {"type": "ready", "sample_rate": 24000, "format": "pcm", "voice": "alice"}
    {"type": "segment.start", "segment": 0, "text": "Hello there."}
    binary frames: the segment's audio (16-bit little-endian mono PCM at 24 kHz; with "wav",
        one WAV header of unknown length precedes the session's first audio)
    {"type": "segment.timestamps", "segment": 0, "estimated": true, "words": [{"word": "Hello",
     "start": 0.0, "end": 0.42}, ...], "alignment": {"characters": [...],
     "character_start_times_seconds": [...], "character_end_times_seconds": [...]}}
                                                with "timestamps": true, after the last audio frame of each
                                                piece of the segment: estimated timings of its characters
                                                (text/alignment.py), seconds from the segment's first audio
    {"type": "segment.end", "segment": 0, "audio_seconds": 1.2, "time_to_first_audio": 0.31}
    {"type": "cancelled", "segment": 3}         after a cancel: no audio of that segment follows
    {"type": "error", "error": {"type": ..., "message": ...}, "segment": 2}   the session goes on
    {"type": "done"}                            after close, once everything is spoken

Each segment is admitted like an HTTP request (a synthesis slot; 429/503 become error events), so
sockets cannot take more than their share; pending text is bounded by TTS_MAX_TEXT_LENGTH; at most
TTS_MAX_REALTIME_SESSIONS sessions are open, TTS_MAX_REALTIME_SESSIONS_PER_CLIENT per client
(sessions.py: more get 429 at the upgrade, and 503 while draining); the config must come within
CONFIG_TIMEOUT_S; a session silent for TTS_REALTIME_IDLE_TIMEOUT_S gets an idle_timeout error,
"done" and a close. A message that is not JSON gets an invalid_message error (messages.py); a bug
gets an internal_error event and close code 1011, never a silent socket.
"""

import asyncio
import contextlib
import json
import logging
import time
from typing import Any

from pydantic import ValidationError
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from chatterbox_server import audio
from chatterbox_server.audio.formats import StreamEncoder
from chatterbox_server.errors import GenerationCancelledError, TextTooLongError, TTSError
from chatterbox_server.server.http_errors import error_type
from chatterbox_server.server.messages import InvalidMessageError, parse_message
from chatterbox_server.server.protocol import RealtimeConfig
from chatterbox_server.server.serving import Speech, SpeechService
from chatterbox_server.server.timings import SpeechTimings, timestamps_payload
from chatterbox_server.text.incremental import TextSegmenter

logger = logging.getLogger(__name__)

CLOSE_POLICY_VIOLATION = 1008  # the first message was not a usable config
CLOSE_INTERNAL_ERROR = 1011
CONFIG_TIMEOUT_S = 30.0
_CLOSE = object()  # queued after the last segment of a closing session


class RealtimeSession:
    """One socket: a receive loop (text, flush, cancel, close) and a speaker task (segments in order)."""

    def __init__(self, service: SpeechService, websocket: WebSocket):
        self.service = service
        self.websocket = websocket
        self.segmenter = TextSegmenter()
        self.queue: asyncio.Queue[Any] = asyncio.Queue()
        self.config: RealtimeConfig | None = None
        self.encoder: StreamEncoder | None = None
        self.next_segment = 0
        self.waiting_chars = 0  # characters of the queued segments not yet started
        self.cancels = 0  # bumped by each cancel: a segment dequeued before it is not spoken after it
        self.current: int | None = None  # the segment being admitted or spoken
        self.speaking: Speech | None = None
        self._admitting: asyncio.Future[Speech] | None = None
        self._send_lock = asyncio.Lock()  # the receive loop and the speaker both send

    async def run(self) -> None:
        await self.websocket.accept()
        if not await self._configure():
            return
        speaker = asyncio.create_task(self._speak_all())
        ended = failed = False
        try:
            await self._receive_all()
            ended = True  # close or idle: the speaker finishes what is queued, says "done" and closes
        except WebSocketDisconnect:
            pass
        except Exception:  # a bug must not leave the client on a silent socket, nor the speaker waiting
            logger.exception("realtime session failed")
            failed = True
        finally:
            if not ended:  # nothing more will be queued: the speaker would wait for ever
                self._cancel_current()
                speaker.cancel()
            await asyncio.gather(speaker, return_exceptions=True)
        if failed:
            await self._fail()

    # ----- receiving ----------------------------------------------------------------------------

    async def _configure(self) -> bool:
        try:
            raw = await asyncio.wait_for(self.websocket.receive_text(), timeout=CONFIG_TIMEOUT_S)
            config = RealtimeConfig.model_validate_json(raw)
            # an unknown voice fails now, not at the first segment
            voices = self.service.state.voices
            await voices.record(voices.resolve(config.voice))
        except (asyncio.TimeoutError, ValidationError, TTSError, KeyError) as e:
            message = _describe(e)
            await self._send_json({"type": "error", "error": message})
            await self.websocket.close(CLOSE_POLICY_VIOLATION, message["message"][:120])
            return False
        except WebSocketDisconnect:
            return False
        self.config = config
        self.encoder = StreamEncoder(config.response_format)
        await self._send_json(
            {
                "type": "ready",
                "sample_rate": audio.SAMPLE_RATE_HZ,
                "format": config.response_format,
                "voice": config.voice,
            }
        )
        return True

    async def _receive_all(self) -> None:
        idle_s = self.service.state.settings.realtime_idle_timeout_s
        while True:
            try:
                message = await asyncio.wait_for(self.websocket.receive(), timeout=idle_s)
            except asyncio.TimeoutError:
                if self.current is not None or not self.queue.empty():
                    continue  # still speaking: the client is listening, not idle
                idle = {"type": "idle_timeout", "message": f"no message for {idle_s:g} s: closing"}
                await self._send_json({"type": "error", "error": idle})
                self.queue.put_nowait(_CLOSE)  # the speaker says "done" and closes
                return
            if message["type"] == "websocket.disconnect":
                raise WebSocketDisconnect(message.get("code", 1000))
            if message.get("text") is None:
                await self._error(ValueError("send JSON text frames, not binary"))
                continue
            try:
                event = parse_message(message["text"])
            except InvalidMessageError as e:
                await self._error(e)
                continue
            kind = event.get("type") if isinstance(event, dict) else None
            if kind == "text":
                delta = event.get("delta")
                if not isinstance(delta, str):
                    await self._error(ValueError("a text message needs a string 'delta'"))
                    continue
                await self._accept_text(delta)
            elif kind == "flush":
                self._enqueue(self.segmenter.flush())
            elif kind == "cancel":
                await self._cancel()
            elif kind == "close":
                self._enqueue(self.segmenter.flush())
                self.queue.put_nowait(_CLOSE)
                return
            else:
                await self._error(ValueError(f"unknown message type {kind!r}: use text, flush, cancel or close"))

    async def _accept_text(self, delta: str) -> None:
        limit = self.service.state.settings.max_text_length
        if len(self.segmenter.pending) + self.waiting_chars + len(delta) > limit:
            await self._error(
                TextTooLongError(f"more than {limit} characters waiting to be spoken; this delta was dropped")
            )
            return
        self._enqueue(self.segmenter.feed(delta))

    def _enqueue(self, segments: list[str]) -> None:
        for text in segments:
            self.queue.put_nowait((self.next_segment, text))
            self.waiting_chars += len(text)
            self.next_segment += 1

    async def _cancel(self) -> None:
        """Drop pending and queued text and stop the current segment (its speaker then says "cancelled")."""
        self.cancels += 1
        self.segmenter.clear()
        while not self.queue.empty():
            self.queue.get_nowait()
        self.waiting_chars = 0
        if self.current is None:
            await self._send_json({"type": "cancelled", "segment": None})
        self._cancel_current()

    def _cancel_current(self) -> None:
        if self._admitting is not None:  # still waiting for a slot: stop waiting
            self._admitting.cancel()
        if self.speaking is not None:
            self.speaking.cancel()

    # ----- speaking -----------------------------------------------------------------------------

    async def _speak_all(self) -> None:
        try:
            while True:
                item = await self.queue.get()
                if item is _CLOSE:
                    await self._send_json({"type": "done"})
                    await self.websocket.close()
                    return
                segment, text = item
                self.waiting_chars = max(0, self.waiting_chars - len(text))
                self.current = segment
                try:
                    await self._speak(segment, text, self.cancels)
                finally:
                    self.current = self.speaking = None
        except (asyncio.CancelledError, WebSocketDisconnect):
            raise
        except Exception:  # a bug must not leave the client waiting on a silent socket
            logger.exception("realtime session failed")
            await self._fail()

    async def _admit(self, text: str, config: RealtimeConfig) -> Speech:
        """Check the segment and wait for a synthesis slot, as an HTTP request would."""
        job = await self.service.prepare(
            text, config.options(), voice_id=config.voice, speed=config.speed, chunked=True
        )
        return await self.service.open(job, self.websocket)

    async def _speak(self, segment: int, text: str, cancels_before: int) -> None:
        assert self.config is not None and self.encoder is not None
        config = self.config
        started = time.perf_counter()
        admitting = self._admitting = asyncio.ensure_future(self._admit(text, config))
        try:
            speech = await admitting
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():  # the session itself is ending
                raise
            await self._send_json({"type": "cancelled", "segment": segment})  # a cancel while it queued
            return
        except TTSError as e:
            await self._error(e, segment)
            return
        finally:
            self._admitting = None
        if self.cancels != cancels_before:  # cancelled just as it was admitted: never start it
            await speech.aclose()
            await self._send_json({"type": "cancelled", "segment": segment})
            return
        self.speaking = speech
        timings = SpeechTimings(text, speech) if config.timestamps else None
        await self._send_json({"type": "segment.start", "segment": segment, "text": text})
        first_audio_s: float | None = None
        samples = 0
        try:
            async with speech:
                async for waveform in speech.waveforms():
                    if speech.cancelled:
                        raise GenerationCancelledError("cancelled")
                    first_audio_s = first_audio_s or time.perf_counter() - started
                    samples += waveform.shape[0]
                    async with self._send_lock:
                        await self.websocket.send_bytes(self.encoder.add(waveform))
                    if timings is not None and (alignment := timings.poll()) is not None:
                        event = {"type": "segment.timestamps", "segment": segment, **timestamps_payload(alignment)}
                        await self._send_json(event)
        except GenerationCancelledError:
            await self._send_json({"type": "cancelled", "segment": segment})
            return
        except TTSError as e:
            await self._error(e, segment)
            return
        await self._send_json(
            {
                "type": "segment.end",
                "segment": segment,
                "audio_seconds": round(samples / audio.SAMPLE_RATE_HZ, 3),
                "time_to_first_audio": round(first_audio_s or 0.0, 3),
            }
        )
        logger.info(
            "realtime segment %d: %d chars, %.2f s audio, first audio %.2f s",
            segment,
            len(text),
            samples / audio.SAMPLE_RATE_HZ,
            first_audio_s or 0.0,
        )

    # ----- sending ------------------------------------------------------------------------------

    async def _send_json(self, payload: dict[str, Any]) -> None:
        if self.websocket.application_state != WebSocketState.CONNECTED:
            return
        async with self._send_lock:
            await self.websocket.send_text(json.dumps(payload))

    async def _fail(self) -> None:
        """After a bug: an internal_error event and close code 1011, as far as the socket still takes them."""
        with contextlib.suppress(Exception):  # the socket may be what broke
            await self._send_json({"type": "error", "error": {"type": "internal_error", "message": "internal error"}})
            if self.websocket.application_state == WebSocketState.CONNECTED:
                await self.websocket.close(CLOSE_INTERNAL_ERROR)

    async def _error(self, exc: Exception, segment: int | None = None) -> None:
        await self._send_json({"type": "error", "error": _describe(exc), "segment": segment})


def _describe(exc: Exception) -> dict[str, str]:
    """The error shape of the HTTP API, for an event."""
    if isinstance(exc, ValidationError):
        parts = [f"{'.'.join(str(p) for p in e['loc']) or 'message'}: {e['msg']}" for e in exc.errors()]
        return {"type": "validation_error", "message": "; ".join(parts)}
    if isinstance(exc, asyncio.TimeoutError):
        return {"type": "timeout", "message": f"no config message within {CONFIG_TIMEOUT_S:g} s"}
    if isinstance(exc, TTSError):
        return {"type": error_type(exc), "message": str(exc)}
    return {"type": "invalid_message", "message": str(exc)}
