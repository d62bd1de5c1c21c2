"""What a stored voice is made of: its commit record (meta.json) and its encoder outputs as bytes."""

import hashlib
import io
import json
import math
import re
from dataclasses import asdict, dataclass, fields, replace

import numpy as np

from chatterbox_server.engine.voices import VoiceEmbedding
from chatterbox_server.errors import InvalidInputError

VOICE_ID_REGEX = r"^[A-Za-z0-9_-]{1,64}$"  # documented pattern; checked with fullmatch
VOICE_ID_PATTERN = re.compile(VOICE_ID_REGEX)
EMBEDDING_ARRAYS = ("audio_features", "audio_tokens", "speaker_embeddings", "speaker_features")


class VoiceDataError(Exception):
    """A committed voice's data is missing or does not match its record's checksums."""


@dataclass(frozen=True)
class VoiceRecord:
    """The commit record of a voice: written last, so a voice exists once its record does.

    The sha256 fields name the exact bytes of the source clip and of the embedding, so a torn or
    swapped data file is detected on read; `version` tells one registration from the next.
    """

    voice_id: str
    duration_s: float
    created_at: float  # unix seconds
    content_hash: str  # sha256 of the source audio
    model: str  # model identity the embedding was made with
    source_sha256: str = ""
    embedding_sha256: str = ""
    version: str = ""  # unique per registration (object-store data keys carry it)
    # the voice's measured loudness (server/loudness.py), by `model`; None: not measured (older
    # records, or registered with TTS_TARGET_LUFS unset), measured on first use instead
    loudness_lufs: float | None = None

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), indent=2).encode()

    @classmethod
    def from_json(cls, data: bytes | str) -> "VoiceRecord":
        """Parse and check a record; ValueError for anything malformed."""
        try:
            raw = json.loads(data)
            known = {f.name for f in fields(cls)}
            record = cls(**{k: v for k, v in raw.items() if k in known})
            if not _is_measurement(record.loudness_lufs):  # unusable: measured again instead
                record = replace(record, loudness_lufs=None)
            validate_voice_id(record.voice_id)
        except (TypeError, AttributeError, InvalidInputError) as e:
            raise ValueError(str(e)) from None
        return record


def _is_measurement(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def validate_voice_id(voice_id: str) -> str:
    # fullmatch: `$` in match() also accepts a trailing newline ("evil\n" made a folder)
    if not isinstance(voice_id, str) or not VOICE_ID_PATTERN.fullmatch(voice_id):
        raise InvalidInputError("voice_id must be 1-64 letters, digits, '-' or '_'")
    return voice_id


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def check_sha256(data: bytes, expected: str, what: str) -> bytes:
    if sha256_hex(data) != expected:
        raise VoiceDataError(f"{what} does not match its record's checksum")
    return data


def embedding_to_bytes(voice: VoiceEmbedding) -> bytes:
    """The four encoder outputs as one .npz file."""
    buffer = io.BytesIO()
    np.savez(buffer, **{name: getattr(voice, name) for name in EMBEDDING_ARRAYS})
    return buffer.getvalue()


def embedding_from_bytes(data: bytes, record: VoiceRecord) -> VoiceEmbedding:
    """Inverse of embedding_to_bytes; VoiceDataError for a file that is not one."""
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
            parts = {name: np.array(arrays[name]) for name in EMBEDDING_ARRAYS}
    except (OSError, ValueError, KeyError) as e:
        raise VoiceDataError(f"embedding unreadable: {e}") from None
    return VoiceEmbedding(**parts, content_hash=record.content_hash, duration_s=record.duration_s)
