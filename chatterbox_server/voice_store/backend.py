"""The interface a voice storage backend implements (a local folder, an S3-compatible bucket)."""

from typing import Protocol

from chatterbox_server.voice_store.records import VoiceRecord


class VoiceBackend(Protocol):
    """Blocking, thread-safe storage of committed voices.

    Every backend keeps the same promise: `write` stores the data first and the record last, so a
    voice is visible only when whole; a crash mid-write leaves the previous version readable; a
    reader never sees a record whose data is not (yet) there, except after outside damage, which
    `read_*` report as VoiceDataError.
    """

    kind: str  # which backend this is, as /health reports it: "local", "s3"
    shared: bool  # other processes may write it too (replicas); the store then revalidates what it caches
    location: str  # for logs and /health

    def check(self) -> None:
        """Fail fast with VoiceStoreUnavailableError when the store cannot be used (before a model loads)."""

    def open(self) -> None:
        """Create or check the storage; finish or roll back writes a crash interrupted."""

    def list_records(self) -> list[VoiceRecord]:
        """Every committed voice."""
        ...

    def read_record(self, voice_id: str) -> VoiceRecord | None:
        """The voice's current record, or None when it is not (or no longer) registered."""
        ...

    def read_source(self, record: VoiceRecord) -> bytes:
        """The reference clip's bytes as registered (VoiceDataError if gone)."""
        ...

    def read_embedding(self, record: VoiceRecord) -> bytes:
        """The encoder outputs' .npz bytes (VoiceDataError if gone)."""
        ...

    def write(self, record: VoiceRecord, source: bytes, embedding: bytes) -> None:
        """Store a registration whole, replacing any earlier version only once the new one is complete."""

    def delete(self, voice_id: str) -> bool:
        """Remove the voice (its record first); False if it was not registered."""
        ...


class UrlVoiceBackend(VoiceBackend, Protocol):
    """A backend configured by a URL (`voice_store=<scheme>://...`), picked by its scheme."""

    scheme: str  # the URL scheme it accepts, e.g. "s3"
    url_form: str  # what such a URL looks like, for error messages: "s3://bucket/prefix"

    def __init__(self, url: str) -> None: ...

    @classmethod
    def check_url(cls, url: str) -> None:
        """Raise ValueError naming the expected shape unless this backend can open `url` (no I/O)."""
