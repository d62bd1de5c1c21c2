"""Edits on float32 [samples] waveforms: fades and crossfades at seams, speed changes."""

import numpy as np

from chatterbox_server.audio.pcm import SAMPLE_RATE_HZ

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


def fade_edges(waveform: np.ndarray, fade_s: float = FADE_SECONDS, sample_rate: int = SAMPLE_RATE_HZ) -> np.ndarray:
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
