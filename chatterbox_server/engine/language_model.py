"""embed_tokens and language_model behind one object: token ids to embeddings, one LM call for a batch."""

import numpy as np
import onnxruntime as ort

from chatterbox_server.engine.kv import DeviceKV, HostKV, KVList
from chatterbox_server.model.contract import LanguageModelSpec, read_language_model_spec


class LanguageModel:
    """embed_tokens and language_model: token ids to embeddings, and one LM call for a batch."""

    def __init__(
        self,
        embed_session: ort.InferenceSession,
        lm_session: ort.InferenceSession,
        kv_device: str | None = None,
        device_id: int = 0,
    ):
        """kv_device: None keeps the KV cache in host memory (numpy); "cuda" (or "cpu", for
        tests of that path) keeps it as OrtValues on that device between steps (IO binding)."""
        self._embed_session = embed_session
        self._embed_input = embed_session.get_inputs()[0].name
        self.spec: LanguageModelSpec = read_language_model_spec(lm_session)
        self.kv: HostKV | DeviceKV = (
            HostKV(lm_session, self.spec)
            if kv_device is None
            else DeviceKV(lm_session, self.spec, kv_device, device_id)
        )

    def embed(self, ids: np.ndarray) -> np.ndarray:
        """int64 [batch, seq] → float [batch, seq, hidden] in the LM's inputs_embeds dtype."""
        embeds = self._embed_session.run(None, {self._embed_input: ids})[0]
        return np.asarray(embeds).astype(self.spec.embeds_dtype, copy=False)

    def empty_past(self, batch: int) -> KVList:
        """A KV cache of length 0 for `batch` rows."""
        return self.kv.empty(batch)

    def run(
        self, embeds: np.ndarray, mask: np.ndarray, positions: np.ndarray, past: KVList
    ) -> tuple[np.ndarray, KVList]:
        """One LM call → (float32 logits of the last position [batch, vocab], present KV)."""
        return self.kv.run(embeds, mask, positions, past)
