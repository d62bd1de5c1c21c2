"""Compressed audio with PyAV (FFmpeg, shipped in its wheels): one response's encoder, fed as the
audio arrives, and a decoder for checking what was made.

`AvStream` owns one FFmpeg muxer writing into `_Drain`, a write-only file with no `seek`, so FFmpeg
treats the output as a pipe: it never seeks back to rewrite a header (no Xing frame, no FLAC
STREAMINFO sizes) and every byte it writes can be sent at once. After each `add` the bytes written
so far are taken; the encoder keeps back only what its codec must (a frame being filled, MP3's and
AAC's look-ahead, Ogg's last unfinished page). `finish` flushes the codec (`encode(None)`) and
writes the trailer, so the stream ends with a whole last frame or page. A whole file (`seekable`)
writes into a BytesIO instead and may rewrite its header at the end: MP3 gets its Xing/LAME frame
(gapless length), FLAC its total length.
"""

import io
from collections.abc import Mapping
from dataclasses import dataclass, field

import av
import numpy as np
from av.audio.stream import AudioStream


class _Drain:
    """A write-only, unseekable file for the muxer: what it writes waits here until taken."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def write(self, data: bytes) -> int:
        self._parts.append(bytes(data))
        return len(data)

    def take(self) -> bytes:
        data = b"".join(self._parts)
        self._parts.clear()
        return data


@dataclass(frozen=True)
class AvCodec:
    """A format as FFmpeg names it: the muxer, the encoder, and the options for each."""

    container: str  # FFmpeg's muxer (and demuxer) name: mp3, ogg, adts, flac
    codec: str  # FFmpeg's encoder: libmp3lame, libopus, aac, flac
    container_options: Mapping[str, str] = field(default_factory=dict)
    codec_options: Mapping[str, str] = field(default_factory=dict)


class AvStream:
    """One response in one codec: float32 mono at `sample_rate_hz` in, container bytes out."""

    def __init__(self, codec: AvCodec, sample_rate_hz: int, bitrate_bps: int | None, seekable: bool = False):
        self._whole: io.BytesIO | None = io.BytesIO() if seekable else None
        self._drain = _Drain()
        self._container = av.open(
            self._whole if self._whole is not None else self._drain,
            mode="w",
            format=codec.container,
            options=dict(codec.container_options),
        )
        stream = self._container.add_stream(
            codec.codec, rate=sample_rate_hz, layout="mono", options=dict(codec.codec_options)
        )
        assert isinstance(stream, AudioStream), codec.codec
        if bitrate_bps is not None:
            stream.bit_rate = bitrate_bps
        self._stream = stream
        self._rate = sample_rate_hz
        self._samples = 0
        self._container.start_encoding()  # the header now, so even a stream with no audio is a valid file

    def add(self, waveform: np.ndarray) -> bytes:
        """float32 [samples] in [-1, 1] at the stream's rate → the bytes the muxer has written."""
        if waveform.size:
            clipped = np.clip(np.nan_to_num(waveform, nan=0.0), -1.0, 1.0)  # as PCM is: never wrapped
            samples = np.ascontiguousarray(clipped, dtype=np.float32).reshape(1, -1)
            frame = av.AudioFrame.from_ndarray(samples, format="flt", layout="mono")
            frame.sample_rate = self._rate
            frame.pts = self._samples
            self._samples += samples.shape[1]
            self._container.mux(self._stream.encode(frame))
        return self._take()

    def finish(self) -> bytes:
        """Flush the codec, write the trailer: the rest of the file."""
        self._container.mux(self._stream.encode(None))
        self._container.close()
        if self._whole is not None:
            return self._whole.getvalue()
        return self._take()

    def _take(self) -> bytes:
        return b"" if self._whole is not None else self._drain.take()


def decode(data: bytes, container: str | None = None, sample_rate_hz: int | None = None) -> tuple[np.ndarray, int]:
    """Bytes FFmpeg can read (`container` names the demuxer, else it is probed) → (float32 mono
    [samples], its rate), resampled to `sample_rate_hz` if given."""
    with av.open(io.BytesIO(data), mode="r", format=container) as source:
        stream = source.streams.audio[0]
        rate = sample_rate_hz or stream.rate
        resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
        parts: list[np.ndarray] = []
        for frame in source.decode(stream):
            parts.extend(out.to_ndarray().reshape(-1) for out in resampler.resample(frame))
        parts.extend(out.to_ndarray().reshape(-1) for out in resampler.resample(None))
    audio = np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)
    return audio.astype(np.float32, copy=False), rate
