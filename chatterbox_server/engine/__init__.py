"""The synchronous TTS engine: configuration, request preparation, the batched decode loop and
the vocoder stage. Imports nothing from the web layer.

    engine = TTSEngine(TTSConfig(...))                   # sections: model, generation, loop, vocoder
    plan = engine.prepare(text, options)                 # checked once (prepare.py)
    for output in engine.submit(GenerationRequest(plan, voice, chunked=True)): ...
    result = engine.synthesize(text, voice)              # the same, collected, for scripts
"""

from chatterbox_server.engine.config import (
    DEFAULT_MAX_NEW_TOKENS,
    DEFAULT_REPETITION_PENALTY,
    GenerationConfig,
    LoopConfig,
    ModelConfig,
    TTSConfig,
    VocoderConfig,
    locate_model,
)
from chatterbox_server.engine.engine import SAMPLE_RATE_HZ, TTSEngine, Voice
from chatterbox_server.engine.observer import EngineObserver
from chatterbox_server.engine.requests import GenerationRequest, Output, SequenceStatus
from chatterbox_server.engine.types import (
    AudioChunk,
    GenerationOptions,
    PlannedPiece,
    SpeechCollector,
    SpeechPlan,
    SpeechResult,
    SpokenPiece,
    StageTimings,
    SynthesisResult,
)
from chatterbox_server.engine.vocoder import speech_tokens_of
from chatterbox_server.engine.voices import VoiceEmbedding

__all__ = [
    "DEFAULT_MAX_NEW_TOKENS",
    "DEFAULT_REPETITION_PENALTY",
    "SAMPLE_RATE_HZ",
    "AudioChunk",
    "EngineObserver",
    "GenerationConfig",
    "GenerationOptions",
    "GenerationRequest",
    "LoopConfig",
    "ModelConfig",
    "Output",
    "PlannedPiece",
    "SequenceStatus",
    "SpeechCollector",
    "SpeechPlan",
    "SpeechResult",
    "SpokenPiece",
    "StageTimings",
    "SynthesisResult",
    "TTSConfig",
    "TTSEngine",
    "VocoderConfig",
    "Voice",
    "VoiceEmbedding",
    "locate_model",
    "speech_tokens_of",
]
