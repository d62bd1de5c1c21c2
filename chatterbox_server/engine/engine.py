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
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from chatterbox_server import audio
from chatterbox_server.engine.config import TTSConfig, locate_model
from chatterbox_server.engine.decode_loop import DecodeClock, LanguageModel, Sequence, decode_steps
from chatterbox_server.engine.prompt import PromptBuilder
from chatterbox_server.engine.sampling import SamplingParams
from chatterbox_server.engine.types import (
    AudioChunk,
    GenerationOptions,
    LongSynthesisResult,
    PlannedPiece,
    SpeechPlan,
    SpokenPiece,
    StageTimings,
    SynthesisRequest,
    SynthesisResult,
)
from chatterbox_server.engine.vocoder import (
    STREAM_CHUNK_TOKENS,
    STREAM_FIRST_CHUNK_TOKENS,
    Vocoder,
    load_watermarker,
    speech_tokens_of,
)
from chatterbox_server.engine.voices import VoiceCache, VoiceEmbedding
from chatterbox_server.errors import InvalidInputError, ModelLoadError, VoiceNotFoundError
from chatterbox_server.model import sessions as onnx_sessions
from chatterbox_server.model.contract import START_SPEECH_TOKEN, numpy_type
from chatterbox_server.text import DEFAULT_FIRST_MAX_CHARS, DEFAULT_MAX_CHARS, TextPiece, split_text

logger = logging.getLogger(__name__)

SAMPLE_RATE_HZ = audio.SAMPLE_RATE_HZ  # 24 000
MAX_TEMPERATURE = 10.0
MAX_REPETITION_PENALTY = 10.0

Voice = str | VoiceEmbedding | bytes | Path  # a cached id, encoder outputs, or a clip's bytes/path


class TTSEngine:
    """Loads the four graphs once; `encode_voice` and `synthesize` may run concurrently."""

    def __init__(self, config: TTSConfig | None = None):
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
        self._sessions = {
            name: onnx_sessions.create_session(path, settings) for name, path in self.files.graphs.items()
        }
        self.providers = {name: s.get_providers() for name, s in self._sessions.items()}
        self._lm = LanguageModel(self._sessions["embed_tokens"], self._sessions["language_model"])
        self._prompts = PromptBuilder(tokenizer, self._lm, config.normalize_text)
        self._vocoder = Vocoder(self._sessions["conditional_decoder"], watermarker)
        self._encoder_input = self._sessions["speech_encoder"].get_inputs()[0]
        self.voices = VoiceCache(config.voice_cache_size)
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
        return self._prompts.tokenize(text, normalize)

    def plan(
        self,
        text: str,
        options: GenerationOptions | None = None,
        max_chars: int = DEFAULT_MAX_CHARS,
        first_max_chars: int | None = DEFAULT_FIRST_MAX_CHARS,
    ) -> SpeechPlan:
        """Check a request once: options in range, text split into pieces and tokenized.

        Raises InvalidInputError for empty text or an option out of range, before any model call.
        """
        options = options or GenerationOptions()
        self._new_sequence(options)
        pieces = split_text(text, max_chars, first_max_chars) if isinstance(text, str) else []
        if not pieces:
            raise InvalidInputError("text is empty")
        planned = tuple(PlannedPiece(p, self.tokenize(p.text, options.normalize_text)) for p in pieces)
        return SpeechPlan(planned, options)

    # ----- synthesis -----------------------------------------------------------------------

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
        piece), yielding each SpokenPiece as soon as it is ready. Every piece ends in the
        decoder's SILENCE padding, a natural pause; 10 ms fades keep the seams click-free."""
        plan = text if isinstance(text, SpeechPlan) else self.plan(text, options, max_chars, first_max_chars)
        voice_embedding = self._voice_of(voice)[0]
        position_s = 0.0
        for planned in plan.pieces:
            result = self._synthesize_tokens([planned.token_ids], [voice_embedding], [plan.options], cancel)[0]
            spoken = SpokenPiece(planned.piece, audio.fade_edges(result.waveform), position_s, result)
            position_s = spoken.end_s
            yield spoken

    def stream_chunks(
        self,
        text: str | SpeechPlan,
        voice: Voice,
        options: GenerationOptions | None = None,
        cancel: threading.Event | None = None,
    ) -> Iterator[AudioChunk]:
        """Like synthesize_stream, but each piece's audio also leaves in token windows while it
        is generated: a first chunk after STREAM_FIRST_CHUNK_TOKENS tokens, then every
        STREAM_CHUNK_TOKENS. A piece's chunks add up to exactly its synthesize() length; only
        its last chunk carries the SILENCE padding and the piece's SynthesisResult."""
        plan = text if isinstance(text, SpeechPlan) else self.plan(text, options)
        voice_embedding = self._voice_of(voice)[0]
        for planned in plan.pieces:
            yield from self._stream_piece(planned, voice_embedding, plan.options, cancel)

    def _stream_piece(
        self, planned: PlannedPiece, voice: VoiceEmbedding, options: GenerationOptions, cancel: threading.Event | None
    ) -> Iterator[AudioChunk]:
        started = time.perf_counter()
        piece: TextPiece = planned.piece
        row = self._new_sequence(options)
        prompt = self._prompts.build(planned.token_ids, voice)
        clock, vocoder_s = DecodeClock(), 0.0
        sent, held, chunks = 0, np.zeros(0, np.float32), []
        for _ in decode_steps(self._lm, [prompt], [row], cancel, clock):
            tokens = speech_tokens_of(row.tokens)
            window = STREAM_FIRST_CHUNK_TOKENS if sent == 0 else STREAM_CHUNK_TOKENS
            if row.done or len(tokens) - sent < window:
                continue
            decode_started = time.perf_counter()
            chunk, held = self._vocoder.decode_window(tokens, sent, voice, held, final=False)
            vocoder_s += time.perf_counter() - decode_started
            chunk = audio.fade_in(chunk) if sent == 0 else chunk
            sent = len(tokens)
            chunks.append(chunk)
            yield AudioChunk(piece, chunk)
        tokens = speech_tokens_of(row.tokens)
        decode_started = time.perf_counter()
        chunk, _ = self._vocoder.decode_window(tokens, sent, voice, held, final=True)
        vocoder_s += time.perf_counter() - decode_started
        chunk = audio.fade_out(audio.fade_in(chunk) if sent == 0 else chunk)
        chunks.append(chunk)
        result = SynthesisResult(
            waveform=np.concatenate(chunks),
            speech_tokens=tokens,
            tokens_generated=len(row.tokens) - 1,
            stopped=row.stopped,
            timings=StageTimings(
                prefill_s=clock.prefill_s,
                decode_s=clock.decode_s,
                vocoder_s=vocoder_s,
                total_s=time.perf_counter() - started,
                decode_steps=clock.steps,
            ),
        )
        yield AudioChunk(piece, chunk, result)

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

    def synthesize_batch(
        self, requests: list[SynthesisRequest], cancel: threading.Event | None = None
    ) -> list[SynthesisResult]:
        """Speak several requests, each in one piece, with one shared decode loop (left-padded batch)."""
        if not requests:
            return []
        started = time.perf_counter()  # voice encoding counts in each result's total
        voices, encode_times = zip(*(self._voice_of(r.voice) for r in requests))
        token_ids = [self.tokenize(r.text, r.options.normalize_text) for r in requests]
        return self._synthesize_tokens(
            token_ids, list(voices), [r.options for r in requests], cancel, encode_times, started
        )

    def _synthesize_tokens(
        self,
        token_ids: list[np.ndarray],
        voices: list[VoiceEmbedding],
        options: list[GenerationOptions],
        cancel: threading.Event | None,
        encode_times: tuple[float, ...] | None = None,
        started: float | None = None,
    ) -> list[SynthesisResult]:
        """Prefill and decode token ids (int64 [n] each) as one batch, then vocode each row."""
        started = time.perf_counter() if started is None else started
        rows = [self._new_sequence(o) for o in options]
        prompts = [self._prompts.build(ids, voice) for ids, voice in zip(token_ids, voices)]
        clock = DecodeClock()
        for _ in decode_steps(self._lm, prompts, rows, cancel, clock):
            pass
        results = []
        for row, voice, encode_s in zip(rows, voices, encode_times or (0.0,) * len(rows)):
            vocoder_started = time.perf_counter()
            speech_tokens = speech_tokens_of(row.tokens)
            waveform = self._vocoder.decode(speech_tokens, voice)
            timings = StageTimings(
                voice_encode_s=encode_s,
                prefill_s=clock.prefill_s,
                decode_s=clock.decode_s,
                vocoder_s=time.perf_counter() - vocoder_started,
                total_s=time.perf_counter() - started,
                decode_steps=clock.steps,
            )
            results.append(
                SynthesisResult(
                    waveform=waveform,
                    speech_tokens=speech_tokens,
                    tokens_generated=len(row.tokens) - 1,
                    stopped=row.stopped,
                    timings=timings,
                )
            )
        return results

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

    def _new_sequence(self, options: GenerationOptions) -> Sequence:
        params = self._sampling_params(options)
        max_new = self.config.max_new_tokens if options.max_new_tokens is None else options.max_new_tokens
        if not 1 <= max_new <= self.config.max_new_tokens:
            raise InvalidInputError(f"max_new_tokens must be between 1 and {self.config.max_new_tokens}, got {max_new}")
        rng = None if params.greedy else np.random.default_rng(params.seed)
        return Sequence(params=params, max_new_tokens=max_new, rng=rng, tokens=[START_SPEECH_TOKEN])

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
        """Release the sessions (and their device memory)."""
        self._sessions.clear()
