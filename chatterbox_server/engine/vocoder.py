"""Speech tokens to audio: the conditional decoder session, batched calls, seams, watermark.

The decoder re-runs the voice's prompt (up to 250 tokens) on every call and has no length, mask or
cache input, so a batched call needs rows of one shape. Whether batching is exact and pays is a
property of the graph and the device: `probe_batching` measures it at load.
"""

import logging
import time
from dataclasses import dataclass
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
    is_spoken,
    read_decoder_types,
)

logger = logging.getLogger(__name__)

CROSSFADE_SAMPLES = 480  # 20 ms blend of the two renderings of a seam
SPEAKER_DIM = 192
MEL_BINS = 80
PROBE_PROMPT_TOKENS, PROBE_NEW_TOKENS, PROBE_ROWS = 50, 25, 2
PROBE_MIN_SPEEDUP = 1.25  # a batched row must cost ≤ 1/1.25 of a single call to be worth the wait
PROBE_TOLERANCE_DB = 0.5  # spectral distance allowed beyond the decoder's own run-to-run spread


@dataclass(frozen=True)
class DecoderRow:
    """One row of a decoder call: speech tokens after the prompt, int64 [n], and its voice."""

    tokens: np.ndarray
    voice: VoiceEmbedding
    pad_silence: bool  # the piece's last window: append the SILENCE padding


@dataclass(frozen=True)
class BatchProbe:
    """What `probe_batching` found: batched rows match single calls, and how much faster a row is."""

    exact: bool
    speedup: float  # single-call seconds per row ÷ batched seconds per row
    detail: str

    @property
    def worth_it(self) -> bool:
        return self.exact and self.speedup >= PROBE_MIN_SPEEDUP


class Vocoder:
    """The conditional_decoder session, fed in the dtypes it declares."""

    def __init__(self, session: ort.InferenceSession, watermarker: Any = None, prompt_cap_tokens: int = 0):
        self._session = session
        self._types = read_decoder_types(session)
        self._watermarker = watermarker
        self.prompt_cap_tokens = prompt_cap_tokens  # 0: the voice's whole prompt (up to 250 tokens)

    def prompt_length(self, voice: VoiceEmbedding) -> int:
        """Prompt tokens a call in this voice re-runs (rows batch only with equal prompts)."""
        length = int(voice.audio_tokens.shape[1])
        return min(length, self.prompt_cap_tokens) if self.prompt_cap_tokens else length

    def decode(self, speech_tokens: np.ndarray, voice: VoiceEmbedding, pad_silence: bool = True) -> np.ndarray:
        """int64 [n] speech tokens → float32 [(n + 3) × 960] waveform in the voice (n × 960
        without the SILENCE padding, for a stream's inner windows)."""
        return self.decode_rows([DecoderRow(speech_tokens, voice, pad_silence)])[0]

    def decode_rows(self, rows: list[DecoderRow]) -> list[np.ndarray]:
        """One decoder call for rows of one shape → float32 [(n (+ 3)) × 960] per row."""
        prompts = [self._prompt(r.voice) for r in rows]
        tokens = [
            np.concatenate([p_tokens, r.tokens, np.full(SILENCE_PADDING_TOKENS if r.pad_silence else 0, SILENCE_TOKEN)])
            for r, (p_tokens, _) in zip(rows, prompts)
        ]
        if len({t.shape[0] for t in tokens}) != 1 or len({p[1].shape[0] for p in prompts}) != 1:
            raise ValueError("rows of one decoder call need equal prompt and window lengths")
        types = self._types
        feeds: dict[str, np.ndarray] = {
            "speech_tokens": np.stack(tokens).astype(types["speech_tokens"]),
            "speaker_embeddings": np.concatenate([r.voice.speaker_embeddings for r in rows]).astype(
                types["speaker_embeddings"]
            ),
            "speaker_features": np.stack([p[1] for p in prompts]).astype(types["speaker_features"]),
        }
        waveform = np.asarray(self._session.run(None, feeds)[0], dtype=np.float32).reshape(len(rows), -1)
        waves = list(waveform)
        if self._watermarker is not None:
            waves = [
                np.asarray(self._watermarker.apply_watermark(w, sample_rate=SAMPLE_RATE_HZ), dtype=np.float32)
                for w in waves
            ]
        return waves

    def _prompt(self, voice: VoiceEmbedding) -> tuple[np.ndarray, np.ndarray]:
        """(prompt tokens int64 [P], prompt mel float32 [2P, 80]), capped when asked."""
        tokens, features = voice.audio_tokens[0].astype(np.int64), voice.speaker_features[0]
        if self.prompt_cap_tokens and tokens.shape[0] > self.prompt_cap_tokens:
            tokens, features = tokens[: self.prompt_cap_tokens], features[: 2 * self.prompt_cap_tokens]
        return tokens, features


def stitch_window(wave: np.ndarray, context: int, held: np.ndarray, final: bool) -> tuple[np.ndarray, np.ndarray]:
    """A window's decoded audio (float32, `context` tokens of left context first) → (samples to send,
    tail held back for the next seam).

    The context's samples are dropped except the last CROSSFADE_SAMPLES, which are blended with the
    tail held from the previous window; a non-final window holds back its own last
    CROSSFADE_SAMPLES for the next seam, the final one holds nothing.
    """
    head = context * SAMPLES_PER_TOKEN
    audio = wave[head:]
    if held.shape[0]:
        audio = np.concatenate([crossfade(held, wave[head - held.shape[0] : head]), audio])
    if final:
        return audio, np.zeros(0, np.float32)
    keep = audio.shape[0] - CROSSFADE_SAMPLES
    return audio[:keep], audio[keep:]


def speech_tokens_of(generated: list[int]) -> np.ndarray:
    """Generated ids (START first) → what the decoder speaks: START dropped, a final STOP dropped.

    Any other id outside the speech codebook (< 6561) is dropped as upstream's
    drop_invalid_tokens does; greedy decoding of the real model does not produce them.
    """
    tokens = generated[1:]
    if tokens and tokens[-1] == STOP_SPEECH_TOKEN:
        tokens = tokens[:-1]
    return np.array([t for t in tokens if is_spoken(t)], dtype=np.int64)


def spectral_distance_db(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference of two float32 waveforms' log band energies (24 bands per 40 ms
    frame), in dB: robust to the decoder's own noise, which moves samples but not spectra."""

    def bands(w: np.ndarray) -> np.ndarray:
        frames = w[: w.shape[0] // SAMPLES_PER_TOKEN * SAMPLES_PER_TOKEN].reshape(-1, SAMPLES_PER_TOKEN)
        spectrum = np.abs(np.fft.rfft(frames, axis=1))[:, :480].reshape(frames.shape[0], 24, -1).mean(-1)
        return 20 * np.log10(spectrum + 1e-5)

    return float(np.abs(bands(a) - bands(b)).mean())


def probe_batching(vocoder: Vocoder, rows: int = PROBE_ROWS) -> BatchProbe:
    """Does a batched call give each row the audio of its own single call, and is it faster?

    Runs `rows` synthetic voices once each alone (twice for the first, to measure the decoder's own
    run-to-run spread), then together. Exact when every batched row is as close to its own single
    call as two single calls are to each other (plus PROBE_TOLERANCE_DB), and closer to it than to
    any other row's, with the right length. Any failure of the batched call is "not exact".
    """
    rng = np.random.default_rng(0)
    voices = []
    for _ in range(rows):
        embedding = rng.standard_normal((1, SPEAKER_DIM)).astype(np.float32)
        voices.append(
            VoiceEmbedding(
                audio_features=np.zeros((1, 1, 1), np.float32),
                audio_tokens=rng.integers(0, START_SPEECH_TOKEN, (1, PROBE_PROMPT_TOKENS)).astype(np.int64),
                speaker_embeddings=embedding / np.linalg.norm(embedding),
                speaker_features=rng.standard_normal((1, 2 * PROBE_PROMPT_TOKENS, MEL_BINS)).astype(np.float32),
                content_hash="",
                duration_s=PROBE_PROMPT_TOKENS / 25,
            )
        )
    batch = [
        DecoderRow(rng.integers(0, START_SPEECH_TOKEN, PROBE_NEW_TOKENS).astype(np.int64), v, False) for v in voices
    ]
    vocoder.decode_rows(batch[:1])  # warm-up: the first call of a shape allocates
    started = time.perf_counter()
    singles = [vocoder.decode_rows([row])[0] for row in batch]
    single_s = (time.perf_counter() - started) / rows
    spread = spectral_distance_db(singles[0], vocoder.decode_rows(batch[:1])[0])
    try:
        vocoder.decode_rows(batch)
        started = time.perf_counter()
        batched = vocoder.decode_rows(batch)
        batched_s = (time.perf_counter() - started) / rows
    except Exception as e:  # an export with a fixed batch of one fails here
        return BatchProbe(False, 0.0, f"a batched call failed: {e}")
    speedup = single_s / batched_s if batched_s > 0 else 0.0
    expected = PROBE_NEW_TOKENS * SAMPLES_PER_TOKEN
    for i, wave in enumerate(batched):
        if wave.shape[0] != expected:
            return BatchProbe(False, speedup, f"row {i} has {wave.shape[0]} samples, expected {expected}")
        own = spectral_distance_db(wave, singles[i])
        others = [spectral_distance_db(wave, s) for j, s in enumerate(singles) if j != i]
        if own > 2 * spread + PROBE_TOLERANCE_DB or (others and own >= min(others)):
            return BatchProbe(False, speedup, f"row {i} differs from its single call by {own:.2f} dB")
    return BatchProbe(True, speedup, f"rows match single calls; {speedup:.2f}x per row at batch {rows}")


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
