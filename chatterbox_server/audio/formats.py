"""The response formats: one record per format (name, content type, its encoder, the sample rates
and bitrates it takes), the stream encoder every route uses, and which formats this install can
produce.

Every format streams: the first bytes leave with the first audio and the rest as it is spoken.

    StreamEncoder(fmt, sample_rate_hz=None, bitrate_bps=None)
        .add(waveform) -> bytes   float32 [samples] at 24 kHz, as each piece is spoken → the bytes to
                                  send now (maybe b"" while a codec fills its first frame)
        .finish() -> bytes        once, at the end: the codec flushed and the container's trailer
        .content_type             the response's Content-Type
        .sample_rate_hz, .bitrate_bps   what the bytes are (None where a format has no bitrate)
        .blocking                 add/finish run a codec or a resampler: call them on a worker thread

    An unknown format, or a sample rate or bitrate the format does not take, raises
    UnsupportedEncodingError (a ValueError and an UnsupportedOptionError: HTTP 400) naming what works.

    format  content type            sample rates (Hz; default *)                  bitrate (bps; default)
    mp3     audio/mpeg              8000 16000 22050 24000* 32000 44100 48000     8 kHz: 8k-64k; 16-24 kHz:
                                                                                  8k-160k; 32-48 kHz: 32k-320k
                                                                                  (MPEG steps; 64k)
    opus    audio/ogg; codecs=opus  8000 12000 16000 24000* 48000                 6000-510000 (32000)
    aac     audio/aac (ADTS)        8000 16000 22050 24000* 32000 44100 48000     16000-320000 (64000)
    flac    audio/flac              8000 16000 22050 24000* 32000 44100 48000     -
    wav     audio/wav               8000 16000 22050 24000* 32000 44100 48000     -
    pcm     audio/pcm (s16le mono)  8000 16000 22050 24000* 32000 44100 48000     -
    ulaw    audio/basic (G.711)     8000*                                         -

mp3, opus (in Ogg), aac (ADTS) and flac are encoded incrementally by FFmpeg through PyAV
(audio/av_stream.py); wav and pcm are 16-bit PCM, ulaw is G.711 µ-law (audio/mulaw.py). A rate
other than 24 kHz goes through one soxr stream resampler per response, so chunk boundaries do not
click and the total length is round(samples * rate / 24000); the resampler holds back a few
milliseconds of audio until the next piece or `finish`.

Everything else that knows about formats (the request schemas, the OpenAPI media types, the
routes) reads these records, so a new format is one entry in FORMATS. Formats are probed once
(encode a moment of silence and decode it back), so a format this install cannot write is
refused with the list of those that work, never sent as wrong bytes.
"""

import functools
import logging
import struct
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import soxr

from chatterbox_server.audio.mulaw import encode_ulaw
from chatterbox_server.audio.pcm import SAMPLE_RATE_HZ, to_pcm16, wav_stream_header
from chatterbox_server.errors import UnsupportedOptionError

logger = logging.getLogger(__name__)

PROBE_SECONDS = 0.1  # of silence, encoded and decoded back once to see whether a format works here
PCM_RATES_HZ = (8_000, 16_000, 22_050, 24_000, 32_000, 44_100, 48_000)
OPUS_RATES_HZ = (8_000, 12_000, 16_000, 24_000, 48_000)  # what libopus takes as input
ULAW_RATE_HZ = 8_000
OGG_PAGE_DURATION_US = 100_000  # an Ogg page per 100 ms: little overhead, and pages leave soon
# MPEG audio's bitrate steps (kbps): MPEG-1 (32-48 kHz), MPEG-2 (16-24 kHz), MPEG-2.5 (8 kHz; LAME's cap)
_MPEG1_KBPS = (32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320)
_MPEG2_KBPS = (8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160)
_MPEG25_KBPS = (8, 16, 24, 32, 40, 48, 56, 64)


class UnsupportedEncodingError(UnsupportedOptionError, ValueError):
    """A format, sample rate or bitrate this server cannot encode (the message says what can)."""


class ChunkEncoder(Protocol):
    """One response's bytes: `add` for each piece as it is spoken, then `finish` once."""

    def add(self, waveform: np.ndarray) -> bytes:
        """float32 [samples] at the stream's rate → the bytes that can be sent now (maybe b"")."""
        ...

    def finish(self) -> bytes:
        """The bytes that end the response (maybe b"")."""
        ...


class Encoder(Protocol):
    """How one format is made: one response's stream of pieces, already at the output rate."""

    def open(self, sample_rate_hz: int, bitrate_bps: int | None, whole: bool) -> ChunkEncoder:
        """A fresh encoder for one response; `whole`: one complete file is wanted from `finish`
        (a file that may carry its sizes), so nothing need leave earlier."""
        ...

    def check(self, data: bytes) -> None:
        """Raise if bytes made by this encoder do not decode back."""
        ...


def _pcm_bytes(waveform: np.ndarray) -> bytes:
    """float32 [samples] → 16-bit little-endian PCM bytes."""
    return to_pcm16(waveform).astype("<i2").tobytes()


class _HeaderThenBytes:
    """A progressive stream of sample-by-sample bytes: `header` once, first, then each piece's."""

    def __init__(self, header: bytes, to_bytes: Callable[[np.ndarray], bytes]):
        self._header = header
        self._to_bytes = to_bytes
        self._started = False

    def add(self, waveform: np.ndarray) -> bytes:
        data = self._to_bytes(waveform)
        if not self._started:
            data = self._header + data
        self._started = True
        return data

    def finish(self) -> bytes:
        # a stream that never had audio still owes its header (an empty but valid file)
        return b"" if self._started else self._header


class _WholeWav:
    """A WAV file that carries its sizes: the PCM collected, the header written at the end."""

    def __init__(self, sample_rate_hz: int):
        self._rate = sample_rate_hz
        self._pcm: list[bytes] = []

    def add(self, waveform: np.ndarray) -> bytes:
        self._pcm.append(_pcm_bytes(waveform))
        return b""

    def finish(self) -> bytes:
        data = b"".join(self._pcm)
        header = bytearray(wav_stream_header(self._rate))
        struct.pack_into("<I", header, 4, len(header) - 8 + len(data))  # RIFF size
        struct.pack_into("<I", header, len(header) - 4, len(data))  # data size
        return bytes(header) + data


class _Resampled:
    """An encoder fed at another rate: one soxr stream for the whole response, so pieces join
    without a click and the total is round(samples * rate / 24000)."""

    def __init__(self, inner: ChunkEncoder, sample_rate_hz: int):
        self._inner = inner
        self._resampler = soxr.ResampleStream(SAMPLE_RATE_HZ, sample_rate_hz, 1, dtype="float32", quality="HQ")

    def add(self, waveform: np.ndarray) -> bytes:
        return self._inner.add(self._resampler.resample_chunk(_as_float32(waveform)))

    def finish(self) -> bytes:
        rest = self._resampler.resample_chunk(np.zeros(0, dtype=np.float32), last=True)
        return self._inner.add(rest) + self._inner.finish()


def _as_float32(waveform: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.nan_to_num(waveform, nan=0.0), dtype=np.float32)


class RawPcmEncoder:
    """Headerless 16-bit little-endian mono PCM."""

    def open(self, sample_rate_hz: int, bitrate_bps: int | None, whole: bool) -> ChunkEncoder:
        return _HeaderThenBytes(b"", _pcm_bytes)

    def check(self, data: bytes) -> None:
        if len(data) % 2:  # no container to decode: whole int16 samples is all there is to check
            raise ValueError(f"{len(data)} bytes is not whole 16-bit samples")


class WavEncoder:
    """16-bit mono WAV: a stream after one unknown-length header, or a file with its sizes."""

    def open(self, sample_rate_hz: int, bitrate_bps: int | None, whole: bool) -> ChunkEncoder:
        if whole:
            return _WholeWav(sample_rate_hz)
        return _HeaderThenBytes(wav_stream_header(sample_rate_hz), _pcm_bytes)

    def check(self, data: bytes) -> None:
        if not data.startswith(b"RIFF") or data[8:12] != b"WAVE":
            raise ValueError("not a WAV file")


class UlawEncoder:
    """G.711 µ-law bytes, one per sample, no header (telephony)."""

    def open(self, sample_rate_hz: int, bitrate_bps: int | None, whole: bool) -> ChunkEncoder:
        return _HeaderThenBytes(b"", encode_ulaw)

    def check(self, data: bytes) -> None:
        pass  # every byte is a sample


@dataclass(frozen=True)
class PyAvEncoder:
    """A format FFmpeg encodes (through PyAV), frame by frame as the audio arrives."""

    container: str  # FFmpeg's muxer: mp3, ogg, adts, flac
    codec: str  # FFmpeg's encoder: libmp3lame, libopus, aac, flac
    container_options: dict[str, str] = field(default_factory=dict)
    codec_options: dict[str, str] = field(default_factory=dict)

    def open(self, sample_rate_hz: int, bitrate_bps: int | None, whole: bool) -> ChunkEncoder:
        from chatterbox_server.audio import av_stream  # FFmpeg is loaded only where it is used

        codec = av_stream.AvCodec(self.container, self.codec, self.container_options, self.codec_options)
        return av_stream.AvStream(codec, sample_rate_hz, bitrate_bps, seekable=whole)

    def check(self, data: bytes) -> None:
        from chatterbox_server.audio import av_stream

        av_stream.decode(data, self.container)


def _mp3_bitrates(sample_rate_hz: int) -> Collection[int]:
    steps = _MPEG25_KBPS if sample_rate_hz < 16_000 else _MPEG2_KBPS if sample_rate_hz <= 24_000 else _MPEG1_KBPS
    return tuple(kbps * 1000 for kbps in steps)


@dataclass(frozen=True)
class AudioFormat:
    """One response format, and the options it takes."""

    name: str  # as clients send it in response_format
    content_type: str  # the response's Content-Type
    progressive: bool  # bytes leave as each piece is ready (every format here does)
    encoder: Encoder
    sample_rates_hz: tuple[int, ...] = PCM_RATES_HZ
    default_rate_hz: int = SAMPLE_RATE_HZ
    bitrates_bps: Callable[[int], Collection[int]] | None = None  # by sample rate; None: no bitrate
    default_bitrate_bps: int | None = None
    # each add's bytes are exactly its samples (PCM at 24 kHz, nothing held back), so a stream that
    # is never finished, such as a realtime session's, can end after any piece
    sample_exact: bool = False
    blocking: bool = True  # encoding is real work (a codec): on a worker thread, not the event loop


# OpenAI's order, which the documented enum and the media types keep; then the telephony format
FORMATS: dict[str, AudioFormat] = {
    f.name: f
    for f in (
        AudioFormat(
            "mp3",
            "audio/mpeg",
            True,
            PyAvEncoder("mp3", "libmp3lame", {"id3v2_version": "0"}),  # bare MPEG frames, no ID3 tag
            bitrates_bps=_mp3_bitrates,
            default_bitrate_bps=64_000,
        ),
        AudioFormat(
            "opus",
            "audio/ogg; codecs=opus",
            True,
            PyAvEncoder("ogg", "libopus", {"page_duration": str(OGG_PAGE_DURATION_US)}),
            sample_rates_hz=OPUS_RATES_HZ,
            bitrates_bps=lambda _: range(6_000, 510_001),
            default_bitrate_bps=32_000,
        ),
        AudioFormat(
            "aac",
            "audio/aac",
            True,
            PyAvEncoder("adts", "aac"),
            bitrates_bps=lambda _: range(16_000, 320_001),
            default_bitrate_bps=64_000,
        ),
        AudioFormat("flac", "audio/flac", True, PyAvEncoder("flac", "flac")),
        AudioFormat("wav", "audio/wav", True, WavEncoder(), sample_exact=True, blocking=False),
        # raw 16-bit little-endian mono, at 24 kHz unless asked otherwise
        AudioFormat("pcm", "audio/pcm", True, RawPcmEncoder(), sample_exact=True, blocking=False),
        AudioFormat(
            "ulaw",
            "audio/basic",
            True,
            UlawEncoder(),
            sample_rates_hz=(ULAW_RATE_HZ,),
            default_rate_hz=ULAW_RATE_HZ,
        ),
    )
}


def progressive_formats() -> tuple[str, ...]:
    """The formats whose bytes can be sent as each piece is ready, in FORMATS order."""
    return tuple(name for name, f in FORMATS.items() if f.progressive)


def sample_exact_formats() -> tuple[str, ...]:
    """The formats whose bytes for each piece are exactly its samples, in FORMATS order."""
    return tuple(name for name, f in FORMATS.items() if f.sample_exact)


def _ranges(values: Collection[int]) -> str:
    if isinstance(values, range):
        return f"{values.start}-{values.stop - 1}"
    return ", ".join(str(v) for v in values)


@dataclass(frozen=True)
class Encoding:
    """A format with its options checked and resolved: what the bytes will be."""

    format: AudioFormat
    sample_rate_hz: int
    bitrate_bps: int | None

    @classmethod
    def resolve(cls, fmt: str, sample_rate_hz: int | None = None, bitrate_bps: int | None = None) -> "Encoding":
        """Check `fmt` and its options (None: the format's default); UnsupportedEncodingError
        names what works."""
        record = FORMATS.get(fmt)
        if record is None:
            raise UnsupportedEncodingError(f"no encoder for {fmt!r}; formats: {', '.join(FORMATS)}")
        rate = record.default_rate_hz if sample_rate_hz is None else sample_rate_hz
        if rate not in record.sample_rates_hz:
            raise UnsupportedEncodingError(
                f"{fmt} cannot be encoded at {rate} Hz; sample rates: {_ranges(record.sample_rates_hz)}"
            )
        if record.bitrates_bps is None:
            if bitrate_bps is not None:
                raise UnsupportedEncodingError(f"{fmt} has no bitrate to choose")
            return cls(record, rate, None)
        bitrate = record.default_bitrate_bps if bitrate_bps is None else bitrate_bps
        allowed = record.bitrates_bps(rate)
        if bitrate not in allowed:
            raise UnsupportedEncodingError(
                f"{fmt} at {rate} Hz cannot be encoded at {bitrate} bps; bitrates: {_ranges(allowed)}"
            )
        return cls(record, rate, bitrate)

    def open(self, whole: bool = False) -> ChunkEncoder:
        """A fresh encoder for one response, fed float32 at 24 kHz."""
        inner = self.format.encoder.open(self.sample_rate_hz, self.bitrate_bps, whole)
        return inner if self.sample_rate_hz == SAMPLE_RATE_HZ else _Resampled(inner, self.sample_rate_hz)


def encode(waveform: np.ndarray, fmt: str, sample_rate_hz: int | None = None, bitrate_bps: int | None = None) -> bytes:
    """float32 [samples] at 24 kHz → a complete file (or raw bytes) in `fmt`, the same format a
    stream sends (a whole WAV carries its sizes, a whole MP3 its Xing/LAME frame)."""
    encoder = Encoding.resolve(fmt, sample_rate_hz, bitrate_bps).open(whole=True)
    return encoder.add(_as_float32(waveform)) + encoder.finish()


@functools.lru_cache(maxsize=1)
def available_formats() -> tuple[str, ...]:
    """The formats this install can encode (and decode back, checked once), in FORMATS order."""
    probe = np.zeros(round(SAMPLE_RATE_HZ * PROBE_SECONDS), dtype=np.float32)
    working = []
    for name, record in FORMATS.items():
        try:
            record.encoder.check(encode(probe, name))
            working.append(name)
        except Exception as e:  # any encoder failure (FFmpeg missing, say) means "not available here"
            logger.info("response format %s unavailable: %s", name, e)
    return tuple(working)


class StreamEncoder:
    """One response's bytes in one format, as each piece is spoken (see the module docstring)."""

    def __init__(self, fmt: str, sample_rate_hz: int | None = None, bitrate_bps: int | None = None):
        encoding = Encoding.resolve(fmt, sample_rate_hz, bitrate_bps)
        working = available_formats()
        if fmt not in working:
            raise UnsupportedEncodingError(f"{fmt} cannot be produced here; available: {', '.join(working)}")
        self.audio_format = encoding.format
        self.sample_rate_hz = encoding.sample_rate_hz
        self.bitrate_bps = encoding.bitrate_bps
        # a codec or a resampler is real work; 24 kHz PCM is a copy, cheap enough for the event loop
        self.blocking = self.audio_format.blocking or self.sample_rate_hz != SAMPLE_RATE_HZ
        self._stream = encoding.open()

    @property
    def content_type(self) -> str:
        return self.audio_format.content_type

    @property
    def progressive(self) -> bool:
        return self.audio_format.progressive

    def add(self, waveform: np.ndarray) -> bytes:
        """float32 [samples] at 24 kHz → the bytes to send now (maybe b"")."""
        return self._stream.add(_as_float32(waveform))

    def finish(self) -> bytes:
        """The bytes that end the response: the codec's last frames and the trailer, a header
        never sent, or b""."""
        return self._stream.finish()
