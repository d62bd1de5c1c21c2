"""The response format records: streamed bytes decode back to exactly the PCM that went in, whole
files last as long as their audio, and what the records say is what the API documents."""

import io

import numpy as np
import pytest
import soundfile as sf
from pydantic import ValidationError

from chatterbox_server.audio import formats
from chatterbox_server.audio.formats import FORMATS, StreamEncoder, available_formats
from chatterbox_server.audio.pcm import SAMPLE_RATE_HZ, to_pcm16, wav_stream_header
from chatterbox_server.server import protocol

OPENAI_ORDER = ("mp3", "opus", "aac", "flac", "wav", "pcm")
WAV_HEADER_BYTES = 44  # RIFF + fmt + data chunk headers of a 16-bit PCM WAV
# lossy codecs pad (encoder delay, whole frames), so a file may run a few frames long or short
DURATION_TOLERANCE_S = 0.1
WHOLE_FILE_FORMATS = [name for name in available_formats() if not FORMATS[name].progressive]


def pieces() -> list[np.ndarray]:
    """Three pieces of a 220 Hz tone, float32 [samples] each, of unequal lengths; one clips."""
    rng = np.random.default_rng(0)
    lengths = (2_400, 7_321, 1)
    waves = [
        (0.4 * np.sin(np.arange(n) * 2 * np.pi * 220 / SAMPLE_RATE_HZ) + 0.01 * rng.standard_normal(n)) for n in lengths
    ]
    waves[1][:10] = 1.5  # over full scale: clipped, as the encoder must
    return [w.astype(np.float32) for w in waves]


def expected_pcm(waves: list[np.ndarray]) -> np.ndarray:
    """int16 [samples]: the pieces' PCM, joined."""
    return np.concatenate([to_pcm16(w) for w in waves])


def decode_raw_pcm(data: bytes) -> np.ndarray:
    return sf.read(
        io.BytesIO(data),
        format="RAW",
        subtype="PCM_16",
        endian="LITTLE",
        samplerate=SAMPLE_RATE_HZ,
        channels=1,
        dtype="int16",
    )[0]


def test_the_registry_is_in_openai_order_and_keyed_by_name():
    assert tuple(FORMATS) == OPENAI_ORDER
    assert all(record.name == name for name, record in FORMATS.items())
    assert formats.progressive_formats() == ("wav", "pcm")


def test_available_formats_keep_registry_order_and_always_include_wav_and_pcm():
    working = available_formats()
    assert list(working) == [name for name in FORMATS if name in working]
    assert {"wav", "pcm"} <= set(working)
    assert "aac" not in working  # libsndfile cannot write it


def test_wav_stream_sends_one_header_first_then_pcm():
    waves = pieces()
    encoder = StreamEncoder("wav")
    sent = [encoder.add(w) for w in waves]
    tail = encoder.finish()
    assert sent[0].startswith(wav_stream_header())
    assert len(sent[0]) == WAV_HEADER_BYTES + 2 * waves[0].size
    assert [len(s) for s in sent[1:]] == [2 * w.size for w in waves[1:]]
    assert tail == b""
    data = b"".join(sent) + tail
    assert data.count(b"RIFF") == 1
    decoded, rate = sf.read(io.BytesIO(data), dtype="int16")
    assert rate == SAMPLE_RATE_HZ
    np.testing.assert_array_equal(decoded, expected_pcm(waves))


def test_pcm_stream_is_the_pcm_and_nothing_else():
    waves = pieces()
    encoder = StreamEncoder("pcm")
    sent = [encoder.add(w) for w in waves]
    assert [len(s) for s in sent] == [2 * w.size for w in waves]
    assert encoder.finish() == b""
    np.testing.assert_array_equal(decode_raw_pcm(b"".join(sent)), expected_pcm(waves))


def test_a_wav_stream_with_no_audio_is_still_a_valid_empty_file():
    data = StreamEncoder("wav").finish()
    assert data == wav_stream_header()
    decoded, rate = sf.read(io.BytesIO(data), dtype="int16")
    assert decoded.size == 0 and rate == SAMPLE_RATE_HZ


def test_a_pcm_stream_with_no_audio_is_empty():
    assert StreamEncoder("pcm").finish() == b""


def test_whole_wav_file_carries_its_sizes_and_the_same_pcm():
    waves = pieces()
    data = formats.encode(np.concatenate(waves), "wav")
    info = sf.info(io.BytesIO(data))
    assert info.frames == sum(w.size for w in waves) and info.channels == 1
    np.testing.assert_array_equal(sf.read(io.BytesIO(data), dtype="int16")[0], expected_pcm(waves))


@pytest.mark.parametrize("fmt", WHOLE_FILE_FORMATS)
def test_a_whole_file_format_sends_one_file_as_long_as_its_audio(fmt):
    waves = pieces()
    encoder = StreamEncoder(fmt)
    assert all(encoder.add(w) == b"" for w in waves)  # nothing leaves until the text is done
    data = encoder.finish()
    decoded, rate = sf.read(io.BytesIO(data), dtype="float32")
    seconds_in = sum(w.size for w in waves) / SAMPLE_RATE_HZ
    assert abs(decoded.shape[0] / rate - seconds_in) < DURATION_TOLERANCE_S


def test_unknown_and_unwritable_formats_raise():
    with pytest.raises(ValueError):
        formats.encode(np.zeros(10, np.float32), "ogg")
    with pytest.raises(ValueError):
        formats.encode(np.zeros(10, np.float32), "aac")


def test_every_record_content_type_is_what_the_api_documents():
    documented = protocol.SPEECH_MEDIA_TYPES
    assert documented[-1] == protocol.SSE_MEDIA_TYPE
    assert documented[:-1] == [FORMATS[name].content_type for name in available_formats()]
    for name, record in FORMATS.items():
        assert record.content_type.startswith("audio/")
        assert (record.content_type in documented) == (name in available_formats()), name


def test_request_schemas_take_their_formats_from_the_records():
    speech = {"model": "tts-1", "input": "Hi.", "voice": "v"}
    for name in FORMATS:  # every known format validates; the route refuses unavailable ones by name
        assert protocol.SpeechRequest(**speech, response_format=name).response_format == name
    with pytest.raises(ValidationError):
        protocol.SpeechRequest(**speech, response_format="ogg")
    assert protocol.SpeechRequest(**speech).response_format == "mp3"

    config = {"type": "config", "voice": "v"}
    assert protocol.RealtimeConfig(**config).response_format == "pcm"
    for name, record in FORMATS.items():
        if record.progressive:
            assert protocol.RealtimeConfig(**config, response_format=name).response_format == name
        else:
            with pytest.raises(ValidationError):
                protocol.RealtimeConfig(**config, response_format=name)
