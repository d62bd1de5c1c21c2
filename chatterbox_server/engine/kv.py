"""Where the KV cache lives between steps, and the batch operations on it.

`HostKV` keeps numpy arrays (the CPU path: ONNX Runtime reads and writes host memory anyway).
`DeviceKV` keeps ONNX Runtime OrtValues on the execution device and runs the language model
with IO binding, so on CUDA the cache never crosses PCIe: only the step's small inputs go up and
the last position's logits come back. Joining, dropping and trimming rows run on the device as
tiny helper graphs (Pad, Concat, Gather + Slice over every layer at once). Both back ends give
the same numbers; tests run DeviceKV on the CPU device.
"""

from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

from chatterbox_server.model.contract import LanguageModelSpec

KVList = list[Any]  # per layer key and value [B, heads, L, head_dim]: numpy arrays or OrtValues
INT64_MAX = np.iinfo(np.int64).max
HELPER_OPSET = 17


class HostKV:
    """KV as numpy arrays on the host."""

    on_device = False

    def __init__(self, session: ort.InferenceSession, spec: LanguageModelSpec):
        self._session = session
        self._spec = spec

    def empty(self, batch: int) -> KVList:
        spec = self._spec
        empty: np.ndarray = np.zeros((batch, spec.num_heads, 0, spec.head_dim), dtype=spec.kv_dtype)
        return [empty] * len(spec.past_names)

    def run(
        self, embeds: np.ndarray, mask: np.ndarray, positions: np.ndarray, past: KVList
    ) -> tuple[np.ndarray, KVList]:
        """One LM call → (float32 logits of the last position [B, vocab], present KV)."""
        spec = self._spec
        feeds = {"inputs_embeds": embeds, "attention_mask": mask, "position_ids": positions}
        feeds.update(zip(spec.past_names, past))
        outputs = self._session.run(["logits", *spec.present_names], feeds)
        return np.asarray(outputs[0])[:, -1, :].astype(np.float32), [np.asarray(kv) for kv in outputs[1:]]

    def from_numpy(self, kv: Sequence[np.ndarray]) -> KVList:
        return list(kv)

    def left_pad(self, kv: KVList, extra: int) -> KVList:
        if extra <= 0:
            return kv
        return [np.concatenate([np.zeros((*a.shape[:2], extra, a.shape[3]), a.dtype), a], axis=2) for a in kv]

    def concat(self, a: KVList, b: KVList) -> KVList:
        return [np.concatenate([x, y], axis=0) for x, y in zip(a, b)]

    def select(self, kv: KVList, rows: np.ndarray, start: int) -> KVList:
        """Rows `rows` (int64 [k]) from position `start` on."""
        return [np.ascontiguousarray(a[rows][:, :, start:]) for a in kv]

    def nbytes(self, kv: KVList) -> int:
        return sum(a.nbytes for a in kv)


class DeviceKV:
    """KV as OrtValues on the session's device; the LM runs with IO binding."""

    on_device = True

    def __init__(self, session: ort.InferenceSession, spec: LanguageModelSpec, device: str, device_id: int = 0):
        self._session = session
        self._spec = spec
        self.device = device  # "cuda" or "cpu" (the latter for tests of this path)
        self.device_id = device_id
        providers = session.get_providers()
        options = ort.SessionOptions()
        options.log_severity_level = 3
        kv_type = TensorProto.FLOAT16 if np.dtype(spec.kv_dtype) == np.float16 else TensorProto.FLOAT
        layers = len(spec.past_names)
        self._pad = self._helper(_pad_graph(layers, kv_type), options, providers)
        self._concat = self._helper(_concat_graph(layers, kv_type), options, providers)
        self._select = self._helper(_select_graph(layers, kv_type), options, providers)

    @staticmethod
    def _helper(model: onnx.ModelProto, options: ort.SessionOptions, providers: list[str]) -> ort.InferenceSession:
        return ort.InferenceSession(model.SerializeToString(), options, providers=providers)

    def _value(self, array: np.ndarray) -> ort.OrtValue:
        return ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(array), self.device, self.device_id)

    def _run_helper(
        self, session: ort.InferenceSession, kv_inputs: dict[str, Any], host_inputs: dict[str, np.ndarray]
    ) -> KVList:
        binding = session.io_binding()
        for name, value in kv_inputs.items():
            binding.bind_ortvalue_input(name, value)
        for name, array in host_inputs.items():
            binding.bind_cpu_input(name, array)
        for output in session.get_outputs():
            binding.bind_output(output.name, self.device, self.device_id)
        session.run_with_iobinding(binding)
        return list(binding.get_outputs())

    def empty(self, batch: int) -> KVList:
        spec = self._spec
        empty: np.ndarray = np.zeros((batch, spec.num_heads, 0, spec.head_dim), dtype=spec.kv_dtype)
        return [self._value(empty) for _ in spec.past_names]

    def run(
        self, embeds: np.ndarray, mask: np.ndarray, positions: np.ndarray, past: KVList
    ) -> tuple[np.ndarray, KVList]:
        """One LM call with IO binding: KV stays on the device, only logits come back."""
        spec = self._spec
        binding = self._session.io_binding()
        binding.bind_cpu_input("inputs_embeds", np.ascontiguousarray(embeds))
        binding.bind_cpu_input("attention_mask", np.ascontiguousarray(mask))
        binding.bind_cpu_input("position_ids", np.ascontiguousarray(positions))
        for name, value in zip(spec.past_names, past):
            binding.bind_ortvalue_input(name, value)
        binding.bind_output("logits", "cpu")
        for name in spec.present_names:
            binding.bind_output(name, self.device, self.device_id)
        self._session.run_with_iobinding(binding)
        outputs = binding.get_outputs()
        logits = np.asarray(outputs[0].numpy())[:, -1, :].astype(np.float32)
        return logits, list(outputs[1:])

    def from_numpy(self, kv: Sequence[np.ndarray]) -> KVList:
        return [self._value(a) for a in kv]

    def left_pad(self, kv: KVList, extra: int) -> KVList:
        if extra <= 0:
            return kv
        pads = np.array([0, 0, extra, 0, 0, 0, 0, 0], dtype=np.int64)
        return self._run_helper(self._pad, {f"kv_{i}": v for i, v in enumerate(kv)}, {"pads": pads})

    def concat(self, a: KVList, b: KVList) -> KVList:
        inputs = {f"a_{i}": v for i, v in enumerate(a)} | {f"b_{i}": v for i, v in enumerate(b)}
        return self._run_helper(self._concat, inputs, {})

    def select(self, kv: KVList, rows: np.ndarray, start: int) -> KVList:
        host = {"rows": rows.astype(np.int64), "start": np.array([start], dtype=np.int64)}
        return self._run_helper(self._select, {f"kv_{i}": v for i, v in enumerate(kv)}, host)

    def nbytes(self, kv: KVList) -> int:
        itemsize = np.dtype(self._spec.kv_dtype).itemsize
        return sum(int(np.prod(v.shape())) * itemsize for v in kv)


def _kv_info(name: str, elem_type: int) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem_type, ["batch", "heads", "length", "head_dim"])


def _model(
    nodes: list[onnx.NodeProto],
    inputs: list[onnx.ValueInfoProto],
    outputs: list[onnx.ValueInfoProto],
    initializers: list[onnx.TensorProto] | None = None,
) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "kv_helper", inputs, outputs, initializer=initializers or [])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", HELPER_OPSET)])
    model.ir_version = 8
    return model


def _pad_graph(layers: int, kv_type: int) -> onnx.ModelProto:
    """kv_i [B, H, L, D], pads int64 [8] → out_i: zeros prepended on the length axis."""
    nodes = [helper.make_node("Pad", [f"kv_{i}", "pads"], [f"out_{i}"], mode="constant") for i in range(layers)]
    inputs = [_kv_info(f"kv_{i}", kv_type) for i in range(layers)]
    inputs.append(helper.make_tensor_value_info("pads", TensorProto.INT64, [8]))
    return _model(nodes, inputs, [_kv_info(f"out_{i}", kv_type) for i in range(layers)])


def _concat_graph(layers: int, kv_type: int) -> onnx.ModelProto:
    """a_i, b_i [B_a | B_b, H, L, D] → out_i: rows of a, then rows of b."""
    nodes = [helper.make_node("Concat", [f"a_{i}", f"b_{i}"], [f"out_{i}"], axis=0) for i in range(layers)]
    inputs = [_kv_info(f"a_{i}", kv_type) for i in range(layers)] + [_kv_info(f"b_{i}", kv_type) for i in range(layers)]
    return _model(nodes, inputs, [_kv_info(f"out_{i}", kv_type) for i in range(layers)])


def _select_graph(layers: int, kv_type: int) -> onnx.ModelProto:
    """kv_i, rows int64 [k], start int64 [1] → out_i = kv_i[rows][:, :, start:]."""
    nodes = []
    for i in range(layers):
        nodes.append(helper.make_node("Gather", [f"kv_{i}", "rows"], [f"rows_{i}"], axis=0))
        nodes.append(helper.make_node("Slice", [f"rows_{i}", "start", "end", "axis"], [f"out_{i}"]))
    inputs = [_kv_info(f"kv_{i}", kv_type) for i in range(layers)]
    inputs += [
        helper.make_tensor_value_info("rows", TensorProto.INT64, ["k"]),
        helper.make_tensor_value_info("start", TensorProto.INT64, [1]),
    ]
    constants = [
        helper.make_tensor("end", TensorProto.INT64, [1], [INT64_MAX]),
        helper.make_tensor("axis", TensorProto.INT64, [1], [2]),
    ]
    return _model(nodes, inputs, [_kv_info(f"out_{i}", kv_type) for i in range(layers)], constants)
