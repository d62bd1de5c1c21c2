"""Where registered voices live: one interface (VoiceBackend), a local folder or an S3-compatible
bucket behind it, and the VoiceStore index the server reads through."""

from pathlib import Path

from chatterbox_server.voice_store.backend import VoiceBackend
from chatterbox_server.voice_store.local import LocalVoiceBackend
from chatterbox_server.voice_store.records import (
    VOICE_ID_REGEX,
    VoiceDataError,
    VoiceRecord,
    validate_voice_id,
)
from chatterbox_server.voice_store.s3 import S3VoiceBackend
from chatterbox_server.voice_store.store import VoiceStore

__all__ = [
    "VOICE_ID_REGEX",
    "LocalVoiceBackend",
    "S3VoiceBackend",
    "VoiceBackend",
    "VoiceDataError",
    "VoiceRecord",
    "VoiceStore",
    "open_backend",
    "validate_voice_id",
]


def open_backend(store_url: str, voices_dir: Path) -> VoiceBackend:
    """`s3://bucket/prefix` → the bucket; empty → the local folder `voices_dir`."""
    if store_url.startswith("s3://"):
        return S3VoiceBackend(store_url)
    if store_url:
        raise ValueError(f"voice store must be empty (local voices_dir) or s3://bucket/prefix, got {store_url!r}")
    return LocalVoiceBackend(voices_dir)
