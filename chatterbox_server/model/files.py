"""Where the Chatterbox Turbo ONNX files live: a local directory in the Hugging Face repo
layout, or the hub (downloaded with huggingface_hub, which honours HF_HOME and HF_HUB_OFFLINE)."""

import logging
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from chatterbox_server.errors import ModelLoadError

logger = logging.getLogger(__name__)

DEFAULT_MODEL_ID = "ResembleAI/chatterbox-turbo-ONNX"
GRAPH_NAMES = ("speech_encoder", "embed_tokens", "language_model", "conditional_decoder")
DTYPE_SUFFIXES = {"fp32": "", "fp16": "_fp16", "q8": "_quantized", "q4": "_q4", "q4f16": "_q4f16"}
MODEL_DTYPES = tuple(DTYPE_SUFFIXES)
TOKENIZER_FILE = "tokenizer.json"
STAND_IN_MARKER_FILE = "stand_in.json"  # written by the stand-in generator (model/stand_in)
# What --stand-in offers, as the messages below put it; main.py shows them naming itself instead.
STAND_IN_ADVICE = "--stand-in to try the server without the weights"


@dataclass(frozen=True)
class ModelFiles:
    """Resolved paths of one model: graph name → .onnx path (its .onnx_data lies beside it)."""

    root: Path
    tokenizer: Path
    graphs: dict[str, Path]

    @property
    def is_stand_in(self) -> bool:
        return (self.root / STAND_IN_MARKER_FILE).is_file()


def graph_filename(graph: str, dtype: str) -> str:
    """'language_model', 'q4' → 'language_model_q4.onnx'."""
    if dtype not in DTYPE_SUFFIXES:
        raise ValueError(f"unknown model dtype {dtype!r}; choose one of {', '.join(MODEL_DTYPES)}")
    return f"{graph}{DTYPE_SUFFIXES[dtype]}.onnx"


def required_files(graph_dtypes: dict[str, str]) -> list[str]:
    """Repo-relative paths of every file the engine needs: the tokenizer, each graph and its data."""
    files = [TOKENIZER_FILE]
    for graph, dtype in graph_dtypes.items():
        onnx_name = f"onnx/{graph_filename(graph, dtype)}"
        files += [onnx_name, onnx_name + "_data"]
    return files


def resolve_model_files(
    graph_dtypes: dict[str, str],
    model_dir: str | Path | None = None,
    model_id: str = DEFAULT_MODEL_ID,
    revision: str | None = None,
) -> ModelFiles:
    """Find (or download) every needed file; one ModelLoadError names all that are missing."""
    needed = required_files(graph_dtypes)
    if model_dir is not None:
        root = Path(model_dir).expanduser()
        if not root.is_dir():
            raise ModelLoadError(
                f"model directory {root} does not exist (--model-dir / TTS_MODEL_DIR); "
                f"leave it unset to download {model_id}, or use {STAND_IN_ADVICE}"
            )
        missing = [name for name in needed if not (root / name).is_file()]
        if missing:
            raise ModelLoadError(
                f"model directory {root} lacks {', '.join(missing)}. Point --model-dir / "
                f"TTS_MODEL_DIR at a copy of the {model_id} repo (same layout), or choose "
                f"a dtype whose files it holds, or leave it unset to download from the hub."
            )
    else:
        root = _download(needed, model_id, revision)
    return ModelFiles(
        root=root,
        tokenizer=root / TOKENIZER_FILE,
        graphs={g: root / "onnx" / graph_filename(g, d) for g, d in graph_dtypes.items()},
    )


HUB_PROBE_TIMEOUT_S = 3.0
OFFLINE_ADVICE = (
    f"pass --model-dir DIR (a copy of the repo), or {STAND_IN_ADVICE}; "
    "with the model already in the hub cache, set HF_HUB_OFFLINE=1"
)


def _hub_unreachable() -> str | None:
    """Why the hub cannot be reached, found in seconds (the hub client retries for ~25 s), or None."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return "HF_HUB_OFFLINE is set"
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return None  # only the proxy knows the way: let the client try
    endpoint = urlparse(constants.ENDPOINT)
    host, port = endpoint.hostname or "huggingface.co", endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        socket.create_connection((host, port), timeout=HUB_PROBE_TIMEOUT_S).close()
    except OSError as e:
        return f"{host}:{port} is unreachable ({e.strerror or type(e).__name__})"
    return None


def _download(files: list[str], model_id: str, revision: str | None) -> Path:
    """The files from the hub cache, else downloaded; offline, one clear error at once."""
    # Imported here: a local model directory must work without touching the hub client.
    from huggingface_hub import hf_hub_download

    try:  # everything cached already: no network at all
        paths = [Path(hf_hub_download(model_id, name, revision=revision, local_files_only=True)) for name in files]
    except Exception:
        paths = []
        if why := _hub_unreachable():
            raise ModelLoadError(
                f"cannot download {model_id} from the Hugging Face hub: {why}, and the hub cache "
                f"({os.environ.get('HF_HOME', '~/.cache/huggingface')}) does not hold it; {OFFLINE_ADVICE}"
            ) from None
    if not paths:
        for name in files:
            try:
                paths.append(Path(hf_hub_download(model_id, name, revision=revision)))
            except Exception as e:  # the hub client raises many types: offline, 404, HTTP, OS
                raise ModelLoadError(
                    f"cannot get {name} from the Hugging Face repo {model_id}"
                    f"{'@' + revision if revision else ''}: {type(e).__name__}: {str(e).splitlines()[0]}; "
                    f"{OFFLINE_ADVICE}"
                ) from e
    if not paths:
        raise ModelLoadError("no model files were asked for")
    for name, path in zip(files, paths, strict=True):
        logger.debug("have %s at %s", name, path)
    return paths[-1].parents[len(Path(files[-1]).parts) - 1]
