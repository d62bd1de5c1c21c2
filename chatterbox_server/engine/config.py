"""Engine configuration and the choice of device, dtypes and files it implies."""

from dataclasses import dataclass, field
from pathlib import Path

from chatterbox_server.engine.vocoder_stage import WindowPolicy
from chatterbox_server.errors import ModelLoadError
from chatterbox_server.model import files as model_files
from chatterbox_server.model import sessions as onnx_sessions

DEFAULT_MAX_NEW_TOKENS = 1024  # ≈ 41 s of audio


@dataclass(frozen=True)
class TTSConfig:
    """Engine settings. Paths and ids choose the model; the rest are defaults per request."""

    model_dir: str | Path | None = None  # a local copy in the hub repo's layout
    model_id: str = model_files.DEFAULT_MODEL_ID  # used when model_dir is None
    revision: str | None = None
    model_dtype: str = "auto"  # fp32, fp16, q8, q4, q4f16; auto: fp16 on CUDA, q4 on CPU
    encoder_dtype: str | None = None  # speech_encoder's own dtype (None: model_dtype)
    device: str = "auto"  # auto, cuda, cpu
    device_id: int = 0
    gpu_mem_limit_bytes: int | None = None
    intra_op_threads: int = 0  # 0 lets ONNX Runtime choose
    inter_op_threads: int = 0
    lm_threads: int | None = None  # intra-op threads of embed_tokens + language_model (None: intra_op_threads)
    decoder_threads: int | None = None  # intra-op threads of conditional_decoder (None: intra_op_threads)
    max_voice_seconds: float = 30.0
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS  # also the ceiling a request may ask for
    repetition_penalty: float = 1.2
    normalize_text: bool = True
    apply_watermark: bool = False
    # the engine loop (continuous batching)
    max_batch_size: int | None = None  # rows stepped together; None: 8 on CPU, 32 on CUDA
    prefill_token_budget: int = 2048  # prompt tokens prefilled per loop step (beyond the first newcomer)
    prefix_cache_bytes: int = 1 << 30  # voice-prefix KV kept in memory (LRU); 0 turns it off
    max_parallel_pieces: int = 4  # pieces of one long text decoded at once (delivered in order)
    kv_on_device: bool | None = None  # KV as device OrtValues with IO binding; None: on CUDA only
    # the vocoder stage
    # the window schedule; its window_growth and max_batch_rows are replaced by the two below
    windows: WindowPolicy = field(default_factory=WindowPolicy)
    window_growth: float | None = None  # None: 2 on CUDA, 4 on CPU
    decoder_batch_rows: int = 0  # rows per decoder call; 0: probe at load (batch where exact and faster)
    decoder_prompt_cap_tokens: int = 0  # re-run at most this much of the voice's prompt per call; 0: all of it
    stage_turns: str = "auto"  # decoder calls that pause the loop: never, first, always; auto: by device


def resolve_device(device: str, device_id: int = 0) -> str:
    """'auto' → 'cuda' where the CUDA provider really works, else 'cpu'."""
    if device not in ("auto", "cuda", "cpu"):
        raise ModelLoadError(f"unknown device {device!r}; choose auto, cuda or cpu")
    if device == "auto":
        return "cuda" if onnx_sessions.cuda_is_usable(device_id) else "cpu"
    return device


def resolve_dtype(dtype: str, device: str) -> str:
    """'auto' → fp16 on CUDA, q4 on CPU; anything else must be a published dtype."""
    if dtype == "auto":
        return "fp16" if device == "cuda" else "q4"
    if dtype not in model_files.MODEL_DTYPES:
        raise ModelLoadError(
            f"unknown model dtype {dtype!r}; choose auto or one of {', '.join(model_files.MODEL_DTYPES)}"
        )
    return dtype


def locate_model(config: TTSConfig) -> tuple[str, str, str, model_files.ModelFiles]:
    """Resolve device and dtypes, then find (or download) every file they need.

    Returns (device, model dtype, encoder dtype, files); ModelLoadError names what is missing.
    """
    device = resolve_device(config.device, config.device_id)
    model_dtype = resolve_dtype(config.model_dtype, device)
    encoder_dtype = resolve_dtype(config.encoder_dtype or model_dtype, device)
    graph_dtypes = {g: model_dtype for g in model_files.GRAPH_NAMES}
    graph_dtypes["speech_encoder"] = encoder_dtype
    files = model_files.resolve_model_files(graph_dtypes, config.model_dir, config.model_id, config.revision)
    return device, model_dtype, encoder_dtype, files
