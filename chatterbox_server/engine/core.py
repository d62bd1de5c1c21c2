"""The engine loop: one thread steps every active sequence's decode together.

Each step: apply cancellations and deadlines → admit waiting sequences (scheduler: batch limit,
prefill-token budget) and prefill them on their voices' cached prefix KV → sample every row
from the pending logits → hand the new tokens to the vocoder stage → drop finished rows → one
language-model call for all remaining rows. Requests join and leave between any two steps; no
thread runs per request. The vocoder stage (vocoder_stage.py) runs on its own thread and decides
its windows itself, so the loop never waits on the decoder.
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
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from chatterbox_server.engine.batch import DecodeBatch, compute_prefix, prefill
from chatterbox_server.engine.language_model import LanguageModel
from chatterbox_server.engine.observer import EngineObserver
from chatterbox_server.engine.outputs import OutputSink
from chatterbox_server.engine.prefix_cache import PrefixCache, PrefixKV
from chatterbox_server.engine.requests import GenerationRequest, Output, RequestState, Sequence
from chatterbox_server.engine.sampling import select_next_tokens
from chatterbox_server.engine.scheduler import Scheduler, SchedulerConfig
from chatterbox_server.engine.turns import TURN_MODES, StageTurns
from chatterbox_server.engine.vocoder import Vocoder
from chatterbox_server.engine.vocoder_stage import VocoderStage, WindowPolicy
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
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    max_parallel_pieces: int = 4  # pieces of one long text decoded at once (delivered in order)
    prefix_cache_bytes: int = 1 << 30
    windows: WindowPolicy = field(default_factory=WindowPolicy)  # the vocoder stage's policy
    stage_turns: str = "never"  # which decoder calls pause the loop: never, first (windows), always

    def __post_init__(self) -> None:
        if self.stage_turns not in TURN_MODES:
            raise ValueError(f"stage_turns must be one of {', '.join(TURN_MODES)}, got {self.stage_turns!r}")


def voice_key(voice: VoiceEmbedding) -> str:
    """A voice's identity for the prefix cache: its clip's hash, else a hash of its conditioning."""
    if voice.content_hash:
        return voice.content_hash
    return hashlib.sha256(np.ascontiguousarray(voice.audio_features).tobytes()).hexdigest()


class EngineCore:
    """Owns the loop thread, the waiting queue, the running batch and the prefix cache."""

    def __init__(
        self,
        lm: LanguageModel,
        embed_text: Callable[[np.ndarray], np.ndarray],
        vocoder: Vocoder,
        new_sequence: Callable[[RequestState, int], Sequence],
        config: CoreConfig,
        observer: EngineObserver | None = None,
    ):
        self.config = config
        self.observer = observer or EngineObserver()
        self.prefix_cache = PrefixCache(config.prefix_cache_bytes)
        self._lm = lm
        self._embed_text = embed_text  # int64 [n] → float [n, hidden]
        self._vocoder = vocoder
        self._new_sequence = new_sequence
        self._scheduler: Scheduler[Sequence] = Scheduler(config.scheduler, self._prefill_cost)
        self._inbox: queue.SimpleQueue[RequestState | None] = queue.SimpleQueue()
        self._requests: dict[str, RequestState] = {}  # loop thread only
        self._waiting: deque[Sequence] = deque()
        self._batch = DecodeBatch(lm)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stage: VocoderStage | None = None
        self._closed = False
        self._cancels: dict[str, threading.Event] = {}  # request id → its cancel flag (under _lock)
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
            if self._stage is None:
                self._stage = VocoderStage(
                    self._vocoder, config.windows, lambda: self.observer, self._turns, config.stage_turns
                )
            self._cancels[request.request_id] = request.cancel
        return RequestState(request, sink, self.config.max_parallel_pieces)

    def abort(self, request_id: str) -> bool:
        """Cancel a request by id (client gone, deadline); it leaves the batch at the next step."""
        with self._lock:
            cancel = self._cancels.get(request_id)
        if cancel is None:
            return False
        cancel.set()
        return True

    def _forget(self, state: RequestState) -> None:
        self._requests.pop(state.request.request_id, None)
        with self._lock:
            self._cancels.pop(state.request.request_id, None)

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
                if idle:
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

    def _top_up(self, state: RequestState) -> None:
        """Queue the request's next pieces while fewer than its limit are in flight."""
        while not state.all_pieces_started and state.active < state.pieces_allowed:
            self._waiting.append(self._new_sequence(state, state.next_piece))
            state.next_piece += 1
            state.active += 1

    def step(self) -> None:
        """One iteration of the loop (see the module docstring)."""
        started = time.perf_counter()
        self._apply_cancellations(started)
        newcomers = self._scheduler.admit(self._waiting, len(self._batch))
        prefill_tokens = self._admit(newcomers) if newcomers else 0
        batch = self._batch
        if not batch.rows:
            return
        rows = batch.rows
        tokens = select_next_tokens(
            batch.logits, np.stack([r.seen for r in rows]), [r.params for r in rows], [r.rng for r in rows]
        )
        now = time.perf_counter()
        for row, token in zip(rows, tokens):
            row.append(int(token))
            state = row.request
            if state.first_token_at is None:
                state.first_token_at = now
                self.observer.on_first_token(now - state.submitted_at)
        assert self._stage is not None
        self._stage.push([(row, int(token), row.done) for row, token in zip(rows, tokens)])
        for row in rows:
            self._after_token(row, now)
        keep = np.array([not r.done for r in rows])
        batch.keep(keep)
        if batch.rows:
            batch.step(tokens[keep])
        self.observer.on_step(len(rows), time.perf_counter() - started, prefill_tokens)

    def _after_token(self, row: Sequence, now: float) -> None:
        """Request lifecycle after a row's token: start sibling pieces once the first piece's first
        window is on its way, and retire the row (and the request) on its last token."""
        state = row.request
        if not state.first_window_ready and (
            row.done or (state.request.chunked and row.spoken >= self.config.windows.first_window_tokens)
        ):
            state.first_window_ready = True
            self._top_up(state)
        if row.done:
            row.finished_at = now
            state.active -= 1
            self._top_up(state)
            if state.all_pieces_started and state.active == 0:
                self._forget(state)

    def _admit(self, newcomers: list[Sequence]) -> int:
        """Prefill newcomers on their voices' prefix KV and merge them into the batch."""
        started = time.perf_counter()
        prefixes: list[PrefixKV] = []
        prefill_tokens = 0
        for seq in newcomers:
            seq.admitted_at = started
            compute = functools.partial(compute_prefix, self._lm, seq.voice.audio_features)
            prefix, cached = self.prefix_cache.get_or_compute(seq.request.prefix_key, compute)
            prefixes.append(prefix)
            prefill_tokens += seq.text_ids.shape[0] + (0 if cached else prefix.length)
        texts = [self._embed_text(seq.text_ids) for seq in newcomers]
        kv, mask, logits = prefill(self._lm, prefixes, texts)
        prefill_s = time.perf_counter() - started
        for seq, prefix in zip(newcomers, prefixes):
            seq.position = prefix.length + seq.text_ids.shape[0]
            seq.prefill_s = prefill_s
        self._batch.join(newcomers, kv, mask, logits)
        return prefill_tokens

    def _prefill_cost(self, seq: Sequence) -> int:
        cached = seq.request.prefix_key in self.prefix_cache
        return int(seq.text_ids.shape[0]) + (0 if cached else int(seq.voice.audio_features.shape[1]))

    def _apply_cancellations(self, now: float) -> None:
        for state in list(self._requests.values()):
            request = state.request
            if request.cancel.is_set():
                self._fail(state, GenerationCancelledError("synthesis cancelled"))
            elif request.deadline is not None and now > request.deadline:
                self._fail(state, SynthesisTimeoutError("synthesis ran past its deadline"))

    def _fail(self, state: RequestState, error: TTSError) -> None:
        """Remove every sequence of the request; its reader gets `error`."""
        self._forget(state)
        self._waiting = deque(s for s in self._waiting if s.request is not state)
        if any(r.request is state for r in self._batch.rows):
            self._batch.keep(np.array([r.request is not state for r in self._batch.rows]))
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
