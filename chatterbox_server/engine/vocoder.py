"""Speech tokens to audio: the conditional decoder, token-window decoding for streams, watermark.

Token-window streaming decodes every few tokens, re-decoding some left context so a chunk
starts in tune, and blends the seam with the previous chunk's held-back tail.
"""

from typing import Any

import numpy as np
import onnxruntime as ort

from chatterbox_server.audio import SAMPLE_RATE_HZ, crossfade
from chatterbox_server.engine.voices import VoiceEmbedding
from chatterbox_server.errors import ModelLoadError
from chatterbox_server.model.contract import (
    SAMPLES_PER_TOKEN,
    SILENCE_PADDING_TOKENS,
    SILENCE_TOKEN,
    START_SPEECH_TOKEN,
    STOP_SPEECH_TOKEN,
    read_decoder_types,
)

STREAM_FIRST_CHUNK_TOKENS = 12  # ≈ 0.5 s of audio: the first sound leaves early
STREAM_CHUNK_TOKENS = 40  # ≈ 1.6 s per later chunk: few decoder calls
STREAM_CONTEXT_TOKENS = 10  # left context re-decoded with each chunk
STREAM_CROSSFADE_SAMPLES = 480  # 20 ms blend of the two renderings of a seam


class Vocoder:
    """The conditional_decoder session, fed in the dtypes it declares."""

    def __init__(self, session: ort.InferenceSession, watermarker: Any = None):
        self._session = session
        self._types = read_decoder_types(session)
        self._watermarker = watermarker

    def decode(self, speech_tokens: np.ndarray, voice: VoiceEmbedding, pad_silence: bool = True) -> np.ndarray:
        """int64 [n] speech tokens → float32 [(n + 3) × 960] waveform in the voice (n × 960
        without the SILENCE padding, for a stream's inner windows)."""
        silence = np.full(SILENCE_PADDING_TOKENS if pad_silence else 0, SILENCE_TOKEN, dtype=np.int64)
        tokens = np.concatenate([voice.audio_tokens[0], speech_tokens, silence])[None, :]
        types = self._types
        feeds: dict[str, np.ndarray] = {
            "speech_tokens": tokens.astype(types["speech_tokens"]),
            "speaker_embeddings": voice.speaker_embeddings.astype(types["speaker_embeddings"]),
            "speaker_features": voice.speaker_features.astype(types["speaker_features"]),
        }
        waveform = self._session.run(None, feeds)[0]
        waveform = np.asarray(waveform, dtype=np.float32).reshape(-1)  # batch of one
        if self._watermarker is not None:
            waveform = np.asarray(
                self._watermarker.apply_watermark(waveform, sample_rate=SAMPLE_RATE_HZ), dtype=np.float32
            )
        return waveform

    def decode_window(
        self, tokens: np.ndarray, start: int, voice: VoiceEmbedding, held: np.ndarray, final: bool
    ) -> tuple[np.ndarray, np.ndarray]:
        """Audio of tokens[start:] (int64 [n]) → (samples to send, tail held back for the next seam).

        Decodes with up to STREAM_CONTEXT_TOKENS tokens of left context, drops the context's
        samples except the last STREAM_CROSSFADE_SAMPLES, which are blended with the tail held
        from the previous window. The final window adds the SILENCE padding and holds nothing.
        """
        context = min(STREAM_CONTEXT_TOKENS, start)
        wave = self.decode(tokens[start - context :], voice, pad_silence=final)
        head = context * SAMPLES_PER_TOKEN
        audio = wave[head:]
        if held.shape[0]:
            audio = np.concatenate([crossfade(held, wave[head - held.shape[0] : head]), audio])
        if final:
            return audio, np.zeros(0, np.float32)
        keep = audio.shape[0] - STREAM_CROSSFADE_SAMPLES
        return audio[:keep], audio[keep:]


def speech_tokens_of(generated: list[int]) -> np.ndarray:
    """Generated ids (START first) → what the decoder speaks: START dropped, a final STOP dropped.

    Any other id outside the speech codebook (< 6561) is dropped as upstream's
    drop_invalid_tokens does; greedy decoding of the real model does not produce them.
    """
    tokens = generated[1:]
    if tokens and tokens[-1] == STOP_SPEECH_TOKEN:
        tokens = tokens[:-1]
    return np.array([t for t in tokens if t < START_SPEECH_TOKEN], dtype=np.int64)


def load_watermarker() -> Any:
    """Resemble's Perth watermarker; ModelLoadError when it is asked for but not installed."""
    try:
        import perth  # type: ignore[import-not-found]
    except ImportError as e:
        raise ModelLoadError(
            "apply_watermark is on but resemble-perth is not installed "
            "(pip install resemble-perth; it needs torch), so no watermark could be applied"
        ) from e
    return perth.PerthImplicitWatermarker()
