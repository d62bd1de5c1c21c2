"""Where registered voices live: one interface (VoiceBackend), a local folder or an S3-compatible
bucket behind it, and the VoiceStore index the server reads through."""

from pathlib import Path
from urllib.parse import urlparse

from chatterbox_server.voice_store.backend import UrlVoiceBackend, VoiceBackend
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
    "BACKEND_KINDS",
    "URL_BACKENDS",
    "VOICE_ID_REGEX",
    "LocalVoiceBackend",
    "S3VoiceBackend",
    "UrlVoiceBackend",
    "VoiceBackend",
    "VoiceDataError",
    "VoiceRecord",
    "VoiceStore",
    "check_store_url",
    "open_backend",
    "validate_voice_id",
]


# The backends a `voice_store` URL can name, by scheme; an empty URL is the local folder.
URL_BACKENDS: dict[str, type[UrlVoiceBackend]] = {cls.scheme: cls for cls in (S3VoiceBackend,)}
BACKEND_KINDS = (LocalVoiceBackend.kind, *(cls.kind for cls in URL_BACKENDS.values()))


def _url_backend(store_url: str) -> type[UrlVoiceBackend]:
    """The backend class for a non-empty store URL, its URL checked; ValueError otherwise."""
    backend = URL_BACKENDS.get(urlparse(store_url).scheme)
    if backend is None:
        forms = " or ".join(cls.url_form for cls in URL_BACKENDS.values())
        raise ValueError(f"voice store must be empty (local voices_dir) or {forms}, got {store_url!r}")
    backend.check_url(store_url)
    return backend


def check_store_url(store_url: str) -> str:
    """Raise ValueError unless `store_url` is empty (the local folder) or a URL some backend accepts."""
    if store_url:
        _url_backend(store_url)
    return store_url


def open_backend(store_url: str, voices_dir: Path) -> VoiceBackend:
    """A URL → the backend its scheme names (`s3://bucket/prefix` → the bucket); empty → the local
    folder `voices_dir`."""
    if store_url:
        return _url_backend(store_url)(store_url)
    return LocalVoiceBackend(voices_dir)
