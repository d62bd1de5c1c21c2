"""Reference clips: bytes or a path in, mono float32 at 24 kHz out, with every check a voice needs.

Every limit is checked from the header (`sf.info`) before a sample is decoded: length, sample
rate (a floor and a ceiling), channels, and the number of samples the decode would produce, so a
small upload whose header claims 10 MHz or an hour cannot make the server allocate for it. A file
that does not decode gets a message a user can act on, not libsndfile's own words where those
mislead (a truncated MP3 is "File does not exist or is not a regular file (possibly a pipe?)").
"""

import io
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from chatterbox_server.audio.pcm import SAMPLE_RATE_HZ
from chatterbox_server.errors import InvalidAudioError

logger = logging.getLogger(__name__)

MIN_VOICE_SECONDS = 5.0  # upstream refuses shorter reference clips
MIN_SAMPLE_RATE_HZ = 8_000  # telephone quality; below it a clip cannot carry a voice
DEFAULT_MAX_SAMPLE_RATE_HZ = 192_000  # studio masters go this high; beyond, the header lies or it is no recording
MAX_CHANNELS = 8
# A clip may decode to as many samples as the longest clip in stereo at the ceiling rate (30 s at
# 192 kHz: 11.5 M samples, 46 MB of float32): 8 channels pass at 48 kHz, not at 192 kHz.
DECODED_CHANNEL_BUDGET = 2
SILENCE_RMS = 1e-4  # a clip quieter than this (about -80 dBFS) holds no voice to clone
# Fewer decoded frames than this share of what the header promises: the file was cut off (lossy
# codecs pad or trim a frame or two, far less than 10 %).
TRUNCATED_SHARE = 0.9

FORMATS = "WAV, FLAC, OGG or MP3"
UNDECODABLE = f"cannot decode audio: the file is truncated, corrupt or not {FORMATS}"
# libsndfile's messages worth passing on name a container or a codec ("Error in WAV file. No 'data'
# chunk marker.", "unimplemented format"); the rest are internal ("psf_fseek() failed") or wrong
# for bytes in memory ("File does not exist or is not a regular file"), and are only logged.
_HELPFUL_DETAIL = re.compile(r"\b(?:WAV|FLAC|OGG|MP3|MPEG|Vorbis|Opus|unimplemented)\b", re.IGNORECASE)
_DECODE_ERRORS = (sf.LibsndfileError, RuntimeError, TypeError, ValueError)


@dataclass(frozen=True)
class DecodedClip:
    """Samples as decoded (float32 [frames, channels]), their rate, and the frames the header promised."""

    samples: np.ndarray
    sample_rate: int
    header_frames: int


def read_audio_bytes(source: str | Path | bytes) -> bytes:
    """Return the raw bytes of a clip given as a path or as bytes."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source)
    path = Path(source)
    try:
        return path.read_bytes()
    except OSError as e:
        raise InvalidAudioError(f"cannot read audio file {path}: {e.strerror or e}") from e


def undecodable(error: Exception, stage: str) -> InvalidAudioError:
    """The error a user gets for a file libsndfile cannot open or read: what to do about it, with
    libsndfile's own detail only where it names the format's fault (the rest is logged)."""
    detail = (getattr(error, "error_string", None) or str(error)).strip()
    logger.debug("libsndfile could not %s a clip: %s", stage, detail)
    message = UNDECODABLE
    if stage == "read":  # the header was fine: the audio after it is not
        message = "cannot decode audio: the file is truncated or corrupt (its header reads, its audio does not)"
    if _HELPFUL_DETAIL.search(detail):
        message += f" (libsndfile: {detail.rstrip('.')})"
    return InvalidAudioError(message)


def decode_clip(
    data: bytes, max_seconds: float | None = None, max_sample_rate_hz: int = DEFAULT_MAX_SAMPLE_RATE_HZ
) -> DecodedClip:
    """Decode WAV/FLAC/OGG/MP3 bytes, every limit checked from the header first (module docstring).

    With max_seconds, at most that much is decoded, and at most max_seconds × max_sample_rate_hz ×
    DECODED_CHANNEL_BUDGET samples in all."""
    if not data:
        raise InvalidAudioError("the audio file is empty (0 bytes)")
    try:
        info = sf.info(io.BytesIO(data))
    except _DECODE_ERRORS as e:
        raise undecodable(e, "open") from e
    rate, channels = int(info.samplerate), int(info.channels)
    if rate < MIN_SAMPLE_RATE_HZ:
        raise InvalidAudioError(f"sample rate {rate} Hz is too low; at least {MIN_SAMPLE_RATE_HZ} Hz")
    if rate > max_sample_rate_hz:
        raise InvalidAudioError(f"sample rate {rate} Hz is too high; at most {max_sample_rate_hz} Hz is accepted")
    if not 1 <= channels <= MAX_CHANNELS:
        raise InvalidAudioError(f"audio has {channels} channels; 1 to {MAX_CHANNELS} are accepted")
    frames = -1  # everything
    if max_seconds is not None:
        if info.frames / rate > max_seconds:
            raise InvalidAudioError(
                f"reference audio is {info.frames / rate:.2f} s long; at most {max_seconds:g} s is accepted"
            )
        frames = min(int(info.frames), int(max_seconds * rate) + 1)  # never more than allowed
        budget = int(max_seconds * max_sample_rate_hz) * DECODED_CHANNEL_BUDGET
        if frames * channels > budget:
            raise InvalidAudioError(
                f"audio would decode to {frames * channels} samples ({channels} channels at {rate} Hz); at most "
                f"{budget} are accepted: send mono or stereo, or a lower sample rate"
            )
    try:
        samples, sample_rate = sf.read(io.BytesIO(data), frames=frames, dtype="float32", always_2d=True)
    except _DECODE_ERRORS as e:
        raise undecodable(e, "read") from e
    return DecodedClip(samples, int(sample_rate), int(info.frames))


def decode_audio(
    data: bytes, max_seconds: float | None = None, max_sample_rate_hz: int = DEFAULT_MAX_SAMPLE_RATE_HZ
) -> tuple[np.ndarray, int]:
    """Decode WAV/FLAC/OGG/MP3 bytes → (float32 [samples, channels], sample rate), checked from the
    header first (`decode_clip`)."""
    clip = decode_clip(data, max_seconds, max_sample_rate_hz)
    return clip.samples, clip.sample_rate


def prepare_reference_audio(
    data: bytes,
    *,
    max_seconds: float,
    min_seconds: float = MIN_VOICE_SECONDS,
    max_sample_rate_hz: int = DEFAULT_MAX_SAMPLE_RATE_HZ,
) -> np.ndarray:
    """Decode a reference clip to what the speech encoder takes: mono float32 [samples] at 24 kHz.

    Stereo is averaged, other rates are resampled with soxr. Rejects clips outside
    [min_seconds, max_seconds], above max_sample_rate_hz and with non-finite samples with
    InvalidAudioError; a clip cut short says so.
    """
    clip = decode_clip(data, max_seconds, max_sample_rate_hz)
    samples, sample_rate = clip.samples, clip.sample_rate
    decoded_s = samples.shape[0] / sample_rate if sample_rate > 0 else 0.0
    truncated = samples.shape[0] < TRUNCATED_SHARE * clip.header_frames
    if truncated and decoded_s < min_seconds:
        raise InvalidAudioError(
            f"the file is truncated: its header promises {clip.header_frames / sample_rate:.2f} s of audio, only "
            f"{decoded_s:.2f} s could be decoded (at least {min_seconds:g} s is needed)"
        )
    if samples.shape[0] == 0 or sample_rate <= 0:
        raise InvalidAudioError("audio file holds no samples")
    if not np.isfinite(samples).all():
        raise InvalidAudioError("audio holds non-finite samples (NaN or infinity)")
    if decoded_s < min_seconds:
        raise InvalidAudioError(f"reference audio is {decoded_s:.2f} s long; at least {min_seconds:g} s is needed")
    if decoded_s > max_seconds:
        raise InvalidAudioError(f"reference audio is {decoded_s:.2f} s long; at most {max_seconds:g} s is accepted")
    mono = samples.mean(axis=1, dtype=np.float32)
    if float(np.sqrt(np.mean(np.square(mono, dtype=np.float64)))) < SILENCE_RMS:
        raise InvalidAudioError("reference audio is silent; send a clip of one person speaking")
    if sample_rate != SAMPLE_RATE_HZ:
        mono = soxr.resample(mono, sample_rate, SAMPLE_RATE_HZ, quality="HQ").astype(np.float32)
    return np.clip(mono, -1.0, 1.0)
