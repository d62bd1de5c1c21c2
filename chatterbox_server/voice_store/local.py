"""Voices in a local folder: VOICES_DIR/<voice_id>/{source.audio, embedding.npz, meta.json}.

meta.json is the commit record, holding the sha256 of the other two. A registration is written
whole into a staging folder `.<voice_id>.new` (each file fsynced) and only then swapped in: the
current folder is renamed to `.<voice_id>.old`, the staging folder to `<voice_id>`, and the old
one removed. A crash at any point leaves either the old version or the new one complete; `open()`
finishes or rolls back an interrupted swap and removes leftovers (staging folders, `.tmp` files,
folders without meta.json), and sets aside voices whose files do not match their record.
"""

import logging
import os
import shutil
import tempfile
import threading
from pathlib import Path

from chatterbox_server.errors import VoiceStoreUnavailableError
from chatterbox_server.voice_store.records import VoiceDataError, VoiceRecord, sha256_hex

logger = logging.getLogger(__name__)

SOURCE_FILE, EMBEDDING_FILE, META_FILE = "source.audio", "embedding.npz", "meta.json"
STAGING_SUFFIX, OLD_SUFFIX = ".new", ".old"  # .<voice_id>.new: being written; .<voice_id>.old: being replaced


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


class LocalVoiceBackend:
    """One folder per voice under `root`; one writer process (several readers may share it)."""

    kind = "local"  # configured by voices_dir, not by a URL
    shared = False

    def __init__(self, root: Path | str):
        self.root = Path(root)
        self.location = str(self.root)
        self._torn: set[str] = set()  # committed voices whose files failed their checksums at open()
        self._write_lock = threading.Lock()  # one registration's swap at a time

    # ----- start-up ---------------------------------------------------------------------------

    def check(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise VoiceStoreUnavailableError(f"voices folder {self.root}: {e.strerror}") from None
        if not os.access(self.root, os.W_OK | os.X_OK):
            raise VoiceStoreUnavailableError(f"voices folder {self.root} is not writable")

    def open(self) -> None:
        self.check()
        self._recover()
        self._torn = set()
        for folder in self._voice_folders():
            record = self._read_meta(folder)
            if record is None:
                continue
            source = folder / SOURCE_FILE
            if not source.is_file() or sha256_hex(source.read_bytes()) != record.source_sha256:
                logger.warning("ignoring voice %r: source audio missing or torn", record.voice_id)
                self._torn.add(record.voice_id)

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
        for folder in self._voice_folders():
            for leftover in folder.glob(".*.tmp"):
                leftover.unlink(missing_ok=True)
            if not (folder / META_FILE).is_file():
                logger.warning("removing %s: no %s (an unfinished write)", folder, META_FILE)
                shutil.rmtree(folder, ignore_errors=True)
        _fsync_dir(self.root)

    def _voice_folders(self) -> list[Path]:
        if not self.root.is_dir():
            return []
        return sorted(p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))

    # ----- reading ------------------------------------------------------------------------------

    def _read_meta(self, folder: Path) -> VoiceRecord | None:
        try:
            record = VoiceRecord.from_json((folder / META_FILE).read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            logger.warning("ignoring %s: unreadable %s (%s)", folder, META_FILE, e)
            return None
        if record.voice_id != folder.name:
            logger.warning("ignoring %s: its meta names voice %r", folder, record.voice_id)
            return None
        return record

    def list_records(self) -> list[VoiceRecord]:
        records = (self._read_meta(folder) for folder in self._voice_folders() if folder.name not in self._torn)
        return [r for r in records if r is not None]

    def read_record(self, voice_id: str) -> VoiceRecord | None:
        if voice_id in self._torn:
            return None
        return self._read_meta(self.root / voice_id)

    def _read(self, record: VoiceRecord, name: str) -> bytes:
        try:
            return (self.root / record.voice_id / name).read_bytes()
        except OSError as e:
            raise VoiceDataError(f"{name} unreadable: {e}") from None

    def read_source(self, record: VoiceRecord) -> bytes:
        return self._read(record, SOURCE_FILE)

    def read_embedding(self, record: VoiceRecord) -> bytes:
        return self._read(record, EMBEDDING_FILE)

    # ----- writing ------------------------------------------------------------------------------

    def write(self, record: VoiceRecord, source: bytes, embedding: bytes) -> None:
        """Written whole beside the old version, then swapped in (see the module docstring)."""
        with self._write_lock:
            self.root.mkdir(parents=True, exist_ok=True)
            voice_id = record.voice_id
            final = self.root / voice_id
            staging, old = self.root / f".{voice_id}{STAGING_SUFFIX}", self.root / f".{voice_id}{OLD_SUFFIX}"
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir()
            _write_atomic(staging / SOURCE_FILE, source)
            _write_atomic(staging / EMBEDDING_FILE, embedding)
            _write_atomic(staging / META_FILE, record.to_json())
            _fsync_dir(staging)
            if final.exists():
                shutil.rmtree(old, ignore_errors=True)
                os.rename(final, old)
            os.rename(staging, final)
            _fsync_dir(self.root)
            shutil.rmtree(old, ignore_errors=True)
            self._torn.discard(voice_id)

    def delete(self, voice_id: str) -> bool:
        with self._write_lock:
            folder = self.root / voice_id
            meta = folder / META_FILE
            if not meta.is_file():
                return False
            meta.unlink(missing_ok=True)  # uncommit first, then remove the rest
            shutil.rmtree(folder, ignore_errors=True)
            self._torn.discard(voice_id)
            return True
