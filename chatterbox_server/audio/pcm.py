"""16-bit PCM and WAV bytes from float32 waveforms, and the streamed WAV header."""

import io
import struct
from pathlib import Path

import numpy as np
import soundfile as sf

SAMPLE_RATE_HZ = 24_000  # what the decoder speaks and the encoder listens at


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


def wav_stream_header(sample_rate: int = SAMPLE_RATE_HZ) -> bytes:
    """A 16-bit mono WAV header for a stream of unknown length (RIFF and data sizes 0xFFFFFFFF)."""
    unknown = 0xFFFFFFFF
    fmt = struct.pack("<4sIHHIIHH", b"fmt ", 16, 1, 1, sample_rate, sample_rate * 2, 2, 16)
    return struct.pack("<4sI4s", b"RIFF", unknown, b"WAVE") + fmt + struct.pack("<4sI", b"data", unknown)
