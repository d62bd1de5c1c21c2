"""Reference-clip decoding and WAV encoding. Pure functions over numpy arrays; no model here."""

import io
import logging
import struct
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from errors import InvalidAudioError

logger = logging.getLogger(__name__)

SAMPLE_RATE_HZ = 24_000
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


def prepare_reference_audio(
    data: bytes, *, max_seconds: float, min_seconds: float = MIN_VOICE_SECONDS
) -> np.ndarray:
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
        raise InvalidAudioError(
            f"reference audio is {duration_s:.2f} s long; at least {min_seconds:g} s is needed"
        )
    if duration_s > max_seconds:
        raise InvalidAudioError(
            f"reference audio is {duration_s:.2f} s long; at most {max_seconds:g} s is accepted"
        )
    mono = samples.mean(axis=1, dtype=np.float32)
    if sample_rate != SAMPLE_RATE_HZ:
        mono = soxr.resample(mono, sample_rate, SAMPLE_RATE_HZ, quality="HQ").astype(np.float32)
    return np.clip(mono, -1.0, 1.0)


def to_pcm16(waveform: np.ndarray) -> np.ndarray:
    """float waveform in [-1, 1] → int16 PCM, clipped (never wrapped)."""
    clipped = np.clip(np.nan_to_num(waveform, nan=0.0), -1.0, 1.0)
    return np.round(clipped * 32767.0).astype(np.int16)


def encode_wav(waveform: np.ndarray, sample_rate: int = SAMPLE_RATE_HZ) -> bytes:
    """float32 [samples] → bytes of a 16-bit PCM mono WAV file."""
    buffer = io.BytesIO()
    sf.write(buffer, to_pcm16(waveform), sample_rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def write_wav(path: str | Path, waveform: np.ndarray, sample_rate: int = SAMPLE_RATE_HZ) -> None:
    """Write float32 [samples] as a 16-bit PCM mono WAV file."""
    sf.write(str(path), to_pcm16(waveform), sample_rate, format="WAV", subtype="PCM_16")


FADE_SECONDS = 0.01  # 10 ms raised-cosine fades at piece edges: no click at a seam


def _ramp(n: int) -> np.ndarray:
    """Raised-cosine rise from 0 to 1 over n samples, float32 [n]."""
    return (0.5 - 0.5 * np.cos(np.linspace(0.0, np.pi, n, dtype=np.float32))).astype(np.float32)


def fade_in(waveform: np.ndarray, fade_s: float = FADE_SECONDS, sample_rate: int = SAMPLE_RATE_HZ) -> np.ndarray:
    """A copy of float32 [samples] whose first fade_s rise from silence."""
    out = np.array(waveform, dtype=np.float32, copy=True)
    n = min(int(fade_s * sample_rate), out.shape[0])
    out[:n] *= _ramp(n)
    return out


def fade_out(waveform: np.ndarray, fade_s: float = FADE_SECONDS, sample_rate: int = SAMPLE_RATE_HZ) -> np.ndarray:
    """A copy of float32 [samples] whose last fade_s fall to silence."""
    out = np.array(waveform, dtype=np.float32, copy=True)
    n = min(int(fade_s * sample_rate), out.shape[0])
    if n:
        out[-n:] *= _ramp(n)[::-1]
    return out


def fade_edges(waveform: np.ndarray, fade_s: float = FADE_SECONDS,
               sample_rate: int = SAMPLE_RATE_HZ) -> np.ndarray:
    """A copy of float32 [samples] with a raised-cosine fade-in and fade-out."""
    half = min(fade_s, waveform.shape[0] / 2 / sample_rate)
    return fade_out(fade_in(waveform, half, sample_rate), half, sample_rate)


def crossfade(tail: np.ndarray, head: np.ndarray) -> np.ndarray:
    """Blend two renderings of the same span, float32 [n] each: tail fades out as head fades in."""
    ramp = _ramp(tail.shape[0])
    return (tail * ramp[::-1] + head * ramp).astype(np.float32)


def change_speed(waveform: np.ndarray, speed: float) -> np.ndarray:
    """Time-stretch float32 [samples] by `speed` (2.0 = twice as fast) keeping the pitch.

    librosa's phase vocoder; its first call in a fresh install JIT-compiles for ~17 s, so the
    server warms it at start-up (warm_speed_change) rather than on a request.
    """
    if speed == 1.0 or waveform.shape[0] == 0:
        return waveform
    import librosa  # heavy import, only for speed != 1

    return librosa.effects.time_stretch(waveform.astype(np.float32), rate=speed).astype(np.float32)


def warm_speed_change() -> None:
    change_speed(np.zeros(SAMPLE_RATE_HZ, dtype=np.float32) + 1e-3, 1.25)


def wav_stream_header(sample_rate: int = SAMPLE_RATE_HZ) -> bytes:
    """A 16-bit mono WAV header for a stream of unknown length (RIFF and data sizes 0xFFFFFFFF)."""
    unknown = 0xFFFFFFFF
    fmt = struct.pack("<4sIHHIIHH", b"fmt ", 16, 1, 1, sample_rate, sample_rate * 2, 2, 16)
    return struct.pack("<4sI4s", b"RIFF", unknown, b"WAVE") + fmt + struct.pack("<4sI", b"data", unknown)
