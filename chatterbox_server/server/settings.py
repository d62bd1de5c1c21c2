"""Server settings: one object, read from TTS_-prefixed environment variables, overridable by
command-line flags (`--max-queue 64` overrides TTS_MAX_QUEUE)."""

import argparse
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from chatterbox_server.engine.config import TTSConfig
from chatterbox_server.server.auth import ApiKeys
from chatterbox_server.voice_store.s3 import parse_s3_url

MIB = 1024 * 1024
DEFAULT_POOL_THREADS = 4  # synthesis runs on the engine's own loop; the pool encodes voices and audio


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TTS_", extra="ignore", protected_namespaces=())

    # --- serving
    host: str = "0.0.0.0"
    port: int = Field(8000, ge=1, le=65535)
    log_level: str = "info"

    # --- security
    api_keys: str = ""  # comma-separated keys, or sha256:<hex> of a key; empty: no keys (warned beyond loopback)
    metrics_require_key: bool = False  # /metrics needs a key too (health probes never do)
    cors_origins: str = ""  # comma-separated origins allowed to call from a browser; empty: none

    # --- model (see TTSConfig)
    model_dir: Path | None = None  # local copy in the hub layout; None downloads model_id
    model_id: str = TTSConfig.model_id
    revision: str | None = None
    model_dtype: Literal["auto", "fp32", "fp16", "q8", "q4", "q4f16"] = "auto"
    encoder_dtype: Literal["fp32", "fp16", "q8", "q4", "q4f16"] | None = None
    device: Literal["auto", "cuda", "cpu"] = "auto"
    device_id: int = Field(0, ge=0)
    gpu_mem_limit_bytes: int | None = Field(None, ge=0)
    intra_op_threads: int = Field(0, ge=0)
    inter_op_threads: int = Field(0, ge=0)
    stand_in: bool = False  # serve the generated tiny stand-in (tones, not words) when no model_dir
    stand_in_dir: Path = Path(".cache/stand-in/tiny")

    # --- generation defaults
    max_new_tokens: int = Field(TTSConfig.max_new_tokens, ge=1)
    repetition_penalty: float = Field(TTSConfig.repetition_penalty, gt=0)
    normalize_text: bool = True
    apply_watermark: bool = False

    # --- engine loop (continuous batching; see README "Engine")
    max_batch_size: int | None = Field(None, ge=1)  # rows decoded together; None: 8 on CPU, 32 on CUDA
    prefill_token_budget: int = Field(2048, ge=1)  # prompt tokens prefilled per loop step
    prefix_cache_mb: int = Field(1024, ge=0)  # voice-prefix KV kept in memory (LRU, MiB); 0 turns it off
    max_parallel_pieces: int = Field(4, ge=1)  # pieces of one long text decoded at once

    # --- voices
    voices_dir: Path = Path("voices")  # the local voice store (when voice_store is empty)
    voice_store: str = ""  # s3://bucket/prefix: voices shared by replicas in S3-compatible storage (AWS_* env)
    voice_revalidate_s: float = Field(5.0, ge=0)  # a voice changed on another replica is seen within this
    voice_cache_size: int = Field(100, ge=1)  # encoder outputs kept in memory (LRU)
    max_voice_seconds: float = Field(30.0, gt=5.0)
    max_voice_file_size: int = Field(50 * MIB, ge=1)  # bytes; larger uploads get 413 while streaming

    # --- admission and limits
    max_concurrent_requests: int = Field(8, ge=1)  # syntheses running at once
    thread_pool_size: int | None = Field(None, ge=1)  # threads for voice encoding, disk and audio encoding
    max_queue: int = Field(32, ge=0)  # requests waiting for a slot; beyond it 429
    max_concurrent_encodes: int = Field(2, ge=1)  # reference clips decoded and encoded at once
    max_encode_queue: int = Field(8, ge=0)  # clips waiting to be encoded; beyond it 429
    queue_timeout_s: float = Field(30.0, gt=0)  # waiting longer gives 503
    request_timeout_s: float = Field(120.0, gt=0)  # a synthesis longer than this gives 504
    max_text_length: int = Field(5000, ge=1)  # characters; longer gives 413
    shutdown_grace_s: float = Field(30.0, ge=0)  # in-flight requests get this long to finish
    warmup: bool = True  # one synthesis before /health turns ready

    @field_validator("api_keys")
    @classmethod
    def _keys_parse(cls, value: str) -> str:
        ApiKeys(value)  # raises ValueError naming a malformed sha256: entry
        return value

    @field_validator("voice_store")
    @classmethod
    def _store_parse(cls, value: str) -> str:
        if value:
            parse_s3_url(value)  # raises ValueError naming the expected shape
        return value

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
            voice_cache_size=self.voice_cache_size,
            max_voice_seconds=self.max_voice_seconds,
            max_new_tokens=self.max_new_tokens,
            repetition_penalty=self.repetition_penalty,
            normalize_text=self.normalize_text,
            apply_watermark=self.apply_watermark,
            max_batch_size=self.max_batch_size,
            prefill_token_budget=self.prefill_token_budget,
            prefix_cache_bytes=self.prefix_cache_mb * MIB,
            max_parallel_pieces=self.max_parallel_pieces,
        )


def _flag_type(annotation):
    """The argparse converter for a settings field (booleans are handled separately)."""
    for candidate in (int, float, Path):
        if annotation is candidate or candidate in getattr(annotation, "__args__", ()):
            return candidate
    return str


def settings_from_cli(argv: list[str] | None = None) -> Settings:
    """Environment first, then every field as a flag: --model-dir, --max-queue, --no-warmup, ..."""
    parser = argparse.ArgumentParser(description="Chatterbox Turbo TTS server")
    for name, field in Settings.model_fields.items():
        flag = "--" + name.replace("_", "-")
        if field.annotation is bool:
            parser.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction, default=None)
        else:
            parser.add_argument(
                flag, dest=name, type=_flag_type(field.annotation), default=None, help=f"env TTS_{name.upper()}"
            )
    overrides = {k: v for k, v in vars(parser.parse_args(argv)).items() if v is not None}
    return Settings(**overrides)
