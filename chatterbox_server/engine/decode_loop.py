"""The autoregressive decode: per-sequence state, and one batched language-model step after another.

Sequences are left-padded to one length for the prefill (mask 0 and position 0 on pads), then
step together over a shared KV cache; a finished sequence leaves the batch and its KV rows go.
"""

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import onnxruntime as ort

from chatterbox_server.engine.sampling import SamplingParams, select_next_tokens
from chatterbox_server.errors import GenerationCancelledError
from chatterbox_server.model.contract import (
    SPEECH_VOCAB_SIZE,
    START_SPEECH_TOKEN,
    STOP_SPEECH_TOKEN,
    LanguageModelSpec,
    read_language_model_spec,
)


@dataclass
class Sequence:
    """Decode state of one sequence in a batch."""

    params: SamplingParams
    max_new_tokens: int
    rng: np.random.Generator | None
    tokens: list[int]  # START first, then every generated id
    stopped: bool = False

    @property
    def done(self) -> bool:
        return self.stopped or len(self.tokens) - 1 >= self.max_new_tokens


@dataclass
class DecodeClock:
    """Where a generation's time went (filled in as it runs)."""

    prefill_s: float = 0.0
    decode_s: float = 0.0
    steps: int = 0


class LanguageModel:
    """embed_tokens and language_model: token ids to embeddings, and one LM call for a batch."""

    def __init__(self, embed_session: ort.InferenceSession, lm_session: ort.InferenceSession):
        self._embed_session = embed_session
        self._embed_input = embed_session.get_inputs()[0].name
        self._session = lm_session
        self.spec: LanguageModelSpec = read_language_model_spec(lm_session)

    def embed(self, ids: np.ndarray) -> np.ndarray:
        """int64 [batch, seq] → float [batch, seq, hidden] in the LM's inputs_embeds dtype."""
        embeds = self._embed_session.run(None, {self._embed_input: ids})[0]
        return np.asarray(embeds).astype(self.spec.embeds_dtype, copy=False)

    def empty_past(self, batch: int) -> list[np.ndarray]:
        """A KV cache of length 0 for `batch` rows: per layer key and value [batch, heads, 0, head_dim]."""
        spec = self.spec
        empty: np.ndarray = np.zeros((batch, spec.num_heads, 0, spec.head_dim), dtype=spec.kv_dtype)
        return [empty] * len(spec.past_names)

    def run(
        self, embeds: np.ndarray, mask: np.ndarray, positions: np.ndarray, past: list[np.ndarray]
    ) -> tuple[np.ndarray, list[np.ndarray]]:
        """One LM call → (float32 logits of the last position [batch, vocab], present KV list)."""
        spec = self.spec
        feeds = {"inputs_embeds": embeds, "attention_mask": mask, "position_ids": positions}
        feeds.update(zip(spec.past_names, past))
        outputs = self._session.run(["logits", *spec.present_names], feeds)
        return np.asarray(outputs[0])[:, -1, :].astype(np.float32), [np.asarray(kv) for kv in outputs[1:]]


def decode_steps(
    lm: LanguageModel,
    prompts: list[np.ndarray],
    rows: list[Sequence],
    cancel: threading.Event | None,
    clock: DecodeClock,
) -> Iterator[None]:
    """Prefill, then one decode step per iteration; yields after each new token per row.

    prompts: per row float [L_b, hidden] = [voice conditioning | text embeddings]. Rows are
    left-padded to one length (mask 0, position 0 on pads; positions 0..L_b−1 on the real
    part), then step together; a finished row leaves the batch and its KV rows are dropped.
    """
    started = time.perf_counter()
    lengths = np.array([p.shape[0] for p in prompts], dtype=np.int64)
    batch, width, hidden = len(prompts), int(lengths.max()), prompts[0].shape[1]
    embeds: np.ndarray = np.zeros((batch, width, hidden), dtype=lm.spec.embeds_dtype)
    mask = np.zeros((batch, width), dtype=np.int64)
    positions = np.zeros((batch, width), dtype=np.int64)
    for b, prompt in enumerate(prompts):
        pad = width - prompt.shape[0]
        embeds[b, pad:] = prompt
        mask[b, pad:] = 1
        positions[b, pad:] = np.arange(prompt.shape[0])
    logits, past = lm.run(embeds, mask, positions, lm.empty_past(batch))
    clock.prefill_s = time.perf_counter() - started

    seen = np.zeros((batch, SPEECH_VOCAB_SIZE), dtype=bool)
    seen[:, START_SPEECH_TOKEN] = True
    active = np.arange(batch)  # original row index of each batch row
    next_position = lengths.copy()
    while True:
        active_rows = [rows[i] for i in active]
        tokens = select_next_tokens(logits, seen[active], [r.params for r in active_rows], [r.rng for r in active_rows])
        seen[active, tokens] = True
        for row, token in zip(active_rows, tokens):
            row.tokens.append(int(token))
            row.stopped = int(token) == STOP_SPEECH_TOKEN
        clock.decode_s = time.perf_counter() - started - clock.prefill_s
        yield
        keep = np.array([not r.done for r in active_rows])
        if not keep.any():
            return
        if cancel is not None and cancel.is_set():
            raise GenerationCancelledError("synthesis cancelled")
        if not keep.all():
            active, tokens, mask = active[keep], tokens[keep], mask[keep]
            past = [kv[keep] for kv in past]
        mask = np.concatenate([mask, np.ones((len(active), 1), dtype=np.int64)], axis=1)
        positions = next_position[active][:, None]
        next_position[active] += 1
        logits, past = lm.run(lm.embed(tokens[:, None]), mask, positions, past)
        clock.steps += 1
