"""The synchronous TTS engine: configuration, request and result types, sampling, voices, the
prefill prompt, the batched decode loop and the vocoder. Imports nothing from the web layer."""

from chatterbox_server.engine.config import DEFAULT_MAX_NEW_TOKENS, TTSConfig, locate_model
from chatterbox_server.engine.engine import SAMPLE_RATE_HZ, TTSEngine, Voice
from chatterbox_server.engine.observer import EngineObserver
from chatterbox_server.engine.requests import GenerationRequest
from chatterbox_server.engine.types import (
    AudioChunk,
    GenerationOptions,
    LongSynthesisResult,
    PlannedPiece,
    SpeechPlan,
    SpokenPiece,
    StageTimings,
    SynthesisRequest,
    SynthesisResult,
)
from chatterbox_server.engine.vocoder import speech_tokens_of
from chatterbox_server.engine.voices import VoiceCache, VoiceEmbedding

__all__ = [
    "DEFAULT_MAX_NEW_TOKENS",
    "SAMPLE_RATE_HZ",
    "AudioChunk",
    "EngineObserver",
    "GenerationOptions",
    "GenerationRequest",
    "LongSynthesisResult",
    "PlannedPiece",
    "SpeechPlan",
    "SpokenPiece",
    "StageTimings",
    "SynthesisRequest",
    "SynthesisResult",
    "TTSConfig",
    "TTSEngine",
    "Voice",
    "VoiceCache",
    "VoiceEmbedding",
    "locate_model",
    "speech_tokens_of",
]
