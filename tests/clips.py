"""Synthetic reference clips for tests."""

import numpy as np

from chatterbox_server.engine import VoiceEmbedding


def make_clip(seconds: float, sample_rate: int, base_hz: float, seed: int, channels: int = 1) -> np.ndarray:
    """A voice-like test clip: a vibrato tone with harmonics plus a little noise, float32 [n, ch]."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    f = base_hz * (1 + 0.03 * np.sin(2 * np.pi * 5 * t))
    phase = 2 * np.pi * np.cumsum(f) / sample_rate
    tone = sum((0.5 / k) * np.sin(k * phase) for k in range(1, 5))
    mono = 0.4 * tone / np.max(np.abs(tone)) + 0.01 * rng.standard_normal(t.shape)
    return np.stack([mono * (0.9 + 0.1 * c) for c in range(channels)], axis=1).astype(np.float32)


def fake_embedding(seed: int) -> VoiceEmbedding:
    """Encoder outputs of the right shapes and dtypes, random: for bookkeeping tests with no model."""

    rng = np.random.default_rng(seed)
    return VoiceEmbedding(
        audio_features=rng.standard_normal((1, 4, 8), dtype=np.float32),
        audio_tokens=np.zeros((1, 3), np.int64),
        speaker_embeddings=np.zeros((1, 192), np.float32),
        speaker_features=np.zeros((1, 6, 80), np.float32),
        content_hash=f"{seed:064x}",
        duration_s=5.5,
    )
