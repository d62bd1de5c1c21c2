"""The vocoder stage: speech tokens in, audio out in each request's order, on its own thread.

The engine loop only hands over tokens (`push`). This stage decides when a stream's next window is
due, how large it is, which windows go first and which share a decoder call, then calls the
decoder, stitches the seams and delivers the audio. The policy (`WindowPolicy`, `next_call`) is a
pure function of the streams and the clock, unit-tested without threads:

- **Growing windows.** Every call re-runs the voice's prompt (up to 250 tokens), so the decoder
  costs per call far more than per token. A request's first window is small (first audio early);
  each later one is at least `window_growth` times the previous (12 → 24 → 48 → …, capped at
  `max_window_tokens`, the CosyVoice2 pattern). A stream always takes every token that piled up
  while the decoder was busy, so under load windows grow by themselves.
- **A later piece waits for its turn.** A piece whose earlier pieces are still being delivered cuts
  no partial windows: nobody can hear them yet, so it is decoded in one call when it ends, or in
  windows from the moment it becomes the piece being delivered.
- **Ahead of the listener, wait.** A request with more audio delivered beyond what its listener has
  heard than `lookahead_s` plus one decoder call (as timed lately) waits for more tokens: a
  bigger window later costs less.
- **First windows first**: a request with no audio yet goes before every request that has some;
  among those, the one whose listener runs dry soonest goes first.
- **Batches of identical shapes** (prompt length, window length, context, padding) share one call,
  up to `max_batch_rows`, where the decoder was found exact and faster batched (vocoder.probe_batching).
- **A runaway is cut where it went wrong**: when a runaway guard stops a piece in a loop or a
  silence run (runaway.py), the run's tokens not yet claimed by a decoder call are dropped; nothing
  is held back from the decoder for this, so first audio does not wait (README "Runaway guards").
"""

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from chatterbox_server import audio
from chatterbox_server.engine.observer import EngineObserver
from chatterbox_server.engine.requests import Sequence
from chatterbox_server.engine.turns import StageTurns
from chatterbox_server.engine.types import AudioChunk, SpokenPiece, StageTimings, SynthesisResult
from chatterbox_server.engine.vocoder import DecoderRow, Vocoder, stitch_window
from chatterbox_server.errors import TTSError
from chatterbox_server.model.contract import SAMPLES_PER_TOKEN, SILENCE_PADDING_TOKENS, is_spoken

logger = logging.getLogger(__name__)

SAMPLE_RATE_HZ = audio.SAMPLE_RATE_HZ
TOKENS_PER_SECOND = SAMPLE_RATE_HZ // SAMPLES_PER_TOKEN  # 25
# The policy's defaults, written once: WindowPolicy's and the engine config's (engine/config.py VocoderConfig).
FIRST_WINDOW_TOKENS = 12  # ≈ 0.5 s: the first audio of a request leaves after this many tokens
GPU_WINDOW_GROWTH = 2.0  # a GPU decodes faster than real time: windows keep pace with the listener
CPU_WINDOW_GROWTH = 4.0  # a small CPU cannot: fewer, larger calls re-run the prompt less (README)
MAX_WINDOW_TOKENS = 400  # ≈ 16 s, past a 250-character piece: a piece whose turn comes late is one call
CONTEXT_TOKENS = 10  # left context re-decoded with each later window, so it starts in tune
LOOKAHEAD_S = 1.0  # a request this far (+ one decoder call) ahead of its listener waits for more
CALL_TIME_SMOOTHING = 0.3  # weight of the newest call in the moving average of call time

StageUpdate = tuple[Sequence, int, bool]  # a row, the token it generated this step, is that its last


@dataclass(frozen=True)
class WindowPolicy:
    """How the vocoder stage sizes, orders and groups decoder calls (see the module docstring).

    TTSEngine builds it from the engine config's vocoder section and the device it runs on."""

    first_window_tokens: int = FIRST_WINDOW_TOKENS
    window_growth: float = GPU_WINDOW_GROWTH  # each later window of a request is at least this × the previous
    max_window_tokens: int = MAX_WINDOW_TOKENS
    context_tokens: int = CONTEXT_TOKENS
    lookahead_s: float = LOOKAHEAD_S
    max_batch_rows: int = 1  # rows per decoder call; 1 = no batching

    def __post_init__(self) -> None:
        checks = [
            (self.first_window_tokens >= 1, "first_window_tokens must be at least 1"),
            (self.window_growth >= 1.0, "window_growth must be at least 1"),
            (
                self.max_window_tokens >= self.first_window_tokens,
                f"max_window_tokens ({self.max_window_tokens}) must be ≥ first_window_tokens ({self.first_window_tokens})",
            ),
            (self.context_tokens >= 1, "context_tokens must be at least 1 (a seam needs a crossfade)"),
            (self.lookahead_s >= 0, "lookahead_s must be ≥ 0"),
            (self.max_batch_rows >= 1, "max_batch_rows must be at least 1"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    def target_tokens(self, windows_so_far: int) -> int:
        """The least new tokens of a request's next window, after `windows_so_far` of its windows."""
        return min(self.max_window_tokens, round(self.first_window_tokens * self.window_growth**windows_so_far))


@dataclass(eq=False)
class Stream:
    """One piece's audio in the making (vocoder thread, under the stage's lock for `push`)."""

    sequence: Sequence
    order: int  # arrival order: the last tie-break
    prompt_tokens: int  # the decoder prompt this piece's calls re-run
    tokens: list[int] = field(default_factory=list)  # spoken tokens so far
    final: bool = False  # the piece's last token has arrived
    sent: int = 0  # tokens already decoded
    held: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))  # crossfade tail
    chunks: list[np.ndarray] = field(default_factory=list)
    vocoder_s: float = 0.0
    due_since: float | None = None  # when its next window became due (for the wait metric)

    @property
    def pending(self) -> int:
        return len(self.tokens) - self.sent

    @property
    def chunked(self) -> bool:
        return self.sequence.request.request.chunked


@dataclass(frozen=True)
class Window:
    """The tokens [start, end) of one stream, decoded with `context` tokens before them."""

    stream: Stream
    start: int
    end: int
    context: int
    final: bool

    @property
    def shape(self) -> tuple[int, int, bool]:
        """What a batched call needs equal: prompt length, tokens in the call, padding."""
        return self.stream.prompt_tokens, self.context + self.end - self.start, self.final

    @property
    def new_audio_s(self) -> float:
        padding = SILENCE_PADDING_TOKENS if self.final else 0
        return (self.end - self.start + padding) / TOKENS_PER_SECOND


def buffered_s(stream: Stream, now: float) -> float:
    """Seconds of its request's audio delivered and not yet heard (negative: the listener waits)."""
    state = stream.sequence.request
    if state.first_audio_at is None:
        return 0.0
    return state.audio_sent_s - (now - state.first_audio_at)


def due(stream: Stream, policy: WindowPolicy, now: float, call_s: float = 0.0) -> tuple[bool, float | None]:
    """(is its next window due now, when to look again if it is only waiting for its listener).

    call_s: what a decoder call takes here lately; a stream waits while its listener has more than
    lookahead_s + call_s of audio left to hear."""
    if stream.final:
        return True, None
    state = stream.sequence.request
    if not stream.chunked or stream.pending < policy.target_tokens(state.windows_decoded):
        return False, None
    if stream.sequence.piece_index > state.next_to_deliver:  # its audio waits for earlier pieces anyway
        return False, None
    ahead = buffered_s(stream, now) - policy.lookahead_s - call_s
    if ahead > 0:
        return False, now + ahead
    return True, None


def _priority(stream: Stream, now: float) -> tuple:
    state = stream.sequence.request
    if state.first_audio_at is None:  # first windows first, oldest request first
        return (0, state.submitted_at, stream.sequence.piece_index, stream.order)
    return (1, buffered_s(stream, now), stream.sequence.piece_index, stream.order)


def window_of(stream: Stream, policy: WindowPolicy, length: int | None = None) -> Window | None:
    """The stream's next window: `length` new tokens if given (None if it has too few), else all
    pending tokens up to max_window_tokens (all of them on its final window)."""
    start = stream.sent
    if length is None:
        length = stream.pending if stream.final else min(stream.pending, policy.max_window_tokens)
    elif stream.pending < length or (stream.final and stream.pending != length):
        return None
    context = min(policy.context_tokens, start)
    final = stream.final and start + length == len(stream.tokens)
    return Window(stream, start, start + length, context, final)


def next_call(
    streams: list[Stream], policy: WindowPolicy, now: float, call_s: float = 0.0
) -> tuple[list[Window], float | None, int]:
    """The windows of the next decoder call (empty when nothing is due), the earliest time a waiting
    stream becomes due on its own, and how many streams are due now (call_s: see `due`)."""
    ready, wake = [], None
    for stream in streams:
        is_due, at = due(stream, policy, now, call_s)
        if is_due:
            ready.append(stream)
            if stream.due_since is None:
                stream.due_since = now
        elif at is not None:
            wake = at if wake is None else min(wake, at)
    if not ready:
        return [], wake, 0
    ready.sort(key=lambda s: _priority(s, now))
    lead = ready[0]
    batching = policy.max_batch_rows > 1
    # when batching, a later window takes exactly its target so that streams at the same point match
    length = None
    if batching and not lead.final:
        length = policy.target_tokens(lead.sequence.request.windows_decoded)
    first = window_of(lead, policy, length)
    assert first is not None
    windows = [first]
    for stream in ready[1:]:
        if len(windows) >= policy.max_batch_rows:
            break
        if stream.prompt_tokens != lead.prompt_tokens:
            continue
        other = window_of(stream, policy, first.end - first.start)
        if other is not None and other.shape == first.shape:
            windows.append(other)
    return windows, wake, len(ready)


class VocoderStage:
    """Owns the decoder thread: `push` tokens from the engine loop, audio reaches each request's sink."""

    def __init__(
        self,
        vocoder: Vocoder,
        policy: WindowPolicy,
        observer: Callable[[], EngineObserver],
        turns: StageTurns | None = None,
        turn_mode: str = "never",
    ):
        self.policy = policy
        self._vocoder = vocoder
        self._observer = observer
        self._turns = turns or StageTurns()
        self._turn_mode = turn_mode  # which calls pause the engine loop (turns.TURN_MODES)
        self._call_s = 0.0  # recent seconds per decoder call (moving average)
        self._streams: dict[int, Stream] = {}  # id(sequence) → its stream
        self._order = 0
        self._cond = threading.Condition()
        self._closed = False
        self._busy = False  # a decoder call is running
        self._thread = threading.Thread(target=self._run, name="tts-vocoder", daemon=True)
        self._thread.start()

    def push(self, updates: list[StageUpdate]) -> None:
        """The loop's tokens of one step: (sequence, the id it generated, is that its last token)."""
        with self._cond:
            for seq, token, last in updates:
                stream = self._streams.get(id(seq))
                if stream is None:
                    stream = Stream(seq, self._order, self._vocoder.prompt_length(seq.voice))
                    self._order += 1
                    self._streams[id(seq)] = stream
                if is_spoken(token):
                    stream.tokens.append(token)
                stream.final = stream.final or last
                if last and seq.kept_spoken is not None:
                    _cut_runaway(stream)
            self._cond.notify()

    def wake(self) -> None:
        """Look at the streams again now (a request ended elsewhere: its windows are dropped)."""
        with self._cond:
            self._cond.notify()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join(timeout=10)

    def wait_idle(self, timeout_s: float = 60.0) -> bool:
        """Block until no window is due and no call runs (for tests that step the loop by hand)."""
        deadline = time.perf_counter() + timeout_s
        with self._cond:
            while self._busy or any(
                due(s, self.policy, time.perf_counter(), self._call_s)[0] for s in self._streams.values()
            ):
                if time.perf_counter() > deadline:
                    return False
                self._cond.wait(0.01)
            return True

    def _run(self) -> None:
        while True:
            with self._cond:
                while True:
                    if self._closed:
                        return
                    self._drop_finished()
                    now = time.perf_counter()
                    windows, wake, waiting = next_call(list(self._streams.values()), self.policy, now, self._call_s)
                    self._observer().on_vocoder_queue(waiting)
                    if windows:
                        break
                    self._cond.wait(None if wake is None else max(wake - now, 0.001))
                waits = [now - (w.stream.due_since or now) for w in windows]
                for w in windows:  # claimed: the loop may keep pushing tokens after `end`
                    w.stream.sent, w.stream.due_since = w.end, None
                    if w.final:
                        del self._streams[id(w.stream.sequence)]
                self._busy = True
            try:
                self._decode(windows, waits)
            except Exception as e:  # a decoder failure ends those requests, not the stage
                for w in windows:
                    state = w.stream.sequence.request
                    logger.exception("vocoder failed for request %s", state.request.request_id)
                    state.sink.finish(e if isinstance(e, TTSError) else TTSError(f"vocoder failed: {e}"))
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def _drop_finished(self) -> None:
        """Forget streams whose request ended elsewhere (cancelled, failed, timed out)."""
        gone = [key for key, s in self._streams.items() if s.sequence.request.sink.finished]
        for key in gone:
            del self._streams[key]

    def _decode(self, windows: list[Window], waits: list[float]) -> None:
        started = time.perf_counter()
        rows = [
            DecoderRow(
                np.array(w.stream.tokens[w.start - w.context : w.end], dtype=np.int64), w.stream.sequence.voice, w.final
            )
            for w in windows
        ]
        exclusive = self._turn_mode == "always" or (
            self._turn_mode == "first" and any(w.stream.sequence.request.first_audio_at is None for w in windows)
        )
        with self._turns.decoder() if exclusive else contextlib.nullcontext():
            waves = self._vocoder.decode_rows(rows)
        decoder_s = time.perf_counter() - started
        self._call_s = (
            decoder_s
            if not self._call_s
            else CALL_TIME_SMOOTHING * decoder_s + (1 - CALL_TIME_SMOOTHING) * self._call_s
        )
        self._observer().on_decoder_call(len(windows), decoder_s, sum(w.new_audio_s for w in windows), waits)
        for window, wave in zip(windows, waves):
            window.stream.vocoder_s += decoder_s / len(windows)
            self._deliver(window, wave)

    def _deliver(self, window: Window, wave: np.ndarray) -> None:
        stream, seq = window.stream, window.stream.sequence
        state = seq.request
        state.windows_decoded += 1
        if not stream.chunked:  # a whole piece: one call, faded at both edges
            waveform = audio.fade_edges(wave)
            result = _result(stream, waveform)
            state.deliver(seq.piece_index, SpokenPiece(seq.piece, waveform, 0.0, result), True)
            return
        chunk, stream.held = stitch_window(wave, window.context, stream.held, window.final)
        if window.start == 0:
            chunk = audio.fade_in(chunk)
        if window.final:
            chunk = audio.fade_out(chunk)
        stream.chunks.append(chunk)
        last = _result(stream, np.concatenate(stream.chunks)) if window.final else None
        state.deliver(seq.piece_index, AudioChunk(seq.piece, chunk, last), window.final)


def _cut_runaway(stream: Stream) -> None:
    """Drop a runaway's tokens from its run's start, all but those a decoder call already claimed."""
    seq = stream.sequence
    assert seq.runaway is not None and seq.kept_spoken is not None
    keep = max(seq.kept_spoken, stream.sent)
    dropped = len(stream.tokens) - keep
    del stream.tokens[keep:]
    logger.warning(
        "request %s piece %d stopped as a runaway: %s; %d spoken tokens kept, %d dropped, %d of the run already decoded",
        seq.request.request.request_id,
        seq.piece_index,
        seq.runaway.describe(),
        keep,
        dropped,
        keep - seq.kept_spoken,
    )


def _result(stream: Stream, waveform: np.ndarray) -> SynthesisResult:
    seq = stream.sequence
    timings = StageTimings(
        prefill_s=seq.prefill_s,
        decode_s=max(seq.finished_at - seq.admitted_at - seq.prefill_s, 0.0),
        vocoder_s=stream.vocoder_s,
        total_s=time.perf_counter() - seq.request.submitted_at,
        decode_steps=seq.tokens_generated - 1,
    )
    tokens = np.array(stream.tokens, dtype=np.int64)
    return SynthesisResult(
        waveform, tokens, seq.tokens_generated, seq.stopped, timings, truncated=seq.status.truncation
    )
