"""The bounded LRU of voices' encoder outputs (voice_store/cache.py)."""

from chatterbox_server.voice_store.cache import VoiceCache
from tests.clips import fake_embedding as embedding


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
