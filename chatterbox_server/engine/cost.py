"""What this engine's work costs, measured while it runs, and how long a plan would take.

The server refuses at once a request that could not finish within its deadline even if it ran
alone (a 5000-character text on a CPU), instead of holding a slot until the deadline and
answering 504. A request's work is its pieces' prefills, their decode steps and their decoder
windows; each is timed as the engine runs (smoothed, so the figures follow the machine's load):

    estimate = sum over pieces of  prefill_s + tokens x step_s_per_row + windows x decoder_s_per_row

where a piece's tokens are what its text is expected to need (the measured speech tokens per
text token of pieces that ended with STOP), never more than its limit, and its windows follow the
vocoder stage's schedule. Per-row costs are what a row costs inside a batch, so the figure is
what the request costs alone at today's batching: a request it refuses would not have finished.
"""

import math

from chatterbox_server.engine.observer import EngineObserver
from chatterbox_server.engine.types import SpeechPlan
from chatterbox_server.engine.vocoder_stage import WindowPolicy

SMOOTHING = 0.05  # the newest measurement's share of each figure (about the last 20 events)
MIN_PIECES_SEEN = 1  # pieces finished (warm-up's included) before any estimate is made


def _smoothed(current: float | None, value: float) -> float:
    return value if current is None else SMOOTHING * value + (1 - SMOOTHING) * current


class CostModel(EngineObserver):
    """Fed by the engine's threads (see EngineObserver); read by the server's event loop. Each
    figure is one float written whole, so a reader sees an old or a new value, never a torn one."""

    def __init__(self, windows: WindowPolicy):
        self.windows = windows
        self.prefill_s: float | None = None  # per piece
        self.step_s_per_row: float | None = None  # one decode step of one row, prefill excluded
        self.decoder_s_per_row: float | None = None  # one window of one row in a decoder call
        self.tokens_per_text_token: float | None = None  # speech tokens a text token needs (pieces that stopped)
        self.pieces_seen = 0
        self._step_prefill_s = 0.0  # this step's prefill, taken out of its step time

    # ----- measurements (engine threads) ---------------------------------------------------------

    def on_prefill(self, pieces: int, prefill_s: float, prefix_s: float) -> None:
        if pieces > 0:  # a voice's prefix is computed once and cached: not a cost of every piece
            self.prefill_s = _smoothed(self.prefill_s, max(0.0, prefill_s - prefix_s) / pieces)
            self._step_prefill_s = prefill_s

    def on_step(self, batch_size: int, step_s: float, prefill_tokens: int) -> None:
        decode_s, self._step_prefill_s = max(0.0, step_s - self._step_prefill_s), 0.0
        if batch_size > 0:
            self.step_s_per_row = _smoothed(self.step_s_per_row, decode_s / batch_size)

    def on_decoder_call(self, rows: int, decoder_s: float, audio_s: float, waits_s: list[float]) -> None:
        if rows > 0:
            self.decoder_s_per_row = _smoothed(self.decoder_s_per_row, decoder_s / rows)

    def on_piece_finished(self, text_tokens: int, spoken_tokens: int, stopped: bool) -> None:
        self.pieces_seen += 1
        if stopped and text_tokens > 0:
            self.tokens_per_text_token = _smoothed(self.tokens_per_text_token, spoken_tokens / text_tokens)

    # ----- the estimate (any thread) -------------------------------------------------------------

    def windows_for(self, tokens: int) -> int:
        """Decoder windows of a streamed piece of `tokens` speech tokens (the stage's schedule)."""
        windows, covered = 0, 0
        while covered < tokens:
            covered += self.windows.target_tokens(windows)
            windows += 1
        return max(1, windows)

    def estimate_s(self, plan: SpeechPlan, chunked: bool) -> float | None:
        """Seconds this plan would take alone at the measured costs; None until they are measured."""
        prefill, step, decoder, ratio = (
            self.prefill_s,
            self.step_s_per_row,
            self.decoder_s_per_row,
            self.tokens_per_text_token,
        )
        if self.pieces_seen < MIN_PIECES_SEEN or None in (prefill, step, decoder, ratio):
            return None
        assert prefill is not None and step is not None and decoder is not None and ratio is not None
        total_s = 0.0
        for piece in plan.pieces:
            limit = piece.max_new_tokens or plan.max_new_tokens
            tokens = max(1, min(limit, math.ceil(ratio * piece.token_ids.shape[0])))
            windows = self.windows_for(tokens) if chunked else 1
            total_s += prefill + tokens * step + windows * decoder
        return total_s
