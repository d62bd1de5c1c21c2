import io

import numpy as np
import pytest
import soundfile as sf

from chatterbox_server import audio as audio_io
from chatterbox_server.errors import InvalidAudioError
from tests.clips import make_clip


def encode(samples: np.ndarray, rate: int, fmt: str, subtype: str | None = None) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, samples, rate, format=fmt, subtype=subtype)
    return buffer.getvalue()


@pytest.mark.parametrize("fmt", ["WAV", "FLAC", "OGG", "MP3"])
def test_decodes_common_containers_to_24k_mono(fmt):
    clip = make_clip(6.0, 16_000, 180.0, seed=3, channels=2)
    audio = audio_io.prepare_reference_audio(encode(clip, 16_000, fmt), max_seconds=30)
    assert audio.dtype == np.float32 and audio.ndim == 1
    # 6 s at 24 kHz; lossy codecs may pad or trim a frame or so
    assert abs(audio.shape[0] - 6 * 24_000) < 0.06 * 24_000
    assert np.abs(audio).max() <= 1.0


def test_downmix_averages_channels():
    left = np.full(24_000 * 6, 0.5, dtype=np.float32)
    stereo = np.stack([left, -left * 0.5], axis=1)
    audio = audio_io.prepare_reference_audio(encode(stereo, 24_000, "WAV", "FLOAT"), max_seconds=30)
    np.testing.assert_allclose(audio, 0.125, atol=1e-6)


def test_resampling_keeps_pitch():
    rate = 44_100
    t = np.arange(rate * 6) / rate
    tone = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    audio = audio_io.prepare_reference_audio(encode(tone, rate, "WAV", "FLOAT"), max_seconds=30)
    spectrum = np.abs(np.fft.rfft(audio))
    peak_hz = np.argmax(spectrum) * 24_000 / audio.shape[0]
    assert abs(peak_hz - 440) < 2


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"", "empty"),
        (b"definitely not audio" * 100, "cannot decode"),
        (encode(make_clip(2.0, 24_000, 150, 0), 24_000, "WAV"), "at least 5 s"),
        (encode(make_clip(31.0, 24_000, 150, 0), 24_000, "WAV"), "at most 30 s"),
    ],
)
def test_rejects_bad_clips_with_reason(data, reason):
    with pytest.raises(InvalidAudioError, match=reason):
        audio_io.prepare_reference_audio(data, max_seconds=30)


def test_rejects_non_finite_samples():
    clip = make_clip(6.0, 24_000, 150, 0)
    clip[100] = np.nan
    with pytest.raises(InvalidAudioError, match="non-finite"):
        audio_io.prepare_reference_audio(encode(clip, 24_000, "WAV", "FLOAT"), max_seconds=30)


def test_missing_file_is_invalid_audio(tmp_path):
    with pytest.raises(InvalidAudioError, match="cannot read"):
        audio_io.read_audio_bytes(tmp_path / "nope.wav")


def test_wav_encoding_is_16_bit_and_clipped():
    wave = np.array([0.0, 0.5, 1.5, -2.0, np.nan], dtype=np.float32)
    data = audio_io.encode_wav(wave)
    info = sf.info(io.BytesIO(data))
    assert (info.samplerate, info.channels, info.subtype) == (24_000, 1, "PCM_16")
    pcm, _ = sf.read(io.BytesIO(data), dtype="int16")
    assert pcm.tolist() == [0, 16384, 32767, -32767, 0]


def test_an_hour_of_flac_is_refused_from_its_header_before_decoding(monkeypatch):
    hour_of_silence = encode(np.zeros(3600 * 8_000, dtype=np.int16), 8_000, "FLAC", "PCM_16")
    assert len(hour_of_silence) < 2 * 1024 * 1024  # a small upload that would expand to 115 MB of float32

    def no_decoding(*args, **kwargs):
        raise AssertionError("samples were decoded before the length check")

    monkeypatch.setattr(sf, "read", no_decoding)
    with pytest.raises(InvalidAudioError, match=r"3600\.00 s long; at most 30 s"):
        audio_io.prepare_reference_audio(hour_of_silence, max_seconds=30)


def test_a_clip_at_an_absurd_sample_rate_is_refused():
    ten_samples_at_1_hz = encode(np.full(10, 0.5, dtype=np.float32), 1, "WAV", "FLOAT")
    with pytest.raises(InvalidAudioError, match="sample rate 1 Hz is too low"):
        audio_io.prepare_reference_audio(ten_samples_at_1_hz, max_seconds=30)


def test_a_silent_clip_is_not_a_voice():
    silence = encode(np.zeros(24_000 * 6, dtype=np.float32), 24_000, "WAV", "FLOAT")
    with pytest.raises(InvalidAudioError, match="silent"):
        audio_io.prepare_reference_audio(silence, max_seconds=30)
