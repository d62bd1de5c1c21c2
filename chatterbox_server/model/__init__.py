"""The model on disk and in ONNX Runtime: file resolution (local or hub), session creation with
provider tuning, the graph contract, and the stand-in generator used by tests and benchmarks."""

from chatterbox_server.model.contract import LanguageModelSpec, read_decoder_types, read_language_model_spec
from chatterbox_server.model.files import DEFAULT_MODEL_ID, GRAPH_NAMES, MODEL_DTYPES, ModelFiles, resolve_model_files
from chatterbox_server.model.sessions import SessionSettings, create_session, cuda_is_usable

__all__ = [
    "DEFAULT_MODEL_ID",
    "GRAPH_NAMES",
    "MODEL_DTYPES",
    "LanguageModelSpec",
    "ModelFiles",
    "SessionSettings",
    "create_session",
    "cuda_is_usable",
    "read_decoder_types",
    "read_language_model_spec",
    "resolve_model_files",
]
