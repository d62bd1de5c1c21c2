"""Loudness measurement, the gain to a target, and the peak limiter (audio/loudness.py)."""

import math

import numpy as np
import pyloudnorm
import pytest

from chatterbox_server.audio.loudness import (
    MAX_GAIN_DB,
    PEAK_CEILING_DBFS,
    LoudnessNormalizer,
    db_to_amplitude,
    measure_lufs,
    normalization_gain_db,
)

RATE = 24_000


def tone(seconds: float, amplitude: float, hz: float = 220.0, seed: int = 0) -> np.ndarray:
    """A voiced-sounding test signal: a tone with harmonics under a slow syllable envelope, plus noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    wave = sum((1 / k) * np.sin(2 * np.pi * k * hz * t) for k in range(1, 5))
    envelope = 0.6 + 0.4 * np.sin(2 * np.pi * 3 * t) ** 2
    signal = wave * envelope + 0.02 * rng.standard_normal(t.shape)
    return (amplitude * signal / np.max(np.abs(signal))).astype(np.float32)


def chunks_of(waveform: np.ndarray, sizes: list[int]) -> list[np.ndarray]:
    """waveform cut at the given chunk sizes, cycling, to the end."""
    out, start, i = [], 0, 0
    while start < waveform.shape[0]:
        out.append(waveform[start : start + sizes[i % len(sizes)]])
        start += sizes[i % len(sizes)]
        i += 1
    return out


def test_measurement_is_pyloudnorms_bs1770():
    wave = tone(4.0, 0.3)
    assert measure_lufs(wave) == pytest.approx(pyloudnorm.Meter(RATE).integrated_loudness(wave.astype(np.float64)))
    # 6 dB more amplitude is 6 LU louder
    assert measure_lufs(2 * wave) - measure_lufs(wave) == pytest.approx(20 * math.log10(2), abs=1e-6)


def test_silence_and_too_short_audio_measure_minus_infinity_and_get_no_gain():
    assert measure_lufs(np.zeros(RATE * 3, np.float32)) == -math.inf
    assert measure_lufs(tone(0.3, 0.3)) == -math.inf  # shorter than one 400 ms block
    assert normalization_gain_db(-math.inf, -16.0) == 0.0


def test_gain_reaches_the_target_within_bounds():
    assert normalization_gain_db(-25.0, -16.0) == pytest.approx(9.0)
    assert normalization_gain_db(-10.0, -16.0) == pytest.approx(-6.0)
    assert normalization_gain_db(-70.0, -16.0) == MAX_GAIN_DB
    wave = tone(5.0, 0.05)
    normalizer = LoudnessNormalizer(normalization_gain_db(measure_lufs(wave), -16.0))
    out = normalizer.process(wave)
    assert measure_lufs(out) == pytest.approx(-16.0, abs=0.05)  # a tone this quiet never reaches the ceiling
    assert not normalizer.limiting


def test_zero_gain_below_the_ceiling_is_the_input_bit_for_bit():
    wave = tone(2.0, 0.5)
    normalizer = LoudnessNormalizer(0.0)
    assert np.array_equal(np.concatenate([normalizer.process(c) for c in chunks_of(wave, [4000])]), wave)


def test_nothing_goes_above_the_ceiling_for_a_hot_input():
    ceiling = np.float32(db_to_amplitude(PEAK_CEILING_DBFS))
    wave = tone(3.0, 0.9, seed=3)
    out = LoudnessNormalizer(14.0).process(wave)  # peaks near +13 dBFS before the limiter
    assert out.dtype == np.float32 and out.shape == wave.shape
    assert np.max(np.abs(out)) <= ceiling
    assert np.max(np.abs(out)) > 0.95 * ceiling  # it limits; it does not just turn everything down
    # an impulse far above the ceiling alone
    spike = np.zeros(RATE, np.float32)
    spike[100] = 0.99
    assert np.max(np.abs(LoudnessNormalizer(20.0).process(spike))) <= ceiling


def test_the_limiter_acts_only_above_the_ceiling_and_recovers():
    ceiling = db_to_amplitude(PEAK_CEILING_DBFS)
    quiet, loud = tone(1.0, 0.2, seed=4), tone(0.5, 1.0, seed=5)
    wave = np.concatenate([quiet, loud, quiet, np.tile(quiet, 2)])
    out = LoudnessNormalizer(6.0).process(wave)
    gain = db_to_amplitude(6.0)
    n = quiet.shape[0]
    # untouched (just the gain) until the first sample over the ceiling
    first_over = int(np.argmax(np.abs(wave.astype(np.float64) * gain) > ceiling))
    assert first_over >= n
    assert np.array_equal(out[:first_over], (wave[:first_over].astype(np.float64) * gain).astype(np.float32))
    # recovered to the plain gain within a second of the loud part (release 0.1 s: e^-10)
    tail = slice(wave.shape[0] - n, None)
    np.testing.assert_allclose(out[tail], wave[tail] * gain, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("sizes", [[1], [7, 960, 1], [480], [12 * 960, 40 * 960], [RATE * 10]])
def test_chunked_is_whole_sample_for_sample(sizes):
    wave = np.concatenate([tone(1.0, 0.3, seed=6), tone(1.5, 1.0, seed=7), tone(1.0, 0.1, seed=8)])
    if sizes == [1]:
        wave = wave[: RATE // 4 + RATE]  # one sample a call is slow: a quarter second into the loud part
    whole = LoudnessNormalizer(9.0).process(wave)
    normalizer = LoudnessNormalizer(9.0)
    chunked = np.concatenate([normalizer.process(c) for c in chunks_of(wave, sizes)])
    assert np.array_equal(chunked, whole)
    assert normalizer.limiting


def test_empty_chunks_change_nothing():
    wave = tone(1.0, 1.0, seed=9)
    normalizer = LoudnessNormalizer(6.0)
    parts = [normalizer.process(wave[:1000]), normalizer.process(wave[:0]), normalizer.process(wave[1000:])]
    assert parts[1].shape == (0,)
    assert np.array_equal(np.concatenate(parts), LoudnessNormalizer(6.0).process(wave))
