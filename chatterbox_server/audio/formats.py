"""The response formats: one record per format (name, content type, whether it streams, and its
encoder), and which of them this install can produce.

Everything else that knows about formats (the request schemas, the OpenAPI media types, the
routes) reads these records, so a new format is one entry in FORMATS. Formats are probed once
(encode a moment of silence and decode it back), so a format the installed libsndfile cannot
write is refused with the list of those that work, never sent as wrong bytes.
"""

import functools
import io
import logging
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import soundfile as sf

from chatterbox_server.audio.pcm import SAMPLE_RATE_HZ, encode_wav, to_pcm16, wav_stream_header

logger = logging.getLogger(__name__)

PROBE_SECONDS = 0.1  # of silence, encoded and decoded back once to see whether a format works here


class ChunkEncoder(Protocol):
    """One response's bytes: `add` for each piece as it is spoken, then `finish` once."""

    def add(self, waveform: np.ndarray) -> bytes:
        """float32 [samples] at 24 kHz → the bytes that can be sent now (maybe b"")."""
        ...

    def finish(self) -> bytes:
        """The bytes that end the response (maybe b"")."""
        ...


class Encoder(Protocol):
    """How one format is made: a whole file at once, or one response's stream of pieces."""

    def encode(self, waveform: np.ndarray) -> bytes:
        """float32 [samples] at 24 kHz → a complete file (or raw PCM)."""
        ...

    def open(self) -> ChunkEncoder:
        """A fresh encoder for one response."""
        ...

    def check(self, data: bytes) -> None:
        """Raise if bytes made by `encode` do not decode back."""
        ...


def _pcm_bytes(waveform: np.ndarray) -> bytes:
    """float32 [samples] → 16-bit little-endian PCM bytes."""
    return to_pcm16(waveform).astype("<i2").tobytes()


class _PcmStream:
    """A progressive stream: `header` once, first, then each piece's 16-bit PCM."""

    def __init__(self, header: bytes):
        self._header = header
        self._started = False

    def add(self, waveform: np.ndarray) -> bytes:
        data = _pcm_bytes(waveform)
        if not self._started:
            data = self._header + data
        self._started = True
        return data

    def finish(self) -> bytes:
        # a stream that never had audio still owes its header (an empty but valid file)
        return b"" if self._started else self._header


class _WholeFileStream:
    """A stream that cannot be cut: collect every piece, encode one file at the end."""

    def __init__(self, encoder: Encoder):
        self._encoder = encoder
        self._pending: list[np.ndarray] = []

    def add(self, waveform: np.ndarray) -> bytes:
        self._pending.append(waveform)
        return b""

    def finish(self) -> bytes:
        audio = np.concatenate(self._pending) if self._pending else np.zeros(0, dtype=np.float32)
        return self._encoder.encode(audio)


class RawPcmEncoder:
    """Headerless 16-bit little-endian mono PCM at 24 kHz."""

    def encode(self, waveform: np.ndarray) -> bytes:
        return _pcm_bytes(waveform)

    def open(self) -> ChunkEncoder:
        return _PcmStream(b"")

    def check(self, data: bytes) -> None:
        if len(data) % 2:  # no container to decode: whole int16 samples is all there is to check
            raise ValueError(f"{len(data)} bytes is not whole 16-bit samples")


class WavEncoder:
    """16-bit mono WAV: a file with its sizes, or a stream after one unknown-length header."""

    def encode(self, waveform: np.ndarray) -> bytes:
        return encode_wav(waveform)

    def open(self) -> ChunkEncoder:
        return _PcmStream(wav_stream_header())

    def check(self, data: bytes) -> None:
        sf.read(io.BytesIO(data))


@dataclass(frozen=True)
class SoundfileEncoder:
    """A format libsndfile writes (container and subtype, as soundfile names them); sent whole."""

    container: str
    subtype: str

    def encode(self, waveform: np.ndarray) -> bytes:
        buffer = io.BytesIO()
        sf.write(buffer, to_pcm16(waveform), SAMPLE_RATE_HZ, format=self.container, subtype=self.subtype)
        return buffer.getvalue()

    def open(self) -> ChunkEncoder:
        return _WholeFileStream(self)

    def check(self, data: bytes) -> None:
        sf.read(io.BytesIO(data))


@dataclass(frozen=True)
class NoEncoder:
    """A format clients may ask for that nothing installed can write (probed as unavailable)."""

    reason: str

    def encode(self, waveform: np.ndarray) -> bytes:
        raise ValueError(self.reason)

    def open(self) -> ChunkEncoder:
        raise ValueError(self.reason)

    def check(self, data: bytes) -> None:
        raise ValueError(self.reason)


@dataclass(frozen=True)
class AudioFormat:
    """One response format."""

    name: str  # as clients send it in response_format
    content_type: str  # the response's Content-Type
    progressive: bool  # bytes leave as each piece is ready; otherwise one file once the text is done
    encoder: Encoder


# OpenAI's order, which the documented enum and the media types keep
FORMATS: dict[str, AudioFormat] = {
    f.name: f
    for f in (
        AudioFormat("mp3", "audio/mpeg", False, SoundfileEncoder("MP3", "MPEG_LAYER_III")),
        AudioFormat("opus", "audio/ogg; codecs=opus", False, SoundfileEncoder("OGG", "OPUS")),
        AudioFormat("aac", "audio/aac", False, NoEncoder("libsndfile cannot write AAC")),
        AudioFormat("flac", "audio/flac", False, SoundfileEncoder("FLAC", "PCM_16")),
        AudioFormat("wav", "audio/wav", True, WavEncoder()),
        AudioFormat("pcm", "audio/pcm", True, RawPcmEncoder()),  # raw 16-bit little-endian mono at 24 kHz
    )
}


def progressive_formats() -> tuple[str, ...]:
    """The formats whose bytes can be sent as each piece is ready, in FORMATS order."""
    return tuple(name for name, f in FORMATS.items() if f.progressive)


def encode(waveform: np.ndarray, fmt: str) -> bytes:
    """float32 [samples] at 24 kHz → a complete file (or raw PCM) in `fmt`."""
    if fmt not in FORMATS:
        raise ValueError(f"no encoder for {fmt}")
    return FORMATS[fmt].encoder.encode(waveform)


@functools.lru_cache(maxsize=1)
def available_formats() -> tuple[str, ...]:
    """The formats this install can encode (and decode back, checked once), in FORMATS order."""
    probe = np.zeros(round(SAMPLE_RATE_HZ * PROBE_SECONDS), dtype=np.float32)
    working = []
    for name, record in FORMATS.items():
        try:
            record.encoder.check(record.encoder.encode(probe))
            working.append(name)
        except Exception as e:  # any encoder failure means "not available here"
            logger.info("response format %s unavailable: %s", name, e)
    return tuple(working)


class StreamEncoder:
    """Bytes for each piece as it is spoken, in one format: a progressive format sends its header
    then PCM per piece; the others collect the audio and send one complete file at the end."""

    def __init__(self, fmt: str):
        self.audio_format = FORMATS[fmt]
        self._stream = self.audio_format.encoder.open()

    @property
    def progressive(self) -> bool:
        return self.audio_format.progressive

    def add(self, waveform: np.ndarray) -> bytes:
        """float32 [samples] at 24 kHz → the bytes to send now (b"" while a whole file waits)."""
        return self._stream.add(waveform)

    def finish(self) -> bytes:
        """The bytes that end the response: a whole file, a header never sent, or b""."""
        return self._stream.finish()
