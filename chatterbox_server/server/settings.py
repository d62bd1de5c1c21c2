"""Server settings: one object, read from TTS_-prefixed environment variables, overridable by
command-line flags (`--max-queue 64` overrides TTS_MAX_QUEUE)."""

import argparse
from pathlib import Path
from typing import Literal, get_args, get_origin

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from chatterbox_server.engine.config import TTSConfig
from chatterbox_server.engine.vocoder_stage import WindowPolicy
from chatterbox_server.model.stand_in import DEFAULT_TINY_DIR
from chatterbox_server.server.auth import ApiKeys
from chatterbox_server.voice_store import check_store_url
from chatterbox_server.voice_store.records import VOICE_ID_PATTERN

MIB = 1024 * 1024
DEFAULT_POOL_THREADS = 4  # synthesis runs on the engine's own loop; the pool encodes voices and audio
WINDOWS = WindowPolicy()  # the vocoder stage's defaults, written once there


class Settings(BaseSettings):
    """Every setting: a TTS_ environment variable and a flag of server.py (the flag wins)."""

    model_config = SettingsConfigDict(env_prefix="TTS_", extra="ignore", protected_namespaces=())

    # --- serving
    host: str = Field("0.0.0.0", description="address to listen on")
    port: int = Field(8000, ge=1, le=65535, description="port to listen on")
    log_level: Literal["critical", "error", "warning", "info", "debug"] = Field("info", description="log level")

    # --- security
    api_keys: str = Field(
        "", description="comma-separated API keys, or sha256:<hex> of a key; empty: no keys (warned beyond loopback)"
    )
    metrics_require_key: bool = Field(False, description="/metrics needs a key too (health probes never do)")
    cors_origins: str = Field("", description="comma-separated origins a browser page may call from; empty: none")

    # --- model (see TTSConfig)
    model_dir: Path | None = Field(None, description="local model folder in the hub layout; unset: download model_id")
    model_id: str = Field(TTSConfig.model_id, description="Hugging Face repo to download")
    revision: str | None = Field(None, description="hub branch, tag or commit")
    model_dtype: Literal["auto", "fp32", "fp16", "q8", "q4", "q4f16"] = Field(
        "auto", description="language-model weights; auto: fp16 on CUDA, q4 on CPU"
    )
    encoder_dtype: Literal["fp32", "fp16", "q8", "q4", "q4f16"] | None = Field(
        None, description="the speech encoder's own dtype (unset: chosen with model_dtype)"
    )
    device: Literal["auto", "cuda", "cpu"] = Field("auto", description="ONNX Runtime device")
    device_id: int = Field(0, ge=0, description="CUDA device index")
    gpu_mem_limit_bytes: int | None = Field(None, ge=0, description="CUDA arena limit in bytes")
    intra_op_threads: int = Field(0, ge=0, description="ONNX Runtime threads per operator (0: its default)")
    inter_op_threads: int = Field(0, ge=0, description="ONNX Runtime threads across operators (0: its default)")
    stand_in: bool = Field(False, description="serve the generated tiny stand-in (tones, not words) when no model_dir")
    stand_in_dir: Path = Field(DEFAULT_TINY_DIR, description="where the stand-in is generated")

    # --- generation defaults
    max_new_tokens: int = Field(TTSConfig.max_new_tokens, ge=1, description="default and ceiling per piece")
    repetition_penalty: float = Field(TTSConfig.repetition_penalty, gt=0, description="default per request")
    normalize_text: bool = Field(True, description="upstream punctuation clean-up")
    apply_watermark: bool = Field(False, description="Perth watermark (needs resemble-perth)")

    # --- engine loop (continuous batching; see README "Engine")
    max_batch_size: int | None = Field(None, ge=1, description="rows decoded together; unset: 8 on CPU, 32 on CUDA")
    prefill_token_budget: int = Field(2048, ge=1, description="prompt tokens prefilled per engine step")
    prefix_cache_mb: int = Field(1024, ge=0, description="voice-prefix KV kept in memory (MiB, LRU); 0 turns it off")
    max_parallel_pieces: int = Field(4, ge=1, description="pieces of one long text decoded at once")
    lm_threads: int | None = Field(
        None,
        ge=0,
        description="intra-op threads of the language model (unset: intra_op_threads)",
    )
    decoder_threads: int | None = Field(
        None, ge=0, description="intra-op threads of the conditional decoder (unset: intra_op_threads)"
    )

    # --- vocoder stage (see README "Engine": growing windows, first windows first, batched calls)
    first_window_tokens: int = Field(
        WINDOWS.first_window_tokens, ge=1, description="speech tokens in a request's first streamed window"
    )
    window_growth: float | None = Field(
        None, ge=1.0, description="each later window is at least this times the previous; unset: 2 on CUDA, 4 on CPU"
    )
    max_window_tokens: int = Field(WINDOWS.max_window_tokens, ge=1, description="largest streamed window in tokens")
    window_lookahead_s: float = Field(
        WINDOWS.lookahead_s, ge=0, description="a stream this many seconds ahead of its listener waits for more tokens"
    )
    stage_turns: Literal["auto", "never", "first", "always"] = Field(
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

    # --- voices
    voices_dir: Path = Field(Path("voices"), description="the local voice store (when voice_store is empty)")
    voice_store: str = Field(
        "", description="s3://bucket/prefix: voices shared by replicas in S3-compatible storage (AWS_* environment)"
    )
    voice_revalidate_s: float = Field(5.0, ge=0, description="a voice changed on another replica is seen within this")
    voice_aliases: str = Field(
        "", description="name=voice_id pairs, comma-separated (alloy=alice): names OpenAI clients send"
    )
    default_voice: str = Field("", description="the voice used when a request names none (empty: a voice is required)")
    voice_cache_size: int = Field(100, ge=1, description="voices' encoder outputs kept in memory (LRU)")
    max_voice_seconds: float = Field(30.0, gt=5.0, description="longest reference clip in seconds")
    max_voice_file_size: int = Field(50 * MIB, ge=1, description="bytes per upload; larger gets 413 while streaming")

    # --- admission and limits
    max_concurrent_requests: int = Field(8, ge=1, description="syntheses running at once")
    thread_pool_size: int | None = Field(
        None, ge=1, description=f"threads for voice encoding, disk and audio encoding (unset: {DEFAULT_POOL_THREADS})"
    )
    max_queue: int = Field(32, ge=0, description="requests waiting for a slot; beyond it 429")
    max_concurrent_encodes: int = Field(2, ge=1, description="reference clips decoded and encoded at once")
    max_encode_queue: int = Field(8, ge=0, description="clips waiting to be encoded; beyond it 429")
    queue_timeout_s: float = Field(30.0, gt=0, description="longest wait for a slot; beyond it 503")
    request_timeout_s: float = Field(120.0, gt=0, description="longest synthesis; beyond it 504")
    max_text_length: int = Field(5000, ge=1, description="characters per request; beyond it 413")
    max_realtime_sessions: int = Field(64, ge=1, description="realtime WebSocket sessions open at once; beyond it 429")
    realtime_idle_timeout_s: float = Field(
        300.0, gt=0, description="a realtime session with nothing to say for this long is closed"
    )
    shutdown_grace_s: float = Field(30.0, ge=0, description="on SIGTERM, time in-flight requests get to finish")
    warmup: bool = Field(True, description="one synthesis before ready")

    @model_validator(mode="after")
    def _windows_valid(self) -> "Settings":
        self.window_policy()  # raises ValueError naming the inconsistent pair
        return self

    def window_policy(self) -> WindowPolicy:
        return WindowPolicy(
            first_window_tokens=self.first_window_tokens,
            window_growth=self.window_growth or WINDOWS.window_growth,
            max_window_tokens=self.max_window_tokens,
            lookahead_s=self.window_lookahead_s,
        )

    @field_validator("api_keys")
    @classmethod
    def _keys_parse(cls, value: str) -> str:
        ApiKeys(value)  # raises ValueError naming a malformed sha256: entry
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _level_lower(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @field_validator("voice_aliases")
    @classmethod
    def _aliases_parse(cls, value: str) -> str:
        parse_voice_aliases(value)  # raises ValueError naming the bad pair
        return value

    @field_validator("default_voice")
    @classmethod
    def _default_voice_valid(cls, value: str) -> str:
        if value and not VOICE_ID_PATTERN.fullmatch(value):
            raise ValueError("must be 1-64 letters, digits, '-' or '_'")
        return value

    @property
    def voice_alias_map(self) -> dict[str, str]:
        return parse_voice_aliases(self.voice_aliases)

    @field_validator("voice_store")
    @classmethod
    def _store_parse(cls, value: str) -> str:
        return check_store_url(value)  # raises ValueError naming the expected shape

    @property
    def cors_origin_list(self) -> list[str]:
        return [o.strip() for o in self.cors_origins.split(",") if o.strip()]

    @property
    def worker_threads(self) -> int:
        return self.thread_pool_size or DEFAULT_POOL_THREADS

    def engine_config(self) -> TTSConfig:
        model_dir = self.model_dir
        if model_dir is None and self.stand_in:
            model_dir = self.stand_in_dir
        return TTSConfig(
            model_dir=model_dir,
            model_id=self.model_id,
            revision=self.revision,
            model_dtype=self.model_dtype if not (self.stand_in and self.model_dtype == "auto") else "fp32",
            encoder_dtype=self.encoder_dtype,
            device=self.device,
            device_id=self.device_id,
            gpu_mem_limit_bytes=self.gpu_mem_limit_bytes,
            intra_op_threads=self.intra_op_threads,
            inter_op_threads=self.inter_op_threads,
            max_voice_seconds=self.max_voice_seconds,
            max_new_tokens=self.max_new_tokens,
            repetition_penalty=self.repetition_penalty,
            normalize_text=self.normalize_text,
            apply_watermark=self.apply_watermark,
            max_batch_size=self.max_batch_size,
            prefill_token_budget=self.prefill_token_budget,
            prefix_cache_bytes=self.prefix_cache_mb * MIB,
            max_parallel_pieces=self.max_parallel_pieces,
            lm_threads=self.lm_threads,
            decoder_threads=self.decoder_threads,
            windows=self.window_policy(),
            window_growth=self.window_growth,
            decoder_batch_rows=self.decoder_batch_rows,
            decoder_prompt_cap_tokens=self.decoder_prompt_cap_tokens,
            stage_turns=self.stage_turns,
        )


def parse_voice_aliases(spec: str) -> dict[str, str]:
    """'alloy=alice, echo=bob' → {'alloy': 'alice', 'echo': 'bob'}; ValueError for a malformed pair."""
    aliases = {}
    for pair in filter(None, (p.strip() for p in spec.split(","))):
        name, _, target = (part.strip() for part in pair.partition("="))
        if not (VOICE_ID_PATTERN.fullmatch(name) and VOICE_ID_PATTERN.fullmatch(target)):
            raise ValueError(f"{pair!r} is not name=voice_id (letters, digits, '-' or '_')")
        aliases[name] = target
    return aliases


class SettingsError(ValueError):
    """A setting's value is unusable; the message is one line naming the flag and the variable."""


def describe_error(exc: ValidationError) -> str:
    """'--model-dtype (TTS_MODEL_DTYPE) = 'fp17': Input should be 'auto', 'fp32', ...' for each bad field."""
    parts = []
    for error in exc.errors():
        name = str(error["loc"][0]) if error["loc"] else "?"
        value = error.get("input")
        shown = f" = {value!r}" if isinstance(value, str | int | float) else ""
        message = error["msg"].removeprefix("Value error, ")
        if not error["loc"]:  # a check across settings names them itself
            parts.append(message)
            continue
        parts.append(f"--{name.replace('_', '-')} (TTS_{name.upper()}){shown}: {message}")
    return "; ".join(parts)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Chatterbox Turbo TTS server. Every flag also reads a TTS_ environment variable; the flag wins.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    for name, field in Settings.model_fields.items():
        flag = "--" + name.replace("_", "-")
        default = field.default if field.default not in (None, "") else "unset"
        help_text = f"{field.description} [env TTS_{name.upper()}; default: {default}]"
        choices = get_args(field.annotation) if get_origin(field.annotation) is Literal else None
        if field.annotation is bool:
            parser.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        else:
            parser.add_argument(
                flag,
                dest=name,
                default=None,
                metavar=name.upper() if choices is None else "{" + ",".join(choices) + "}",
                help=help_text,
            )
    # ArgumentDefaultsHelpFormatter would print "(default: None)": the default is in our own text
    parser.formatter_class = argparse.HelpFormatter
    return parser


def settings_from_cli(argv: list[str] | None = None) -> Settings:
    """Environment first, then every field as a flag: --model-dir, --max-queue, --no-warmup, ...

    Raises SettingsError with one line naming the flag, its variable and what is wrong."""
    overrides = {k: v for k, v in vars(build_parser().parse_args(argv)).items() if v is not None}
    try:
        return Settings(**overrides)
    except ValidationError as e:
        raise SettingsError(describe_error(e)) from None
