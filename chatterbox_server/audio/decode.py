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
MIN_SAMPLE_RATE_HZ = 8_000  # telephone quality; below it a clip cannot carry a voice
MAX_CHANNELS = 8
SILENCE_RMS = 1e-4  # a clip quieter than this (about -80 dBFS) holds no voice to clone


def read_audio_bytes(source: str | Path | bytes) -> bytes:
    """Return the raw bytes of a clip given as a path or as bytes."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source)
    path = Path(source)
    try:
        return path.read_bytes()
    except OSError as e:
        raise InvalidAudioError(f"cannot read audio file {path}: {e.strerror or e}") from e


def decode_audio(data: bytes, max_seconds: float | None = None) -> tuple[np.ndarray, int]:
    """Decode WAV/FLAC/OGG/MP3 bytes → (float32 [samples, channels], sample rate).

    The header is checked first (rate, channels and, with max_seconds, length), so a small file
    that expands to an hour of audio is refused before a sample is decoded.
    """
    if not data:
        raise InvalidAudioError("audio file is empty")
    try:
        info = sf.info(io.BytesIO(data))
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as e:
        reason = getattr(e, "error_string", None) or str(e)
        raise InvalidAudioError(f"cannot decode audio ({reason}); send WAV, FLAC, OGG or MP3") from e
    if info.samplerate < MIN_SAMPLE_RATE_HZ:
        raise InvalidAudioError(f"sample rate {info.samplerate} Hz is too low; at least {MIN_SAMPLE_RATE_HZ} Hz")
    if not 1 <= info.channels <= MAX_CHANNELS:
        raise InvalidAudioError(f"audio has {info.channels} channels; 1 to {MAX_CHANNELS} are accepted")
    if max_seconds is not None and info.frames / info.samplerate > max_seconds:
        raise InvalidAudioError(
            f"reference audio is {info.frames / info.samplerate:.2f} s long; at most {max_seconds:g} s is accepted"
        )
    try:
        frames = -1 if max_seconds is None else int(max_seconds * info.samplerate) + 1  # never more than allowed
        samples, sample_rate = sf.read(io.BytesIO(data), frames=frames, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as e:
        reason = getattr(e, "error_string", None) or str(e)
        raise InvalidAudioError(f"cannot decode audio ({reason}); send WAV, FLAC, OGG or MP3") from e
    return samples, int(sample_rate)


def prepare_reference_audio(data: bytes, *, max_seconds: float, min_seconds: float = MIN_VOICE_SECONDS) -> np.ndarray:
    """Decode a reference clip to what the speech encoder takes: mono float32 [samples] at 24 kHz.

    Stereo is averaged, other rates are resampled with soxr. Rejects clips outside
    [min_seconds, max_seconds] and non-finite samples with InvalidAudioError.
    """
    samples, sample_rate = decode_audio(data, max_seconds)
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
    if float(np.sqrt(np.mean(np.square(mono, dtype=np.float64)))) < SILENCE_RMS:
        raise InvalidAudioError("reference audio is silent; send a clip of one person speaking")
    if sample_rate != SAMPLE_RATE_HZ:
        mono = soxr.resample(mono, sample_rate, SAMPLE_RATE_HZ, quality="HQ").astype(np.float32)
    return np.clip(mono, -1.0, 1.0)
