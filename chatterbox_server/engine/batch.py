"""The running batch's shared state: KV cache, attention mask and the logits waiting to be sampled.

Rows are left-padded to one KV length (mask 0 on pads, which attention ignores); each row keeps
its own position ids, so padding never changes what a row computes. Newcomers are prefilled
together on top of their voices' cached prefix KV and merged in; finished rows are dropped and
padding every row shares is trimmed. The KV itself stays wherever the language model's KV back
end keeps it (host numpy arrays, or OrtValues on the GPU); masks and positions are small and
stay on the host.
"""

import numpy as np

from chatterbox_server.engine.kv import KVList
from chatterbox_server.engine.language_model import LanguageModel
from chatterbox_server.engine.prefix_cache import PrefixKV
from chatterbox_server.engine.requests import Sequence


def compute_prefix(lm: LanguageModel, audio_features: np.ndarray) -> PrefixKV:
    """Run a voice's conditioning float [1, N, hidden] through the LM: its KV for positions 0..N-1."""
    length = audio_features.shape[1]
    embeds: np.ndarray = audio_features.astype(lm.spec.embeds_dtype, copy=False)
    mask = np.ones((1, length), np.int64)
    positions = np.arange(length, dtype=np.int64)[None, :]
    _, present = lm.run(embeds, mask, positions, lm.empty_past(1))
    return PrefixKV(tuple(present), length, lm.kv.nbytes(present))


def prefill(
    lm: LanguageModel, prefixes: list[PrefixKV], text_embeds: list[np.ndarray]
) -> tuple[KVList, np.ndarray, np.ndarray]:
    """Prefill several sequences' text on top of their prefix KV in one LM call.

    text_embeds: per row float [n_i, hidden]. Row i's KV is laid out as [pad | prefix_i | pad |
    text_i] with the mask 0 on both pads, so every row's last position is real.
    Returns (KV per layer [B, H, P + n, D], mask int64 [B, P + n], float32 logits [B, vocab]).
    """
    rows = len(prefixes)
    past_len = max(p.length for p in prefixes)
    new_len = max(e.shape[0] for e in text_embeds)
    hidden = text_embeds[0].shape[1]
    past: KVList | None = None
    for prefix in prefixes:
        padded = lm.kv.left_pad(list(prefix.kv), past_len - prefix.length)
        past = padded if past is None else lm.kv.concat(past, padded)
    assert past is not None
    embeds = np.zeros((rows, new_len, hidden), lm.spec.embeds_dtype)
    mask = np.zeros((rows, past_len + new_len), np.int64)
    positions = np.zeros((rows, new_len), np.int64)
    for b, (prefix, text) in enumerate(zip(prefixes, text_embeds)):
        n = text.shape[0]
        embeds[b, new_len - n :] = text
        mask[b, past_len - prefix.length : past_len] = 1
        mask[b, past_len + new_len - n :] = 1
        positions[b, new_len - n :] = np.arange(prefix.length, prefix.length + n)
    logits, present = lm.run(embeds, mask, positions, past)
    return present, mask, logits


class DecodeBatch:
    """Rows stepping together: KV per layer [B, H, L, D], mask int64 [B, L], logits float32 [B, V]."""

    def __init__(self, lm: LanguageModel):
        self._lm = lm
        self.rows: list[Sequence] = []
        self.kv: KVList = []
        self.mask = np.zeros((0, 0), np.int64)
        self.logits = np.zeros((0, 0), np.float32)

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def kv_length(self) -> int:
        return int(self.mask.shape[1])

    def join(self, rows: list[Sequence], kv: KVList, mask: np.ndarray, logits: np.ndarray) -> None:
        """Merge prefilled rows (their KV, mask and first logits) into the batch."""
        if not self.rows:
            self.rows, self.kv, self.mask, self.logits = list(rows), kv, mask, logits
            return
        length = max(self.kv_length, mask.shape[1])
        ops = self._lm.kv
        mine = ops.left_pad(self.kv, length - self.kv_length)
        theirs = ops.left_pad(kv, length - mask.shape[1])
        self.kv = ops.concat(mine, theirs)
        self.mask = np.concatenate([_pad_mask(self.mask, length), _pad_mask(mask, length)], axis=0)
        self.logits = np.concatenate([self.logits, logits], axis=0)
        self.rows += rows

    def keep(self, keep: np.ndarray) -> None:
        """Keep only the rows where `keep` (bool [B]) is True, and trim padding they all share."""
        if keep.all():
            return
        self.rows = [r for r, k in zip(self.rows, keep) if k]
        if not self.rows:
            self.kv, self.mask, self.logits = [], np.zeros((0, 0), np.int64), np.zeros((0, 0), np.float32)
            return
        mask = self.mask[keep]
        used = np.flatnonzero(mask.any(axis=0))
        start = int(used[0]) if used.size else 0
        self.kv = self._lm.kv.select(self.kv, np.flatnonzero(keep), start)
        self.mask, self.logits = mask[:, start:], self.logits[keep]

    def step(self, tokens: np.ndarray) -> None:
        """Feed each row its newest token (int64 [B]): one LM call, new logits and KV."""
        positions = np.array([[r.position] for r in self.rows], dtype=np.int64)
        self.mask = np.concatenate([self.mask, np.ones((len(self.rows), 1), np.int64)], axis=1)
        self.logits, self.kv = self._lm.run(self._lm.embed(tokens[:, None]), self.mask, positions, self.kv)
        for row in self.rows:
            row.position += 1


def _pad_mask(mask: np.ndarray, length: int) -> np.ndarray:
    """int64 [B, L] → [B, length] with zeros on the left."""
    extra = length - mask.shape[1]
    return mask if extra <= 0 else np.concatenate([np.zeros((mask.shape[0], extra), np.int64), mask], axis=1)
