"""Reference clips refused from their header (sample-rate ceiling, decoded size) and decode
failures that say what to do (issue "Reliability round 3", findings 5 and 11)."""

import io

import numpy as np
import pytest
import soundfile as sf

from chatterbox_server import audio
from chatterbox_server.audio import decode
from chatterbox_server.errors import InvalidAudioError
from tests.clips import make_clip


def encode(samples: np.ndarray, rate: int, fmt: str, subtype: str | None = None) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, samples, rate, format=fmt, subtype=subtype)
    return buffer.getvalue()


@pytest.fixture
def no_decoding(monkeypatch):
    """sf.read fails the test: whatever is refused must be refused from the header."""

    def refuse(*args, **kwargs):
        raise AssertionError("samples were decoded before the header was checked")

    monkeypatch.setattr(sf, "read", refuse)


def test_a_clip_claiming_10_mhz_is_refused_from_its_header(no_decoding):
    claims_10_mhz = encode(np.full(1000, 0.5, dtype=np.float32), 10_000_000, "WAV", "FLOAT")
    with pytest.raises(InvalidAudioError, match=r"sample rate 10000000 Hz is too high; at most 192000 Hz"):
        audio.prepare_reference_audio(claims_10_mhz, max_seconds=30)


def test_the_ceiling_is_the_callers_and_the_default_takes_studio_rates():
    clip = encode(make_clip(6.0, 96_000, 150.0, seed=1), 96_000, "WAV")
    assert audio.DEFAULT_MAX_SAMPLE_RATE_HZ == 192_000
    assert audio.prepare_reference_audio(clip, max_seconds=30).shape[0] == 6 * 24_000
    with pytest.raises(InvalidAudioError, match=r"96000 Hz is too high; at most 48000 Hz"):
        audio.prepare_reference_audio(clip, max_seconds=30, max_sample_rate_hz=48_000)


def test_eight_channels_at_the_ceiling_are_refused_by_their_decoded_size(no_decoding):
    # 10 s of 8-channel silence at 192 kHz: a small FLAC that would decode to 15.4 M samples
    # (61 MB of float32), over the budget of 30 s of stereo at the ceiling (11.5 M)
    silence = encode(np.zeros((10 * 192_000, 8), dtype=np.int16), 192_000, "FLAC", "PCM_16")
    assert len(silence) < 1024 * 1024
    with pytest.raises(InvalidAudioError, match=r"15360000 samples \(8 channels at 192000 Hz\); at most 11520000"):
        audio.prepare_reference_audio(silence, max_seconds=30)


def test_eight_channels_at_48_khz_are_within_the_budget():
    clip = encode(make_clip(6.0, 48_000, 150.0, seed=2, channels=8), 48_000, "FLAC", "PCM_16")
    assert audio.prepare_reference_audio(clip, max_seconds=30).shape[0] == 6 * 24_000


def _container(fmt: str, subtype: str | None = None) -> bytes:
    return encode(make_clip(6.0, 24_000, 150.0, seed=3), 24_000, fmt, subtype)


MISLEADING = ("regular file", "pipe", "psf_fseek", "Format not recognised", "BytesIO")


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        pytest.param(_container("MP3")[:100], decode.UNDECODABLE, id="mp3-cut-in-its-header"),
        pytest.param(_container("MP3")[:1000], "the file is truncated: its header promises 6.00 s", id="mp3-cut"),
        pytest.param(_container("WAV")[:30], decode.UNDECODABLE + " (libsndfile: Error in WAV file", id="wav-cut"),
        pytest.param(_container("FLAC")[:1000], "cannot decode audio: the file is truncated or corrupt", id="flac-cut"),
        pytest.param(_container("OGG", "VORBIS")[:1000], decode.UNDECODABLE, id="ogg-cut"),
        pytest.param(np.random.default_rng(0).bytes(5000), decode.UNDECODABLE, id="random-bytes"),
        pytest.param(b"", "the audio file is empty (0 bytes)", id="empty"),
    ],
)
def test_a_clip_that_does_not_decode_says_what_to_do(data, expected):
    with pytest.raises(InvalidAudioError) as caught:
        audio.prepare_reference_audio(data, max_seconds=30)
    message = str(caught.value)
    assert message.startswith(expected), message
    assert not any(words in message for words in MISLEADING), message


def test_the_generic_message_names_the_formats():
    assert decode.UNDECODABLE == ("cannot decode audio: the file is truncated, corrupt or not WAV, FLAC, OGG or MP3")
