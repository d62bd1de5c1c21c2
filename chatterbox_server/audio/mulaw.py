"""G.711 µ-law (telephony: one byte a sample, 8 kHz) in numpy, as the reference C code does it
(bias 0x84, clip 32635, bits inverted); audioop, which did this before, is gone in Python 3.13."""

import numpy as np

from chatterbox_server.audio.pcm import to_pcm16

_BIAS = 0x84
_CLIP = 32_635
# the segment (exponent) of a biased magnitude, by its top 8 bits: floor(log2(i)), and 0 for 0
_EXPONENT = np.array([0, 0] + [int(np.log2(i)) for i in range(2, 256)], dtype=np.int32)


def encode_ulaw(waveform: np.ndarray) -> bytes:
    """float [samples] in [-1, 1] (clipped) → µ-law bytes, one per sample."""
    pcm = to_pcm16(waveform).astype(np.int32)
    sign = np.where(pcm < 0, 0x80, 0)
    magnitude = np.minimum(np.abs(pcm), _CLIP) + _BIAS
    exponent = _EXPONENT[magnitude >> 7]
    mantissa = (magnitude >> (exponent + 3)) & 0x0F
    return (~(sign | (exponent << 4) | mantissa) & 0xFF).astype(np.uint8).tobytes()


def decode_ulaw(data: bytes) -> np.ndarray:
    """µ-law bytes → float32 [samples] in [-1, 1]."""
    code = ~np.frombuffer(data, dtype=np.uint8).astype(np.int32) & 0xFF
    exponent, mantissa = (code >> 4) & 0x07, code & 0x0F
    magnitude = (((mantissa << 3) + _BIAS) << exponent) - _BIAS
    return (np.where(code & 0x80, -magnitude, magnitude) / 32768.0).astype(np.float32)
