"""Chatterbox Turbo text-to-speech on ONNX Runtime: four graphs, one synchronous engine.

text → token ids → embed_tokens → [voice conditioning | text] prefill → batched greedy/sampled
decode over the KV cache → speech tokens → conditional_decoder → float32 waveform at 24 kHz.
The engine knows nothing about HTTP; it is safe to call from several threads at once (the
sessions are shared read-only, per-request state lives on the stack, the voice cache locks).
"""

import hashlib
import logging
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from chatterbox_server import audio
from chatterbox_server.engine.config import TTSConfig, locate_model
from chatterbox_server.engine.core import CoreConfig, EngineCore
from chatterbox_server.engine.language_model import LanguageModel
from chatterbox_server.engine.observer import EngineObserver
from chatterbox_server.engine.outputs import AsyncOutputs, SyncOutputs
from chatterbox_server.engine.prefix_cache import PrefixCache
from chatterbox_server.engine.prompt import TextTokenizer
from chatterbox_server.engine.requests import GenerationRequest, Output, RequestState, Sequence
from chatterbox_server.engine.sampling import SamplingParams
from chatterbox_server.engine.scheduler import SchedulerConfig
from chatterbox_server.engine.types import (
    AudioChunk,
    GenerationOptions,
    LongSynthesisResult,
    PlannedPiece,
    SpeechPlan,
    SpokenPiece,
    SynthesisRequest,
    SynthesisResult,
)
from chatterbox_server.engine.vocoder import BatchProbe, Vocoder, load_watermarker, probe_batching
from chatterbox_server.engine.vocoder_stage import CPU_WINDOW_GROWTH, GPU_WINDOW_GROWTH
from chatterbox_server.engine.voices import VoiceCache, VoiceEmbedding
from chatterbox_server.errors import GenerationCancelledError, InvalidInputError, ModelLoadError, VoiceNotFoundError
from chatterbox_server.model import sessions as onnx_sessions
from chatterbox_server.model.contract import numpy_type
from chatterbox_server.text import DEFAULT_FIRST_MAX_CHARS, DEFAULT_MAX_CHARS, TextPiece, split_text

logger = logging.getLogger(__name__)

SAMPLE_RATE_HZ = audio.SAMPLE_RATE_HZ  # 24 000
CPU_MAX_BATCH_SIZE = 8  # see the README's batching table: past 8 rows a 2-core step grows ~linearly
CUDA_MAX_BATCH_SIZE = 32  # a GPU step stays bandwidth-bound well past 32 rows of GPT-2 medium
CUDA_DECODER_BATCH_ROWS = 16  # rows per decoder call where the probe finds batching pays
CPU_DECODER_BATCH_ROWS = 4
CUDA_STAGE_TURNS = "never"  # GPU kernels of the two stages overlap; neither needs the other's cores
CPU_STAGE_TURNS = "always"  # both stages want every core: taking turns beat splitting them (README)
MAX_TEMPERATURE = 10.0
MAX_PIECE_TEXT_TOKENS = 200  # a 250-character piece of plain text is ~60 tokens
MAX_REPETITION_PENALTY = 10.0

Voice = str | VoiceEmbedding | bytes | Path  # a cached id, encoder outputs, or a clip's bytes/path


class TTSEngine:
    """Loads the four graphs once; `encode_voice` and `synthesize` may run concurrently."""

    def __init__(self, config: TTSConfig | None = None, observer: EngineObserver | None = None):
        self.config = config = config or TTSConfig()
        self.device, self.model_dtype, self.encoder_dtype, self.files = locate_model(config)
        watermarker = load_watermarker() if config.apply_watermark else None
        try:
            tokenizer = Tokenizer.from_file(str(self.files.tokenizer))
        except Exception as e:  # tokenizers raises a bare Exception on bad JSON
            raise ModelLoadError(f"cannot load {self.files.tokenizer}: {e}") from e
        settings = onnx_sessions.SessionSettings(
            device=self.device,
            device_id=config.device_id,
            gpu_mem_limit_bytes=config.gpu_mem_limit_bytes,
            intra_op_threads=config.intra_op_threads,
            inter_op_threads=config.inter_op_threads,
        )
        threads = {"embed_tokens": config.lm_threads, "language_model": config.lm_threads}
        threads["conditional_decoder"] = config.decoder_threads
        self._sessions = {}
        for name, path in self.files.graphs.items():
            own = threads.get(name)
            graph_settings = settings if own is None else replace(settings, intra_op_threads=own)
            self._sessions[name] = onnx_sessions.create_session(path, graph_settings)
        self.providers = {name: s.get_providers() for name, s in self._sessions.items()}
        kv_on_device = self.device == "cuda" if config.kv_on_device is None else config.kv_on_device
        self._lm = LanguageModel(
            self._sessions["embed_tokens"],
            self._sessions["language_model"],
            kv_device=self.device if kv_on_device else None,
            device_id=config.device_id,
        )
        self._tokenizer = TextTokenizer(tokenizer, config.normalize_text)
        self._vocoder = Vocoder(self._sessions["conditional_decoder"], watermarker, config.decoder_prompt_cap_tokens)
        self.decoder_batch_rows, self.decoder_probe = self._choose_decoder_batch(config.decoder_batch_rows)
        self.stage_turns = (
            config.stage_turns
            if config.stage_turns != "auto"
            else (CUDA_STAGE_TURNS if self.device == "cuda" else CPU_STAGE_TURNS)
        )
        self._encoder_input = self._sessions["speech_encoder"].get_inputs()[0]
        self.voices = VoiceCache(config.voice_cache_size)
        self.max_batch_size = config.max_batch_size or (
            CUDA_MAX_BATCH_SIZE if self.device == "cuda" else CPU_MAX_BATCH_SIZE
        )
        growth = config.window_growth or (GPU_WINDOW_GROWTH if self.device == "cuda" else CPU_WINDOW_GROWTH)
        core_config = CoreConfig(
            scheduler=SchedulerConfig(self.max_batch_size, config.prefill_token_budget),
            max_parallel_pieces=config.max_parallel_pieces,
            prefix_cache_bytes=config.prefix_cache_bytes,
            windows=replace(config.windows, max_batch_rows=self.decoder_batch_rows, window_growth=growth),
            stage_turns=self.stage_turns,
        )
        self._core = EngineCore(self._lm, self._embed_text, self._vocoder, self._new_sequence, core_config, observer)
        logger.info(
            "engine ready: %s (%s, encoder %s) on %s; %d layers, KV %s%s",
            self.files.root,
            self.model_dtype,
            self.encoder_dtype,
            self.active_providers,
            self.num_layers,
            self.kv_dtype.name,
            " [STAND-IN weights: speaks tones, not words]" if self.is_stand_in else "",
        )

    def _choose_decoder_batch(self, requested: int) -> tuple[int, BatchProbe | None]:
        """Rows per decoder call: as configured, or (0) batched only where the probe finds it exact
        and faster on this device."""
        if requested:
            return requested, None
        probe = probe_batching(self._vocoder)
        rows = (CUDA_DECODER_BATCH_ROWS if self.device == "cuda" else CPU_DECODER_BATCH_ROWS) if probe.worth_it else 1
        logger.info("decoder batching probe: %s -> up to %d row(s) per call", probe.detail, rows)
        return rows, probe

    # ----- introspection -------------------------------------------------------------------

    @property
    def active_providers(self) -> list[str]:
        """Providers in use by any graph, most capable first (a CPU fallback shows up here)."""
        seen: list[str] = []
        for providers in self.providers.values():
            seen += [p for p in providers if p not in seen]
        return seen

    @property
    def is_stand_in(self) -> bool:
        return self.files.is_stand_in

    @property
    def kv_dtype(self) -> np.dtype:
        return np.dtype(self._lm.spec.kv_dtype)

    @property
    def kv_on_device(self) -> bool:
        """True when the KV cache stays on the device between steps (IO binding)."""
        return self._lm.kv.on_device

    @property
    def num_layers(self) -> int:
        return self._lm.spec.num_layers

    # ----- voices --------------------------------------------------------------------------

    def encode_voice(self, source: str | Path | bytes, voice_id: str | None = None) -> tuple[str, VoiceEmbedding]:
        """Encode a reference clip and cache it under `voice_id` (default: its content hash).

        Returns (id, embedding). Without an explicit id, a clip already cached by content is
        not encoded again.
        """
        data = audio.read_audio_bytes(source)
        content_hash = hashlib.sha256(data).hexdigest()
        key = voice_id or content_hash
        if voice_id is None:
            cached = self.voices.get(key)
            if cached is not None:
                return key, cached
        clip = audio.prepare_reference_audio(data, max_seconds=self.config.max_voice_seconds)
        voice = self.encode_audio(clip, content_hash)
        self.voices.put(key, voice)
        return key, voice

    def encode_audio(self, clip: np.ndarray, content_hash: str = "") -> VoiceEmbedding:
        """Run speech_encoder on mono float32 [samples] at 24 kHz (outputs read by position)."""
        session = self._sessions["speech_encoder"]
        batch: np.ndarray = clip[None, :].astype(numpy_type(self._encoder_input.type, "audio_values"))
        outputs = session.run(None, {self._encoder_input.name: batch})
        if len(outputs) < 4:
            raise ModelLoadError(f"speech_encoder returned {len(outputs)} outputs, expected 4")
        features, tokens, speaker_embeddings, speaker_features = outputs[:4]
        return VoiceEmbedding(
            audio_features=np.asarray(features, dtype=np.float32),
            audio_tokens=np.asarray(tokens, dtype=np.int64),
            speaker_embeddings=np.asarray(speaker_embeddings, dtype=np.float32),
            speaker_features=np.asarray(speaker_features, dtype=np.float32),
            content_hash=content_hash,
            duration_s=clip.shape[0] / SAMPLE_RATE_HZ,
        )

    def get_voice(self, voice_id: str) -> VoiceEmbedding:
        voice = self.voices.get(voice_id)
        if voice is None:
            raise VoiceNotFoundError(f"voice {voice_id!r} is not registered")
        return voice

    # ----- text ----------------------------------------------------------------------------

    def tokenize(self, text: str, normalize: bool | None = None) -> np.ndarray:
        """Text → int64 [n] token ids (special tokens on, ids passed through unchanged)."""
        return self._tokenizer.tokenize(text, normalize)

    def plan(
        self,
        text: str,
        options: GenerationOptions | None = None,
        max_chars: int = DEFAULT_MAX_CHARS,
        first_max_chars: int | None = DEFAULT_FIRST_MAX_CHARS,
    ) -> SpeechPlan:
        """Check a request once: options in range, text split into pieces and tokenized.

        Raises InvalidInputError for empty text or an option out of range, before any model call.
        A piece that tokenizes to more than MAX_PIECE_TEXT_TOKENS (say, 250 emoji of 4 byte
        tokens each) is split further, so no prompt grows past what a piece should cost.
        """
        options = options or GenerationOptions()
        self._new_sequence_params(options)
        pieces = split_text(text, max_chars, first_max_chars) if isinstance(text, str) else []
        if not pieces:
            raise InvalidInputError("text is empty")
        planned = [p for piece in pieces for p in self._plan_piece(piece, options)]
        return SpeechPlan(tuple(planned), options)

    def _plan_piece(self, piece: TextPiece, options: GenerationOptions) -> list[PlannedPiece]:
        ids = self.tokenize(piece.text, options.normalize_text)
        if ids.shape[0] <= MAX_PIECE_TEXT_TOKENS or len(piece.text) < 2:
            return [PlannedPiece(piece, ids)]
        halves = split_text(piece.text, max(1, len(piece.text) // 2), None)
        shifted = [TextPiece(h.text, piece.start + h.start, piece.start + h.end) for h in halves]
        if len(shifted) < 2:  # nothing to split at: cut the characters in half
            middle = len(piece.text) // 2
            shifted = [
                TextPiece(piece.text[:middle], piece.start, piece.start + middle),
                TextPiece(piece.text[middle:], piece.start + middle, piece.end),
            ]
        return [p for half in shifted for p in self._plan_piece(half, options)]

    # ----- synthesis -----------------------------------------------------------------------

    @property
    def prefix_cache(self) -> PrefixCache:
        """The voice-prefix KV cache (stats, size, discard)."""
        return self._core.prefix_cache

    @property
    def core(self) -> EngineCore:
        """The engine loop (for introspection and deterministic tests that drive its steps)."""
        return self._core

    @property
    def load(self) -> tuple[int, int]:
        """(sequences waiting for a batch slot, sequences in the running batch), approximately."""
        return self._core.waiting_count(), self._core.running_count()

    def set_observer(self, observer: EngineObserver) -> None:
        """Report loop steps and first tokens to `observer` (the server's metrics)."""
        self._core.observer = observer

    def forget_voice(self, content_hash: str) -> bool:
        """Drop the cached prefix KV of the voice made from this clip (deleted or re-registered)."""
        return self._core.prefix_cache.discard(content_hash)

    def submit(self, request: GenerationRequest) -> Iterator[Output]:
        """Queue a request on the engine loop; iterate to receive its audio in order (blocking).

        Leaving the iteration early, or setting request.cancel, stops it within one step.
        """
        outputs: SyncOutputs[Output] = SyncOutputs()
        self._core.submit(request, outputs)
        return self._read(request, outputs)

    @staticmethod
    def _read(request: GenerationRequest, outputs: SyncOutputs[Output]) -> Iterator[Output]:
        try:
            for item in outputs:
                if request.cancel.is_set():
                    raise GenerationCancelledError("synthesis cancelled")
                yield item
        finally:
            if not outputs.finished:
                request.cancel.set()

    async def generate(self, request: GenerationRequest) -> AsyncIterator[Output]:
        """The server's front: queue a request and receive its audio chunks as they are spoken.

        Closing the iterator (a client that left) or abort(request_id) stops it within one step.
        """
        outputs: AsyncOutputs[Output] = AsyncOutputs()
        self._core.submit(request, outputs)
        try:
            async for item in outputs:
                yield item
        finally:
            if not outputs.finished:
                request.cancel.set()

    def abort(self, request_id: str) -> bool:
        """Stop a submitted request within one step; False if it is not running."""
        return self._core.abort(request_id)

    def synthesize(
        self,
        text: str,
        voice: Voice,
        options: GenerationOptions | None = None,
        cancel: threading.Event | None = None,
    ) -> SynthesisResult:
        """Speak `text` in one piece in `voice`: a cached voice id (str), encoder outputs, or a
        reference clip as bytes or a Path (encoded and cached by content hash)."""
        request = SynthesisRequest(text, voice, options or GenerationOptions())
        return self.synthesize_batch([request], cancel)[0]

    def synthesize_batch(
        self, requests: list[SynthesisRequest], cancel: threading.Event | None = None
    ) -> list[SynthesisResult]:
        """Speak several requests, each in one piece; submitted together, they share decode steps."""
        if not requests:
            return []
        cancel = cancel or threading.Event()
        streams = []
        for r in requests:
            voice, encode_s = self._voice_of(r.voice)
            plan = self._single_piece_plan(r.text, r.options)
            streams.append((self.submit(GenerationRequest(plan, voice, cancel=cancel)), encode_s))
        results = []
        for stream, encode_s in streams:
            (spoken,) = list(stream)
            assert isinstance(spoken, SpokenPiece)
            timings = replace(
                spoken.result.timings, voice_encode_s=encode_s, total_s=spoken.result.timings.total_s + encode_s
            )
            results.append(replace(spoken.result, timings=timings))
        return results

    def _single_piece_plan(self, text: str, options: GenerationOptions) -> SpeechPlan:
        self._new_sequence_params(options)
        ids = self.tokenize(text, options.normalize_text)
        return SpeechPlan((PlannedPiece(TextPiece(text, 0, len(text)), ids),), options)

    def synthesize_stream(
        self,
        text: str | SpeechPlan,
        voice: Voice,
        options: GenerationOptions | None = None,
        cancel: threading.Event | None = None,
        max_chars: int = DEFAULT_MAX_CHARS,
        first_max_chars: int | None = DEFAULT_FIRST_MAX_CHARS,
    ) -> Iterator[SpokenPiece]:
        """Speak a text of any length piece by piece (sentences, then clauses; a short first
        piece), yielding each SpokenPiece in order as soon as it is ready. Every piece ends in the
        decoder's SILENCE padding, a natural pause; 10 ms fades keep the seams click-free."""
        plan = text if isinstance(text, SpeechPlan) else self.plan(text, options, max_chars, first_max_chars)
        request = GenerationRequest(plan, self._voice_of(voice)[0], cancel=cancel or threading.Event())
        for item in self.submit(request):
            assert isinstance(item, SpokenPiece)
            yield item

    def stream_chunks(
        self,
        text: str | SpeechPlan,
        voice: Voice,
        options: GenerationOptions | None = None,
        cancel: threading.Event | None = None,
    ) -> Iterator[AudioChunk]:
        """Like synthesize_stream, but each piece's audio also leaves in token windows while it
        is generated (the vocoder stage's WindowPolicy: a small first window, then growing ones).
        A piece's chunks add up to exactly its synthesize() length; only its last chunk carries
        the SILENCE padding and the piece's SynthesisResult."""
        plan = text if isinstance(text, SpeechPlan) else self.plan(text, options)
        request = GenerationRequest(plan, self._voice_of(voice)[0], chunked=True, cancel=cancel or threading.Event())
        for item in self.submit(request):
            assert isinstance(item, AudioChunk)
            yield item

    def synthesize_long(
        self,
        text: str | SpeechPlan,
        voice: Voice,
        options: GenerationOptions | None = None,
        cancel: threading.Event | None = None,
    ) -> LongSynthesisResult:
        """synthesize_stream, collected: the joined waveform with per-piece timings."""
        started = time.perf_counter()
        pieces: list[SpokenPiece] = []
        first_audio_s = 0.0
        for spoken in self.synthesize_stream(text, voice, options, cancel):
            if not pieces:
                first_audio_s = time.perf_counter() - started
            pieces.append(spoken)
        return LongSynthesisResult(
            waveform=np.concatenate([p.waveform for p in pieces]),
            pieces=pieces,
            total_s=time.perf_counter() - started,
            time_to_first_audio_s=first_audio_s,
        )

    def _embed_text(self, ids: np.ndarray) -> np.ndarray:
        """int64 [n] text ids → float [n, hidden]."""
        return self._lm.embed(ids[None, :])[0]

    def decode_speech_tokens(
        self, speech_tokens: np.ndarray, voice: VoiceEmbedding, pad_silence: bool = True
    ) -> np.ndarray:
        """int64 [n] speech tokens → float32 [(n + 3) × 960] waveform in the voice."""
        return self._vocoder.decode(speech_tokens, voice, pad_silence)

    def _voice_of(self, voice: Voice) -> tuple[VoiceEmbedding, float]:
        """The voice's encoder outputs and the seconds spent encoding it (0 when cached)."""
        if isinstance(voice, VoiceEmbedding):
            return voice, 0.0
        if isinstance(voice, str):
            return self.get_voice(voice), 0.0
        started = time.perf_counter()
        return self.encode_voice(voice)[1], time.perf_counter() - started

    def _new_sequence_params(self, options: GenerationOptions) -> tuple[SamplingParams, int]:
        """The sampling parameters and token limit of `options`, checked (InvalidInputError)."""
        params = self._sampling_params(options)
        max_new = self.config.max_new_tokens if options.max_new_tokens is None else options.max_new_tokens
        if not 1 <= max_new <= self.config.max_new_tokens:
            raise InvalidInputError(f"max_new_tokens must be between 1 and {self.config.max_new_tokens}, got {max_new}")
        return params, max_new

    def _new_sequence(self, state: RequestState, piece_index: int) -> Sequence:
        """A fresh decode row for one piece (its own generator, seeded as the request asks)."""
        plan = state.request.plan
        params, max_new = self._new_sequence_params(plan.options)
        rng = None if params.greedy else np.random.default_rng(params.seed)
        return Sequence(state, piece_index, plan.pieces[piece_index].token_ids, params, max_new, rng)

    def _sampling_params(self, options: GenerationOptions) -> SamplingParams:
        params = SamplingParams(
            temperature=0.0 if options.temperature is None else float(options.temperature),
            top_k=0 if options.top_k is None else int(options.top_k),
            top_p=1.0 if options.top_p is None else float(options.top_p),
            repetition_penalty=(
                self.config.repetition_penalty
                if options.repetition_penalty is None
                else float(options.repetition_penalty)
            ),
            seed=options.seed,
        )
        checks = [
            (
                np.isfinite(params.temperature) and 0.0 <= params.temperature <= MAX_TEMPERATURE,
                f"temperature must be between 0 and {MAX_TEMPERATURE:g}",
            ),
            (params.top_k >= 0, "top_k must be 0 (off) or positive"),
            (0.0 < params.top_p <= 1.0, "top_p must be in (0, 1]"),
            (
                np.isfinite(params.repetition_penalty) and 0.0 < params.repetition_penalty <= MAX_REPETITION_PENALTY,
                f"repetition_penalty must be in (0, {MAX_REPETITION_PENALTY:g}]",
            ),
            (params.seed is None or 0 <= params.seed < 2**63, "seed must be a non-negative integer"),
        ]
        for ok, message in checks:
            if not ok:
                raise InvalidInputError(message)
        return params

    def close(self) -> None:
        """Stop the engine loop and release the sessions (and their device memory)."""
        self._core.close()
        self._sessions.clear()
