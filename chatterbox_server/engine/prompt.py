"""Text to the language model's prefill: normalise, tokenize, embed, and put the voice first."""

import numpy as np
from tokenizers import Tokenizer

from chatterbox_server.engine.decode_loop import LanguageModel
from chatterbox_server.engine.voices import VoiceEmbedding
from chatterbox_server.errors import InvalidInputError
from chatterbox_server.text import normalize_text


class PromptBuilder:
    """The GPT-2 tokenizer (with the paralinguistic tags) and the prefill sequence it feeds."""

    def __init__(self, tokenizer: Tokenizer, language_model: LanguageModel, normalize: bool = True):
        self._tokenizer = tokenizer
        self._lm = language_model
        self.normalize = normalize

    def tokenize(self, text: str, normalize: bool | None = None) -> np.ndarray:
        """Text → int64 [n] token ids (special tokens on, ids passed through unchanged)."""
        if not isinstance(text, str) or not text.strip():
            raise InvalidInputError("text is empty")
        if self.normalize if normalize is None else normalize:
            text = normalize_text(text)
        ids = self._tokenizer.encode(text).ids
        if not ids:
            raise InvalidInputError("text produced no tokens")
        return np.asarray(ids, dtype=np.int64)

    def build(self, token_ids: np.ndarray, voice: VoiceEmbedding) -> np.ndarray:
        """The prefill sequence [voice conditioning | text embeddings], float [N + n, hidden]."""
        text_embeds = self._lm.embed(token_ids[None, :])[0]
        return np.concatenate([voice.audio_features[0].astype(text_embeds.dtype), text_embeds])
