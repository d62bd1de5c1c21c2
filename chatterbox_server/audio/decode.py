"""Reference clips: bytes or a path in, mono float32 at 24 kHz out, with every check a voice needs."""

import io
import logging
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from chatterbox_server.audio.pcm import SAMPLE_RATE_HZ
from chatterbox_server.errors import InvalidAudioError

logger = logging.getLogger(__name__)

MIN_VOICE_SECONDS = 5.0  # upstream refuses shorter reference clips


def read_audio_bytes(source: str | Path | bytes) -> bytes:
    """Return the raw bytes of a clip given as a path or as bytes."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source)
    path = Path(source)
    try:
        return path.read_bytes()
    except OSError as e:
        raise InvalidAudioError(f"cannot read audio file {path}: {e.strerror or e}") from e


def decode_audio(data: bytes) -> tuple[np.ndarray, int]:
    """Decode WAV/FLAC/OGG/MP3 bytes → (float32 [samples, channels], sample rate)."""
    if not data:
        raise InvalidAudioError("audio file is empty")
    try:
        samples, sample_rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as e:
        reason = getattr(e, "error_string", None) or str(e)
        raise InvalidAudioError(f"cannot decode audio ({reason}); send WAV, FLAC, OGG or MP3") from e
    return samples, int(sample_rate)


def prepare_reference_audio(data: bytes, *, max_seconds: float, min_seconds: float = MIN_VOICE_SECONDS) -> np.ndarray:
    """Decode a reference clip to what the speech encoder takes: mono float32 [samples] at 24 kHz.

    Stereo is averaged, other rates are resampled with soxr. Rejects clips outside
    [min_seconds, max_seconds] and non-finite samples with InvalidAudioError.
    """
    samples, sample_rate = decode_audio(data)
    if samples.shape[0] == 0 or sample_rate <= 0:
        raise InvalidAudioError("audio file holds no samples")
    if not np.isfinite(samples).all():
        raise InvalidAudioError("audio holds non-finite samples (NaN or infinity)")
    duration_s = samples.shape[0] / sample_rate
    if duration_s < min_seconds:
        raise InvalidAudioError(f"reference audio is {duration_s:.2f} s long; at least {min_seconds:g} s is needed")
    if duration_s > max_seconds:
        raise InvalidAudioError(f"reference audio is {duration_s:.2f} s long; at most {max_seconds:g} s is accepted")
    mono = samples.mean(axis=1, dtype=np.float32)
    if sample_rate != SAMPLE_RATE_HZ:
        mono = soxr.resample(mono, sample_rate, SAMPLE_RATE_HZ, quality="HQ").astype(np.float32)
    return np.clip(mono, -1.0, 1.0)
