"""Request preparation: text and options in, a fully resolved SpeechPlan out, checked once.

Everything the loop needs to know about a request is decided here, before any model call: the
text split into pieces (sentences, then clauses; a short first piece), each piece normalised and
tokenized, the sampling parameters and the token limit resolved against the engine's defaults and
checked. The loop builds its sequences from the plan alone and validates nothing again.
"""

import numpy as np

from chatterbox_server.engine.prompt import TextTokenizer
from chatterbox_server.engine.sampling import SamplingParams
from chatterbox_server.engine.types import GenerationOptions, PlannedPiece, SpeechPlan
from chatterbox_server.errors import InvalidInputError
from chatterbox_server.text import DEFAULT_FIRST_MAX_CHARS, DEFAULT_MAX_CHARS, TextPiece, split_text

MAX_TEMPERATURE = 10.0
MAX_REPETITION_PENALTY = 10.0
SEED_LIMIT = 2**63  # numpy Generator seeds are below this
MAX_PIECE_TEXT_TOKENS = 200  # a 250-character piece of plain text is ~60 tokens


class RequestPlanner:
    """Turns (text, options) into a SpeechPlan with the engine's defaults filled in."""

    def __init__(self, tokenizer: TextTokenizer, max_new_tokens: int, repetition_penalty: float):
        self._tokenizer = tokenizer
        self.max_new_tokens = max_new_tokens  # the default per piece, and the ceiling a request may ask for
        self.repetition_penalty = repetition_penalty

    def prepare(
        self,
        text: str,
        options: GenerationOptions | None = None,
        max_chars: int = DEFAULT_MAX_CHARS,
        first_max_chars: int | None = DEFAULT_FIRST_MAX_CHARS,
    ) -> SpeechPlan:
        """Check a request once: options in range, text split into pieces and tokenized.

        Raises InvalidInputError for empty text or an option out of range, before any model call.
        A piece that tokenizes to more than MAX_PIECE_TEXT_TOKENS (say, 250 emoji of 4 byte
        tokens each) is split further, so no prompt grows past what a piece should cost.
        """
        options = options or GenerationOptions()
        sampling = self.sampling_params(options)
        max_new = self.max_new_tokens if options.max_new_tokens is None else options.max_new_tokens
        if not 1 <= max_new <= self.max_new_tokens:
            raise InvalidInputError(f"max_new_tokens must be between 1 and {self.max_new_tokens}, got {max_new}")
        pieces = split_text(text, max_chars, first_max_chars) if isinstance(text, str) else []
        if not pieces:
            raise InvalidInputError("text is empty")
        planned = [p for piece in pieces for p in self._plan_piece(piece, options)]
        return SpeechPlan(tuple(planned), options, sampling, max_new)

    def tokenize(self, text: str, normalize: bool | None = None) -> np.ndarray:
        """Text → int64 [n] token ids (special tokens on, ids passed through unchanged)."""
        return self._tokenizer.tokenize(text, normalize)

    def _plan_piece(self, piece: TextPiece, options: GenerationOptions) -> list[PlannedPiece]:
        ids = self.tokenize(piece.text, options.normalize_text)
        if ids.shape[0] <= MAX_PIECE_TEXT_TOKENS or len(piece.text) < 2:
            return [PlannedPiece(piece, ids)]
        halves = split_text(piece.text, max(1, len(piece.text) // 2), None)
        shifted = [TextPiece(h.text, piece.start + h.start, piece.start + h.end) for h in halves]
        if len(shifted) < 2:  # nothing to split at: cut the characters in half
            middle = len(piece.text) // 2
            shifted = [
                TextPiece(piece.text[:middle], piece.start, piece.start + middle),
                TextPiece(piece.text[middle:], piece.start + middle, piece.end),
            ]
        return [p for half in shifted for p in self._plan_piece(half, options)]

    def sampling_params(self, options: GenerationOptions) -> SamplingParams:
        """The request's sampling parameters, defaults filled in and every value checked."""
        params = SamplingParams(
            temperature=0.0 if options.temperature is None else float(options.temperature),
            top_k=0 if options.top_k is None else int(options.top_k),
            top_p=1.0 if options.top_p is None else float(options.top_p),
            repetition_penalty=(
                self.repetition_penalty if options.repetition_penalty is None else float(options.repetition_penalty)
            ),
            seed=options.seed,
        )
        checks = [
            (
                np.isfinite(params.temperature) and 0.0 <= params.temperature <= MAX_TEMPERATURE,
                f"temperature must be between 0 and {MAX_TEMPERATURE:g}",
            ),
            (params.top_k >= 0, "top_k must be 0 (off) or positive"),
            (0.0 < params.top_p <= 1.0, "top_p must be in (0, 1]"),
            (
                np.isfinite(params.repetition_penalty) and 0.0 < params.repetition_penalty <= MAX_REPETITION_PENALTY,
                f"repetition_penalty must be in (0, {MAX_REPETITION_PENALTY:g}]",
            ),
            (params.seed is None or 0 <= params.seed < SEED_LIMIT, "seed must be a non-negative integer"),
        ]
        for ok, message in checks:
            if not ok:
                raise InvalidInputError(message)
        return params
