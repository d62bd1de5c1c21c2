"""The server's view of registered voices: an index over a backend, revalidated so replicas agree.

Each replica keeps what it has read (records, and "not registered" answers) for at most
`revalidate_s` seconds before asking the backend again. That is the staleness bound: a voice
registered, replaced or deleted on one replica is seen by every other within `revalidate_s`
(plus the time of one read). Writes made through this store are visible here at once.
"""

import logging
import threading
import time
import uuid
from collections.abc import Callable

import cachetools

from chatterbox_server.engine.voices import VoiceEmbedding
from chatterbox_server.voice_store.backend import VoiceBackend
from chatterbox_server.voice_store.records import (
    VOICE_ID_PATTERN,
    VoiceDataError,
    VoiceRecord,
    check_sha256,
    embedding_from_bytes,
    embedding_to_bytes,
    sha256_hex,
    validate_voice_id,
)

logger = logging.getLogger(__name__)

MAX_REMEMBERED_MISSES = 10_000  # "not registered" answers kept (bounds memory under id-guessing floods)


class VoiceStore:
    """Registered voices: which exist (cached for `revalidate_s`), their data, and writes."""

    def __init__(
        self,
        backend: VoiceBackend,
        model: str,
        revalidate_s: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.backend = backend
        self.model = model
        self.revalidate_s = revalidate_s
        self._clock = clock
        self._lock = threading.Lock()  # the index; never held during backend I/O
        self._list_lock = threading.Lock()
        self._records: dict[str, tuple[VoiceRecord, float]] = {}  # voice id → (record, when read)
        self._misses: cachetools.TTLCache = cachetools.TTLCache(
            MAX_REMEMBERED_MISSES, ttl=max(revalidate_s, 1e-9), timer=clock
        )
        self._listed_at: float | None = None

    @property
    def shared(self) -> bool:
        return self.backend.shared

    def open(self) -> list[VoiceRecord]:
        """Recover the backend and read every record; returns them oldest first."""
        self.backend.open()
        self._listed_at = None
        return self.records()

    # ----- which voices exist -------------------------------------------------------------------

    def cached(self, voice_id: str) -> tuple[bool, VoiceRecord | None]:
        """(fresh, record) without touching the backend: fresh is False when `get` must read it."""
        if not isinstance(voice_id, str) or not VOICE_ID_PATTERN.fullmatch(voice_id):
            return True, None  # an id no registration can have never reaches the backend (or a path)
        now = self._clock()
        with self._lock:
            entry = self._records.get(voice_id)
            if entry is not None and now - entry[1] < self.revalidate_s:
                return True, entry[0]
            if entry is None and voice_id in self._misses:
                return True, None
        return False, None

    def get(self, voice_id: str) -> VoiceRecord | None:
        """The voice's record, read again from the backend when the cached one is stale."""
        fresh, record = self.cached(voice_id)
        return record if fresh else self.refresh(voice_id)

    def refresh(self, voice_id: str) -> VoiceRecord | None:
        """The voice's record read from the backend now, whatever the cache holds."""
        record = self.backend.read_record(voice_id)
        self._remember(voice_id, record)
        return record

    def records(self) -> list[VoiceRecord]:
        """Every registered voice, oldest first (listed again once `revalidate_s` has passed)."""
        with self._list_lock:  # callers arriving together share one listing of the backend
            now = self._clock()
            if self._listed_at is None or now - self._listed_at >= self.revalidate_s:
                listed = {r.voice_id: r for r in self.backend.list_records()}
                with self._lock:
                    self._records = {vid: (record, now) for vid, record in listed.items()}
                    self._misses.clear()
                self._listed_at = now
        with self._lock:
            return sorted((r for r, _ in self._records.values()), key=lambda r: r.created_at)

    def __len__(self) -> int:
        with self._lock:
            return len(self._records)

    def _remember(self, voice_id: str, record: VoiceRecord | None) -> None:
        with self._lock:
            if record is None:
                self._records.pop(voice_id, None)
                self._misses[voice_id] = True
            else:
                self._records[voice_id] = (record, self._clock())
                self._misses.pop(voice_id, None)

    # ----- a voice's data -----------------------------------------------------------------------

    def load_embedding(self, record: VoiceRecord) -> VoiceEmbedding | None:
        """The stored encoder outputs, or None if they were made by another model or are damaged."""
        if record.model != self.model:
            return None
        try:
            data = check_sha256(self.backend.read_embedding(record), record.embedding_sha256, "embedding")
            return embedding_from_bytes(data, record)
        except VoiceDataError as e:
            logger.warning("voice %r: stored embedding unusable (%s)", record.voice_id, e)
            return None

    def source_audio(self, record: VoiceRecord) -> bytes:
        """The reference clip as registered (VoiceDataError if missing or damaged)."""
        return check_sha256(self.backend.read_source(record), record.source_sha256, "source audio")

    # ----- writing ------------------------------------------------------------------------------

    def save(
        self, voice_id: str, source: bytes, voice: VoiceEmbedding, loudness_lufs: float | None = None
    ) -> VoiceRecord:
        """Persist a registration (see the backend for how a crash is survived); `loudness_lufs`:
        the voice's measured loudness, if it was measured."""
        embedding = embedding_to_bytes(voice)
        record = VoiceRecord(
            voice_id=validate_voice_id(voice_id),
            duration_s=round(voice.duration_s, 3),
            created_at=time.time(),
            content_hash=voice.content_hash,
            model=self.model,
            source_sha256=sha256_hex(source),
            embedding_sha256=sha256_hex(embedding),
            version=uuid.uuid4().hex,
            loudness_lufs=None if loudness_lufs is None else round(loudness_lufs, 3),
        )
        self.backend.write(record, source, embedding)
        self._remember(voice_id, record)
        return record

    def delete(self, voice_id: str) -> bool:
        deleted = self.backend.delete(voice_id)
        self._remember(voice_id, None)
        return deleted
