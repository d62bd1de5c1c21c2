"""Server settings: one object, read from TTS_-prefixed environment variables, overridable by
command-line flags (`--max-queue 64` overrides TTS_MAX_QUEUE).

The engine's settings are not written here: `Settings` inherits every field of the engine config's
sections (engine/config.py), and `engine_config()` hands them over by name."""

import argparse
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from chatterbox_server.audio.decode import DEFAULT_MAX_SAMPLE_RATE_HZ, MIN_SAMPLE_RATE_HZ
from chatterbox_server.engine.config import (
    ENGINE_FIELDS,
    SECTION_OF,
    SECTIONS,
    GenerationConfig,
    LoopConfig,
    ModelConfig,
    TTSConfig,
    VocoderConfig,
)
from chatterbox_server.flags import add_field_flags, describe_validation_error, given_flags
from chatterbox_server.model.stand_in import DEFAULT_TINY_DIR
from chatterbox_server.server.auth import ApiKeys
from chatterbox_server.voice_store import check_store_url
from chatterbox_server.voice_store.records import VOICE_ID_PATTERN

ENV_PREFIX = "TTS_"
MIB = 1024 * 1024
DEFAULT_POOL_THREADS = 4  # synthesis runs on the engine's own loop; the pool encodes voices and audio


# Bases listed last-section-first: pydantic orders inherited fields from the far end of the MRO,
# so model_fields reads model, generation, loop, vocoder, then the server's own.
class Settings(BaseSettings, VocoderConfig, LoopConfig, GenerationConfig, ModelConfig):
    """Every setting: a TTS_ environment variable and a flag of server.py (the flag wins)."""

    # the sections are frozen and forbid extras; settings are neither
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=False, protected_namespaces=())

    # --- serving
    host: str = Field("0.0.0.0", description="address to listen on")
    port: int = Field(8000, ge=1, le=65535, description="port to listen on")
    log_level: Literal["critical", "error", "warning", "info", "debug"] = Field("info", description="log level")

    # --- connections (server/connections.py: enforced below the app, before a request reaches it)
    max_connections: int = Field(
        1000,
        ge=1,
        description="client connections open at once (HTTP and WebSocket); at the limit the oldest idle one is "
        "closed for a new one, or the new one gets 503; kept below the process's open-file limit",
    )
    header_timeout_s: float = Field(
        10.0, gt=0, description="time a request's line and headers may take to arrive; beyond it 408 and close"
    )
    max_header_bytes: int = Field(
        32 * 1024, ge=1024, description="bytes of a request's line and headers; beyond it 431 and close"
    )
    body_timeout_s: float = Field(
        30.0, gt=0, description="longest pause between two parts of a request body; beyond it 408 and close"
    )
    keep_alive_timeout_s: float = Field(
        5.0, gt=0, description="an idle keep-alive connection is closed after this (behind a balancer: above its own)"
    )
    write_timeout_s: float = Field(
        30.0,
        gt=0,
        description="longest a response or socket message may wait for the client to read it; beyond it the "
        "connection is dropped and its synthesis stopped",
    )

    # --- security
    api_keys: str = Field(
        "", description="comma-separated API keys, or sha256:<hex> of a key; empty: no keys (warned beyond loopback)"
    )
    metrics_require_key: bool = Field(False, description="/metrics needs a key too (health probes never do)")
    cors_origins: str = Field("", description="comma-separated origins a browser page may call from; empty: none")

    # --- the stand-in (the model's own settings come from engine/config.py's sections)
    stand_in: bool = Field(False, description="serve the generated tiny stand-in (tones, not words) when no model_dir")
    stand_in_dir: Path = Field(DEFAULT_TINY_DIR, description="where the stand-in is generated")

    # --- voices
    voices_dir: Path = Field(Path("voices"), description="the local voice store (when voice_store is empty)")
    voice_store: str = Field(
        "", description="s3://bucket/prefix: voices shared by replicas in S3-compatible storage (AWS_* environment)"
    )
    voice_revalidate_s: float = Field(5.0, ge=0, description="a voice changed on another replica is seen within this")
    voice_aliases: str = Field(
        "", description="name=voice_id pairs, comma-separated (alloy=alice): names OpenAI clients send"
    )
    default_voice: str = Field(
        "",
        description="the voice used when a request names none, and on /v1/audio/speech for OpenAI's voice names "
        "(alloy, ...) with no alias or voice of their own (empty: a voice is required)",
    )
    voice_cache_size: int = Field(100, ge=1, description="voices' encoder outputs kept in memory (LRU)")
    max_voice_file_size: int = Field(50 * MIB, ge=1, description="bytes per upload; larger gets 413 while streaming")
    max_clip_sample_rate_hz: int = Field(
        DEFAULT_MAX_SAMPLE_RATE_HZ,
        ge=MIN_SAMPLE_RATE_HZ,
        description="highest sample rate of a reference clip, read from its header before decoding; beyond it 422",
    )

    # --- output
    target_lufs: float | None = Field(
        None,
        ge=-40,
        le=-5,
        description="normalise every response to this loudness (LUFS; -16 suits assistants), with a peak "
        "limiter at -1 dBFS; each voice measured once (see README 'Steady loudness'); unset: off, output as spoken",
    )

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
    max_realtime_sessions: int = Field(
        64,
        ge=1,
        description="realtime sessions open at once (realtime and ElevenLabs stream-input WebSockets, Wyoming "
        "connections); beyond it 429",
    )
    max_realtime_sessions_per_client: int = Field(
        8,
        ge=1,
        description="realtime sessions one client may hold at once (the client: its API key with keys set, else "
        "its address); beyond it 429 too_many_sessions",
    )
    realtime_idle_timeout_s: float = Field(
        300.0, gt=0, description="a realtime session or Wyoming connection with nothing to say for this long is closed"
    )

    # --- the Wyoming server, for Home Assistant (server/wyoming.py)
    wyoming_port: int | None = Field(
        None, ge=1, le=65535, description="port of the Wyoming server for Home Assistant, e.g. 10200 (unset: off)"
    )
    wyoming_host: str = Field("", description="address the Wyoming server listens on (empty: the HTTP host)")
    wyoming_zeroconf: bool = Field(
        False, description="advertise the Wyoming server on the LAN (mDNS _wyoming._tcp; needs the zeroconf package)"
    )
    shutdown_grace_s: float = Field(30.0, ge=0, description="on SIGTERM, time in-flight requests get to finish")
    warmup: bool = Field(True, description="one synthesis before ready")

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
        """The engine's configuration: each of its fields taken from these settings by name. With
        --stand-in and no model dir, the stand-in's folder, and fp32 where model_dtype is auto."""
        fields = {name: getattr(self, name) for name in ENGINE_FIELDS}
        if self.stand_in and self.model_dir is None:
            fields["model_dir"] = self.stand_in_dir
        if self.stand_in and self.model_dtype == "auto":
            fields["model_dtype"] = "fp32"
        return TTSConfig(**fields)


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
    """'--model-dtype (TTS_MODEL_DTYPE) = 'fp17': Input should be 'auto', ...' for each bad field."""
    return describe_validation_error(exc, Settings.model_fields, ENV_PREFIX)


def build_parser() -> argparse.ArgumentParser:
    """server.py's flags: one per setting (flags.py), the server's own first, then the engine's by section."""
    parser = argparse.ArgumentParser(
        description="Chatterbox Turbo TTS server. Every flag also reads a TTS_ environment variable; the flag wins."
    )
    server_fields = [name for name in Settings.model_fields if name not in SECTION_OF]
    add_field_flags(parser.add_argument_group("server"), Settings, server_fields, ENV_PREFIX)
    for section, config in SECTIONS.items():
        group = parser.add_argument_group(f"{section} (engine)", config.__doc__)
        add_field_flags(group, Settings, config.model_fields, ENV_PREFIX)
    return parser


def settings_from_cli(argv: list[str] | None = None) -> Settings:
    """Environment first, then every field as a flag: --model-dir, --max-queue, --no-warmup, ...

    Raises SettingsError with one line naming the flag, its variable and what is wrong."""
    overrides = given_flags(build_parser().parse_args(argv), Settings.model_fields)
    try:
        return Settings(**overrides)
    except ValidationError as e:
        raise SettingsError(describe_error(e)) from None
