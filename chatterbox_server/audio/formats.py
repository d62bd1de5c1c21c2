"""Encoding speech for the OpenAI route: which formats this install can produce, and how.

Formats are probed once (encode a moment of silence), so a format the installed libsndfile
cannot write is refused with the list of those that work, never sent as wrong bytes.
"""

import functools
import io
import logging

import numpy as np
import soundfile as sf

from chatterbox_server.audio.pcm import SAMPLE_RATE_HZ, encode_wav, to_pcm16, wav_stream_header

logger = logging.getLogger(__name__)

OPENAI_FORMATS = ("mp3", "opus", "aac", "flac", "wav", "pcm")
CONTENT_TYPES = {
    "mp3": "audio/mpeg",
    "opus": "audio/ogg; codecs=opus",
    "aac": "audio/aac",
    "flac": "audio/flac",
    "wav": "audio/wav",
    "pcm": "audio/pcm",  # raw 16-bit little-endian mono at 24 kHz
}
# libsndfile container and subtype per format; aac has none (libsndfile cannot write AAC)
_SOUNDFILE = {"mp3": ("MP3", "MPEG_LAYER_III"), "opus": ("OGG", "OPUS"), "flac": ("FLAC", "PCM_16")}
# formats whose bytes can be sent as each piece is ready (the others are encoded once at the end)
PROGRESSIVE_FORMATS = ("wav", "pcm")


def encode(waveform: np.ndarray, fmt: str) -> bytes:
    """float32 [samples] at 24 kHz → a complete file (or raw PCM) in `fmt`."""
    if fmt == "wav":
        return encode_wav(waveform)
    if fmt == "pcm":
        return to_pcm16(waveform).astype("<i2").tobytes()
    if fmt not in _SOUNDFILE:
        raise ValueError(f"no encoder for {fmt}")
    container, subtype = _SOUNDFILE[fmt]
    buffer = io.BytesIO()
    sf.write(buffer, to_pcm16(waveform), SAMPLE_RATE_HZ, format=container, subtype=subtype)
    return buffer.getvalue()


@functools.lru_cache(maxsize=1)
def available_formats() -> tuple[str, ...]:
    """The OpenAI formats this install can encode (and decode back, checked once)."""
    probe = np.zeros(SAMPLE_RATE_HZ // 10, dtype=np.float32)
    working = []
    for fmt in OPENAI_FORMATS:
        try:
            data = encode(probe, fmt)
            if fmt not in ("pcm",):
                sf.read(io.BytesIO(data))
            working.append(fmt)
        except Exception as e:  # any encoder failure means "not available here"
            logger.info("response format %s unavailable: %s", fmt, e)
    return tuple(working)


class StreamEncoder:
    """Bytes for each piece as it is spoken: a progressive format sends a header then PCM per
    piece; the others collect the audio and send one complete file at the end."""

    def __init__(self, fmt: str):
        self.fmt = fmt
        self.progressive = fmt in PROGRESSIVE_FORMATS
        self._pending: list[np.ndarray] = []
        self._started = False

    def add(self, waveform: np.ndarray) -> bytes:
        if not self.progressive:
            self._pending.append(waveform)
            return b""
        data = to_pcm16(waveform).astype("<i2").tobytes()
        if self.fmt == "wav" and not self._started:
            data = wav_stream_header() + data
        self._started = True
        return data

    def finish(self) -> bytes:
        if self.progressive:
            return b"" if self._started or self.fmt == "pcm" else wav_stream_header()
        audio = np.concatenate(self._pending) if self._pending else np.zeros(0, dtype=np.float32)
        return encode(audio, self.fmt)
