"""The engine's public API under its familiar name: `from tts_engine import TTSEngine, TTSConfig`.

It lives in the `chatterbox_server.engine` package; this module re-exports it.
"""

from chatterbox_server.engine import (
    SAMPLE_RATE_HZ,
    AudioChunk,
    GenerationOptions,
    GenerationRequest,
    SpeechCollector,
    SpeechPlan,
    SpeechResult,
    SpokenPiece,
    StageTimings,
    SynthesisResult,
    TTSConfig,
    TTSEngine,
    VoiceEmbedding,
    locate_model,
    speech_tokens_of,
)
from chatterbox_server.model.contract import (
    SAMPLES_PER_TOKEN,
    SILENCE_PADDING_TOKENS,
    SILENCE_TOKEN,
    START_SPEECH_TOKEN,
    STOP_SPEECH_TOKEN,
)

LongSynthesisResult = SpeechResult  # its name before synthesize() returned it for every text

__all__ = [
    "SAMPLES_PER_TOKEN",
    "SAMPLE_RATE_HZ",
    "SILENCE_PADDING_TOKENS",
    "SILENCE_TOKEN",
    "START_SPEECH_TOKEN",
    "STOP_SPEECH_TOKEN",
    "AudioChunk",
    "GenerationOptions",
    "GenerationRequest",
    "LongSynthesisResult",
    "SpeechCollector",
    "SpeechPlan",
    "SpeechResult",
    "SpokenPiece",
    "StageTimings",
    "SynthesisResult",
    "TTSConfig",
    "TTSEngine",
    "VoiceEmbedding",
    "locate_model",
    "speech_tokens_of",
]
