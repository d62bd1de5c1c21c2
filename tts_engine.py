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
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

import audio_io
import model_files
import onnx_sessions
from errors import (
    GenerationCancelledError,
    InvalidInputError,
    ModelLoadError,
    VoiceNotFoundError,
)
from sampling import SamplingParams, select_next_tokens
from text_normalize import normalize_text
from synthesis_types import (  # noqa: F401  (re-exported: the engine's public types)
    AudioChunk,
    GenerationOptions,
    LongSynthesisResult,
    SpokenPiece,
    StageTimings,
    SynthesisRequest,
    SynthesisResult,
)
from text_split import DEFAULT_FIRST_MAX_CHARS, DEFAULT_MAX_CHARS, TextPiece, split_text
from voice_cache import VoiceCache, VoiceEmbedding

logger = logging.getLogger(__name__)

SAMPLE_RATE_HZ = audio_io.SAMPLE_RATE_HZ  # 24 000
SAMPLES_PER_TOKEN = 960  # 25 speech tokens per second of audio
START_SPEECH_TOKEN = 6561
STOP_SPEECH_TOKEN = 6562
SILENCE_TOKEN = 4299
SPEECH_VOCAB_SIZE = 6563  # logits' last dim: 6561 speech codes + START + STOP
SILENCE_PADDING_TOKENS = 3  # appended before the decoder so speech does not end abruptly
DEFAULT_MAX_NEW_TOKENS = 1024  # ≈ 41 s of audio
KV_HEADS, KV_HEAD_DIM = 16, 64  # GPT-2 medium: 16 heads × 64 = 1024 wide
# Token-window streaming: decode every few tokens, re-decoding some left context so a chunk
# starts in tune, and blend the seam.
STREAM_FIRST_CHUNK_TOKENS = 12  # ≈ 0.5 s of audio: the first sound leaves early
STREAM_CHUNK_TOKENS = 40  # ≈ 1.6 s per later chunk: few decoder calls
STREAM_CONTEXT_TOKENS = 10  # left context re-decoded with each chunk
STREAM_CROSSFADE_SAMPLES = 480  # 20 ms blend of the two renderings of a seam

_ORT_TO_NUMPY = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
}
_DECODER_INPUTS = ("speech_tokens", "speaker_embeddings", "speaker_features")
_LM_INPUTS = ("inputs_embeds", "attention_mask", "position_ids")


@dataclass(frozen=True)
class TTSConfig:
    """Engine settings. Paths and ids choose the model; the rest are defaults per request."""

    model_dir: str | Path | None = None  # a local copy in the hub repo's layout
    model_id: str = model_files.DEFAULT_MODEL_ID  # used when model_dir is None
    revision: str | None = None
    model_dtype: str = "auto"  # fp32, fp16, q8, q4, q4f16; auto: fp16 on CUDA, q4 on CPU
    encoder_dtype: str | None = None  # speech_encoder's own dtype (None: model_dtype)
    device: str = "auto"  # auto, cuda, cpu
    device_id: int = 0
    gpu_mem_limit_bytes: int | None = None
    intra_op_threads: int = 0  # 0 lets ONNX Runtime choose
    inter_op_threads: int = 0
    voice_cache_size: int = 100
    max_voice_seconds: float = 30.0
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS  # also the ceiling a request may ask for
    repetition_penalty: float = 1.2
    normalize_text: bool = True
    apply_watermark: bool = False


@dataclass(frozen=True)
class _LanguageModelSpec:
    """What the contract leaves open, read from the language_model session."""

    past_names: tuple[str, ...]  # past_key_values.{i}.key/.value in input order
    present_names: tuple[str, ...]  # present.{i}.key/.value, same order
    kv_dtype: type
    num_heads: int
    head_dim: int
    embeds_dtype: type

    @property
    def num_layers(self) -> int:
        return len(self.past_names) // 2


@dataclass
class _Row:
    """Decode state of one sequence in a batch."""

    params: SamplingParams
    max_new_tokens: int
    rng: np.random.Generator | None
    tokens: list[int]  # START first, then every generated id
    stopped: bool = False

    @property
    def done(self) -> bool:
        return self.stopped or len(self.tokens) - 1 >= self.max_new_tokens


@dataclass
class _Clock:
    """Where a generation's time went (filled in as it runs)."""

    prefill_s: float = 0.0
    decode_s: float = 0.0
    steps: int = 0


def _numpy_type(ort_type: str, what: str) -> type:
    try:
        return _ORT_TO_NUMPY[ort_type]
    except KeyError:
        raise ModelLoadError(f"{what} has unsupported type {ort_type}") from None


def resolve_device(device: str, device_id: int = 0) -> str:
    if device not in ("auto", "cuda", "cpu"):
        raise ModelLoadError(f"unknown device {device!r}; choose auto, cuda or cpu")
    if device == "auto":
        return "cuda" if onnx_sessions.cuda_is_usable(device_id) else "cpu"
    return device


def resolve_dtype(dtype: str, device: str) -> str:
    if dtype == "auto":
        return "fp16" if device == "cuda" else "q4"
    if dtype not in model_files.MODEL_DTYPES:
        raise ModelLoadError(
            f"unknown model dtype {dtype!r}; choose auto or one of {', '.join(model_files.MODEL_DTYPES)}"
        )
    return dtype


def locate_model(config: TTSConfig) -> tuple[str, str, str, model_files.ModelFiles]:
    """Resolve device and dtypes, then find (or download) every file they need.

    Returns (device, model dtype, encoder dtype, files); ModelLoadError names what is missing.
    """
    device = resolve_device(config.device, config.device_id)
    model_dtype = resolve_dtype(config.model_dtype, device)
    encoder_dtype = resolve_dtype(config.encoder_dtype or model_dtype, device)
    graph_dtypes = {g: model_dtype for g in model_files.GRAPH_NAMES}
    graph_dtypes["speech_encoder"] = encoder_dtype
    files = model_files.resolve_model_files(graph_dtypes, config.model_dir, config.model_id, config.revision)
    return device, model_dtype, encoder_dtype, files


class TTSEngine:
    """Loads the four graphs once; `encode_voice` and `synthesize` may run concurrently."""

    def __init__(self, config: TTSConfig | None = None):
        self.config = config = config or TTSConfig()
        self.device, self.model_dtype, self.encoder_dtype, self.files = locate_model(config)
        self._watermarker = _load_watermarker() if config.apply_watermark else None
        try:
            self.tokenizer = Tokenizer.from_file(str(self.files.tokenizer))
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
            name: onnx_sessions.create_session(path, settings)
            for name, path in self.files.graphs.items()
        }
        self.providers = {name: s.get_providers() for name, s in self._sessions.items()}
        self._lm_spec = self._read_language_model_spec()
        self._decoder_types = self._read_decoder_types()
        self._encoder_input = self._sessions["speech_encoder"].get_inputs()[0]
        self._embed_input = self._sessions["embed_tokens"].get_inputs()[0].name
        self.voices = VoiceCache(config.voice_cache_size)
        logger.info(
            "engine ready: %s (%s, encoder %s) on %s; %d layers, KV %s%s",
            self.files.root, self.model_dtype, self.encoder_dtype, self.active_providers,
            self._lm_spec.num_layers, np.dtype(self._lm_spec.kv_dtype).name,
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
        return np.dtype(self._lm_spec.kv_dtype)

    @property
    def num_layers(self) -> int:
        return self._lm_spec.num_layers

    def _read_language_model_spec(self) -> _LanguageModelSpec:
        session = self._sessions["language_model"]
        inputs = {i.name: i for i in session.get_inputs()}
        outputs = {o.name for o in session.get_outputs()}
        missing = [n for n in _LM_INPUTS if n not in inputs] + [n for n in ["logits"] if n not in outputs]
        past = [i for i in session.get_inputs() if i.name.startswith("past_key_values.")]
        presents = tuple(i.name.replace("past_key_values", "present", 1) for i in past)
        missing += [n for n in presents if n not in outputs]
        if missing or not past:
            raise ModelLoadError(
                f"language_model does not match the Chatterbox Turbo contract; missing {missing or 'KV inputs'}"
            )
        first = past[0]
        if len(first.shape) != 4:
            raise ModelLoadError(f"unexpected KV rank {first.shape} for {first.name}")
        heads, head_dim = first.shape[1], first.shape[3]
        if not (isinstance(heads, int) and isinstance(head_dim, int)):
            # an export may leave them symbolic; the contract fixes them for this model
            logger.warning("KV dims of %s are symbolic (%s); using %d heads x %d",
                           first.name, first.shape, KV_HEADS, KV_HEAD_DIM)
            heads, head_dim = KV_HEADS, KV_HEAD_DIM
        return _LanguageModelSpec(
            past_names=tuple(i.name for i in past),
            present_names=presents,
            kv_dtype=_numpy_type(first.type, first.name),
            num_heads=heads,
            head_dim=head_dim,
            embeds_dtype=_numpy_type(inputs["inputs_embeds"].type, "inputs_embeds"),
        )

    def _read_decoder_types(self) -> dict[str, type]:
        inputs = {i.name: i for i in self._sessions["conditional_decoder"].get_inputs()}
        missing = [n for n in _DECODER_INPUTS if n not in inputs]
        if missing:
            raise ModelLoadError(f"conditional_decoder lacks inputs {missing}")
        return {n: _numpy_type(inputs[n].type, n) for n in _DECODER_INPUTS}

    # ----- voices --------------------------------------------------------------------------

    def encode_voice(
        self, source: str | Path | bytes, voice_id: str | None = None
    ) -> tuple[str, VoiceEmbedding]:
        """Encode a reference clip and cache it under `voice_id` (default: its content hash).

        Returns (id, embedding). Without an explicit id, a clip already cached by content is
        not encoded again.
        """
        data = audio_io.read_audio_bytes(source)
        content_hash = hashlib.sha256(data).hexdigest()
        key = voice_id or content_hash
        if voice_id is None:
            cached = self.voices.get(key)
            if cached is not None:
                return key, cached
        audio = audio_io.prepare_reference_audio(data, max_seconds=self.config.max_voice_seconds)
        voice = self.encode_audio(audio, content_hash)
        self.voices.put(key, voice)
        return key, voice

    def encode_audio(self, audio: np.ndarray, content_hash: str = "") -> VoiceEmbedding:
        """Run speech_encoder on mono float32 [samples] at 24 kHz (outputs read by position)."""
        session = self._sessions["speech_encoder"]
        batch = audio[None, :].astype(_numpy_type(self._encoder_input.type, "audio_values"))
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
            duration_s=audio.shape[0] / SAMPLE_RATE_HZ,
        )

    def get_voice(self, voice_id: str) -> VoiceEmbedding:
        voice = self.voices.get(voice_id)
        if voice is None:
            raise VoiceNotFoundError(f"voice {voice_id!r} is not registered")
        return voice

    # ----- text ----------------------------------------------------------------------------

    def tokenize(self, text: str, normalize: bool | None = None) -> np.ndarray:
        """Text → int64 [n] token ids (special tokens on, ids passed through unchanged)."""
        if not isinstance(text, str) or not text.strip():
            raise InvalidInputError("text is empty")
        if self.config.normalize_text if normalize is None else normalize:
            text = normalize_text(text)
        ids = self.tokenizer.encode(text).ids
        if not ids:
            raise InvalidInputError("text produced no tokens")
        return np.asarray(ids, dtype=np.int64)

    def _prompt(self, text: str, voice: VoiceEmbedding, options: GenerationOptions) -> np.ndarray:
        """The prefill sequence [voice conditioning | text embeddings], float [N + n, hidden]."""
        text_embeds = self._embed(self.tokenize(text, options.normalize_text)[None, :])[0]
        return np.concatenate([voice.audio_features[0].astype(text_embeds.dtype), text_embeds])

    def _embed(self, ids: np.ndarray) -> np.ndarray:
        """int64 [batch, seq] → float [batch, seq, hidden] in the LM's inputs_embeds dtype."""
        embeds = self._sessions["embed_tokens"].run(None, {self._embed_input: ids})[0]
        return embeds.astype(self._lm_spec.embeds_dtype, copy=False)

    # ----- synthesis -----------------------------------------------------------------------

    def synthesize(
        self,
        text: str,
        voice: str | VoiceEmbedding | bytes | Path,
        options: GenerationOptions | None = None,
        cancel: threading.Event | None = None,
    ) -> SynthesisResult:
        """Speak `text` in `voice`: a cached voice id (str), encoder outputs, or a reference
        clip as bytes or a Path (encoded and cached by content hash)."""
        request = SynthesisRequest(text, voice, options or GenerationOptions())
        return self.synthesize_batch([request], cancel)[0]

    def synthesize_stream(
        self,
        text: str,
        voice: str | VoiceEmbedding | bytes | Path,
        options: GenerationOptions | None = None,
        cancel: threading.Event | None = None,
        max_chars: int = DEFAULT_MAX_CHARS,
        first_max_chars: int | None = DEFAULT_FIRST_MAX_CHARS,
    ):
        """Speak a text of any length piece by piece (sentences, then clauses; a short first
        piece), yielding each SpokenPiece as soon as it is ready. Every piece ends in the
        decoder's SILENCE padding, a natural pause; 10 ms fades keep the seams click-free."""
        pieces, voice_embedding = self._pieces_and_voice(text, voice, max_chars, first_max_chars)
        position_s = 0.0
        for piece in pieces:
            result = self.synthesize(piece.text, voice_embedding, options, cancel)
            spoken = SpokenPiece(piece, audio_io.fade_edges(result.waveform), position_s, result)
            position_s = spoken.end_s
            yield spoken

    def stream_chunks(
        self,
        text: str,
        voice: str | VoiceEmbedding | bytes | Path,
        options: GenerationOptions | None = None,
        cancel: threading.Event | None = None,
    ):
        """Like synthesize_stream, but each piece's audio also leaves in token windows while it
        is generated: a first chunk after STREAM_FIRST_CHUNK_TOKENS tokens, then every
        STREAM_CHUNK_TOKENS. A piece's chunks add up to exactly its synthesize() length; only
        its last chunk carries the SILENCE padding and the piece's SynthesisResult."""
        pieces, voice_embedding = self._pieces_and_voice(text, voice)
        for piece in pieces:
            yield from self._stream_piece(piece, voice_embedding, options or GenerationOptions(), cancel)

    def _pieces_and_voice(self, text: str, voice, max_chars: int = DEFAULT_MAX_CHARS,
                          first_max_chars: int | None = DEFAULT_FIRST_MAX_CHARS):
        """(text pieces, voice encoder outputs) for the streaming paths; empty text is invalid."""
        pieces = split_text(text, max_chars, first_max_chars) if isinstance(text, str) else []
        if not pieces:
            raise InvalidInputError("text is empty")
        return pieces, self._voice_of(voice)[0]

    def _stream_piece(self, piece: TextPiece, voice: VoiceEmbedding, options: GenerationOptions,
                      cancel: threading.Event | None):
        started = time.perf_counter()
        row = self._new_row(options)
        prompt = self._prompt(piece.text, voice, options)
        clock, vocoder_s = _Clock(), 0.0
        sent, held, chunks = 0, np.zeros(0, np.float32), []
        for _ in self._steps([prompt], [row], cancel, clock):
            tokens = speech_tokens_of(row.tokens)
            window = STREAM_FIRST_CHUNK_TOKENS if sent == 0 else STREAM_CHUNK_TOKENS
            if row.done or len(tokens) - sent < window:
                continue
            decode_started = time.perf_counter()
            audio, held = self._decode_window(tokens, sent, voice, held, final=False)
            vocoder_s += time.perf_counter() - decode_started
            audio = audio_io.fade_in(audio) if sent == 0 else audio
            sent = len(tokens)
            chunks.append(audio)
            yield AudioChunk(piece, audio)
        tokens = speech_tokens_of(row.tokens)
        decode_started = time.perf_counter()
        audio, _ = self._decode_window(tokens, sent, voice, held, final=True)
        vocoder_s += time.perf_counter() - decode_started
        audio = audio_io.fade_out(audio_io.fade_in(audio) if sent == 0 else audio)
        chunks.append(audio)
        result = SynthesisResult(
            waveform=np.concatenate(chunks),
            speech_tokens=tokens,
            tokens_generated=len(row.tokens) - 1,
            stopped=row.stopped,
            timings=StageTimings(prefill_s=clock.prefill_s, decode_s=clock.decode_s, vocoder_s=vocoder_s,
                                 total_s=time.perf_counter() - started, decode_steps=clock.steps),
        )
        yield AudioChunk(piece, audio, result)

    def _decode_window(self, tokens: np.ndarray, start: int, voice: VoiceEmbedding, held: np.ndarray,
                       final: bool) -> tuple[np.ndarray, np.ndarray]:
        """Audio of tokens[start:] (int64 [n]) → (samples to send, tail held back for the next seam).

        Decodes with up to STREAM_CONTEXT_TOKENS tokens of left context, drops the context's
        samples except the last STREAM_CROSSFADE_SAMPLES, which are blended with the tail held
        from the previous window. The final window adds the SILENCE padding and holds nothing.
        """
        context = min(STREAM_CONTEXT_TOKENS, start)
        wave = self.decode_speech_tokens(tokens[start - context:], voice, pad_silence=final)
        head = context * SAMPLES_PER_TOKEN
        audio = wave[head:]
        if held.shape[0]:
            audio = np.concatenate([audio_io.crossfade(held, wave[head - held.shape[0]:head]), audio])
        if final:
            return audio, np.zeros(0, np.float32)
        keep = audio.shape[0] - STREAM_CROSSFADE_SAMPLES
        return audio[:keep], audio[keep:]

    def synthesize_long(
        self,
        text: str,
        voice: str | VoiceEmbedding | bytes | Path,
        options: GenerationOptions | None = None,
        cancel: threading.Event | None = None,
    ) -> LongSynthesisResult:
        """synthesize_stream, collected: the joined waveform with per-piece timings."""
        started = time.perf_counter()
        pieces, first_audio_s = [], 0.0
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
        """Speak several requests with one shared decode loop (left-padded batch)."""
        if not requests:
            return []
        started = time.perf_counter()
        voices, encode_times = zip(*(self._voice_of(r.voice) for r in requests))
        rows, prompts = [], []
        for request, voice in zip(requests, voices):
            rows.append(self._new_row(request.options))
            prompts.append(self._prompt(request.text, voice, request.options))
        prefill_s, decode_s, steps = self._generate(prompts, rows, cancel)
        results = []
        for row, voice, encode_s in zip(rows, voices, encode_times):
            vocoder_started = time.perf_counter()
            speech_tokens = speech_tokens_of(row.tokens)
            waveform = self.decode_speech_tokens(speech_tokens, voice)
            vocoder_s = time.perf_counter() - vocoder_started
            timings = StageTimings(
                voice_encode_s=encode_s,
                prefill_s=prefill_s,
                decode_s=decode_s,
                vocoder_s=vocoder_s,
                total_s=time.perf_counter() - started,
                decode_steps=steps,
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

    def check_request(self, text: str, options: GenerationOptions) -> None:
        """Raise InvalidInputError now for text or options a synthesis would refuse later."""
        self.tokenize(text, options.normalize_text)
        self._new_row(options)

    def _voice_of(self, voice: str | VoiceEmbedding | bytes | Path) -> tuple[VoiceEmbedding, float]:
        """The voice's encoder outputs and the seconds spent encoding it (0 when cached)."""
        if isinstance(voice, VoiceEmbedding):
            return voice, 0.0
        if isinstance(voice, str):
            return self.get_voice(voice), 0.0
        started = time.perf_counter()
        return self.encode_voice(voice)[1], time.perf_counter() - started

    def _new_row(self, options: GenerationOptions) -> _Row:
        params = self._sampling_params(options)
        max_new = self.config.max_new_tokens if options.max_new_tokens is None else options.max_new_tokens
        if not 1 <= max_new <= self.config.max_new_tokens:
            raise InvalidInputError(
                f"max_new_tokens must be between 1 and {self.config.max_new_tokens}, got {max_new}"
            )
        rng = None if params.greedy else np.random.default_rng(params.seed)
        return _Row(params=params, max_new_tokens=max_new, rng=rng, tokens=[START_SPEECH_TOKEN])

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
            (np.isfinite(params.temperature) and 0.0 <= params.temperature <= 10.0,
             "temperature must be between 0 and 10"),
            (params.top_k >= 0, "top_k must be 0 (off) or positive"),
            (0.0 < params.top_p <= 1.0, "top_p must be in (0, 1]"),
            (np.isfinite(params.repetition_penalty) and 0.0 < params.repetition_penalty <= 10.0,
             "repetition_penalty must be in (0, 10]"),
            (params.seed is None or 0 <= params.seed < 2**63, "seed must be a non-negative integer"),
        ]
        for ok, message in checks:
            if not ok:
                raise InvalidInputError(message)
        return params

    def _generate(
        self, prompts: list[np.ndarray], rows: list[_Row], cancel: threading.Event | None
    ) -> tuple[float, float, int]:
        """Run prefill and the decode loop to the end. Returns (prefill_s, decode_s, steps)."""
        clock = _Clock()
        for _ in self._steps(prompts, rows, cancel, clock):
            pass
        return clock.prefill_s, clock.decode_s, clock.steps

    def _steps(self, prompts: list[np.ndarray], rows: list[_Row], cancel: threading.Event | None,
               clock: "_Clock"):
        """Prefill, then one decode step per iteration; yields after each new token per row.

        prompts: per row float [L_b, hidden] = [voice conditioning | text embeddings]. Rows are
        left-padded to one length (mask 0, position 0 on pads; positions 0..L_b−1 on the real
        part), then step together; a finished row leaves the batch and its KV rows are dropped.
        """
        spec = self._lm_spec
        started = time.perf_counter()
        lengths = np.array([p.shape[0] for p in prompts], dtype=np.int64)
        batch, width, hidden = len(prompts), int(lengths.max()), prompts[0].shape[1]
        embeds = np.zeros((batch, width, hidden), dtype=spec.embeds_dtype)
        mask = np.zeros((batch, width), dtype=np.int64)
        positions = np.zeros((batch, width), dtype=np.int64)
        for b, prompt in enumerate(prompts):
            pad = width - prompt.shape[0]
            embeds[b, pad:] = prompt
            mask[b, pad:] = 1
            positions[b, pad:] = np.arange(prompt.shape[0])
        empty = np.zeros((batch, spec.num_heads, 0, spec.head_dim), dtype=spec.kv_dtype)
        past = [empty] * len(spec.past_names)
        logits, past = self._run_language_model(embeds, mask, positions, past)
        clock.prefill_s = time.perf_counter() - started

        seen = np.zeros((batch, SPEECH_VOCAB_SIZE), dtype=bool)
        seen[:, START_SPEECH_TOKEN] = True
        active = np.arange(batch)  # original row index of each batch row
        next_position = lengths.copy()
        while True:
            active_rows = [rows[i] for i in active]
            tokens = select_next_tokens(
                logits, seen[active], [r.params for r in active_rows], [r.rng for r in active_rows]
            )
            seen[active, tokens] = True
            for row, token in zip(active_rows, tokens):
                row.tokens.append(int(token))
                row.stopped = int(token) == STOP_SPEECH_TOKEN
            clock.decode_s = time.perf_counter() - started - clock.prefill_s
            yield
            keep = np.array([not r.done for r in active_rows])
            if not keep.any():
                return
            if cancel is not None and cancel.is_set():
                raise GenerationCancelledError("synthesis cancelled")
            if not keep.all():
                active, tokens, mask = active[keep], tokens[keep], mask[keep]
                past = [kv[keep] for kv in past]
            mask = np.concatenate([mask, np.ones((len(active), 1), dtype=np.int64)], axis=1)
            positions = next_position[active][:, None]
            next_position[active] += 1
            logits, past = self._run_language_model(self._embed(tokens[:, None]), mask, positions, past)
            clock.steps += 1

    def _run_language_model(
        self, embeds: np.ndarray, mask: np.ndarray, positions: np.ndarray, past: list[np.ndarray]
    ) -> tuple[np.ndarray, list[np.ndarray]]:
        """One LM call → (float32 logits of the last position [batch, vocab], present KV list)."""
        spec = self._lm_spec
        feeds = {"inputs_embeds": embeds, "attention_mask": mask, "position_ids": positions}
        feeds.update(zip(spec.past_names, past))
        outputs = self._sessions["language_model"].run(["logits", *spec.present_names], feeds)
        return outputs[0][:, -1, :].astype(np.float32), outputs[1:]

    def decode_speech_tokens(self, speech_tokens: np.ndarray, voice: VoiceEmbedding,
                             pad_silence: bool = True) -> np.ndarray:
        """int64 [n] speech tokens → float32 [(n + 3) × 960] waveform in the voice (n × 960
        without the SILENCE padding, for a stream's inner windows)."""
        silence = np.full(SILENCE_PADDING_TOKENS if pad_silence else 0, SILENCE_TOKEN, dtype=np.int64)
        tokens = np.concatenate([voice.audio_tokens[0], speech_tokens, silence])[None, :]
        types = self._decoder_types
        feeds = {
            "speech_tokens": tokens.astype(types["speech_tokens"]),
            "speaker_embeddings": voice.speaker_embeddings.astype(types["speaker_embeddings"]),
            "speaker_features": voice.speaker_features.astype(types["speaker_features"]),
        }
        waveform = self._sessions["conditional_decoder"].run(None, feeds)[0]
        waveform = np.asarray(waveform, dtype=np.float32).reshape(-1)  # batch of one
        if self._watermarker is not None:
            waveform = np.asarray(
                self._watermarker.apply_watermark(waveform, sample_rate=SAMPLE_RATE_HZ), dtype=np.float32
            )
        return waveform

    def close(self) -> None:
        """Release the sessions (and their device memory)."""
        self._sessions.clear()


def speech_tokens_of(generated: list[int]) -> np.ndarray:
    """Generated ids (START first) → what the decoder speaks: START dropped, a final STOP dropped.

    Any other id outside the speech codebook (< 6561) is dropped as upstream's
    drop_invalid_tokens does; greedy decoding of the real model does not produce them.
    """
    tokens = generated[1:]
    if tokens and tokens[-1] == STOP_SPEECH_TOKEN:
        tokens = tokens[:-1]
    return np.array([t for t in tokens if t < START_SPEECH_TOKEN], dtype=np.int64)


def _load_watermarker():
    try:
        import perth
    except ImportError as e:
        raise ModelLoadError(
            "apply_watermark is on but resemble-perth is not installed "
            "(pip install resemble-perth; it needs torch), so no watermark could be applied"
        ) from e
    return perth.PerthImplicitWatermarker()
