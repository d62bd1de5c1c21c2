"""A Wyoming server beside the HTTP API, for Home Assistant: its local voice protocol over TCP.

Off unless TTS_WYOMING_PORT is set; started and closed by the app's lifespan (app.py). Home
Assistant's Wyoming integration (or any Wyoming client, e.g. `wyoming.client.AsyncTcpClient`)
connects, asks `describe`, and speaks through `synthesize`. Each event is a JSON header line, then
its data and payload (the `wyoming` package's framing, read here with bounds on every length).

Client → server:
    describe                               → info: one TTS program, its voices the registered
                                             voices and the aliases whose voice is registered
    synthesize {text, voice: {name}}       → audio-start (24 kHz, 16-bit, mono), audio-chunk …,
                                             audio-stop: the text spoken as the engine produces it
    synthesize-start {voice}, synthesize-chunk {text} …, synthesize-stop
                                           → each sentence spoken as soon as it is complete: one
                                             audio-start, audio-chunk …, one audio-stop at the end,
                                             then synthesize-stopped
    a synthesize inside a stream           ignored: Home Assistant sends the whole text again "for
                                             compatibility" before synthesize-stop
    ping                                   → pong
Errors are `error` events {text, code} (code: the HTTP API's error type, e.g. voice_not_found,
text_too_long, queue_full, shutting_down); the connection goes on. A stream whose voice is refused
at synthesize-start gets one error, then only synthesize-stopped at its stop.

Every synthesis (a synthesize, or one sentence of a stream) is admitted like an HTTP request (the
same slots and queue; 429/503 become error events), counted under route="wyoming" and logged in
one line like the HTTP middleware's. A client that closes the connection (EOF) is gone: the
sentence being spoken is cancelled (the engine drops it at its next step) and its slot released.
Connections count against TTS_MAX_REALTIME_SESSIONS and, per client address,
TTS_MAX_REALTIME_SESSIONS_PER_CLIENT, with the WebSockets (sessions.py; beyond them: an error event
and a close); one silent for TTS_REALTIME_IDLE_TIMEOUT_S is closed. An event whose header or data
is not JSON gets an invalid_message error and the connection goes on. While draining, syntheses
get `shutting_down`.

Trust: the protocol has no authentication, so TTS_API_KEYS do not protect this port (a warning
at start when it listens beyond loopback while keys are set): bind it to loopback or the LAN.
"""

import asyncio
import contextlib
import importlib
import importlib.util
import logging
import socket
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.error import Error
from wyoming.event import Event, async_write_event
from wyoming.info import Attribution, Describe, Info, TtsProgram, TtsVoice
from wyoming.ping import Ping, Pong
from wyoming.server import AsyncEventHandler
from wyoming.tts import Synthesize, SynthesizeChunk, SynthesizeStart, SynthesizeStop, SynthesizeStopped

from chatterbox_server import __version__, audio
from chatterbox_server.engine import GenerationOptions
from chatterbox_server.errors import GenerationCancelledError, MissingVoiceError, TextTooLongError, TTSError
from chatterbox_server.server.admission import ShuttingDownError
from chatterbox_server.server.auth import ApiKeys, is_loopback
from chatterbox_server.server.context import RequestContext
from chatterbox_server.server.http_errors import error_type, status_of
from chatterbox_server.server.messages import InvalidMessageError, parse_message
from chatterbox_server.server.middleware import log_request
from chatterbox_server.server.serving import Speech, SpeechService
from chatterbox_server.server.sessions import client_at
from chatterbox_server.text.incremental import TextSegmenter

logger = logging.getLogger(__name__)

ROUTE = "wyoming"  # the route label of its requests in tts_requests_total and the duration histogram
SAMPLE_WIDTH_BYTES, CHANNELS = 2, 1
SAMPLES_PER_CHUNK = 2400  # 100 ms of audio per audio-chunk event
LANGUAGES = ["en"]  # Chatterbox Turbo speaks English
ZEROCONF_TYPE = "_wyoming._tcp.local."
MDNS_GROUP = "224.0.0.251"
CLOSE_TIMEOUT_S = 5.0  # at shutdown: how long handlers get to end their cancelled speech
MODEL_ATTRIBUTION = Attribution(name="Resemble AI", url="https://huggingface.co/ResembleAI/chatterbox-turbo-ONNX")


# ----- reading events, bounded ------------------------------------------------------------------


class EventFramingError(Exception):
    """The bytes on the connection are not a Wyoming event within the limits; the stream cannot be
    resynchronised, so the connection is closed after an error event."""


async def read_event(reader: asyncio.StreamReader, max_bytes: int) -> Event | None:
    """The next event, or None at the end of the stream. The header line is bounded by the
    reader's limit (asyncio.start_server's `limit`), its data and payload by `max_bytes`, so a
    client cannot make the server buffer more than one text's worth (wyoming's own reader takes
    any declared length).

    A header or data that is not JSON (or nested too deeply, or not UTF-8) raises
    InvalidMessageError once the whole event is read, so the next event can still be read; bytes
    that cannot be framed raise EventFramingError."""
    try:
        line = await reader.readline()
    except ValueError:  # asyncio.LimitOverrunError, re-raised by readline
        raise EventFramingError(f"an event header is longer than {max_bytes} bytes") from None
    if not line.endswith(b"\n"):
        return None  # the end of the stream (mid-line: the client left while sending)
    header = parse_message(line, "an event header")  # the line is consumed: the next one is the next header
    if not isinstance(header, dict) or not isinstance(header.get("type"), str):
        raise EventFramingError("an event header needs a string 'type'")
    data = header.get("data") or {}
    lengths = [header.get("data_length") or 0, header.get("payload_length") or 0]
    if not isinstance(data, dict) or not all(isinstance(n, int) and n >= 0 for n in lengths):
        raise EventFramingError("an event's data must be an object and its lengths whole numbers")
    data_length, payload_length = lengths
    if data_length + payload_length > max_bytes:
        raise EventFramingError(f"an event's data and payload exceed {max_bytes} bytes")
    try:
        raw_data = await reader.readexactly(data_length) if data_length else None
        payload = await reader.readexactly(payload_length) if payload_length else None
    except asyncio.IncompleteReadError:
        return None
    if raw_data is not None:  # parsed once the payload is read too, so a bad one leaves the framing intact
        extra = parse_message(raw_data, "an event's data")
        if not isinstance(extra, dict):
            raise InvalidMessageError("an event's data must be a JSON object")
        data = {**data, **extra}
    return Event(type=header["type"], data=data, payload=payload)


# ----- one connection -----------------------------------------------------------------------------


@dataclass
class _Stream:
    """A synthesize-start … synthesize-stop: its voice and the text not yet cut into sentences."""

    voice: str | None
    segmenter: TextSegmenter = field(default_factory=TextSegmenter)
    refused: bool = False  # its voice was refused at synthesize-start: its text is not spoken
    audio_started: bool = False


@dataclass
class _Say:
    """Text to speak: a whole synthesize (stream None) or one sentence of a stream."""

    text: str
    voice: str | None
    stream: _Stream | None


@dataclass
class _EndOfStream:
    stream: _Stream


def _voice_name(data: dict[str, Any]) -> str | None:
    voice = data.get("voice")
    if voice is None:
        return None
    name = voice.get("name") if isinstance(voice, dict) else None
    if name is not None and not isinstance(name, str):
        raise ValueError("voice.name must be a string")
    return name or None


def _text_of(data: dict[str, Any]) -> str:
    text = data.get("text")
    if not isinstance(text, str):
        raise ValueError("the event needs a string 'text'")
    return text


class WyomingHandler(AsyncEventHandler):
    """One connection: a reader (this task: events in order, `describe` answered at once) and a
    speaker task (syntheses and stream sentences, one after another, audio written as it comes)."""

    def __init__(self, server: "WyomingServer", reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        super().__init__(reader, writer)
        self.server = server
        self.service = server.service
        self.state = server.service.state
        self.stream: _Stream | None = None  # the stream open on this connection
        self.queue: asyncio.Queue[_Say | _EndOfStream | None] = asyncio.Queue()
        self.waiting_chars = 0  # characters queued, not yet being spoken
        self.gone = False  # the client left (or the server is closing): nothing more is sent
        self.busy = False  # the speaker is on an item (so a silent client is listening, not idle)
        self.speaking: Speech | None = None
        self._admitting: asyncio.Future[Speech] | None = None
        self._write_lock = asyncio.Lock()  # the reader (info, errors) and the speaker both write

    # ----- receiving --------------------------------------------------------------------------

    async def run(self) -> None:
        """Events until the client leaves, goes silent or breaks the framing (wyoming's own
        `run` reads without a timeout or bounds)."""
        speaker = asyncio.create_task(self._speak_all(), name="wyoming speaker")
        try:
            await self._receive_all()
        except (ConnectionError, OSError):
            pass
        except Exception:  # a bug must not leave the client waiting on a silent connection
            logger.exception("wyoming connection failed")
            await self._error("internal_error", "internal error")
        finally:
            self.leave()
            await asyncio.gather(speaker, return_exceptions=True)
            await self.disconnect()
            self.writer.close()

    async def _receive_all(self) -> None:
        idle_s = self.state.settings.realtime_idle_timeout_s
        reading: asyncio.Future[Event | None] | None = None  # never cancelled mid-event: framing stays intact
        try:
            while not self.gone:
                reading = reading or asyncio.ensure_future(read_event(self.reader, self.server.max_event_bytes))
                done, _ = await asyncio.wait({reading}, timeout=idle_s)
                if not done:
                    if self.busy or not self.queue.empty():
                        continue  # still speaking: the client is listening, not idle
                    await self._error("idle_timeout", f"no event for {idle_s:g} s: closing")
                    return
                finished = reading
                reading = None
                try:
                    event = finished.result()
                except InvalidMessageError as e:  # the event was read whole: the next one can be
                    await self._error(_code(e), str(e))
                    continue
                except EventFramingError as e:
                    await self._error("invalid_message", f"{e}: closing")
                    return
                if event is None or not await self.handle_event(event):
                    return
        finally:
            if reading is not None:
                reading.cancel()

    async def handle_event(self, event: Event) -> bool:
        try:
            if Describe.is_type(event.type):
                await self.write_event(await self.server.info())
            elif Synthesize.is_type(event.type):
                if self.stream is None:  # inside a stream it repeats the stream's text: ignored
                    self._queue_text(_Say(_text_of(event.data), _voice_name(event.data), None))
            elif SynthesizeStart.is_type(event.type):
                await self._start_stream(_voice_name(event.data))
            elif SynthesizeChunk.is_type(event.type):
                self._feed_stream(_text_of(event.data))
            elif SynthesizeStop.is_type(event.type):
                self._stop_stream()
            elif Ping.is_type(event.type):
                await self.write_event(Pong(text=Ping.from_event(event).text).event())
            # anything else (select-program, other domains' events) is dropped, as the protocol expects
        except (ValueError, TTSError) as e:
            await self._error(_code(e), str(e))
        return True

    def _queue_text(self, item: _Say) -> None:
        limit = self.state.settings.max_text_length
        if len(item.text) > limit:
            raise TextTooLongError(f"text has {len(item.text)} characters; the limit is {limit}")
        pending = len(self.stream.segmenter.pending) if self.stream is not None else 0
        if self.waiting_chars + pending + len(item.text) > limit:
            raise TextTooLongError(f"more than {limit} characters waiting to be spoken; this text was dropped")
        self.waiting_chars += len(item.text)
        self.queue.put_nowait(item)

    async def _start_stream(self, voice: str | None) -> None:
        if self.stream is not None:
            raise ValueError("a stream is already open: send synthesize-stop first")
        self.stream = stream = _Stream(voice)
        context = RequestContext()
        try:
            await self.server.check_voice(voice)  # an unknown voice fails now, not at every sentence
        except TTSError as e:
            stream.refused = True
            self.server.record(context, "synthesize-start", status_of(e))
            raise

    def _feed_stream(self, text: str) -> None:
        stream = self.stream
        if stream is None:
            raise ValueError("synthesize-chunk outside a stream: send synthesize-start first")
        if stream.refused:
            return
        limit = self.state.settings.max_text_length
        if self.waiting_chars + len(stream.segmenter.pending) + len(text) > limit:
            raise TextTooLongError(f"more than {limit} characters waiting to be spoken; this chunk was dropped")
        for sentence in stream.segmenter.feed(text):
            self._queue_text(_Say(sentence, stream.voice, stream))

    def _stop_stream(self) -> None:
        stream, self.stream = self.stream, None
        if stream is None:
            raise ValueError("synthesize-stop outside a stream: send synthesize-start first")
        if not stream.refused:
            for rest in stream.segmenter.flush():
                self.waiting_chars += len(rest)  # within the bound: it was pending text
                self.queue.put_nowait(_Say(rest, stream.voice, stream))
        self.queue.put_nowait(_EndOfStream(stream))

    def leave(self) -> None:
        """The client is gone (or the server closes): cancel what is being admitted or spoken
        (the engine drops it at its next step) and stop the speaker (idempotent)."""
        if self.gone:
            return
        self.gone = True
        if self._admitting is not None:
            self._admitting.cancel()
        if self.speaking is not None:
            self.speaking.cancel()
        self.queue.put_nowait(None)
        self.reader.feed_eof()  # the reader stops waiting for events

    # ----- speaking ---------------------------------------------------------------------------

    async def _speak_all(self) -> None:
        try:
            while (item := await self.queue.get()) is not None and not self.gone:
                self.busy = True
                try:
                    if isinstance(item, _EndOfStream):
                        await self._end_stream(item.stream)
                    else:
                        self.waiting_chars = max(0, self.waiting_chars - len(item.text))
                        await self._say(item)
                finally:
                    self.busy = False
        except Exception:  # a bug must not leave the client waiting on a silent connection
            logger.exception("wyoming connection failed")
            await self._error("internal_error", "internal error")
            self.leave()
            self.writer.close()

    async def _say(self, item: _Say) -> None:
        """Speak one synthesize, or one sentence of a stream, as one request."""
        context = RequestContext()
        path = "synthesize" if item.stream is None else "synthesize-stream"
        try:
            speech = await self._admit(item, context)
        except TTSError as e:
            await self._error(_code(e), str(e))
            self.server.record(context, path, status_of(e))
            return
        except _Left:
            self.server.record(context, path, 499)
            return
        self.speaking = speech
        if self.gone:  # the client left as the slot came: never start it
            speech.cancel()
        started = item.stream.audio_started if item.stream is not None else False  # audio-start sent
        sent = False  # any of this text's audio sent
        status = 200
        try:
            async with speech:
                async for waveform in speech.waveforms():
                    if self.gone:
                        continue  # cancelled: the engine's next step ends this with GenerationCancelledError
                    if not started:
                        await self._audio_start()
                        started = True
                    await self._write_audio(waveform)
                    sent = True
        except GenerationCancelledError:
            pass  # the client left mid-sentence; Speech counted it
        except TTSError as e:  # the deadline, mid-speech
            status = 200 if sent else status_of(e)
            await self._error(_code(e), str(e))
        finally:
            self.speaking = None
        if item.stream is not None:
            item.stream.audio_started = started
        elif not self.gone:
            if not started:
                await self._audio_start()
            await self.write_event(AudioStop().event())
        if sent and not speech.completed:
            context.stream_incomplete = True  # audio went out, but not all of it
        self.server.record(context, path, 499 if self.gone and not sent else status)

    async def _admit(self, item: _Say, context: RequestContext) -> Speech:
        """Check the text and voice, then wait for a synthesis slot, as an HTTP request would."""
        if self.state.draining:
            raise ShuttingDownError("server is shutting down")
        job = await self.service.prepare(
            item.text, GenerationOptions(), voice_id=self.server.voice_id(item.voice), chunked=True
        )
        if self.gone:
            raise _Left
        admitting = self._admitting = asyncio.ensure_future(self.service.open(job, None, context))
        try:
            return await admitting
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():  # the handler itself is being torn down
                raise
            raise _Left from None  # the client left while this waited for a slot
        finally:
            self._admitting = None

    async def _end_stream(self, stream: _Stream) -> None:
        if not stream.refused:
            if not stream.audio_started:
                await self._audio_start()  # a stream with nothing spoken still has its audio-start … audio-stop
            await self.write_event(AudioStop().event())
        await self.write_event(SynthesizeStopped().event())

    # ----- sending ----------------------------------------------------------------------------

    async def write_event(self, event: Event) -> None:
        """Send an event; a connection that broke makes the client gone (nothing is raised)."""
        if self.gone:
            return
        try:
            async with self._write_lock:
                await async_write_event(event, self.writer)
        except (ConnectionError, OSError):
            self.leave()

    async def _audio_start(self) -> None:
        start = AudioStart(rate=audio.SAMPLE_RATE_HZ, width=SAMPLE_WIDTH_BYTES, channels=CHANNELS)
        await self.write_event(start.event())

    async def _write_audio(self, waveform: np.ndarray) -> None:
        pcm = audio.to_pcm16(waveform).tobytes()
        step = SAMPLES_PER_CHUNK * SAMPLE_WIDTH_BYTES
        for offset in range(0, len(pcm), step):
            chunk = AudioChunk(
                rate=audio.SAMPLE_RATE_HZ,
                width=SAMPLE_WIDTH_BYTES,
                channels=CHANNELS,
                audio=pcm[offset : offset + step],
            )
            await self.write_event(chunk.event())

    async def _error(self, code: str, text: str) -> None:
        await self.write_event(Error(text=text, code=code).event())


class _Left(Exception):
    """The client left before its speech started."""


def _code(exc: Exception) -> str:
    """An error event's code: the HTTP API's error type (invalid_message for a malformed event)."""
    return error_type(exc) if isinstance(exc, TTSError) else "invalid_message"


# ----- the server ---------------------------------------------------------------------------------


class WyomingServer:
    """The listener and its connections: `await start()`, `await close()` (the app's lifespan).

    asyncio's server is used directly, not wyoming's AsyncTcpServer, so that connections are
    bounded, their tasks are awaited at shutdown, and SIGTERM stays the HTTP server's (its drain)."""

    def __init__(self, service: SpeechService, max_event_bytes: int):
        self.service = service
        self.state = service.state
        settings = self.state.settings
        assert settings.wyoming_port is not None
        self.host = settings.wyoming_host or settings.host
        self.port: int = settings.wyoming_port
        self.max_event_bytes = max_event_bytes
        self._server: asyncio.Server | None = None
        self._connections: dict[asyncio.Task[Any], WyomingHandler] = {}
        self._zeroconf: Any = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._connected, self.host, self.port, limit=self.max_event_bytes)
        logger.info(
            "Wyoming server on %s:%d (Home Assistant: Settings → Devices & services → Add integration → "
            "Wyoming Protocol)",
            self.host,
            self.port,
        )
        if warning := exposure_warning(self.host, ApiKeys(self.state.settings.api_keys)):
            logger.warning(warning)
        if self.state.settings.wyoming_zeroconf:
            self._zeroconf = await advertise(self.host, self.port)

    async def close(self) -> None:
        """Stop listening, end every connection (cancelling what it is speaking) and wait for them."""
        if self._zeroconf is not None:
            zeroconf, self._zeroconf = self._zeroconf, None
            with contextlib.suppress(Exception):
                await zeroconf.async_unregister_all_services()
                await zeroconf.async_close()
        if self._server is not None:
            self._server.close()
        for handler in self._connections.values():
            handler.leave()
        tasks = list(self._connections)
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=CLOSE_TIMEOUT_S)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        if self._server is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), timeout=CLOSE_TIMEOUT_S)
            self._server = None

    async def _connected(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        client = client_at(writer.get_extra_info("peername"))
        try:
            session = self.state.sessions.acquire(client)  # shared with the WebSockets, in all and per client
        except TTSError as e:
            with contextlib.suppress(ConnectionError, OSError):
                await async_write_event(Error(text=str(e), code=error_type(e)).event(), writer)
            writer.close()
            return
        task = asyncio.current_task()
        assert task is not None  # asyncio runs each connection's callback as a task
        handler = WyomingHandler(self, reader, writer)
        self._connections[task] = handler
        with session:
            try:
                await handler.run()
            finally:
                self._connections.pop(task, None)

    # ----- what the handlers share --------------------------------------------------------------

    async def info(self) -> Event:
        """The info event: one TTS program whose voices are the voices clients may name."""
        named = await self.state.voices.named()
        stand_in = " (the stand-in model: tones, not words)" if self.state.engine.is_stand_in else ""
        voices = [
            TtsVoice(
                name=name,
                description=name if name == voice_id else f"{name} → {voice_id}",
                attribution=MODEL_ATTRIBUTION,
                installed=True,
                version=None,
                languages=list(LANGUAGES),
            )
            for name, voice_id in named
        ]
        program = TtsProgram(
            name="chatterbox-turbo",
            description=f"Chatterbox Turbo, cloned voices{stand_in}",
            attribution=MODEL_ATTRIBUTION,
            installed=True,
            version=__version__,
            voices=voices,
            supports_synthesize_streaming=True,
        )
        return Info(tts=[program]).event()

    def voice_id(self, name: str | None) -> str:
        """The voice a synthesis names (an alias or a registered voice), else the default voice."""
        chosen = name or self.state.settings.default_voice
        if not chosen:
            raise MissingVoiceError(
                "name a voice (one of the voices listed by describe) or start the server with TTS_DEFAULT_VOICE"
            )
        return chosen

    async def check_voice(self, name: str | None) -> None:
        """VoiceNotFoundError (or MissingVoiceError) now for a voice that cannot speak."""
        voices = self.state.voices
        await voices.record(voices.resolve(self.voice_id(name)))

    def record(self, context: RequestContext, path: str, status: int) -> None:
        """Count and log one synthesis as the HTTP middleware does a request: route="wyoming",
        the outcome its status (or "incomplete" for audio cut short), one line with its timing."""
        elapsed_s = time.perf_counter() - context.started_at
        metrics = self.state.metrics
        metrics.request_duration.labels(route=ROUTE).observe(elapsed_s)
        outcome = "incomplete" if context.stream_incomplete and status < 400 else str(status)
        metrics.record_outcome(ROUTE, outcome, synthesis=True)
        log_request({"method": "WYOMING", "path": path}, status, elapsed_s, context)


def exposure_warning(host: str, keys: ApiKeys) -> str | None:
    """A loud line when the Wyoming port listens beyond loopback while API keys protect the HTTP API."""
    if is_loopback(host) or not keys.enabled:
        return None
    return (
        f"SECURITY: the Wyoming server listens on {host} without authentication (the protocol has none): "
        "TTS_API_KEYS do not protect it, and anyone who can reach that port can synthesize. Bind "
        "TTS_WYOMING_HOST to loopback or a trusted LAN address, or firewall the port."
    )


async def advertise(host: str, port: int) -> Any:
    """Announce the server as `_wyoming._tcp.local.` (Home Assistant discovers it); returns the
    AsyncZeroconf to close, or None, with a log line saying why not (the zeroconf package is
    optional and imported only here)."""
    if importlib.util.find_spec("zeroconf") is None:
        logger.warning(
            "TTS_WYOMING_ZEROCONF is on but the zeroconf package is not installed (pip install zeroconf): "
            "the Wyoming server is not advertised; add it in Home Assistant by host and port"
        )
        return None
    address = _advertised_address(host)
    if address is None:
        logger.warning("the Wyoming server listens on %s only: not advertised on the LAN", host)
        return None
    zeroconf_asyncio = importlib.import_module("zeroconf.asyncio")
    name = f"chatterbox-{socket.gethostname().split('.')[0]}-{port}"[:63]
    info = zeroconf_asyncio.AsyncServiceInfo(
        ZEROCONF_TYPE, f"{name}.{ZEROCONF_TYPE}", addresses=[socket.inet_aton(address)], port=port
    )
    zeroconf = zeroconf_asyncio.AsyncZeroconf()
    try:
        await zeroconf.async_register_service(info)
    except Exception as e:  # no multicast route, a name taken: the server works without it
        logger.warning("the Wyoming server could not be advertised (%s); add it in Home Assistant by host and port", e)
        with contextlib.suppress(Exception):
            await zeroconf.async_close()
        return None
    logger.info("Wyoming server advertised as %s at %s:%d", name, address, port)
    return zeroconf


def _advertised_address(host: str) -> str | None:
    """The IPv4 address to announce: the host's, or for a wildcard the one that routes to the LAN."""
    if is_loopback(host):
        return None
    if host in ("", "0.0.0.0", "::"):
        with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect((MDNS_GROUP, 1))  # a UDP connect sends nothing: it only picks the route
            return str(probe.getsockname()[0])
        return None
    try:
        return socket.gethostbyname(host)
    except OSError:
        return None
