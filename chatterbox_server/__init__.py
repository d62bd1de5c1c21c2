"""Chatterbox Turbo text-to-speech server: Resemble AI's four ONNX graphs on ONNX Runtime behind FastAPI.

Layers, each importing only those below it:
    cli/        entry points (chatterbox-server, chatterbox-tts, chatterbox-bench)
    server/     HTTP: app factory, routers, serving layer, admission, metrics, voice store
    benchmark/  the load-generating client (talks HTTP to a running server)
    engine/     synchronous TTS engine: request preparation, the decode loop, the vocoder stage
    model/      model files, ONNX Runtime sessions, the graph contract, the stand-in generator
    text/ audio/  text normalisation and splitting; audio decoding, editing and encoding
The engine API is public here; the web layer lives in `chatterbox_server.server`.
"""

from chatterbox_server.engine import (
    AudioChunk,
    GenerationOptions,
    GenerationRequest,
    SpeechResult,
    SpokenPiece,
    StageTimings,
    SynthesisResult,
    TTSConfig,
    TTSEngine,
    VoiceEmbedding,
)
from chatterbox_server.errors import TTSError

__version__ = "0.3.0"

__all__ = [
    "AudioChunk",
    "GenerationOptions",
    "GenerationRequest",
    "SpeechResult",
    "SpokenPiece",
    "StageTimings",
    "SynthesisResult",
    "TTSConfig",
    "TTSEngine",
    "TTSError",
    "VoiceEmbedding",
    "__version__",
]
