"""Engine configuration and the choice of device, dtypes and files it implies.

Every engine setting is defined once, here: its type, bounds, default and description, in one of
four sections (`ModelConfig`, `GenerationConfig`, `LoopConfig`, `VocoderConfig`). `TTSConfig`
holds the four; the server's settings (server/settings.py) and the flags of server.py and main.py
(flags.py) are derived from the same fields, so a default is never written twice.

    TTSConfig(model_dir="model", model_dtype="fp32", max_batch_size=4)   # flat names, routed
    TTSConfig(model=ModelConfig(model_dir="model"), loop=LoopConfig(max_batch_size=4))
    config.model.model_dtype, config.loop.max_batch_size                   # read by section
"""

from collections.abc import Mapping
from difflib import get_close_matches
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from chatterbox_server.engine import runaway, vocoder_stage
from chatterbox_server.engine.sampling import DEFAULT_REPETITION_PENALTY
from chatterbox_server.engine.vocoder_stage import WindowPolicy
from chatterbox_server.errors import ModelLoadError
from chatterbox_server.model import files as model_files
from chatterbox_server.model import sessions as onnx_sessions
from chatterbox_server.text import cleanup

DEFAULT_MAX_NEW_TOKENS = 1024  # ≈ 41 s of audio
DEFAULT_MAX_VOICE_SECONDS = 30.0
MIB = 1024 * 1024

ModelDtype = Literal["auto", "fp32", "fp16", "q8", "q4", "q4f16"]  # auto, then model_files.MODEL_DTYPES
EncoderDtype = Literal["fp32", "fp16", "q8", "q4", "q4f16"]
Device = Literal["auto", "cuda", "cpu"]
StageTurns = Literal["auto", "never", "first", "always"]  # auto, then turns.TURN_MODES


class EngineSection(BaseModel):
    """One section of the engine's configuration: typed, bounded, frozen fields."""

    model_config = ConfigDict(frozen=True, extra="forbid", protected_namespaces=())


class ModelConfig(EngineSection):
    """Which model files to load and how ONNX Runtime runs them."""

    model_dir: Path | None = Field(None, description="local model folder in the hub layout; unset: download model_id")
    model_id: str = Field(model_files.DEFAULT_MODEL_ID, description="Hugging Face repo to download")
    revision: str | None = Field(None, description="hub branch, tag or commit")
    model_dtype: ModelDtype = Field("auto", description="language-model weights; auto: fp16 on CUDA, q4 on CPU")
    encoder_dtype: EncoderDtype | None = Field(
        None, description="the speech encoder's own dtype (unset: chosen with model_dtype)"
    )
    device: Device = Field("auto", description="ONNX Runtime device")
    device_id: int = Field(0, ge=0, description="CUDA device index")
    gpu_mem_limit_bytes: int | None = Field(None, ge=0, description="CUDA arena limit in bytes")
    intra_op_threads: int = Field(0, ge=0, description="ONNX Runtime threads per operator (0: its default)")
    inter_op_threads: int = Field(0, ge=0, description="ONNX Runtime threads across operators (0: its default)")
    lm_threads: int | None = Field(
        None, ge=0, description="intra-op threads of the language model (unset: intra_op_threads)"
    )
    decoder_threads: int | None = Field(
        None, ge=0, description="intra-op threads of the conditional decoder (unset: intra_op_threads)"
    )
    kv_on_device: bool | None = Field(
        None, description="keep the KV cache on the device between decode steps (IO binding); unset: on CUDA only"
    )
    apply_watermark: bool = Field(False, description="Perth watermark (needs resemble-perth)")
    max_voice_seconds: float = Field(DEFAULT_MAX_VOICE_SECONDS, gt=5.0, description="longest reference clip in seconds")


class GenerationConfig(EngineSection):
    """Defaults of every request (a request may ask for less, or for its own sampling)."""

    max_new_tokens: int = Field(DEFAULT_MAX_NEW_TOKENS, ge=1, description="default and ceiling per piece")
    repetition_penalty: float = Field(DEFAULT_REPETITION_PENALTY, gt=0, description="default per request")
    normalize_text: bool = Field(True, description="upstream punctuation clean-up")
    text_cleanup: bool = Field(
        True, description="make LLM text speakable first (the cleanup_* steps, pause_markup, lexicon_path); false: none"
    )
    cleanup_markdown: bool = Field(
        True, description="Markdown and HTML to the words they show, URLs to their host, code blocks to 'Code omitted.'"
    )
    cleanup_stage_directions: bool = Field(
        True, description="stage directions to Turbo's tags: (laughs), *sighs*, <cough> to [laugh], [sigh], [cough]"
    )
    cleanup_emoji: bool = Field(True, description="drop emoji (the [tags] stay)")
    cleanup_symbols: bool = Field(
        True, description="drop double quotes and # * _ ~ |; & to and, % to percent, dashes to commas"
    )
    cleanup_short_text: bool = Field(
        True, description="a text under 8 letters gets a capital and a full stop; so short a sentence joins a neighbour"
    )
    pause_markup: bool = Field(
        True,
        description=f'[pause:0.5s], [pause:500ms], <break time="500ms"/> become exact silence '
        f"(at most {cleanup.MAX_PAUSE_S:g} s each, {cleanup.MAX_TOTAL_PAUSE_S:g} s per request)",
    )
    lexicon_path: Path | None = Field(
        None, description="pronunciation lexicon: a UTF-8 file of 'word = spoken form' lines, read at start"
    )
    runaway_guard: bool = Field(
        True,
        description="stop a piece that runs past its text's bound, loops or falls silent, and drop the run",
    )
    runaway_base_tokens: int = Field(
        runaway.BASE_TOKENS, ge=1, description="speech tokens every piece may take beyond its text's share (50 ≈ 2 s)"
    )
    runaway_tokens_per_text_token: float = Field(
        runaway.TOKENS_PER_TEXT_TOKEN, gt=0, description="speech tokens a piece may take per text token (25 ≈ 1 s)"
    )

    def runaway_bound(self) -> runaway.RunawayBound | None:
        """The per-piece bound request preparation applies; None when the guard is off."""
        if not self.runaway_guard:
            return None
        return runaway.RunawayBound(self.runaway_base_tokens, self.runaway_tokens_per_text_token)

    def cleanup_rules(self) -> cleanup.CleanupRules:
        """The clean-up request preparation applies (text/cleanup.py), the lexicon read from its file;
        ModelLoadError names a lexicon's bad line."""
        if not self.text_cleanup:
            return cleanup.CleanupRules.off()
        try:
            lexicon = cleanup.Lexicon.load(self.lexicon_path) if self.lexicon_path else cleanup.Lexicon()
        except ValueError as e:
            raise ModelLoadError(f"{e} (the lexicon_path setting: --lexicon-path, TTS_LEXICON_PATH)") from None
        return cleanup.CleanupRules(
            pause_markup=self.pause_markup,
            markdown=self.cleanup_markdown,
            stage_directions=self.cleanup_stage_directions,
            emoji=self.cleanup_emoji,
            symbols=self.cleanup_symbols,
            short_text=self.cleanup_short_text,
            lexicon=lexicon,
        )


class LoopConfig(EngineSection):
    """The engine loop: continuous batching of every running request."""

    max_batch_size: int | None = Field(None, ge=1, description="rows decoded together; unset: 8 on CPU, 32 on CUDA")
    prefill_token_budget: int = Field(2048, ge=1, description="prompt tokens prefilled per engine step")
    prefix_cache_mb: int = Field(1024, ge=0, description="voice-prefix KV kept in memory (MiB, LRU); 0 turns it off")
    max_parallel_pieces: int = Field(4, ge=1, description="pieces of one long text decoded at once")


class VocoderConfig(EngineSection):
    """The vocoder stage: growing windows, first windows first, batched decoder calls."""

    first_window_tokens: int = Field(
        vocoder_stage.FIRST_WINDOW_TOKENS, ge=1, description="speech tokens in a request's first streamed window"
    )
    window_growth: float | None = Field(
        None, ge=1.0, description="each later window is at least this times the previous; unset: 2 on CUDA, 4 on CPU"
    )
    max_window_tokens: int = Field(
        vocoder_stage.MAX_WINDOW_TOKENS, ge=1, description="largest streamed window in tokens"
    )
    window_lookahead_s: float = Field(
        vocoder_stage.LOOKAHEAD_S,
        ge=0,
        description="a stream this many seconds ahead of its listener waits for more tokens",
    )
    stage_turns: StageTurns = Field(
        "auto",
        description="decoder calls that pause the engine loop (first: first windows); auto: always on CPU, never on CUDA",
    )
    decoder_batch_rows: int = Field(
        0, ge=0, description="windows per decoder call; 0: probe at load, batch only where exact and faster"
    )
    decoder_prompt_cap_tokens: int = Field(
        0,
        ge=0,
        description="re-decode at most this many prompt tokens per call (cheaper; voice effect unmeasured); 0: off",
    )

    @field_validator("max_window_tokens")
    @classmethod
    def _max_window_not_below_first(cls, value: int, info: ValidationInfo) -> int:
        first = info.data.get("first_window_tokens")  # absent when it was invalid itself
        if first is not None and value < first:
            raise ValueError(f"must be ≥ first_window_tokens ({first})")
        return value

    def window_policy(self, device: str, batch_rows: int) -> WindowPolicy:
        """The stage's policy on `device`, with `batch_rows` rows per decoder call (as resolved at load)."""
        growth = self.window_growth or (
            vocoder_stage.GPU_WINDOW_GROWTH if device == "cuda" else vocoder_stage.CPU_WINDOW_GROWTH
        )
        return WindowPolicy(
            first_window_tokens=self.first_window_tokens,
            window_growth=growth,
            max_window_tokens=self.max_window_tokens,
            lookahead_s=self.window_lookahead_s,
            max_batch_rows=batch_rows,
        )


SECTIONS: dict[str, type[EngineSection]] = {
    "model": ModelConfig,
    "generation": GenerationConfig,
    "loop": LoopConfig,
    "vocoder": VocoderConfig,
}
SECTION_OF = {name: section for section, cls in SECTIONS.items() for name in cls.model_fields}
ENGINE_FIELDS = tuple(SECTION_OF)  # every engine setting's flat name, section by section
RENAMED = {  # names of earlier versions, and what took their place
    "prefix_cache_bytes": "use prefix_cache_mb (MiB)",
    "windows": "use first_window_tokens, window_growth, max_window_tokens and window_lookahead_s",
}


def _unknown_setting(name: str) -> str:
    close = get_close_matches(name, [*ENGINE_FIELDS, *SECTIONS], n=3)
    hint = RENAMED.get(name) or (f"did you mean {' or '.join(close)}?" if close else "")
    return f"TTSConfig has no setting {name!r}" + (f"; {hint}" if hint else "")


def _check_model_choices(model: object) -> None:
    """An unknown dtype or device is the engine's ModelLoadError (what scripts catch), not a ValidationError."""
    if not isinstance(model, Mapping):
        return
    for name in ("model_dtype", "encoder_dtype"):
        if isinstance(value := model.get(name), str):
            resolve_dtype(value, "cpu")
    if isinstance(device := model.get("device"), str) and device != "auto":
        resolve_device(device)


class TTSConfig(BaseModel):
    """The engine's configuration, one section per concern (see the module docstring).

    Accepts the flat names as well (`TTSConfig(model_dir=..., max_batch_size=4)`): each goes to its
    section; an unknown name is a TypeError naming it."""

    model_config = ConfigDict(frozen=True, protected_namespaces=())

    model: ModelConfig = Field(default_factory=ModelConfig)
    generation: GenerationConfig = Field(default_factory=GenerationConfig)
    loop: LoopConfig = Field(default_factory=LoopConfig)
    vocoder: VocoderConfig = Field(default_factory=VocoderConfig)

    @model_validator(mode="before")
    @classmethod
    def _route_flat_names(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            return data
        sections: dict[str, Any] = {}
        flat: dict[str, dict[str, Any]] = {}
        for key, value in data.items():
            if key in SECTIONS:
                sections[key] = value
            elif key in SECTION_OF:
                flat.setdefault(SECTION_OF[key], {})[key] = value
            else:
                raise TypeError(_unknown_setting(str(key)))
        for section, values in flat.items():
            given = sections.get(section)
            if isinstance(given, BaseModel):
                given = given.model_dump(exclude_unset=True)
            if given is not None and not isinstance(given, Mapping):
                raise TypeError(f"TTSConfig {section}: expected a {SECTIONS[section].__name__}, got {given!r}")
            sections[section] = {**(given or {}), **values}
        _check_model_choices(sections.get("model"))
        return sections


def resolve_device(device: str, device_id: int = 0) -> str:
    """'auto' → 'cuda' where the CUDA provider really works, else 'cpu'."""
    if device not in get_args(Device):
        raise ModelLoadError(f"unknown device {device!r}; choose auto, cuda or cpu")
    if device == "auto":
        return "cuda" if onnx_sessions.cuda_is_usable(device_id) else "cpu"
    return device


def resolve_dtype(dtype: str, device: str) -> str:
    """'auto' → fp16 on CUDA, q4 on CPU; anything else must be a published dtype."""
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
    model = config.model
    device = resolve_device(model.device, model.device_id)
    model_dtype = resolve_dtype(model.model_dtype, device)
    encoder_dtype = resolve_dtype(model.encoder_dtype or model_dtype, device)
    graph_dtypes = {g: model_dtype for g in model_files.GRAPH_NAMES}
    graph_dtypes["speech_encoder"] = encoder_dtype
    files = model_files.resolve_model_files(graph_dtypes, model.model_dir, model.model_id, model.revision)
    return device, model_dtype, encoder_dtype, files
