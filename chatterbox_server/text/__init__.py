"""Text before the model: punctuation clean-up and tags, and splitting long text into pieces."""

from chatterbox_server.text.normalize import TAGS, normalize_text
from chatterbox_server.text.split import DEFAULT_FIRST_MAX_CHARS, DEFAULT_MAX_CHARS, TextPiece, split_text

__all__ = ["DEFAULT_FIRST_MAX_CHARS", "DEFAULT_MAX_CHARS", "TAGS", "TextPiece", "normalize_text", "split_text"]
