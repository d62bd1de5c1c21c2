"""Registered voices on disk: source audio, encoder outputs and metadata, written atomically.

Layout: VOICES_DIR/<voice_id>/{source.audio, embedding.npz, meta.json}. meta.json is the commit
record, holding the sha256 of the other two; a voice whose files do not match it is skipped with
a warning, never loaded half-way.

A registration is written whole into a staging folder `.<voice_id>.new` (each file fsynced) and
only then swapped in: the current folder is renamed to `.<voice_id>.old`, the staging folder to
`<voice_id>`, and the old one removed. A crash at any point leaves either the old version or the
new one complete; `scan()` finishes or rolls back an interrupted swap and removes leftovers
(staging folders, `.tmp` files, folders without meta.json).
"""

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from chatterbox_server.engine.voices import VoiceEmbedding
from chatterbox_server.errors import InvalidInputError

logger = logging.getLogger(__name__)

VOICE_ID_REGEX = r"^[A-Za-z0-9_-]{1,64}$"  # documented pattern; checked with fullmatch
VOICE_ID_PATTERN = re.compile(VOICE_ID_REGEX)
SOURCE_FILE, EMBEDDING_FILE, META_FILE = "source.audio", "embedding.npz", "meta.json"
STAGING_SUFFIX, OLD_SUFFIX = ".new", ".old"  # .<voice_id>.new: being written; .<voice_id>.old: being replaced
_ARRAYS = ("audio_features", "audio_tokens", "speaker_embeddings", "speaker_features")


@dataclass(frozen=True)
class VoiceRecord:
    """What the server lists for a voice (the arrays live in the engine's cache or on disk)."""

    voice_id: str
    duration_s: float
    created_at: float  # unix seconds
    content_hash: str  # sha256 of the source audio
    model: str  # model identity the embedding was made with
    source_sha256: str = ""
    embedding_sha256: str = ""


def validate_voice_id(voice_id: str) -> str:
    # fullmatch: `$` in match() also accepts a trailing newline ("evil\n" made a folder)
    if not isinstance(voice_id, str) or not VOICE_ID_PATTERN.fullmatch(voice_id):
        raise InvalidInputError("voice_id must be 1-64 letters, digits, '-' or '_'")
    return voice_id


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _write_atomic(path: Path, data: bytes) -> None:
    """Write bytes to a temp file beside `path`, fsync, then rename over it."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _fsync_dir(path: Path) -> None:
    """Make renames inside `path` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _embedding_bytes(voice: VoiceEmbedding) -> bytes:
    import io

    buffer = io.BytesIO()
    np.savez(buffer, **{name: getattr(voice, name) for name in _ARRAYS})
    return buffer.getvalue()


class VoiceStore:
    """The index of registered voices (in memory) backed by one folder per voice on disk."""

    def __init__(self, root: Path, model: str):
        self.root = Path(root)
        self.model = model
        self._records: dict[str, VoiceRecord] = {}
        self._lock = threading.Lock()  # the index
        self._write_lock = threading.Lock()  # one registration's swap at a time

    # ----- reading -------------------------------------------------------------------------

    def scan(self) -> list[tuple[VoiceRecord, bool]]:
        """Recover interrupted writes, then load the index from disk. Returns (record,
        embedding_usable) for each valid voice; embedding_usable is False when it was made by
        another model and must be re-encoded."""
        self.root.mkdir(parents=True, exist_ok=True)
        self._recover()
        found = []
        for folder in sorted(p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")):
            record = self._read_record(folder)
            if record is None:
                continue
            with self._lock:
                self._records[record.voice_id] = record
            found.append((record, record.model == self.model))
        return found

    def _recover(self) -> None:
        """Finish or roll back swaps a crash interrupted, and remove what no voice uses."""
        for path in sorted(self.root.iterdir()):
            name = path.name
            if name.startswith(".") and name.endswith((STAGING_SUFFIX, OLD_SUFFIX)) and path.is_dir():
                voice_id = name[1:].rsplit(".", 1)[0]
                final = self.root / voice_id
                if final.exists() or not (path / META_FILE).is_file():
                    logger.warning("removing %s: left by an interrupted write", path)
                    shutil.rmtree(path, ignore_errors=True)
                else:  # the crash fell between the swap's two renames: this copy is whole
                    logger.warning("restoring voice %r from %s", voice_id, path)
                    os.rename(path, final)
            elif name.endswith(".tmp") and path.is_file():
                path.unlink(missing_ok=True)
        for folder in sorted(p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")):
            for leftover in folder.glob(".*.tmp"):
                leftover.unlink(missing_ok=True)
            if not (folder / META_FILE).is_file():
                logger.warning("removing %s: no %s (an unfinished write)", folder, META_FILE)
                shutil.rmtree(folder, ignore_errors=True)
        _fsync_dir(self.root)

    def _read_record(self, folder: Path) -> VoiceRecord | None:
        meta_path = folder / META_FILE
        if not meta_path.is_file():
            logger.warning("ignoring %s: no %s (an unfinished write)", folder, META_FILE)
            return None
        try:
            record = VoiceRecord(**json.loads(meta_path.read_text()))
            validate_voice_id(record.voice_id)
        except (ValueError, TypeError, InvalidInputError) as e:
            logger.warning("ignoring %s: unreadable %s (%s)", folder, META_FILE, e)
            return None
        if record.voice_id != folder.name:
            logger.warning("ignoring %s: its meta names voice %r", folder, record.voice_id)
            return None
        source = folder / SOURCE_FILE
        if not source.is_file() or _sha256(source) != record.source_sha256:
            logger.warning("ignoring voice %r: source audio missing or torn", record.voice_id)
            return None
        return record

    def load_embedding(self, voice_id: str) -> VoiceEmbedding | None:
        """The stored encoder outputs, or None if absent, torn or from another model."""
        record = self.get(voice_id)
        if record is None or record.model != self.model:
            return None
        path = self.root / voice_id / EMBEDDING_FILE
        try:
            if _sha256(path) != record.embedding_sha256:
                raise ValueError("checksum mismatch")
            with np.load(path) as arrays:
                parts = {name: np.array(arrays[name]) for name in _ARRAYS}
        except (OSError, ValueError, KeyError) as e:
            logger.warning("voice %r: stored embedding unusable (%s)", voice_id, e)
            return None
        return VoiceEmbedding(**parts, content_hash=record.content_hash, duration_s=record.duration_s)

    def source_audio(self, voice_id: str) -> bytes:
        return (self.root / voice_id / SOURCE_FILE).read_bytes()

    def get(self, voice_id: str) -> VoiceRecord | None:
        with self._lock:
            return self._records.get(voice_id)

    def records(self) -> list[VoiceRecord]:
        with self._lock:
            return sorted(self._records.values(), key=lambda r: r.created_at)

    def __len__(self) -> int:
        with self._lock:
            return len(self._records)

    # ----- writing -------------------------------------------------------------------------

    def save(self, voice_id: str, source: bytes, voice: VoiceEmbedding) -> VoiceRecord:
        """Persist a voice: written whole beside the old version, then swapped in (see the module
        docstring), so a crash never loses the old version before the new one is complete."""
        with self._write_lock:
            return self._save(validate_voice_id(voice_id), source, voice)

    def _save(self, voice_id: str, source: bytes, voice: VoiceEmbedding) -> VoiceRecord:
        self.root.mkdir(parents=True, exist_ok=True)
        final = self.root / voice_id
        staging, old = self.root / f".{voice_id}{STAGING_SUFFIX}", self.root / f".{voice_id}{OLD_SUFFIX}"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        embedding = _embedding_bytes(voice)
        _write_atomic(staging / SOURCE_FILE, source)
        _write_atomic(staging / EMBEDDING_FILE, embedding)
        record = VoiceRecord(
            voice_id=voice_id,
            duration_s=round(voice.duration_s, 3),
            created_at=time.time(),
            content_hash=voice.content_hash,
            model=self.model,
            source_sha256=hashlib.sha256(source).hexdigest(),
            embedding_sha256=hashlib.sha256(embedding).hexdigest(),
        )
        _write_atomic(staging / META_FILE, json.dumps(asdict(record), indent=2).encode())
        _fsync_dir(staging)
        if final.exists():
            shutil.rmtree(old, ignore_errors=True)
            os.rename(final, old)
        os.rename(staging, final)
        _fsync_dir(self.root)
        shutil.rmtree(old, ignore_errors=True)
        with self._lock:
            self._records[voice_id] = record
        return record

    def delete(self, voice_id: str) -> bool:
        with self._lock:
            record = self._records.pop(voice_id, None)
        if record is None:
            return False
        folder = self.root / voice_id
        (folder / META_FILE).unlink(missing_ok=True)  # uncommit first, then remove the rest
        shutil.rmtree(folder, ignore_errors=True)
        return True
