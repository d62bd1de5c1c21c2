"""Text to token ids for the prefill: upstream's normalisation, then the GPT-2 tokenizer (with tags)."""

import numpy as np
from tokenizers import Tokenizer

from chatterbox_server.errors import InvalidInputError
from chatterbox_server.model.tokenizer import guard_special_tokens
from chatterbox_server.text import normalize_text


class TextTokenizer:
    """The GPT-2 byte-level BPE tokenizer with the 19 paralinguistic tags at 50257-50275."""

    def __init__(self, tokenizer: Tokenizer, normalize: bool = True):
        self._tokenizer = guard_special_tokens(tokenizer)  # typed "<|endoftext|>" is text, "[laugh]" a tag
        self.normalize = normalize

    def tokenize(self, text: str, normalize: bool | None = None) -> np.ndarray:
        """Text → int64 [n] token ids: the tags as their ids, special tokens typed in the text as
        the text they spell (model/tokenizer.py), the post-processor's ids passed through unchanged."""
        if not isinstance(text, str) or not text.strip():
            raise InvalidInputError("text is empty")
        if not text.isascii():
            try:
                text.encode("utf-8")
            except UnicodeEncodeError as e:  # a lone surrogate (e.g. "\ud800" in JSON) cannot be tokenized
                raise InvalidInputError(f"text is not valid Unicode: {e.reason} at character {e.start}") from None
        if self.normalize if normalize is None else normalize:
            text = normalize_text(text)
        ids = self._tokenizer.encode(text).ids
        if not ids:
            raise InvalidInputError("text produced no tokens")
        return np.asarray(ids, dtype=np.int64)
