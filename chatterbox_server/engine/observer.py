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
