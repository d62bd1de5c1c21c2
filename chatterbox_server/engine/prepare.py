"""Request preparation: text and options in, a fully resolved SpeechPlan out, checked once.

Everything the loop needs to know about a request is decided here, before any model call: the
text rid of what nobody can see (text/invisible.py: zero-width and format characters, controls;
always, whatever the settings), cleaned up to be spoken (text/cleanup.py: Markdown, emoji, stage
directions, symbols, a lexicon, pause marks, each a setting), split into pieces (sentences, then
clauses; a short first piece; a pause mark ends a piece and becomes its pause_after_s), each
piece normalised and tokenized, the sampling parameters and the token limit resolved against the
engine's defaults and checked, and each piece's runaway bound from its text (runaway.py). The
loop builds its sequences from the plan alone and validates nothing again.
"""

from dataclasses import replace

import numpy as np

from chatterbox_server.engine.prompt import TextTokenizer
from chatterbox_server.engine.runaway import RunawayBound
from chatterbox_server.engine.sampling import SamplingParams
from chatterbox_server.engine.types import GenerationOptions, PlannedPiece, SpeechPlan
from chatterbox_server.errors import InvalidInputError
from chatterbox_server.text import DEFAULT_FIRST_MAX_CHARS, DEFAULT_MAX_CHARS, TextPiece, split_text
from chatterbox_server.text.cleanup import SHORT_TEXT_CHARS, CleanText, CleanupRules, is_speakable
from chatterbox_server.text.cleanup import clean as clean_text
from chatterbox_server.text.invisible import strip_invisible
from chatterbox_server.text.split import join_short_pieces

MAX_TEMPERATURE = 10.0
MAX_REPETITION_PENALTY = 10.0
SEED_LIMIT = 2**63  # numpy Generator seeds are below this
MAX_PIECE_TEXT_TOKENS = 200  # a 250-character piece of plain text is ~60 tokens


class RequestPlanner:
    """Turns (text, options) into a SpeechPlan with the engine's defaults filled in."""

    def __init__(
        self,
        tokenizer: TextTokenizer,
        max_new_tokens: int,
        repetition_penalty: float,
        runaway: RunawayBound | None = None,
        cleanup: CleanupRules | None = None,
    ):
        self._tokenizer = tokenizer
        self.max_new_tokens = max_new_tokens  # the default per piece, and the ceiling a request may ask for
        self.repetition_penalty = repetition_penalty
        self.runaway = runaway  # the runaway guard's bound per piece (engine/runaway.py); None: the guard is off
        self.cleanup = CleanupRules() if cleanup is None else cleanup  # text/cleanup.py, before splitting

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
        spoken = self.clean(text)
        pieces = self._split(spoken, max_chars, first_max_chars)
        planned = [p for piece, pause_s in pieces for p in self._plan_piece(piece, options, pause_s)]
        if self.runaway is not None:
            planned = [self._bounded(p, self.runaway, max_new) for p in planned]
        return SpeechPlan(
            tuple(planned), options, sampling, max_new, runaway_guard=self.runaway is not None, text=spoken.text
        )

    @staticmethod
    def _bounded(planned: PlannedPiece, bound: RunawayBound, max_new: int) -> PlannedPiece:
        """The piece with its own token limit where its text's runaway bound is below the plan's."""
        limit = bound.tokens_for(planned.token_ids.shape[0])
        return replace(planned, max_new_tokens=limit) if limit < max_new else planned

    def clean(self, text: str) -> CleanText:
        """The text as it will be spoken (text/invisible.py, then text/cleanup.py); InvalidInputError
        when nothing is left."""
        if not isinstance(text, str) or not text.strip():
            raise InvalidInputError("text is empty")
        # a safety rule, not a style: invisible characters cost tokens and pieces, so they never
        # reach the tokenizer, even with the clean-up off (TTS_TEXT_CLEANUP=false)
        text = strip_invisible(text)
        if not text.strip():
            raise InvalidInputError(
                "text is empty: it holds only invisible characters (zero-width spaces or joiners, format or "
                "control characters)"
            )
        spoken = clean_text(text, self.cleanup)
        if not spoken.text.strip() or (not is_speakable(spoken.text) and spoken.text != text.strip()):
            raise InvalidInputError(
                "text is empty once cleaned up: the text clean-up removed everything in it (emoji, Markdown, "
                "symbols or pause marks; TTS_TEXT_CLEANUP=false speaks text as given)"
            )
        return spoken

    def _split(self, spoken: CleanText, max_chars: int, first_max_chars: int | None) -> list[tuple[TextPiece, float]]:
        """(piece, silence after it): each stretch between two pause marks split on its own (the
        first gets the short first piece), its short sentences joined to their neighbours."""
        out: list[tuple[TextPiece, float]] = []
        for start, end, pause_s in spoken.segments():
            stretch = spoken.text[start:end]
            pieces = split_text(stretch, max_chars, None if out else first_max_chars)
            if self.cleanup.short_text:
                pieces = join_short_pieces(pieces, stretch, max_chars, SHORT_TEXT_CHARS)
            out += [(TextPiece(p.text, start + p.start, start + p.end), 0.0) for p in pieces]
            if out and pause_s > 0:
                out[-1] = (out[-1][0], out[-1][1] + pause_s)
        if not out:
            raise InvalidInputError("text is empty")
        return out

    def tokenize(self, text: str, normalize: bool | None = None) -> np.ndarray:
        """Text → int64 [n] token ids (engine/prompt.py: tags as their ids, never a control token)."""
        return self._tokenizer.tokenize(text, normalize)

    def _plan_piece(self, piece: TextPiece, options: GenerationOptions, pause_s: float = 0.0) -> list[PlannedPiece]:
        """The piece tokenized (halved until each half fits); the last half keeps its pause."""
        ids = self.tokenize(piece.text, options.normalize_text)
        if ids.shape[0] <= MAX_PIECE_TEXT_TOKENS or len(piece.text) < 2:
            return [PlannedPiece(piece, ids, pause_after_s=pause_s)]
        halves = split_text(piece.text, max(1, len(piece.text) // 2), None)
        shifted = [TextPiece(h.text, piece.start + h.start, piece.start + h.end) for h in halves]
        if len(shifted) < 2:  # nothing to split at: cut the characters in half
            middle = len(piece.text) // 2
            shifted = [
                TextPiece(piece.text[:middle], piece.start, piece.start + middle),
                TextPiece(piece.text[middle:], piece.start + middle, piece.end),
            ]
        last = len(shifted) - 1
        return [p for k, half in enumerate(shifted) for p in self._plan_piece(half, options, pause_s * (k == last))]

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
