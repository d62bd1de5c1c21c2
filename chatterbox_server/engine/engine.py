"""Chatterbox Turbo text-to-speech on ONNX Runtime: four graphs, one synchronous engine.

text → token ids → embed_tokens → [voice conditioning | text] prefill → batched greedy/sampled
decode over the KV cache → speech tokens → conditional_decoder → float32 waveform at 24 kHz.
The engine knows nothing about HTTP. Its request surface is small: `prepare` a plan (prepare.py),
then `generate` (async) or `submit` (blocking) a GenerationRequest, `abort` it by id; `synthesize`
does all of it for a script. Any thread may call these; the loop and the vocoder stage own the rest.
"""

import hashlib
import logging
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from chatterbox_server import audio
from chatterbox_server.engine.config import MIB, TTSConfig, locate_model
from chatterbox_server.engine.core import CoreConfig, EngineCore
from chatterbox_server.engine.language_model import LanguageModel
from chatterbox_server.engine.observer import EngineObserver, Observers
from chatterbox_server.engine.outputs import AsyncOutputs, SyncOutputs
from chatterbox_server.engine.prefix_cache import PrefixCache
from chatterbox_server.engine.prepare import RequestPlanner
from chatterbox_server.engine.prompt import TextTokenizer
from chatterbox_server.engine.requests import GenerationRequest, Output
from chatterbox_server.engine.scheduler import SchedulerConfig
from chatterbox_server.engine.types import GenerationOptions, SpeechCollector, SpeechPlan, SpeechResult
from chatterbox_server.engine.vocoder import BatchProbe, Vocoder, load_watermarker, probe_batching
from chatterbox_server.engine.voices import VoiceEmbedding
from chatterbox_server.errors import ModelLoadError
from chatterbox_server.model import sessions as onnx_sessions
from chatterbox_server.model.contract import numpy_type

logger = logging.getLogger(__name__)

SAMPLE_RATE_HZ = audio.SAMPLE_RATE_HZ  # 24 000
CPU_MAX_BATCH_SIZE = 8  # see the README's batching table: past 8 rows a 2-core step grows ~linearly
CUDA_MAX_BATCH_SIZE = 32  # a GPU step stays bandwidth-bound well past 32 rows of GPT-2 medium
CUDA_DECODER_BATCH_ROWS = 16  # rows per decoder call where the probe finds batching pays
CPU_DECODER_BATCH_ROWS = 4
CUDA_STAGE_TURNS = "never"  # GPU kernels of the two stages overlap; neither needs the other's cores
CPU_STAGE_TURNS = "always"  # both stages want every core: taking turns beat splitting them (README)

Voice = VoiceEmbedding | bytes | Path  # encoder outputs, or a reference clip (its bytes or its path)


class TTSEngine:
    """Loads the four graphs once and runs the engine loop; every method may be called from any thread."""

    def __init__(self, config: TTSConfig | None = None, observer: EngineObserver | None = None):
        self.config = config = config or TTSConfig()
        model, generation, loop, vocoder = config.model, config.generation, config.loop, config.vocoder
        cleanup = generation.cleanup_rules()  # the lexicon is read here, before any model file
        self.device, self.model_dtype, self.encoder_dtype, self.files = locate_model(config)
        watermarker = load_watermarker() if model.apply_watermark else None
        try:
            tokenizer = Tokenizer.from_file(str(self.files.tokenizer))
        except Exception as e:  # tokenizers raises a bare Exception on bad JSON
            raise ModelLoadError(f"cannot load {self.files.tokenizer}: {e}") from e
        settings = onnx_sessions.SessionSettings(
            device=self.device,
            device_id=model.device_id,
            gpu_mem_limit_bytes=model.gpu_mem_limit_bytes,
            intra_op_threads=model.intra_op_threads,
            inter_op_threads=model.inter_op_threads,
        )
        threads = {"embed_tokens": model.lm_threads, "language_model": model.lm_threads}
        threads["conditional_decoder"] = model.decoder_threads
        self._sessions = {}
        for name, path in self.files.graphs.items():
            own = threads.get(name)
            graph_settings = settings if own is None else replace(settings, intra_op_threads=own)
            self._sessions[name] = onnx_sessions.create_session(path, graph_settings)
        self.providers = {name: s.get_providers() for name, s in self._sessions.items()}
        kv_on_device = self.device == "cuda" if model.kv_on_device is None else model.kv_on_device
        self._lm = LanguageModel(
            self._sessions["embed_tokens"],
            self._sessions["language_model"],
            kv_device=self.device if kv_on_device else None,
            device_id=model.device_id,
        )
        self.planner = RequestPlanner(
            TextTokenizer(tokenizer, generation.normalize_text),
            generation.max_new_tokens,
            generation.repetition_penalty,
            generation.runaway_bound(),
            cleanup=cleanup,
        )
        self._vocoder = Vocoder(self._sessions["conditional_decoder"], watermarker, vocoder.decoder_prompt_cap_tokens)
        self.decoder_batch_rows, self.decoder_probe = self._choose_decoder_batch(vocoder.decoder_batch_rows)
        self.stage_turns = (
            vocoder.stage_turns
            if vocoder.stage_turns != "auto"
            else (CUDA_STAGE_TURNS if self.device == "cuda" else CPU_STAGE_TURNS)
        )
        self._encoder_input = self._sessions["speech_encoder"].get_inputs()[0]
        self.max_batch_size = loop.max_batch_size or (
            CUDA_MAX_BATCH_SIZE if self.device == "cuda" else CPU_MAX_BATCH_SIZE
        )
        core_config = CoreConfig(
            scheduler=SchedulerConfig(self.max_batch_size, loop.prefill_token_budget),
            max_parallel_pieces=loop.max_parallel_pieces,
            prefix_cache_bytes=loop.prefix_cache_mb * MIB,
            windows=vocoder.window_policy(self.device, self.decoder_batch_rows),
            stage_turns=self.stage_turns,
        )
        self._core = EngineCore(self._lm, self._vocoder, core_config, observer)
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

    def encode_clip(self, source: bytes | Path | str) -> VoiceEmbedding:
        """Decode a reference clip (bytes or a path; InvalidAudioError if unusable) and encode it.

        Nothing is cached here: the server's voice service keeps registered voices."""
        data = audio.read_audio_bytes(source)
        clip = audio.prepare_reference_audio(data, max_seconds=self.config.model.max_voice_seconds)
        return self.encode_audio(clip, hashlib.sha256(data).hexdigest())

    def forget_voice(self, content_hash: str) -> bool:
        """Drop the cached prefix KV of the voice made from this clip (deleted or re-registered)."""
        return self._core.prefix_cache.discard(content_hash)

    # ----- requests ------------------------------------------------------------------------

    def prepare(self, text: str, options: GenerationOptions | None = None, **splitting: int | None) -> SpeechPlan:
        """Check a request once and resolve it into the plan a GenerationRequest carries
        (prepare.RequestPlanner.prepare; `splitting`: its max_chars and first_max_chars)."""
        return self.planner.prepare(text, options, **splitting)  # type: ignore[arg-type]

    def submit(self, request: GenerationRequest) -> Iterator[Output]:
        """Queue a request on the engine loop now; iterate to receive its audio in order (blocking).

        Leaving the iteration early (or abort(request_id)) stops it within one step."""
        outputs: SyncOutputs[Output] = SyncOutputs()
        self._core.submit(request, outputs)
        return self._read(request.request_id, outputs)

    def _read(self, request_id: str, outputs: SyncOutputs[Output]) -> Iterator[Output]:
        try:
            yield from outputs
        finally:
            if not outputs.finished:
                self.abort(request_id)

    async def generate(self, request: GenerationRequest) -> AsyncIterator[Output]:
        """The server's front: queue a request and receive its audio chunks as they are spoken.

        Closing the iterator (a client that left) or abort(request_id) stops it within one step."""
        outputs: AsyncOutputs[Output] = AsyncOutputs()
        self._core.submit(request, outputs)
        try:
            async for item in outputs:
                yield item
        finally:
            if not outputs.finished:
                self.abort(request.request_id)

    def estimate_s(self, plan: SpeechPlan, chunked: bool = False) -> float | None:
        """Seconds the plan would take alone at this engine's measured costs (engine/cost.py);
        None until the engine has spoken a piece."""
        return self._core.cost.estimate_s(plan, chunked)

    def abort(self, request_id: str) -> bool:
        """The one way to stop a submitted request: it leaves the batch at the next step and its
        reader gets GenerationCancelledError. False when it is not running."""
        return self._core.abort(request_id)

    def synthesize(
        self,
        text: str | SpeechPlan,
        voice: Voice,
        options: GenerationOptions | None = None,
        *,
        chunked: bool = False,
    ) -> SpeechResult:
        """Speak a text of any length and return it joined, with per-piece figures (for scripts).

        `voice`: encoder outputs, or a reference clip (bytes or a path, encoded for this call).
        chunked: decode in the streaming token windows the server uses (else whole pieces)."""
        started = time.perf_counter()
        encode_s = 0.0
        if not isinstance(voice, VoiceEmbedding):
            voice = self.encode_clip(voice)
            encode_s = time.perf_counter() - started
        plan = text if isinstance(text, SpeechPlan) else self.prepare(text, options)
        collector = SpeechCollector()
        for output in self.submit(GenerationRequest(plan, voice, chunked=chunked)):
            collector.add(output)
        return replace(collector.result(time.perf_counter() - started), voice_encode_s=encode_s)

    # ----- the loop ------------------------------------------------------------------------

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
        self._core.observer = Observers(self._core.cost, observer)

    def close(self) -> None:
        """Stop the engine loop and release the sessions (and their device memory)."""
        self._core.close()
        self._sessions.clear()
