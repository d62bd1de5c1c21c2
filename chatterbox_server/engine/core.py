"""The engine loop: one thread steps every active sequence's decode together.

`step()` reads like vLLM's EngineCore.step: schedule → one batched model output → per-request
results. In order: aborts and deadlines end their requests → the scheduler admits waiting
sequences (batch limit, prefill-token budget), prefilled on their voices' cached prefix KV → the
pending logits of every row are sampled into a StepResult (tokens and the status each row moves
to: values, nothing changed yet) → `_apply` does the request lifecycle in one place (tokens to
their rows and to the vocoder stage, sibling pieces started, finished rows retired) → one
language-model call for the rows still running. Requests join and leave between any two steps;
no thread runs per request. The vocoder stage (vocoder_stage.py) runs on its own thread and
decides its windows itself, so the loop never waits on the decoder.
"""

import atexit
import contextlib
import functools
import hashlib
import logging
import queue
import threading
import time
import weakref
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from chatterbox_server.engine.batch import DecodeBatch, compute_prefix, prefill
from chatterbox_server.engine.cost import CostModel
from chatterbox_server.engine.language_model import LanguageModel
from chatterbox_server.engine.observer import EngineObserver, Observers
from chatterbox_server.engine.outputs import OutputSink
from chatterbox_server.engine.prefix_cache import PrefixCache, PrefixKV
from chatterbox_server.engine.requests import GenerationRequest, Output, RequestState, Sequence, SequenceStatus
from chatterbox_server.engine.sampling import select_next_tokens
from chatterbox_server.engine.scheduler import Scheduler, SchedulerConfig
from chatterbox_server.engine.turns import TURN_MODES, StageTurns
from chatterbox_server.engine.vocoder import Vocoder
from chatterbox_server.engine.vocoder_stage import StageUpdate, VocoderStage, WindowPolicy
from chatterbox_server.engine.voices import VoiceEmbedding
from chatterbox_server.errors import GenerationCancelledError, SynthesisTimeoutError, TTSError

logger = logging.getLogger(__name__)

IDLE_WAIT_S = 0.5
_LIVE_CORES: "weakref.WeakSet[EngineCore]" = weakref.WeakSet()


@atexit.register
def _close_live_cores() -> None:
    """Stop loop threads before the interpreter tears ONNX Runtime down under them."""
    for core in list(_LIVE_CORES):
        core.close()  # how long the idle loop blocks on its inbox before checking for shutdown


@dataclass(frozen=True)
class CoreConfig:
    """The loop's settings, resolved for a device by TTSEngine (defaults live in engine/config.py)."""

    scheduler: SchedulerConfig
    max_parallel_pieces: int  # pieces of one long text decoded at once (delivered in order)
    prefix_cache_bytes: int
    windows: WindowPolicy  # the vocoder stage's policy
    stage_turns: str  # which decoder calls pause the loop: never, first (windows), always

    def __post_init__(self) -> None:
        if self.stage_turns not in TURN_MODES:
            raise ValueError(f"stage_turns must be one of {', '.join(TURN_MODES)}, got {self.stage_turns!r}")


def voice_key(voice: VoiceEmbedding) -> str:
    """A voice's identity for the prefix cache: its clip's hash, else a hash of its conditioning."""
    if voice.content_hash:
        return voice.content_hash
    return hashlib.sha256(np.ascontiguousarray(voice.audio_features).tobytes()).hexdigest()


@dataclass(frozen=True)
class StepResult:
    """What one step's sampling produced, before anything is applied: per row of the batch (in
    batch order) its new token and the status that token leads to."""

    rows: list[Sequence] = field(default_factory=list)
    tokens: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # int64 [rows]
    statuses: list[SequenceStatus] = field(default_factory=list)
    prefill_tokens: int = 0  # prompt tokens prefilled this step

    @property
    def finished(self) -> list[Sequence]:
        return [row for row, status in zip(self.rows, self.statuses) if status.finished]

    @property
    def still_running(self) -> np.ndarray:
        """bool [rows]: the rows that stay in the batch."""
        return np.array([not status.finished for status in self.statuses], dtype=bool)


class EngineCore:
    """Owns the loop thread, the waiting queue, the running batch and the prefix cache."""

    def __init__(self, lm: LanguageModel, vocoder: Vocoder, config: CoreConfig, observer: EngineObserver | None = None):
        self.config = config
        self.cost = CostModel(config.windows)  # what work costs here, measured (the server's early refusals)
        self.observer: EngineObserver = Observers(self.cost, observer or EngineObserver())
        self.prefix_cache = PrefixCache(config.prefix_cache_bytes)
        self._lm = lm
        self._vocoder = vocoder
        self._scheduler: Scheduler[Sequence] = Scheduler(config.scheduler, self._prefill_cost)
        self._inbox: queue.SimpleQueue[RequestState | None] = queue.SimpleQueue()
        self._requests: dict[str, RequestState] = {}  # accepted by the loop (loop thread only)
        self._waiting: deque[Sequence] = deque()
        self._batch = DecodeBatch(lm)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stage: VocoderStage | None = None
        self._closed = False
        # under _lock: requests whose reader may still get audio, and those of them the loop still holds
        self._live: dict[str, RequestState] = {}
        self._in_loop: set[str] = set()
        self._aborts: set[str] = set()  # ids abort() was called for, applied at the next step
        self._turns = StageTurns()
        _LIVE_CORES.add(self)

    # ----- any thread -------------------------------------------------------------------------

    def submit(self, request: GenerationRequest, sink: OutputSink[Output]) -> RequestState:
        """Queue a request for the loop thread; its outputs (or its error) arrive through `sink`."""
        state = self._register(request, sink)
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="tts-engine-loop", daemon=True)
                self._thread.start()
        self._inbox.put(state)
        return state

    def add_request(self, request: GenerationRequest, sink: OutputSink[Output]) -> RequestState:
        """Add a request directly, for a caller that drives `step()` itself (deterministic tests);
        never once the loop thread runs."""
        if self._thread is not None:
            raise RuntimeError("add_request is for driving step() by hand; this engine's loop thread runs")
        state = self._register(request, sink)
        self._accept(state)
        return state

    def _register(self, request: GenerationRequest, sink: OutputSink[Output]) -> RequestState:
        config = self.config
        with self._lock:
            if self._closed:
                raise TTSError("the engine is closed")
            for ended in [rid for rid, s in self._live.items() if s.sink.finished]:
                del self._live[ended]
            if request.request_id in self._live:
                raise TTSError(f"request id {request.request_id!r} is already running")
            if self._stage is None:
                self._stage = VocoderStage(
                    self._vocoder, config.windows, lambda: self.observer, self._turns, config.stage_turns
                )
            state = RequestState(request, sink, self.config.max_parallel_pieces)
            self._live[request.request_id] = state
            self._in_loop.add(request.request_id)
        return state

    def abort(self, request_id: str) -> bool:
        """Stop a request (client gone, caller done): it leaves the batch at the next step and its
        reader gets GenerationCancelledError. False when no such request is running. The only way
        to cancel."""
        with self._lock:
            state = self._live.pop(request_id, None)
            if state is None or state.sink.finished:
                return False
            if request_id in self._in_loop:
                self._aborts.add(request_id)
                return True
        # every token is generated: only the vocoder stage has it, and drops a finished request's windows
        state.sink.finish(GenerationCancelledError("synthesis cancelled"))
        if self._stage is not None:
            self._stage.wake()
        return True

    def close(self) -> None:
        """Stop the loop; requests still running fail with GenerationCancelledError."""
        with self._lock:
            self._closed = True
            thread, stage = self._thread, self._stage
        if thread is not None:
            self._inbox.put(None)
            thread.join(timeout=30)
        if stage is not None:
            stage.close()

    # ----- the loop thread --------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            idle = not self._waiting and not self._batch.rows
            try:
                state = self._inbox.get(timeout=IDLE_WAIT_S) if idle else self._inbox.get_nowait()
            except queue.Empty:
                state = None
                if idle and not self._aborts:
                    continue
            if state is None and self._closed:
                self._fail_all(GenerationCancelledError("the engine is shutting down"))
                return
            while state is not None:
                self._accept(state)
                try:
                    state = self._inbox.get_nowait()
                except queue.Empty:
                    state = None
            if self._closed:
                continue
            try:
                with self._turns.step() if self.config.stage_turns != "never" else contextlib.nullcontext():
                    self.step()
            except Exception as e:  # a model failure ends the requests in the batch, not the loop
                logger.exception("engine step failed")
                error = e if isinstance(e, TTSError) else TTSError(f"synthesis failed: {e}")
                self._fail_all(error)

    def _accept(self, state: RequestState) -> None:
        state.prefix_key = voice_key(state.request.voice)
        self._requests[state.request.request_id] = state
        self._top_up(state)

    def step(self) -> StepResult:
        """One iteration of the loop (see the module docstring); returns what it sampled."""
        started = time.perf_counter()
        self._end_aborted_and_expired(started)
        newcomers = self._scheduler.admit(self._waiting, len(self._batch))
        prefill_tokens = self._admit(newcomers) if newcomers else 0
        if not self._batch.rows:
            return StepResult(prefill_tokens=prefill_tokens)
        result = self._sample(prefill_tokens)
        self._apply(result, time.perf_counter())
        running = result.still_running
        self._batch.keep(running)
        if self._batch.rows:
            self._batch.step(result.tokens[running])
        self.observer.on_step(len(result.rows), time.perf_counter() - started, prefill_tokens)
        return result

    def _sample(self, prefill_tokens: int) -> StepResult:
        """Every row's next token from the pending logits, and the status it leads to (no state changes)."""
        rows = list(self._batch.rows)
        tokens = select_next_tokens(
            self._batch.logits, np.stack([r.seen for r in rows]), [r.params for r in rows], [r.rng for r in rows]
        )
        statuses = [row.status_after(int(token)) for row, token in zip(rows, tokens)]
        return StepResult(rows, tokens, statuses, prefill_tokens)

    def _apply(self, result: StepResult, now: float) -> None:
        """The request lifecycle of one step, in one place: tokens to their rows and to the vocoder
        stage; a request's sibling pieces start once its first window's tokens are in (so they do
        not slow its first audio down); finished rows retire, and with its last row the request."""
        updates: list[StageUpdate] = []
        for row, token, status in zip(result.rows, result.tokens, result.statuses):
            row.append(int(token), status)
            updates.append((row, int(token), status.finished))
            state = row.request
            if state.first_token_at is None:
                state.first_token_at = now
                self.observer.on_first_token(now - state.submitted_at)
        assert self._stage is not None
        self._stage.push(updates)
        for row in result.rows:
            state = row.request
            if not state.first_window_ready and (
                row.status.finished or (state.request.chunked and row.spoken >= self.config.windows.first_window_tokens)
            ):
                state.first_window_ready = True
                self._top_up(state)
        for row in result.finished:
            row.finished_at = now
            stopped = row.status is SequenceStatus.FINISHED_STOPPED
            self.observer.on_piece_finished(row.text_ids.shape[0], row.spoken, stopped)
            if (truncation := row.status.truncation) is not None:
                self.observer.on_piece_truncated(truncation)
            state = row.request
            state.active -= 1
            self._top_up(state)
            if state.all_pieces_started and state.active == 0:
                self._forget(state)  # its audio is the vocoder stage's now

    def _top_up(self, state: RequestState) -> None:
        """Queue the request's next pieces while fewer than its limit are in flight."""
        while not state.all_pieces_started and state.active < state.pieces_allowed:
            self._waiting.append(Sequence.for_piece(state, state.next_piece))
            state.next_piece += 1
            state.active += 1

    def _admit(self, newcomers: list[Sequence]) -> int:
        """Prefill newcomers on their voices' prefix KV and merge them into the batch."""
        started = time.perf_counter()
        prefixes: list[PrefixKV] = []
        prefill_tokens = 0
        prefix_s = 0.0  # computing voices' prefixes: once per voice, not a cost of every piece
        for seq in newcomers:
            seq.admitted_at = started
            compute = functools.partial(compute_prefix, self._lm, seq.voice.audio_features)
            looked_up = time.perf_counter()
            prefix, cached = self.prefix_cache.get_or_compute(seq.request.prefix_key, compute)
            if not cached:
                prefix_s += time.perf_counter() - looked_up
            prefixes.append(prefix)
            prefill_tokens += seq.text_ids.shape[0] + (0 if cached else prefix.length)
        texts = [self._lm.embed(seq.text_ids[None, :])[0] for seq in newcomers]  # float [n_i, hidden]
        kv, mask, logits = prefill(self._lm, prefixes, texts)
        prefill_s = time.perf_counter() - started
        self.observer.on_prefill(len(newcomers), prefill_s, prefix_s)
        for seq, prefix in zip(newcomers, prefixes):
            seq.position = prefix.length + seq.text_ids.shape[0]
            seq.prefill_s = prefill_s
            seq.status = SequenceStatus.RUNNING
        self._batch.join(newcomers, kv, mask, logits)
        return prefill_tokens

    def _prefill_cost(self, seq: Sequence) -> int:
        cached = seq.request.prefix_key in self.prefix_cache
        return int(seq.text_ids.shape[0]) + (0 if cached else int(seq.voice.audio_features.shape[1]))

    def _end_aborted_and_expired(self, now: float) -> None:
        with self._lock:
            aborted, self._aborts = self._aborts, set()
        for request_id in aborted:
            state = self._requests.get(request_id)
            if state is not None:
                self._fail(state, GenerationCancelledError("synthesis cancelled"))
        for state in list(self._requests.values()):
            deadline = state.request.deadline
            if deadline is not None and now > deadline:
                self._fail(state, SynthesisTimeoutError("synthesis ran past its deadline"))

    def _forget(self, state: RequestState) -> None:
        """The loop is done with the request (its audio may still be in the vocoder stage)."""
        request_id = state.request.request_id
        self._requests.pop(request_id, None)
        with self._lock:
            self._in_loop.discard(request_id)
            aborted = request_id in self._aborts
            self._aborts.discard(request_id)
        if aborted:  # abort() came after this step began: the reader has gone, the stage may stop too
            state.sink.finish(GenerationCancelledError("synthesis cancelled"))
            if self._stage is not None:
                self._stage.wake()

    def _fail(self, state: RequestState, error: TTSError) -> None:
        """End every sequence of the request (ABORTED); its reader gets `error`."""
        self._forget(state)
        for seq in self._waiting:
            if seq.request is state:
                seq.status = SequenceStatus.ABORTED
        self._waiting = deque(s for s in self._waiting if s.request is not state)
        rows = self._batch.rows
        if any(r.request is state for r in rows):
            for row in rows:
                if row.request is state:
                    row.status = SequenceStatus.ABORTED
            self._batch.keep(np.array([r.request is not state for r in rows]))
        state.sink.finish(error)

    def _fail_all(self, error: TTSError) -> None:
        for state in list(self._requests.values()):
            self._fail(state, error)
        self._waiting.clear()
        self._batch = DecodeBatch(self._lm)

    def wait_for_vocoder(self, timeout_s: float = 60.0) -> bool:
        """Block until the vocoder stage has decoded every window due (tests stepping by hand)."""
        return self._stage.wait_idle(timeout_s) if self._stage is not None else True

    def waiting_count(self) -> int:
        return len(self._waiting)

    def running_count(self) -> int:
        return len(self._batch)

    @property
    def running(self) -> list[Sequence]:
        """The rows of the running batch, in batch order (a snapshot)."""
        return list(self._batch.rows)

    @property
    def waiting(self) -> list[Sequence]:
        """Sequences waiting for a batch slot, first in line first (a snapshot)."""
        return list(self._waiting)
