"""The voice-prefix KV cache: a voice's conditioning run through the language model once.

With causal attention the KV of the prompt's first N positions ([voice conditioning]) does not
depend on what follows, so a request in a known voice prefills only its text on top of the
cached KV: exactly the same tokens, without re-running ~376 positions. Entries are keyed by the
voice's content (and the engine's model and KV dtype), kept LRU and bounded in bytes.
"""

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import cachetools


@dataclass(frozen=True)
class PrefixKV:
    """One voice's conditioning KV: per layer key and value [1, heads, length, head_dim]
    (numpy arrays, or OrtValues on the device when the KV lives there)."""

    kv: tuple[Any, ...]
    length: int
    nbytes: int


@dataclass
class PrefixCacheStats:
    hits: int = 0
    misses: int = 0
    evictions: int = 0


class PrefixCache:
    """Bytes-bounded LRU of PrefixKV; `max_bytes` 0 turns caching off (every lookup computes)."""

    def __init__(self, max_bytes: int):
        if max_bytes < 0:
            raise ValueError(f"prefix cache size must be >= 0 bytes, got {max_bytes}")
        self.max_bytes = max_bytes
        self.stats = PrefixCacheStats()
        self._lock = threading.Lock()
        self._entries: cachetools.LRUCache[str, PrefixKV] = cachetools.LRUCache(
            maxsize=max(max_bytes, 1), getsizeof=lambda entry: entry.nbytes
        )

    def get_or_compute(self, key: str, compute: Callable[[], PrefixKV]) -> tuple[PrefixKV, bool]:
        """(the voice's prefix KV, whether it was cached). `compute` runs outside the lock."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self.stats.hits += 1
                return entry, True
            self.stats.misses += 1
        entry = compute()
        if 0 < entry.nbytes <= self.max_bytes:
            with self._lock:
                expected = len(self._entries) + (key not in self._entries)
                self._entries[key] = entry
                self.stats.evictions += expected - len(self._entries)
        return entry, False

    def discard(self, key: str) -> bool:
        """Drop a voice's entry (deleted or re-registered voice)."""
        with self._lock:
            return self._entries.pop(key, None) is not None

    @property
    def bytes(self) -> int:
        with self._lock:
            return int(self._entries.currsize)

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def __contains__(self, key: str) -> bool:
        with self._lock:
            return key in self._entries
