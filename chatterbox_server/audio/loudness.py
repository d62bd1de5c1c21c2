"""Loudness on float32 [samples] waveforms: measure it (ITU-R BS.1770-4 integrated loudness, with
pyloudnorm), the gain that brings it to a target, and a peak limiter that keeps the result from
clipping.

`LoudnessNormalizer` is what a response runs its audio through, chunk by chunk: a constant gain,
then the limiter. The limiter has no look-ahead and acts only on samples that would pass the
ceiling: its gain reduction jumps at once to what such a sample needs and recovers exponentially
(`LIMITER_RELEASE_S`). It keeps that state from one chunk to the next and computes each sample
from its absolute position in the response, so the output is the same sample for sample however
the audio is cut into chunks (a stream's token windows, or whole pieces).
"""

import math

import numpy as np

from chatterbox_server.audio.pcm import SAMPLE_RATE_HZ

PEAK_CEILING_DBFS = -1.0  # no output sample goes above this (dBFS, sample peak): headroom for codecs
LIMITER_RELEASE_S = 0.1  # time constant of the limiter's recovery after a peak
MAX_GAIN_DB = 24.0  # the most a voice is raised or lowered (a near-silent voice is not blown up to noise)
LOUDNESS_BLOCK_S = 0.4  # BS.1770's gating block: shorter audio has no integrated loudness


def measure_lufs(waveform: np.ndarray, sample_rate: int = SAMPLE_RATE_HZ) -> float:
    """Integrated loudness of mono float [samples] in LUFS (BS.1770-4, gated; pyloudnorm's meter);
    -inf for silence or audio shorter than one 400 ms block."""
    samples = np.asarray(waveform, dtype=np.float64).reshape(-1)
    if samples.shape[0] <= LOUDNESS_BLOCK_S * sample_rate or not np.any(samples):
        return -math.inf
    import pyloudnorm  # imports scipy: only where loudness is measured

    return float(pyloudnorm.Meter(sample_rate, block_size=LOUDNESS_BLOCK_S).integrated_loudness(samples))


def normalization_gain_db(measured_lufs: float, target_lufs: float, max_gain_db: float = MAX_GAIN_DB) -> float:
    """The gain (dB) that takes audio measured at `measured_lufs` to `target_lufs`, within
    ±max_gain_db; 0 when nothing could be measured (silence)."""
    if not math.isfinite(measured_lufs):
        return 0.0
    return float(min(max(target_lufs - measured_lufs, -max_gain_db), max_gain_db))


def db_to_amplitude(db: float) -> float:
    return float(10.0 ** (db / 20.0))


class LoudnessNormalizer:
    """A constant gain, then a peak limiter, over one response's audio in order.

    `process` takes the response's chunks one after another and returns each at once, the same
    length; one normalizer per response (it carries the limiter's state across chunks).
    """

    def __init__(
        self,
        gain_db: float,
        ceiling_dbfs: float = PEAK_CEILING_DBFS,
        release_s: float = LIMITER_RELEASE_S,
        sample_rate: int = SAMPLE_RATE_HZ,
    ):
        if release_s <= 0:
            raise ValueError(f"release must be positive, got {release_s}")
        self.gain_db = gain_db
        self.gain = db_to_amplitude(gain_db)
        self.ceiling = db_to_amplitude(ceiling_dbfs)
        self._ceiling32 = np.float32(self.ceiling)
        # The reduction d[n] = max(need[n], d[n-1]·r), r = exp(-1 / release samples), where need[n]
        # = 1 - ceiling/|x[n]| above the ceiling (0 below), is d[n] = exp(max_k≤n(log need[k] +
        # k/τ) - n/τ): a running maximum, vectorised, exact across chunks because k and n are
        # positions in the whole response.
        self._inv_tau = 1.0 / (release_s * sample_rate)
        self._position = 0  # samples of this response processed so far
        self._peak = -math.inf  # the running maximum of log need[k] + k/τ

    @property
    def limiting(self) -> bool:
        """Whether the limiter has acted at all in this response."""
        return self._peak != -math.inf

    def process(self, chunk: np.ndarray) -> np.ndarray:
        """The next chunk of the response, float32 [samples] → float32 [samples]: gained, and limited
        to the ceiling."""
        x = np.asarray(chunk, dtype=np.float64) * self.gain
        n = x.shape[0]
        start = self._position
        self._position += n
        magnitude = np.abs(x)
        over = magnitude > self.ceiling
        if not self.limiting and not over.any():
            return x.astype(np.float32)  # what the full path gives here too: reduction 0, gain 1
        index = np.arange(start, start + n, dtype=np.float64)
        scores = np.full(n, -math.inf)
        scores[over] = np.log1p(-self.ceiling / magnitude[over]) + index[over] * self._inv_tau
        running = np.maximum(np.maximum.accumulate(scores), self._peak)
        if n:
            self._peak = float(running[-1])
        reduction = np.exp(running - index * self._inv_tau)
        out = (x * (1.0 - reduction)).astype(np.float32)
        return np.clip(out, -self._ceiling32, self._ceiling32)  # float rounding at the ceiling, no more
