"""Next-token selection over a batch of logits: repetition penalty, greedy and sampling.

All functions work on float32 logits of shape [batch, vocab]; each row may carry its own
parameters, so requests with different settings can share one decode step.
"""

from dataclasses import dataclass

import numpy as np

DEFAULT_REPETITION_PENALTY = 1.2  # the model card's; the engine's default (engine/config.py) is this one


@dataclass(frozen=True)
class SamplingParams:
    """How one request picks its tokens. temperature 0 means greedy argmax (the model card)."""

    temperature: float = 0.0
    top_k: int = 0  # 0 keeps every token
    top_p: float = 1.0  # 1.0 keeps every token
    repetition_penalty: float = DEFAULT_REPETITION_PENALTY
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
    """Pick one token per row. logits float32 [batch, vocab] → int64 [batch].

    Greedy rows take the argmax of the penalised logits; sampled rows are filtered and drawn
    together, each with one uniform from its own generator, so a row's tokens do not depend on
    its batch-mates. Safe for any accepted value: a tiny temperature or penalty gives -inf or a
    clipped score, never NaN.
    """
    penalties = np.array([p.repetition_penalty for p in params], dtype=np.float32)
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        scores = apply_repetition_penalty(logits, seen, penalties)
    scores = np.clip(np.nan_to_num(scores, nan=-SCORE_LIMIT), -SCORE_LIMIT, SCORE_LIMIT)
    tokens = np.argmax(scores, axis=-1).astype(np.int64)
    sampled = [row for row, p in enumerate(params) if not p.greedy]
    if sampled:
        generators = [rngs[row] for row in sampled]
        assert all(g is not None for g in generators), "a sampled row carries its generator"
        tokens[sampled] = sample_rows(scores[sampled], [params[row] for row in sampled], generators)  # type: ignore[arg-type]
    return tokens


SCORE_LIMIT = 1e30  # |penalised logit| is clipped here: finite, and still far beyond any real logit


def sample_rows(scores: np.ndarray, params: list[SamplingParams], rngs: list[np.random.Generator]) -> np.ndarray:
    """Draw one token per row of finite penalised scores float32 [rows, vocab] → int64 [rows]:
    temperature → top-k → top-p → one uniform per row from that row's generator (the inverse CDF
    that Generator.choice uses)."""
    rows, vocab = scores.shape
    temperature = np.array([p.temperature for p in params], dtype=np.float64)[:, None]
    shifted = scores.astype(np.float64) - scores.max(axis=-1, keepdims=True)  # the best is 0
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        scaled = shifted / temperature  # ≤ 0 everywhere; -inf, never NaN, for a tiny temperature
    scaled = np.where(np.isnan(scaled), -np.inf, scaled)
    order = np.argsort(-scaled, axis=-1, kind="stable")
    ranked = np.take_along_axis(scaled, order, axis=-1)  # descending
    top_k = np.array([p.top_k if 0 < p.top_k < vocab else vocab for p in params])
    threshold = ranked[np.arange(rows), top_k - 1][:, None]
    ranked = np.where(ranked < threshold, -np.inf, ranked)  # ties at the threshold kept
    top_p = np.array([p.top_p for p in params], dtype=np.float64)[:, None]
    probs = softmax(ranked)
    mass_before = np.cumsum(probs, axis=-1) - probs
    keep = (mass_before < top_p) | (np.arange(vocab) == 0)
    probs = softmax(np.where(keep, ranked, -np.inf))
    cdf = np.cumsum(probs, axis=-1)
    cdf /= cdf[:, -1:]
    uniform = np.array([rng.random() for rng in rngs])[:, None]
    picked = np.minimum((cdf <= uniform).sum(axis=-1), vocab - 1)
    return order[np.arange(rows), picked].astype(np.int64)
