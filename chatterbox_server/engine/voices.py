"""Speech-encoder outputs of a voice: what a request speaks in."""

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class VoiceEmbedding:
    """The four speech_encoder outputs for one reference clip (batch of 1).

    audio_features: float32 [1, N, 1024], language-model conditioning (N ≤ 376)
    audio_tokens: int64 [1, P], reference speech tokens for the decoder (P ≤ 250)
    speaker_embeddings: float32 [1, 192]
    speaker_features: float32 [1, F, 80], reference mel frames
    """

    audio_features: np.ndarray
    audio_tokens: np.ndarray
    speaker_embeddings: np.ndarray
    speaker_features: np.ndarray
    content_hash: str  # sha256 of the source file's bytes
    duration_s: float  # of the reference clip
