"""Per-request and per-sequence state of the engine loop.

A request (one text in one voice) becomes one Sequence per text piece. The loop thread owns a
sequence's decode state; the vocoder stage owns its audio (vocoder_stage.Stream) and the request's
in-order delivery, so neither needs a lock.
"""

import enum
import time
import uuid
from dataclasses import dataclass, field, replace

import numpy as np

from chatterbox_server.audio import SAMPLE_RATE_HZ
from chatterbox_server.engine.outputs import OutputSink
from chatterbox_server.engine.runaway import Runaway, RunawayDetector
from chatterbox_server.engine.sampling import SamplingParams
from chatterbox_server.engine.types import AudioChunk, SpeechPlan, SpokenPiece, Truncation
from chatterbox_server.engine.voices import VoiceEmbedding
from chatterbox_server.model.contract import SPEECH_VOCAB_SIZE, START_SPEECH_TOKEN, STOP_SPEECH_TOKEN, is_spoken
from chatterbox_server.text import TextPiece

Output = AudioChunk | SpokenPiece


@dataclass
class GenerationRequest:
    """What a caller submits: a checked plan in one voice, and how to deliver it.

    chunked: token windows (AudioChunk, first audio after a dozen tokens) instead of whole
    pieces (SpokenPiece). deadline: time.perf_counter() value after which it fails with
    SynthesisTimeoutError. To stop it, call TTSEngine.abort(request_id) (the readers do when
    they are closed early): it leaves the batch at the next step.
    """

    plan: SpeechPlan
    voice: VoiceEmbedding
    chunked: bool = False
    deadline: float | None = None
    request_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    max_parallel_pieces: int | None = None  # None: the engine's setting


class SequenceStatus(enum.Enum):
    """Where one piece is in its life; the loop alone moves it (core.EngineCore)."""

    WAITING = "waiting"  # queued for a batch slot
    RUNNING = "running"  # prefilled, decoding in the batch
    FINISHED_STOPPED = "finished_stopped"  # it generated STOP_SPEECH
    FINISHED_LENGTH = "finished_length"  # it reached max_new_tokens
    FINISHED_RUNAWAY = "finished_runaway"  # a runaway guard stopped it (runaway.py: its text's bound, a loop, silence)
    ABORTED = "aborted"  # its request was aborted, timed out or failed

    @property
    def finished(self) -> bool:
        return self not in (SequenceStatus.WAITING, SequenceStatus.RUNNING)

    @property
    def truncation(self) -> Truncation | None:
        """Why a piece ended without STOP: "runaway" or "length"; None for every other status."""
        if self is SequenceStatus.FINISHED_RUNAWAY:
            return "runaway"
        return "length" if self is SequenceStatus.FINISHED_LENGTH else None


@dataclass(eq=False)
class Sequence:
    """One piece of one request, from prefill to its last token."""

    request: "RequestState"
    piece_index: int
    text_ids: np.ndarray  # int64 [n]
    params: SamplingParams
    max_new_tokens: int  # its limit: the plan's, or below it its text's runaway bound (then `bounded`)
    rng: np.random.Generator | None
    tokens: list[int] = field(default_factory=lambda: [START_SPEECH_TOKEN])  # START, then every id
    seen: np.ndarray = field(default_factory=lambda: _seen_start())  # bool [vocab], the penalty's set
    status: SequenceStatus = SequenceStatus.WAITING
    position: int = 0  # position id of the next token fed to the model
    spoken: int = 0  # tokens the decoder will speak (not START or STOP)
    bounded: bool = False  # max_new_tokens is the runaway bound: reaching it is a runaway, not FINISHED_LENGTH
    detector: RunawayDetector | None = None  # loops and silence in its spoken tokens (None: the guard is off)
    runaway: Runaway | None = None  # why a runaway guard stopped it (FINISHED_RUNAWAY)
    # loop thread: timings
    admitted_at: float = 0.0
    prefill_s: float = 0.0
    finished_at: float = 0.0

    @classmethod
    def for_piece(cls, state: "RequestState", piece_index: int) -> "Sequence":
        """A fresh decode row for one piece of the plan (its own generator, seeded as the request asks)."""
        plan = state.request.plan
        planned = plan.pieces[piece_index]
        rng = None if plan.sampling.greedy else np.random.default_rng(plan.sampling.seed)
        limit = planned.max_new_tokens or plan.max_new_tokens
        detector = RunawayDetector() if plan.runaway_guard else None
        bounded = planned.max_new_tokens is not None
        return cls(state, piece_index, planned.token_ids, plan.sampling, limit, rng, bounded=bounded, detector=detector)

    @property
    def piece(self) -> TextPiece:
        return self.request.request.plan.pieces[self.piece_index].piece

    @property
    def voice(self) -> VoiceEmbedding:
        return self.request.request.voice

    @property
    def tokens_generated(self) -> int:
        return len(self.tokens) - 1

    @property
    def stopped(self) -> bool:
        return self.status is SequenceStatus.FINISHED_STOPPED

    def status_after(self, token: int) -> SequenceStatus:
        """What this row's status becomes once it has generated `token` (a pure function)."""
        if token == STOP_SPEECH_TOKEN:
            return SequenceStatus.FINISHED_STOPPED
        if self.detector is not None and is_spoken(token) and self.detector.check(token) is not None:
            return SequenceStatus.FINISHED_RUNAWAY
        if self.tokens_generated + 1 >= self.max_new_tokens:
            return SequenceStatus.FINISHED_RUNAWAY if self.bounded else SequenceStatus.FINISHED_LENGTH
        return SequenceStatus.RUNNING

    def append(self, token: int, status: SequenceStatus) -> None:
        """Record a generated token and the status it leads to (loop thread)."""
        self.tokens.append(token)
        self.seen[token] = True
        self.spoken += is_spoken(token)
        self.status = status
        found = self.detector.push(token) if self.detector is not None and is_spoken(token) else None
        if status is SequenceStatus.FINISHED_RUNAWAY:  # a loop or silence, else its bound: keep every token
            self.runaway = found or Runaway("bound", self.spoken, self.spoken)

    @property
    def kept_spoken(self) -> int | None:
        """How many of its spoken tokens may be decoded: a runaway's tokens before its run (None: all)."""
        return None if self.runaway is None else self.runaway.start


def _seen_start() -> np.ndarray:
    seen = np.zeros(SPEECH_VOCAB_SIZE, dtype=bool)
    seen[START_SPEECH_TOKEN] = True
    return seen


class RequestState:
    """A submitted request inside the engine: its pieces' progress and in-order delivery."""

    def __init__(self, request: GenerationRequest, sink: OutputSink[Output], max_parallel_pieces: int):
        self.request = request
        self.sink = sink
        self.submitted_at = time.perf_counter()
        self.max_parallel_pieces = max(1, request.max_parallel_pieces or max_parallel_pieces)
        self.first_token_at: float | None = None
        self.prefix_key = ""  # the voice's prefix-cache key, set by the loop on arrival
        # loop thread
        self.next_piece = 0  # index of the next piece to create a sequence for
        self.active = 0  # pieces waiting or running
        self.first_window_ready = False  # the first piece has its first window's tokens (or ended)
        # vocoder thread: pieces are delivered strictly in order
        self.next_to_deliver = 0
        self._held_back: dict[int, list[tuple[Output, bool]]] = {}
        self.position_s = 0.0  # where the next whole piece starts in the joined audio
        self.windows_decoded = 0  # decoder windows of this request so far (the growth schedule)
        self.first_audio_at: float | None = None  # when its first audio reached the sink
        self.audio_sent_s = 0.0  # seconds of audio delivered to the sink

    @property
    def piece_count(self) -> int:
        return len(self.request.plan.pieces)

    @property
    def pieces_allowed(self) -> int:
        """Pieces that may be in flight now: the first one alone until its first audio is on its
        way (so siblings do not slow the first audio down), then up to the parallel limit."""
        return self.max_parallel_pieces if self.first_window_ready else 1

    @property
    def all_pieces_started(self) -> bool:
        return self.next_piece >= self.piece_count

    def deliver(self, piece_index: int, item: Output, last_of_piece: bool) -> None:
        """Send `item` once every earlier piece is complete, else hold it back (vocoder thread)."""
        self._held_back.setdefault(piece_index, []).append((item, last_of_piece))
        while self.next_to_deliver in self._held_back:
            pending = self._held_back[self.next_to_deliver]
            while pending:
                ready, last = pending.pop(0)
                self._send(self._with_pause(ready) if last else ready)
                if last:
                    del self._held_back[self.next_to_deliver]
                    self.next_to_deliver += 1
                    break
            else:
                return  # the piece being delivered has more to come
        if self.next_to_deliver == self.piece_count:
            self.sink.finish()

    def _with_pause(self, item: Output) -> Output:
        """The last output of the piece being delivered, its pause markup's silence appended:
        exactly round(pause_after_s × 24 000) zero samples (a SpokenPiece's span then covers it)."""
        pause_s = self.request.plan.pieces[self.next_to_deliver].pause_after_s
        samples = round(pause_s * SAMPLE_RATE_HZ)
        if samples <= 0:
            return item
        silence = np.zeros(samples, dtype=item.waveform.dtype)
        return replace(item, waveform=np.concatenate([item.waveform, silence]), pause_s=samples / SAMPLE_RATE_HZ)

    def _send(self, item: Output) -> None:
        if isinstance(item, SpokenPiece):  # whole pieces are placed in delivery order
            item = replace(item, start_s=self.position_s)
            self.position_s = item.end_s
        if self.first_audio_at is None:
            self.first_audio_at = time.perf_counter()
        self.audio_sent_s += item.waveform.shape[0] / SAMPLE_RATE_HZ
        self.sink.put(item)
