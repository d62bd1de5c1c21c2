"""ONNX Runtime session creation: CUDA provider tuning, CPU fallback, and what really runs."""

import contextlib
import functools
import importlib.util
import io
import logging
from dataclasses import dataclass
from pathlib import Path

import onnxruntime as ort

from chatterbox_server.errors import ModelLoadError

logger = logging.getLogger(__name__)

CUDA_PROVIDER = "CUDAExecutionProvider"
CPU_PROVIDER = "CPUExecutionProvider"


@dataclass(frozen=True)
class SessionSettings:
    device: str  # "cuda" or "cpu", already resolved
    device_id: int = 0
    gpu_mem_limit_bytes: int | None = None
    intra_op_threads: int = 0  # 0 lets ONNX Runtime choose
    inter_op_threads: int = 0


def cuda_provider_options(settings: SessionSettings) -> dict[str, str]:
    """The CUDA provider's tuning: no arena over-growth, cheap conv search, default stream."""
    options = {
        "device_id": str(settings.device_id),
        "arena_extend_strategy": "kSameAsRequested",
        "cudnn_conv_algo_search": "HEURISTIC",
        "cudnn_conv_use_max_workspace": "1",
        "do_copy_in_default_stream": "1",
    }
    if settings.gpu_mem_limit_bytes:
        options["gpu_mem_limit"] = str(settings.gpu_mem_limit_bytes)
    return options


@functools.cache
def preload_cuda_libraries() -> None:
    """Load CUDA and cuDNN from NVIDIA's PyPI wheels, where they are installed (onnxruntime-gpu[cuda,cudnn], as
    Dockerfile.cuda does), before the first CUDA session.

    The CUDA provider library links libcudart, cuBLAS, cuFFT, cuRAND and cuDNN by name; the wheels put them under
    site-packages/nvidia/*/lib, where the dynamic loader never looks, so without this the provider fails to load and
    ONNX Runtime falls back to the CPU. With no such wheels (a system CUDA, or none) the loader's own paths apply.
    """
    if not hasattr(ort, "preload_dlls") or importlib.util.find_spec("nvidia") is None:
        return
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):  # preload_dlls reports failures with print()
        ort.preload_dlls()
    for line in printed.getvalue().splitlines():
        logger.warning("CUDA libraries: %s", line)


def providers_for(settings: SessionSettings) -> list:
    if settings.device == "cuda":
        preload_cuda_libraries()
        return [(CUDA_PROVIDER, cuda_provider_options(settings)), CPU_PROVIDER]
    return [CPU_PROVIDER]


def cuda_is_usable(device_id: int = 0) -> bool:
    """True when a CUDA session really starts here (the -gpu wheel lists CUDA even without a GPU)."""
    if CUDA_PROVIDER not in ort.get_available_providers():
        return False
    preload_cuda_libraries()
    from onnx import TensorProto, helper  # only needed for this one probe

    value = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "probe",
        [value],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)
    options = ort.SessionOptions()
    options.log_severity_level = 4  # the failure is expected on CPU-only machines
    ort.set_default_logger_severity(4)
    try:
        session = ort.InferenceSession(
            model.SerializeToString(),
            options,
            providers=[(CUDA_PROVIDER, {"device_id": str(device_id)}), CPU_PROVIDER],
            enable_fallback=0,  # raise, rather than print ORT's "EP Error" banner and retry on the CPU
        )
        active = session.get_providers()
    except Exception as e:  # no GPU, no driver, a broken CUDA install: "not usable", never fatal
        lines = str(e).strip().splitlines()
        logger.info("CUDA provider not usable here: %s", lines[-1] if lines else type(e).__name__)
        return False
    finally:
        ort.set_default_logger_severity(2)
    if CUDA_PROVIDER not in active:
        logger.info("CUDA provider not usable here: ONNX Runtime could not load it (CUDA or cuDNN libraries missing)")
        return False
    return True


def create_session(path: Path, settings: SessionSettings) -> ort.InferenceSession:
    """Load one graph (its .onnx_data beside it) on the requested device, CPU as fallback."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = settings.intra_op_threads
    options.inter_op_num_threads = settings.inter_op_threads
    try:
        session = ort.InferenceSession(str(path), options, providers=providers_for(settings))
    except Exception as e:  # ORT raises its own pybind types (Fail, InvalidGraph, NoSuchFile)
        raise ModelLoadError(f"ONNX Runtime cannot load {path.name}: {e}") from e
    active = session.get_providers()
    if settings.device == "cuda" and CUDA_PROVIDER not in active:
        logger.warning("%s: CUDA was requested but ONNX Runtime fell back to %s", path.name, active)
    logger.info("loaded %s on %s", path.name, ", ".join(active))
    return session
