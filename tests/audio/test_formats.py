"""The response format records: streamed bytes decode back to exactly the PCM that went in, every
compressed format sends bytes with its first piece and loses no tail, resampled PCM has the right
length, µ-law has G.711's values, and what the records say is what the API documents."""

import io
import itertools

import numpy as np
import pytest
import soundfile as sf
import soxr
from pydantic import ValidationError

from chatterbox_server.audio import formats
from chatterbox_server.audio.av_stream import decode
from chatterbox_server.audio.formats import FORMATS, StreamEncoder, UnsupportedEncodingError, available_formats
from chatterbox_server.audio.mulaw import decode_ulaw, encode_ulaw
from chatterbox_server.audio.pcm import SAMPLE_RATE_HZ, to_pcm16, wav_stream_header
from chatterbox_server.errors import UnsupportedOptionError
from chatterbox_server.server import protocol

OPENAI_ORDER = ("mp3", "opus", "aac", "flac", "wav", "pcm")
WAV_HEADER_BYTES = 44  # RIFF + fmt + data chunk headers of a 16-bit PCM WAV
COMPRESSED = ("mp3", "opus", "aac", "flac")
CONTENT_TYPES = {
    "mp3": "audio/mpeg",
    "opus": "audio/ogg; codecs=opus",
    "aac": "audio/aac",
    "flac": "audio/flac",
    "wav": "audio/wav",
    "pcm": "audio/pcm",
    "ulaw": "audio/basic",
}
DEMUXER = {"mp3": "mp3", "opus": "ogg", "aac": "aac", "flac": "flac"}  # FFmpeg's names, to decode them
# How much longer (24 kHz samples) a stream may decode than its input: one codec frame plus the
# codec's priming, which a bare stream carries (no header says how much to trim). mp3 at 24 kHz is
# MPEG-2 (576-sample frames) with LAME's 1105-sample delay; AAC primes one 1024-sample frame and pads
# to the next; Ogg Opus trims both ends (pre-skip, last granule) but rounds to 20 ms; FLAC is exact.
FRAME_AND_PRIMING = {"mp3": 576 + 1105, "aac": 1024 + 1024, "opus": 480, "flac": 0}
TAIL_S = 0.1
RESAMPLED_RATES_HZ = (8_000, 16_000, 22_050, 32_000, 44_100, 48_000)


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


def test_the_registry_is_in_openai_order_then_ulaw_and_keyed_by_name():
    assert tuple(FORMATS) == (*OPENAI_ORDER, "ulaw")
    assert all(record.name == name for name, record in FORMATS.items())
    assert formats.progressive_formats() == tuple(FORMATS)  # every format streams
    assert formats.sample_exact_formats() == ("wav", "pcm")
    assert {name: record.content_type for name, record in FORMATS.items()} == CONTENT_TYPES


def test_available_formats_keep_registry_order_and_include_every_format_with_pyav():
    working = available_formats()
    assert list(working) == [name for name in FORMATS if name in working]
    assert set(working) == set(FORMATS)  # PyAV's FFmpeg writes mp3, opus, aac and flac


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


def tone(seconds: float, hz: float = 220.0, amplitude: float = 0.4) -> np.ndarray:
    n = round(seconds * SAMPLE_RATE_HZ)
    return (amplitude * np.sin(np.arange(n) * 2 * np.pi * hz / SAMPLE_RATE_HZ)).astype(np.float32)


def sweep(seconds: float, amplitude: float = 0.4) -> np.ndarray:
    """A tone rising from 200 Hz to 1 kHz: never periodic, so it lines up with its decoding at one lag."""
    t = np.arange(round(seconds * SAMPLE_RATE_HZ)) / SAMPLE_RATE_HZ
    hz_per_s = 800.0 / seconds
    return (amplitude * np.sin(2 * np.pi * (200.0 * t + hz_per_s * t * t / 2))).astype(np.float32)


def stream(fmt: str, waveform: np.ndarray, chunk: int, **options) -> tuple[list[bytes], bytes, StreamEncoder]:
    """Each chunk's bytes, the finishing bytes, and the encoder."""
    encoder = StreamEncoder(fmt, **options)
    sent = [encoder.add(waveform[i : i + chunk]) for i in range(0, waveform.size, chunk)]
    return sent, encoder.finish(), encoder


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


def delay_of(decoded: np.ndarray, original: np.ndarray, most: int = 4000) -> int:
    """Where the original starts in the decoded audio (the codec's priming), by cross-correlation."""
    head = original[:4000]
    scores = np.correlate(decoded[: most + head.size], head, mode="valid")
    return int(np.argmax(scores))


@pytest.mark.parametrize("fmt", COMPRESSED)
def test_a_compressed_stream_sends_bytes_with_its_first_piece(fmt):
    encoder = StreamEncoder(fmt)
    assert encoder.content_type == CONTENT_TYPES[fmt] and encoder.blocking
    first = encoder.add(tone(0.5))
    assert first  # the container's header and the first frames leave at once
    assert encoder.add(tone(0.5))
    assert encoder.finish()  # the codec's last frames and the trailer


@pytest.mark.parametrize("fmt", COMPRESSED)
def test_a_compressed_stream_decodes_to_its_length_and_keeps_its_tail(fmt):
    audio = sweep(2.0)
    sent, tail, _ = stream(fmt, audio, 12_000)
    decoded, rate = decode(b"".join(sent) + tail, DEMUXER[fmt], SAMPLE_RATE_HZ)
    assert rate == SAMPLE_RATE_HZ
    assert 0 <= decoded.size - audio.size <= FRAME_AND_PRIMING[fmt], decoded.size
    # the last 100 ms of the sweep are all there, as loud as they went in (no lost frame, no fade)
    start = delay_of(decoded, audio)
    n_tail = round(TAIL_S * SAMPLE_RATE_HZ)
    decoded_tail = decoded[start + audio.size - n_tail : start + audio.size]
    assert decoded_tail.size == n_tail
    assert rms(decoded_tail) == pytest.approx(rms(audio[-n_tail:]), rel=0.15)


@pytest.mark.parametrize("fmt", COMPRESSED)
def test_pieces_of_any_size_join_without_a_click(fmt):
    """Odd-sized pieces (one of a single sample) decode as the same continuous sweep."""
    joined = sweep(1.0)
    cuts = np.cumsum((0, 2_400, 7_321, 1, 4_999, 333, 11))
    encoder = StreamEncoder(fmt)
    data = b"".join(encoder.add(joined[a:b]) for a, b in itertools.pairwise((*cuts, joined.size))) + encoder.finish()
    decoded, _ = decode(data, DEMUXER[fmt], SAMPLE_RATE_HZ)
    assert 0 <= decoded.size - joined.size <= FRAME_AND_PRIMING[fmt]
    start = delay_of(decoded, joined)
    aligned = decoded[start : start + joined.size]
    error = aligned - joined
    assert rms(error) < 0.1 * rms(joined)  # a lossy codec's noise, not a gap or a jump
    assert np.abs(np.diff(aligned)).max() < 0.2  # the sweep moves < 0.11 a sample; a click jumps


@pytest.mark.parametrize("fmt", COMPRESSED)
def test_a_whole_file_is_the_same_format_as_long_as_its_audio(fmt):
    audio = tone(1.0)
    data = formats.encode(audio, fmt)
    decoded, _ = decode(data, DEMUXER[fmt], SAMPLE_RATE_HZ)
    assert 0 <= decoded.size - audio.size <= FRAME_AND_PRIMING[fmt]


@pytest.mark.parametrize(
    ("fmt", "rate", "bitrate"),
    [("mp3", 44_100, 128_000), ("mp3", 22_050, 32_000), ("opus", 48_000, 64_000), ("aac", 16_000, 32_000)],
)
def test_compressed_formats_take_a_sample_rate_and_bitrate(fmt, rate, bitrate):
    audio = tone(1.0)
    sent, tail, encoder = stream(fmt, audio, 12_000, sample_rate_hz=rate, bitrate_bps=bitrate)
    assert (encoder.sample_rate_hz, encoder.bitrate_bps) == (rate, bitrate)
    data = b"".join(sent) + tail
    decoded, decoded_rate = decode(data, DEMUXER[fmt])
    assert decoded_rate == (48_000 if fmt == "opus" else rate)  # Ogg Opus always decodes at 48 kHz
    priming_s = FRAME_AND_PRIMING[fmt] / SAMPLE_RATE_HZ * 2  # frames are longer in time at lower rates
    assert 0 <= decoded.size / decoded_rate - 1.0 <= priming_s
    seconds = 1.0 + priming_s / 2  # the bitrate was used: about that many bytes a second (within 50 %)
    assert len(data) * 8 / seconds == pytest.approx(bitrate, rel=0.5)


@pytest.mark.parametrize("rate", (*RESAMPLED_RATES_HZ, SAMPLE_RATE_HZ))
def test_pcm_at_another_rate_has_the_right_length_and_no_seams(rate):
    """soxr's stream resampler keeps its filter state across pieces: the pieces' total is
    round(samples * rate / 24000) (±1 for rounding; the filter's delay is flushed by finish), and
    the streamed result is the one-shot resampling of the joined audio."""
    sizes = (2_400, 7_321, 1, 12_000, 333, 4_999)
    audio = tone(sum(sizes) / SAMPLE_RATE_HZ)
    encoder = StreamEncoder("pcm", sample_rate_hz=rate)
    assert encoder.blocking == (rate != SAMPLE_RATE_HZ)
    offsets = np.cumsum((0, *sizes))
    data = b"".join(encoder.add(audio[a:b]) for a, b in itertools.pairwise(offsets)) + encoder.finish()
    assert len(data) % 2 == 0
    samples = np.frombuffer(data, "<i2").astype(np.float32) / 32767
    assert abs(samples.size - round(audio.size * rate / SAMPLE_RATE_HZ)) <= 1
    whole = soxr.resample(audio, SAMPLE_RATE_HZ, rate, quality="HQ")
    n = min(samples.size, whole.size)
    assert np.abs(samples[:n] - whole[:n]).max() < 2e-3  # the same audio, within 16-bit rounding


def test_a_wav_at_another_rate_says_so_in_its_header():
    audio = tone(0.5)
    sent, tail, _ = stream("wav", audio, 5_000, sample_rate_hz=16_000)
    decoded, rate = sf.read(io.BytesIO(b"".join(sent) + tail), dtype="int16")
    assert rate == 16_000 and abs(decoded.size - 8_000) <= 1
    whole = formats.encode(audio, "wav", 16_000)
    info = sf.info(io.BytesIO(whole))
    assert info.samplerate == 16_000 and abs(info.frames - 8_000) <= 1  # the sizes are filled in


def test_ulaw_has_g711_values():
    codes = encode_ulaw(np.array([0.0, 1.0, -1.0, 1 / 32767, -1 / 32767, 2.0, -2.0, np.nan]))
    assert list(codes) == [0xFF, 0x80, 0x00, 0xFF, 0x7F, 0x80, 0x00, 0xFF]
    assert list(decode_ulaw(bytes([0xFF, 0x7F, 0x80, 0x00])) * 32768) == [0, 0, 32124, -32124]


def test_ulaw_decodes_back_close_and_ffmpeg_reads_it_the_same():
    audio = tone(0.5, amplitude=0.5)
    back = decode_ulaw(encode_ulaw(audio))
    assert rms(back - audio) < 0.03 * rms(audio)  # µ-law's ~38 dB SNR on a loud tone
    every_code = bytes(range(256))
    ffmpeg, _ = decode(every_code, "mulaw")
    np.testing.assert_array_equal(ffmpeg, decode_ulaw(every_code))


def test_a_ulaw_stream_is_8_khz_bytes_one_per_sample():
    audio = tone(1.0)
    sent, tail, encoder = stream("ulaw", audio, 7_001)
    assert encoder.sample_rate_hz == 8_000 and encoder.content_type == "audio/basic"
    data = b"".join(sent) + tail
    assert abs(len(data) - 8_000) <= 1
    back = decode_ulaw(data)
    expected = soxr.resample(audio, SAMPLE_RATE_HZ, 8_000, quality="HQ")
    n = min(back.size, expected.size)
    assert rms(back[:n] - expected[:n]) < 0.05 * rms(expected)


@pytest.mark.parametrize(
    ("fmt", "options"),
    [
        ("ogg", {}),
        ("ulaw", {"sample_rate_hz": 16_000}),
        ("pcm", {"sample_rate_hz": 12_345}),
        ("pcm", {"bitrate_bps": 64_000}),
        ("opus", {"sample_rate_hz": 44_100}),
        ("mp3", {"sample_rate_hz": 44_100, "bitrate_bps": 8_000}),  # MPEG-1 starts at 32 kbps
        ("mp3", {"sample_rate_hz": 22_050, "bitrate_bps": 192_000}),  # MPEG-2 ends at 160 kbps
        ("aac", {"bitrate_bps": 1_000}),
    ],
)
def test_an_unsupported_combination_is_refused_naming_what_works(fmt, options):
    with pytest.raises(UnsupportedEncodingError) as caught:
        StreamEncoder(fmt, **options)
    assert isinstance(caught.value, ValueError) and isinstance(caught.value, UnsupportedOptionError)
    with pytest.raises(ValueError):
        formats.encode(np.zeros(10, np.float32), fmt, **options)


def test_the_elevenlabs_combinations_are_supported():
    for fmt, rate, bitrate in [
        ("pcm", 16_000, None),
        ("pcm", 22_050, None),
        ("pcm", 24_000, None),
        ("pcm", 44_100, None),
        ("ulaw", 8_000, None),
        ("mp3", 44_100, 128_000),
        ("mp3", 22_050, 32_000),
    ]:
        encoder = StreamEncoder(fmt, sample_rate_hz=rate, bitrate_bps=bitrate)
        assert (encoder.sample_rate_hz, encoder.bitrate_bps) == (rate, bitrate)
        assert encoder.add(tone(0.2)) + encoder.finish()


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
    assert protocol.SpeechRequest(**speech).sample_rate is None
    for rate in (8_000, 16_000, 22_050, 24_000, 44_100, 48_000):
        assert protocol.SpeechRequest(**speech, sample_rate=rate).sample_rate == rate
    for bad in (12_345, 0, "fast"):
        with pytest.raises(ValidationError):
            protocol.SpeechRequest(**speech, sample_rate=bad)

    config = {"type": "config", "voice": "v"}
    assert protocol.RealtimeConfig(**config).response_format == "pcm"
    for name, record in FORMATS.items():
        if record.sample_exact:  # a session never finishes a codec's stream between segments
            assert protocol.RealtimeConfig(**config, response_format=name).response_format == name
        else:
            with pytest.raises(ValidationError):
                protocol.RealtimeConfig(**config, response_format=name)
