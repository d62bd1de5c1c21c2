"""Audio in and out: decode and resample reference clips, PCM/WAV bytes, fades and speed,
and the response formats this install can encode. No model code here."""

from chatterbox_server.audio.decode import (
    DEFAULT_MAX_SAMPLE_RATE_HZ,
    MIN_VOICE_SECONDS,
    decode_audio,
    prepare_reference_audio,
    read_audio_bytes,
)
from chatterbox_server.audio.edit import (
    FADE_SECONDS,
    change_speed,
    crossfade,
    fade_edges,
    fade_in,
    fade_out,
    warm_speed_change,
)
from chatterbox_server.audio.pcm import SAMPLE_RATE_HZ, encode_wav, to_pcm16, wav_stream_header, write_wav

__all__ = [
    "DEFAULT_MAX_SAMPLE_RATE_HZ",
    "FADE_SECONDS",
    "MIN_VOICE_SECONDS",
    "SAMPLE_RATE_HZ",
    "change_speed",
    "crossfade",
    "decode_audio",
    "encode_wav",
    "fade_edges",
    "fade_in",
    "fade_out",
    "prepare_reference_audio",
    "read_audio_bytes",
    "to_pcm16",
    "warm_speed_change",
    "wav_stream_header",
    "write_wav",
]
