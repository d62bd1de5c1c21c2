"""The voices held in memory: a thread-safe bounded LRU of voice id → encoder outputs (the voice
service's, server/voice_service.py)."""

import threading
from dataclasses import dataclass

import cachetools

from chatterbox_server.engine.voices import VoiceEmbedding


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    evictions: int = 0


class _CountingLRU(cachetools.LRUCache):
    def __init__(self, maxsize: int, on_evict):
        super().__init__(maxsize)
        self._on_evict = on_evict

    def popitem(self):
        key, value = super().popitem()
        self._on_evict(key, value)
        return key, value


class VoiceCache:
    """Bounded LRU map of voice id → VoiceEmbedding; safe to share between threads."""

    def __init__(self, maxsize: int):
        if maxsize < 1:
            raise ValueError(f"voice cache size must be at least 1, got {maxsize}")
        self._lock = threading.Lock()
        self._entries = _CountingLRU(maxsize, self._count_eviction)
        self.stats = CacheStats()

    def _count_eviction(self, key, _value) -> None:
        self.stats.evictions += 1

    @property
    def maxsize(self) -> int:
        return int(self._entries.maxsize)

    def get(self, voice_id: str) -> VoiceEmbedding | None:
        """The cached voice (marking it most recently used), or None; counts a hit or a miss."""
        with self._lock:
            voice = self._entries.get(voice_id)
            if voice is None:
                self.stats.misses += 1
            else:
                self.stats.hits += 1
            return voice

    def put(self, voice_id: str, voice: VoiceEmbedding) -> None:
        with self._lock:
            self._entries[voice_id] = voice

    def remove(self, voice_id: str) -> bool:
        with self._lock:
            return self._entries.pop(voice_id, None) is not None

    def __contains__(self, voice_id: str) -> bool:
        with self._lock:
            return voice_id in self._entries

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def ids(self) -> list[str]:
        """The ids cached now."""
        with self._lock:
            return list(self._entries.keys())
