"""Next-token selection over a batch of logits: repetition penalty, greedy and sampling.

All functions work on float32 logits of shape [batch, vocab]; each row may carry its own
parameters, so requests with different settings can share one decode step.
"""

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SamplingParams:
    """How one request picks its tokens. temperature 0 means greedy argmax (the model card)."""

    temperature: float = 0.0
    top_k: int = 0  # 0 keeps every token
    top_p: float = 1.0  # 1.0 keeps every token
    repetition_penalty: float = 1.2
    seed: int | None = None

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0


def apply_repetition_penalty(logits: np.ndarray, seen: np.ndarray, penalties: np.ndarray) -> np.ndarray:
    """Penalise every token already generated, once per distinct id (as HF/the model card).

    logits: float32 [batch, vocab]; seen: bool [batch, vocab], True where the row has produced
    that id (START included); penalties: float32 [batch]. A negative logit is multiplied by
    the penalty and a positive one divided, so a penalty > 1 always makes the token less likely.
    Returns a new array.
    """
    penalty = np.asarray(penalties, dtype=np.float32)[:, None]
    penalised = np.where(logits < 0, logits * penalty, logits / penalty)
    return np.where(seen, penalised, logits).astype(np.float32, copy=False)


def filter_top_k(logits: np.ndarray, top_k: int) -> np.ndarray:
    """Keep the `top_k` largest logits of a 1-D row (ties at the threshold kept); -inf elsewhere."""
    if top_k <= 0 or top_k >= logits.shape[-1]:
        return logits
    threshold = np.partition(logits, -top_k)[-top_k]
    return np.where(logits < threshold, -np.inf, logits)


def filter_top_p(logits: np.ndarray, top_p: float) -> np.ndarray:
    """Nucleus filter of a 1-D row: keep the smallest high-probability set whose mass >= top_p.

    The token that crosses the threshold is kept and the most likely token always is, as in
    HF's TopPLogitsWarper.
    """
    if top_p >= 1.0:
        return logits
    order = np.argsort(-logits, kind="stable")
    probs = softmax(logits[order])
    mass_before = np.cumsum(probs) - probs
    keep_sorted = mass_before < top_p
    keep_sorted[0] = True
    keep = np.zeros_like(keep_sorted)
    keep[order] = keep_sorted
    return np.where(keep, logits, -np.inf)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Numerically stable softmax over the last axis, in float64 for exact normalisation."""
    shifted = logits.astype(np.float64) - np.max(logits, axis=-1, keepdims=True)
    weights = np.exp(shifted)
    return weights / weights.sum(axis=-1, keepdims=True)


def sample_row(logits: np.ndarray, params: SamplingParams, rng: np.random.Generator) -> int:
    """Draw one token id from a 1-D row of (already penalised) logits: temperature → top-k → top-p."""
    scaled = logits / np.float32(params.temperature)
    scaled = filter_top_k(scaled, params.top_k)
    scaled = filter_top_p(scaled, params.top_p)
    probs = softmax(scaled)
    return int(rng.choice(probs.shape[-1], p=probs))


def select_next_tokens(
    logits: np.ndarray,
    seen: np.ndarray,
    params: list[SamplingParams],
    rngs: list[np.random.Generator | None],
) -> np.ndarray:
    """Pick one token per row. logits float32 [batch, vocab] → int64 [batch]."""
    penalties = np.array([p.repetition_penalty for p in params], dtype=np.float32)
    scores = apply_repetition_penalty(logits, seen, penalties)
    tokens = np.argmax(scores, axis=-1).astype(np.int64)
    for row, (row_params, rng) in enumerate(zip(params, rngs)):
        if not row_params.greedy:
            assert rng is not None, "a sampled row carries its generator"
            tokens[row] = sample_row(scores[row], row_params, rng)
    return tokens
