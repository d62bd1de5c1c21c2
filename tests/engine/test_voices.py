"""The bounded LRU of voices' encoder outputs (engine/voices.py)."""

import numpy as np

from chatterbox_server.engine import VoiceCache, VoiceEmbedding


def embedding(seed: int) -> VoiceEmbedding:
    rng = np.random.default_rng(seed)
    return VoiceEmbedding(
        audio_features=rng.standard_normal((1, 4, 8), dtype=np.float32),
        audio_tokens=np.zeros((1, 3), np.int64),
        speaker_embeddings=np.zeros((1, 192), np.float32),
        speaker_features=np.zeros((1, 6, 80), np.float32),
        content_hash=f"{seed:064x}",
        duration_s=5.5,
    )


def test_voice_cache_is_a_bounded_lru():
    cache = VoiceCache(2)
    cache.put("v0", embedding(0))
    cache.put("v1", embedding(1))
    assert cache.get("v0") is not None  # v0 is now the most recently used
    cache.put("v2", embedding(2))  # evicts v1
    assert len(cache) == 2
    assert cache.stats.evictions == 1
    assert cache.get("v0") is not None and cache.get("v2") is not None
    assert cache.get("v1") is None
