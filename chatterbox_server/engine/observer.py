"""What the engine's stages report (the server's metrics implement these); the defaults do nothing."""


class EngineObserver:
    """Called from the engine's threads; implementations must be cheap and thread-safe."""

    def on_step(self, batch_size: int, step_s: float, prefill_tokens: int) -> None:
        """One loop step: rows sampled, wall time of the step, prompt tokens prefilled in it."""

    def on_first_token(self, queue_to_first_token_s: float) -> None:
        """A request's first token, counted from its submission (queueing included)."""

    def on_decoder_call(self, rows: int, decoder_s: float, audio_s: float, waits_s: list[float]) -> None:
        """One conditional_decoder call: rows in it, its wall time, the new audio it produced (all
        rows), and how long each row's window had been due before the call began."""

    def on_vocoder_queue(self, windows_due: int) -> None:
        """Windows due for the decoder and not yet in a call (sampled at each scheduling pass)."""

    def on_piece_truncated(self, reason: str) -> None:
        """A text piece ended without STOP: "runaway" (a runaway guard stopped it) or "length"
        (it reached max_new_tokens)."""

    def on_prefill(self, pieces: int, prefill_s: float, prefix_s: float) -> None:
        """Pieces prefilled together in one loop step, the wall time of that prefill (part of the
        step's `step_s`), and the part of it spent computing voices' prefixes (once per voice)."""

    def on_piece_finished(self, text_tokens: int, spoken_tokens: int, stopped: bool) -> None:
        """A piece left the loop: its text's tokens, the speech tokens it spoke, and whether it
        ended with STOP (not cut by a limit or a guard, not aborted)."""


class Observers(EngineObserver):
    """Several observers heard as one (the engine's cost model and the server's metrics)."""

    def __init__(self, *observers: EngineObserver):
        self.observers = observers

    def on_step(self, batch_size: int, step_s: float, prefill_tokens: int) -> None:
        for o in self.observers:
            o.on_step(batch_size, step_s, prefill_tokens)

    def on_first_token(self, queue_to_first_token_s: float) -> None:
        for o in self.observers:
            o.on_first_token(queue_to_first_token_s)

    def on_decoder_call(self, rows: int, decoder_s: float, audio_s: float, waits_s: list[float]) -> None:
        for o in self.observers:
            o.on_decoder_call(rows, decoder_s, audio_s, waits_s)

    def on_vocoder_queue(self, windows_due: int) -> None:
        for o in self.observers:
            o.on_vocoder_queue(windows_due)

    def on_piece_truncated(self, reason: str) -> None:
        for o in self.observers:
            o.on_piece_truncated(reason)

    def on_prefill(self, pieces: int, prefill_s: float, prefix_s: float) -> None:
        for o in self.observers:
            o.on_prefill(pieces, prefill_s, prefix_s)

    def on_piece_finished(self, text_tokens: int, spoken_tokens: int, stopped: bool) -> None:
        for o in self.observers:
            o.on_piece_finished(text_tokens, spoken_tokens, stopped)
