"""The stand-in's four ONNX graphs: constants of the contract, seeded weights, quantizers, builders."""

from __future__ import annotations

import logging
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from chatterbox_server.text.normalize import TAGS as SPEECH_TAGS

log = logging.getLogger(__name__)

GENERATOR_VERSION = "3"  # 2: the faithful profile's decoder is S3Gen + HiFT; 3: the tiny LM's tokens vary (variety)

# ----------------------------------------------------------------------------- constants
SAMPLE_RATE = 24_000  # Hz, input and output audio
SAMPLES_PER_TOKEN = 960  # samples per speech token (40 ms, 25 tokens/s)
HALF_FRAME = SAMPLES_PER_TOKEN // 2  # samples per speaker_features frame (2 frames per token)
START_SPEECH, STOP_SPEECH, SILENCE = 6561, 6562, 4299
SPEECH_VOCAB = 6563  # logits last dim
TEXT_VOCAB = 50_276  # 50 257 GPT-2 ids + 19 tags
EOT_ID = 50_256  # <|endoftext|>
HIDDEN, N_LAYERS, N_HEADS, HEAD_DIM = 1024, 24, 16, 64
MAX_POSITIONS = 8192  # learned position table rows
SPEAKER_DIM, MEL_BINS = 192, 80
MAX_COND_FRAMES = 375  # audio_features rows after the leading one (15 s)
MAX_PROMPT_TOKENS = 250  # audio_tokens (10 s)
MARKER = HIDDEN - 1  # channel carrying the conditioning marker
MIN_TOKENS, TOKENS_PER_TEXT_TOKEN = 8, 6  # stand-in stop rule
# the "loop" behaviour: from generated token number LOOP_START on, the tokens repeat this pattern
LOOP_START, LOOP_PATTERN = 40, (1000, 2000, 3000)
BEHAVIOURS = ("stop", "never_stop", "loop")  # the language model's rule (Profile.behaviour)
VARIETY = 4.0  # the tiny profile's position-dependent logit term (Profile.variety), a few times its head's spread
BIG = 1.0e4  # forced logit magnitude (safe in float16)
TONE_BASE_HZ, TONE_STEP_HZ, TONE_CLASSES = 110.0, 7.0, 97
TONE_AMPLITUDE, NOISE_STD = 0.4, 1e-3
Q4_BLOCK = 32  # MatMulNBits block size along K
Q4_ACCURACY_LEVEL = 0  # 0 = unset, MatMulNBitsQuantizer's default (fp32 compute);
# 4 = int8 compute (about 2x faster decode on a 2-core CPU)
OPSET, IR_VERSION = 17, 10  # onnxruntime 1.31 accepts IR <= 13
INT64_MAX = np.iinfo(np.int64).max

TAGS = SPEECH_TAGS  # ids 50257..50275 in this order: the contract the server tokenizes with
DTYPE_SUFFIX = {"fp32": "", "fp16": "_fp16", "q8": "_quantized", "q4": "_q4", "q4f16": "_q4f16"}
ALL_DTYPES = tuple(DTYPE_SUFFIX)
GRAPHS = ("speech_encoder", "embed_tokens", "language_model", "conditional_decoder")


@dataclass(frozen=True)
class Profile:
    name: str
    lm_width: int  # residual width inside the LM (1024 = GPT-2 medium)
    mlp_width: int  # 0 = no MLP
    shared_layers: bool  # all 24 layers reference one weight set (+ per-layer gain)
    embed_rank: int  # 0 = full [50276, 1024] table, else table [50276, r] @ [r, 1024]
    decoder: str = "tones"  # "tones": a cheap token-tone synthesiser; "s3gen": the real decoder's compute
    # the language model's rule: "stop" (the stop rule), "never_stop" (STOP never comes), "loop" (never
    # stops, and repeats LOOP_PATTERN from token LOOP_START on): a runaway model, for the runaway guards' tests
    behaviour: str = "stop"
    # amplitude of a position-dependent term in the speech logits (0: none): random weights decoded
    # greedily settle into one token or a short loop, which a real model's speech tokens do not do
    # and which the runaway guards rightly stop; with it the tokens vary as speech's do (_variety_logits)
    variety: float = 0.0

    def __post_init__(self) -> None:
        if self.behaviour not in BEHAVIOURS:
            raise ValueError(f"unknown behaviour {self.behaviour!r}; choose from {', '.join(BEHAVIOURS)}")


PROFILES = {
    "tiny": Profile("tiny", 32, 0, True, 16, variety=VARIETY),
    "faithful": Profile("faithful", HIDDEN, 4 * HIDDEN, False, 0, decoder="s3gen"),
}


class Weights:
    """Deterministic float32 weights, drawn per name (independent of dtype and build order)."""

    def __init__(self, seed: int):
        self.seed = seed

    def rng(self, name: str) -> np.random.Generator:
        return np.random.default_rng([self.seed, zlib.crc32(name.encode())])

    def normal(self, name: str, shape: Sequence[int], std: float) -> np.ndarray:
        w = self.rng(name).standard_normal(tuple(shape), dtype=np.float32)
        w *= np.float32(std)
        return w


def quantize_q4(w: np.ndarray, block: int = Q4_BLOCK, scale_dtype=np.float32):
    """Symmetric 4-bit block quantisation of w [K, N] in MatMulNBits layout.

    Returns packed uint8 [N, ceil(K/block), block/2] (low nibble first, zero point 8) and
    scales [N, ceil(K/block)] of scale_dtype."""
    k, n = w.shape
    nb = -(-k // block)
    wt = np.zeros((n, nb * block), np.float32)
    wt[:, :k] = w.T
    wt = wt.reshape(n, nb, block)
    scale = (np.abs(wt).max(axis=-1) / 7.0).astype(scale_dtype)
    scale[scale == 0] = 1
    q = np.rint(wt / scale.astype(np.float32)[..., None])
    q = (np.clip(q, -8, 7) + 8).astype(np.uint8)
    packed = q[..., 0::2] | (q[..., 1::2] << 4)
    return packed, scale


def quantize_q8(w: np.ndarray):
    """Symmetric per-column int8 quantisation of w [K, N] -> (int8 [K, N], float32 scale [N])."""
    scale = np.abs(w).max(axis=0) / 127.0
    scale[scale == 0] = 1
    q = np.clip(np.rint(w / scale), -127, 127).astype(np.int8)
    return q, scale.astype(np.float32)


class GraphBuilder:
    """Small helper around onnx.helper: unique names, initializers, dtype- and quant-aware ops.

    dtype picks the compute type (float16 for fp16/q4f16, else float32) and how linear() lowers:
    MatMul (fp32/fp16), DynamicQuantizeMatMul int8 (q8) or MatMulNBits 4-bit (q4/q4f16)."""

    def __init__(self, dtype: str):
        self.dtype = dtype
        self.cdt = np.float16 if dtype in ("fp16", "q4f16") else np.float32
        self.ct = helper.np_dtype_to_tensor_dtype(np.dtype(self.cdt))
        self.quant = {"q8": "q8", "q4": "q4", "q4f16": "q4"}.get(dtype)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.inputs: list[onnx.ValueInfoProto] = []
        self.outputs: list[onnx.ValueInfoProto] = []
        self._count = 0
        self._consts: dict = {}
        self._linears: dict = {}

    def fresh(self, hint: str) -> str:
        self._count += 1
        return f"{hint}_{self._count}"

    def input(self, name: str, elem: int, shape: list) -> str:
        self.inputs.append(helper.make_tensor_value_info(name, elem, shape))
        return name

    def output(self, name: str, elem: int, shape: list) -> None:
        self.outputs.append(helper.make_tensor_value_info(name, elem, shape))

    def init(self, name: str, array: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def const(self, value, dtype=None) -> str:
        """A small constant initializer (deduplicated); dtype defaults to the compute type."""
        arr = np.asarray(value, dtype=dtype or self.cdt)
        key = (arr.dtype.str, arr.shape, arr.tobytes())
        if key not in self._consts:  # typed fields, not raw_data: stays inline when saving, so
            name = self.fresh("const")  # shape inference can read axes/shapes
            elem = helper.np_dtype_to_tensor_dtype(arr.dtype)
            self.inits.append(helper.make_tensor(name, elem, arr.shape, arr.flatten().tolist()))
            self._consts[key] = name
        return self._consts[key]

    def i64(self, *values) -> str:
        return self.const(list(values), np.int64)

    def op(self, op_type: str, *inputs: str, out: str | None = None, n_out: int = 1, domain: str = "", **attrs):
        outs = [out] if out else [self.fresh(op_type.lower()) for _ in range(n_out)]
        self.nodes.append(
            helper.make_node(
                op_type, list(inputs), outs, domain=domain or None, name=self.fresh("n_" + op_type), **attrs
            )
        )
        return outs[0] if n_out == 1 else outs

    # --- composite helpers -------------------------------------------------------------------
    def dim(self, x: str, axis: int) -> str:
        """1-D int64 [1] tensor holding x.shape[axis]."""
        return self.op("Shape", x, start=axis, end=axis + 1)

    def cast(self, x: str, elem: int) -> str:
        return self.op("Cast", x, to=elem)

    def to_compute(self, x: str) -> str:
        return x if self.ct == TensorProto.FLOAT else self.cast(x, self.ct)

    def to_float(self, x: str) -> str:
        return x if self.ct == TensorProto.FLOAT else self.cast(x, TensorProto.FLOAT)

    def slice(self, x: str, starts, ends, axes) -> str:
        as_t = lambda v: v if isinstance(v, str) else self.i64(*v)  # noqa: E731
        return self.op("Slice", x, as_t(starts), as_t(ends), self.i64(*axes))

    def take(self, x: str, index: int, axis: int) -> str:
        """x[..., index, ...] along axis (rank drops by one)."""
        return self.op("Gather", x, self.const(index, np.int64), axis=axis)

    def layer_norm(self, x: str, name: str, width: int) -> str:
        if f"{name}.weight" not in self._consts:  # shared layers reuse one LN
            self._consts[f"{name}.weight"] = (
                self.init(f"{name}.weight", np.ones(width, self.cdt)),
                self.init(f"{name}.bias", np.zeros(width, self.cdt)),
            )
        g, b = self._consts[f"{name}.weight"]
        return self.op("LayerNormalization", x, g, b, axis=-1, epsilon=1e-5)

    def linear(self, x: str, name: str, w: np.ndarray, b: np.ndarray | None = None, quantize: bool = True) -> str:
        """x [..., K] @ w [K, N] (+ b) in the compute dtype; repeated names share initializers."""
        if name not in self._linears:
            k, n = w.shape
            if self.quant == "q4" and quantize:
                packed, scales = quantize_q4(w, scale_dtype=self.cdt)
                ins = [self.init(f"{name}.qweight", packed), self.init(f"{name}.scales", scales)]
                attrs = dict(K=k, N=n, bits=4, block_size=Q4_BLOCK)
                if Q4_ACCURACY_LEVEL:
                    attrs["accuracy_level"] = Q4_ACCURACY_LEVEL
                spec = ("MatMulNBits", ins, attrs)
            elif self.quant == "q8" and quantize:
                q, scale = quantize_q8(w)
                ins = [self.init(f"{name}.qweight", q), self.init(f"{name}.scale", scale)]
                spec = ("DynamicQuantizeMatMul", ins, {})
            else:
                spec = ("MatMul", [self.init(f"{name}.weight", w.astype(self.cdt))], {})
            bias = None if b is None else self.init(f"{name}.bias", b.astype(self.cdt))
            self._linears[name] = (spec, bias)
        (op_type, ins, attrs), bias = self._linears[name]
        domain = "" if op_type == "MatMul" else "com.microsoft"
        y = self.op(op_type, x, *ins, domain=domain, **attrs)
        return y if bias is None else self.op("Add", y, bias)

    def model(self, name: str) -> onnx.ModelProto:
        graph = helper.make_graph(self.nodes, name, self.inputs, self.outputs, self.inits)
        opsets = [helper.make_opsetid("", OPSET)]
        if any(n.domain == "com.microsoft" for n in self.nodes):
            opsets.append(helper.make_opsetid("com.microsoft", 1))
        m = helper.make_model(
            graph, opset_imports=opsets, producer_name="make_stand_in_model", producer_version=GENERATOR_VERSION
        )
        m.ir_version = IR_VERSION
        return m


# ----------------------------------------------------------------------------- graphs
F32, I64 = TensorProto.FLOAT, TensorProto.INT64
B = "batch_size"


def build_speech_encoder(g: GraphBuilder, W: Weights, prof: Profile) -> None:
    """audio_values [B, S] -> audio_features [B, 1 + min(n, 375), 1024], audio_tokens [B, P],
    speaker_embeddings [B, 192], speaker_features [B, 2P, 80]; n = S // 960, P = min(n, 250)."""
    audio = g.input("audio_values", F32, [B, "num_samples"])
    b = g.dim(audio, 0)
    n = g.op("Div", g.dim(audio, 1), g.i64(SAMPLES_PER_TOKEN))
    n_cond = g.op("Min", n, g.i64(MAX_COND_FRAMES))
    n_prompt = g.op("Min", n, g.i64(MAX_PROMPT_TOKENS))
    used = g.slice(audio, [0], g.op("Mul", n, g.i64(SAMPLES_PER_TOKEN)), [1])
    frame_shape = g.op("Concat", b, n, g.i64(SAMPLES_PER_TOKEN), axis=0)
    frames = g.op("Reshape", g.to_compute(used), frame_shape)  # [B, n, 960]

    # audio_features: learned leading row + tanh(projection) of the first 375 frames, marker 1.0
    cond = g.slice(frames, [0], n_cond, [1])
    w = W.normal("enc.cond.w", (SAMPLES_PER_TOKEN, HIDDEN), 0.1)
    feats = g.op("Tanh", g.linear(cond, "enc.cond", w, W.normal("enc.cond.b", (HIDDEN,), 0.1)))
    lead = np.tanh(W.normal("enc.lead", (1, 1, HIDDEN), 1.0)).astype(g.cdt)
    lead = g.op("Expand", g.init("enc.lead_row", lead), g.op("Concat", b, g.i64(1, HIDDEN), axis=0))
    rows = g.to_float(g.op("Concat", lead, feats, axis=1))
    keep, marker = np.ones(HIDDEN, np.float32), np.zeros(HIDDEN, np.float32)
    keep[MARKER], marker[MARKER] = 0.0, 1.0
    rows = g.op("Mul", rows, g.const(keep, np.float32))
    g.op("Add", rows, g.const(marker, np.float32), out="audio_features")

    # audio_tokens: two 81-way argmaxes of a projection -> id = 81 * a + b in [0, 6560]
    prompt = g.slice(frames, [0], n_prompt, [1])  # [B, P, 960]
    z = g.linear(prompt, "enc.tok", W.normal("enc.tok.w", (SAMPLES_PER_TOKEN, 2 * 81), 0.1))
    z = g.op("ArgMax", g.op("Reshape", z, g.i64(0, 0, 2, 81)), axis=-1, keepdims=0)
    hi = g.op("Mul", g.take(z, 0, 2), g.const(81, np.int64))
    g.op("Add", hi, g.take(z, 1, 2), out="audio_tokens")

    # speaker_embeddings: centred log-mean |random filter bank| over all frames, L2-normalised
    # (loudness-invariant, pitch/timbre dependent)
    w = W.normal("enc.spk.w", (SAMPLES_PER_TOKEN, SPEAKER_DIM), 0.1)
    spk = g.to_float(g.op("Abs", g.linear(frames, "enc.spk", w)))
    count = g.cast(g.op("Max", n, g.i64(1)), F32)
    spk = g.op("Div", g.op("ReduceSum", spk, g.i64(1), keepdims=0), count)
    spk = g.op("Log", g.op("Add", spk, g.const(1e-4, np.float32)))
    spk = g.op("Sub", spk, g.op("ReduceMean", spk, axes=[-1], keepdims=1))
    norm = g.op("ReduceSumSquare", spk, axes=[-1], keepdims=1)
    norm = g.op("Sqrt", g.op("Add", norm, g.const(1e-8, np.float32)))
    g.op("Div", spk, norm, out="speaker_embeddings")

    # speaker_features: two half-frames (480 samples) per prompt token -> log|projection|
    two_p = g.op("Mul", n_prompt, g.i64(2))
    halves = g.op("Reshape", prompt, g.op("Concat", b, two_p, g.i64(HALF_FRAME), axis=0))
    w = W.normal("enc.mel.w", (HALF_FRAME, MEL_BINS), 0.1)
    mel = g.to_float(g.linear(halves, "enc.mel", w))
    g.op("Log", g.op("Add", g.op("Abs", mel), g.const(1e-3, np.float32)), out="speaker_features")

    g.output("audio_features", F32, [B, "audio_seq", HIDDEN])
    g.output("audio_tokens", I64, [B, "prompt_tokens"])
    g.output("speaker_embeddings", F32, [B, SPEAKER_DIM])
    g.output("speaker_features", F32, [B, "feature_frames", MEL_BINS])


def build_embed_tokens(g: GraphBuilder, W: Weights, prof: Profile) -> None:
    """input_ids [B, S] -> inputs_embeds float32 [B, S, 1024]; channel 1023 is exactly 0."""
    ids = g.input("input_ids", I64, [B, "sequence_length"])
    if prof.embed_rank:  # low-rank: table [50276, r] @ projection [r, 1024]
        r = prof.embed_rank
        proj = W.normal("embed.proj", (r, HIDDEN), 1.0 / np.sqrt(r))
        proj[:, MARKER] = 0
        table = W.normal("embed.table", (TEXT_VOCAB, r), 1.0)
        x = g.op("Gather", g.init("embed.table", table.astype(g.cdt)), ids)
        x = g.linear(x, "embed.proj", proj, quantize=False)
    else:
        table = W.normal("embed.table", (TEXT_VOCAB, HIDDEN), 1.0)
        table[:, MARKER] = 0
        x = g.op("Gather", g.init("embed.table", table.astype(g.cdt)), ids)
    g.op("Cast", x, to=F32, out="inputs_embeds")
    g.output("inputs_embeds", F32, [B, "sequence_length", HIDDEN])


def _stop_rule_bookkeeping(g: GraphBuilder, x: str, mask_f: str) -> str:
    """Values that overwrite layer 0's new value vectors (head 0, channels 0 and 1).

    x: inputs_embeds float32 [B, S, 1024]; mask_f: attention_mask as float32 [B, T].
    Returns [B, 1, S, 2] in the KV dtype: (n_text of this call, broadcast over S; marker[b, s])
    where n_text = masked-in rows of this call minus masked-in conditioning rows."""
    marker = g.take(x, MARKER, 2)  # [B, S]
    mask_call = g.slice(mask_f, g.op("Neg", g.dim(x, 1)), [INT64_MAX], [1])  # [B, S]
    n_in = g.op("ReduceSum", mask_call, g.i64(1), keepdims=1)  # [B, 1]
    n_cond = g.op("ReduceSum", g.op("Mul", mask_call, marker), g.i64(1), keepdims=1)
    n_text = g.op("Expand", g.op("Sub", n_in, n_cond), g.op("Shape", marker))  # [B, S]
    pair = [g.op("Unsqueeze", t, g.i64(1, 3)) for t in (n_text, marker)]
    return g.to_compute(g.op("Concat", *pair, axis=3))


def _stop_rule_logits(
    g: GraphBuilder, present_v0: str, mask_f: str, pos: str, behaviour: str = "stop"
) -> tuple[str, str, str]:
    """(START, STOP) logit columns [B, S, 1] (compute dtype), from layer 0's present value, and
    the 1-based index of the token each position predicts (float32 [B, S]).

    n_text = max of channel 0 and n_cond = sum of channel 1 over masked-in positions; the token
    predicted at position s has 1-based index g = position_ids - (n_cond + n_text) + 2, and STOP
    is forced (+1e4, else -1e4) once g >= MIN_TOKENS + TOKENS_PER_TEXT_TOKEN * n_text (never, unless
    behaviour is "stop")."""
    f32 = lambda v: g.const(float(v), np.float32)  # noqa: E731
    book = g.to_float(g.slice(present_v0, [0, 0], [1, 2], [1, 3]))  # [B, 1, T, 2]
    book = g.op("Squeeze", book, g.i64(1))  # [B, T, 2]
    n_text = g.op("ReduceMax", g.op("Mul", g.take(book, 0, 2), mask_f), axes=[1], keepdims=1)
    n_cond = g.op("ReduceSum", g.op("Mul", g.take(book, 1, 2), mask_f), g.i64(1), keepdims=1)
    index = g.op("Sub", g.cast(pos, F32), g.op("Add", n_cond, n_text))
    index = g.op("Add", index, f32(2))  # [B, S]
    target = g.op("Add", g.op("Mul", n_text, f32(TOKENS_PER_TEXT_TOKEN)), f32(MIN_TOKENS))
    if behaviour == "stop":
        stop = g.op("Where", g.op("GreaterOrEqual", index, target), f32(BIG), f32(-BIG))
    else:  # a runaway: STOP never comes
        stop = g.op("Expand", f32(-BIG), g.op("Shape", index))
    stop = g.to_compute(g.op("Unsqueeze", stop, g.i64(2)))  # [B, S, 1]
    start = g.op("Expand", g.const(-BIG), g.op("Shape", stop))
    return start, stop, index


def _variety_logits(g: GraphBuilder, W: Weights, speech: str, pos: str, amplitude: float) -> str:
    """The speech logits [B, S, 6561] + amplitude * sin(position * w_v + p_v), with a random
    frequency w_v in (0, pi) and phase p_v per id: which ids are favoured changes from one position
    to the next, so greedy decoding does not settle into one id or a short cycle (Profile.variety).
    Computed in float32 (positions reach ~1500) and added in the compute dtype."""
    rng = W.rng("lm.variety")
    omega = rng.uniform(0.0, np.pi, START_SPEECH).astype(np.float32)
    phase = rng.uniform(0.0, 2 * np.pi, START_SPEECH).astype(np.float32)
    at = g.op("Unsqueeze", g.cast(pos, F32), g.i64(2))  # [B, S, 1]
    angle = g.op("Add", g.op("Mul", at, g.init("lm.variety.omega", omega)), g.init("lm.variety.phase", phase))
    bias = g.op("Mul", g.op("Sin", angle), g.const(float(amplitude), np.float32))  # [B, S, 6561]
    return g.op("Add", speech, g.to_compute(bias))


def _loop_logits(g: GraphBuilder, speech: str, index: str) -> str:
    """The speech logits [B, S, 6561] with LOOP_PATTERN forced (+1e4) from token LOOP_START on:
    token g is LOOP_PATTERN[(g - LOOP_START) mod len(LOOP_PATTERN)]."""
    f32 = lambda v: g.const(float(v), np.float32)  # noqa: E731
    step = g.op("Mod", g.op("Sub", index, f32(LOOP_START)), f32(len(LOOP_PATTERN)), fmod=1)
    step = g.op("Max", step, f32(0))  # before the loop: any entry (masked below)
    wanted = g.op("Gather", g.const(list(LOOP_PATTERN), np.int64), g.cast(step, I64))  # [B, S]
    ids = g.const(np.arange(START_SPEECH), np.int64)
    hit = g.op("Equal", g.op("Unsqueeze", wanted, g.i64(2)), ids)  # [B, S, 6561]
    looping = g.op("Unsqueeze", g.op("GreaterOrEqual", index, f32(LOOP_START)), g.i64(2))  # [B, S, 1]
    forced = g.op("Where", g.op("And", hit, looping), g.const(BIG), g.const(0.0))
    return g.op("Add", speech, forced)


def _attention_bias(g: GraphBuilder, x: str, am: str) -> str:
    """Additive bias [B, 1, S, T]: 0 where key t is visible to query s (mask[b, t] == 1 and
    t <= past_len + s), -1e4 elsewhere (finite, so fully masked pad rows stay NaN-free)."""
    one = g.const(1, np.int64)
    t_len = g.op("Squeeze", g.dim(am, 1), g.i64(0))
    past_len = g.op("Sub", t_len, g.op("Squeeze", g.dim(x, 1), g.i64(0)))
    keys = g.op("Unsqueeze", g.op("Range", g.const(0, np.int64), t_len, one), g.i64(0))  # [1, T]
    queries = g.op("Unsqueeze", g.op("Range", past_len, t_len, one), g.i64(1))  # [S, 1]
    padding = g.op("Unsqueeze", g.op("Equal", am, one), g.i64(1, 2))  # [B,1,1,T]
    visible = g.op("And", g.op("LessOrEqual", keys, queries), padding)
    return g.op("Where", visible, g.const(0.0), g.const(-BIG))


def build_language_model(g: GraphBuilder, W: Weights, prof: Profile) -> None:
    """GPT-2-style pre-LN decoder with KV cache, learned positions and the stand-in stop rule.

    inputs_embeds f32 [B, S, 1024], attention_mask i64 [B, T], position_ids i64 [B, S],
    past_key_values.{i}.key/.value [B, 16, T - S, 64]
    -> logits [B, S, 6563], present.{i}.key/.value [B, 16, T, 64] (KV and logits in the compute
    dtype). Layer weights are shared in the tiny profile (with a per-layer gain)."""
    kv, D, M = g.ct, prof.lm_width, prof.mlp_width
    kv_dims = lambda t: [B, N_HEADS, t, HEAD_DIM]  # noqa: E731
    x = g.input("inputs_embeds", F32, [B, "sequence_length", HIDDEN])
    am = g.input("attention_mask", I64, [B, "total_sequence_length"])
    pos = g.input("position_ids", I64, [B, "sequence_length"])
    past = [
        [g.input(f"past_key_values.{i}.{kind}", kv, kv_dims("past_sequence_length")) for kind in ("key", "value")]
        for i in range(N_LAYERS)
    ]
    mask_f = g.cast(am, F32)
    book = _stop_rule_bookkeeping(g, x, mask_f)
    bias = _attention_bias(g, x, am)

    h = g.to_compute(x)
    if D != HIDDEN:
        h = g.linear(h, "lm.in_proj", W.normal("lm.in_proj.w", (HIDDEN, D), HIDDEN**-0.5))
    wpe = g.init("lm.wpe", W.normal("lm.wpe", (MAX_POSITIONS, D), 0.01 if D == HIDDEN else 0.3).astype(g.cdt))
    clipped = g.op("Clip", pos, g.const(0, np.int64), g.const(MAX_POSITIONS - 1, np.int64))
    h = g.op("Add", h, g.op("Gather", wpe, clipped))
    std, out_std = (0.02, 0.02) if D == HIDDEN else (D**-0.5, HIDDEN**-0.5)
    gains = W.rng("lm.gains").uniform(0.5, 1.0, N_LAYERS).astype(np.float32)
    zeros = lambda n: np.zeros(n, np.float32) if D == HIDDEN else None  # noqa: E731  GPT-2 biases
    heads = g.i64(0, 0, N_HEADS, HEAD_DIM)
    for i in range(N_LAYERS):
        p = "lm.layer" if prof.shared_layers else f"lm.layer{i}"
        w_qkv = W.normal(f"{p}.qkv.w", (D, 3 * HIDDEN), std)
        w_qkv[:, :HIDDEN] /= np.sqrt(HEAD_DIM)  # fold the 1/sqrt(64) score scale into q
        w_out = W.normal(f"{p}.out.w", (HIDDEN, D), out_std)
        w_out[:2] = 0  # bookkeeping channels never reach h
        qkv = g.linear(g.layer_norm(h, f"{p}.ln1", D), f"{p}.qkv", w_qkv, zeros(3 * HIDDEN))
        q, k, v = g.op("Split", qkv, g.i64(HIDDEN, HIDDEN, HIDDEN), axis=-1, n_out=3)
        q, k, v = (g.op("Transpose", g.op("Reshape", t, heads), perm=[0, 2, 1, 3]) for t in (q, k, v))  # [B, 16, S, 64]
        if i == 0:  # head 0, channels 0..1 of the new values := stop-rule bookkeeping
            head0 = g.op("Concat", book, g.slice(v, [0, 2], [1, HEAD_DIM], [1, 3]), axis=3)
            v = g.op("Concat", head0, g.slice(v, [1], [N_HEADS], [1]), axis=1)
        pk = g.op("Concat", past[i][0], k, axis=2, out=f"present.{i}.key")
        pv = g.op("Concat", past[i][1], v, axis=2, out=f"present.{i}.value")
        scores = g.op("MatMul", q, g.op("Transpose", pk, perm=[0, 1, 3, 2]))  # [B, 16, S, T]
        probs = g.op("Softmax", g.op("Add", scores, bias), axis=-1)
        ctx = g.op("Transpose", g.op("MatMul", probs, pv), perm=[0, 2, 1, 3])
        o = g.linear(g.op("Reshape", ctx, g.i64(0, 0, HIDDEN)), f"{p}.out", w_out, zeros(D))
        h = g.op("Add", h, g.op("Mul", o, g.const(gains[i])) if prof.shared_layers else o)
        if M:  # GELU MLP, written the way torch exports it so ORT fuses it
            a = g.layer_norm(h, f"{p}.ln2", D)
            f = g.linear(a, f"{p}.fc", W.normal(f"{p}.fc.w", (D, M), std), zeros(M))
            erf = g.op("Erf", g.op("Div", f, g.const(np.sqrt(2.0))))
            f = g.op("Mul", g.op("Mul", f, g.op("Add", erf, g.const(1.0))), g.const(0.5))
            w_proj = W.normal(f"{p}.proj.w", (M, D), std)
            h = g.op("Add", h, g.linear(f, f"{p}.proj", w_proj, zeros(D)))
    h = g.layer_norm(h, "lm.ln_f", D)
    head = W.normal("lm.head.w", (D, START_SPEECH), 0.02 if D == HIDDEN else 0.3)
    speech = g.linear(h, "lm.head", head)  # ids 0..6560 from the lm head
    if prof.variety:
        speech = _variety_logits(g, W, speech, pos, prof.variety)
    start, stop, index = _stop_rule_logits(g, "present.0.value", mask_f, pos, prof.behaviour)
    if prof.behaviour == "loop":
        speech = _loop_logits(g, speech, index)
    g.op("Concat", speech, start, stop, axis=2, out="logits")

    g.output("logits", kv, [B, "sequence_length", SPEECH_VOCAB])
    for i in range(N_LAYERS):
        for kind in ("key", "value"):
            g.output(f"present.{i}.{kind}", kv, kv_dims("total_sequence_length"))


def build_conditional_decoder(g: GraphBuilder, W: Weights, prof: Profile) -> None:
    """speech_tokens [B, T], speaker_embeddings [B, 192], speaker_features [B, F, 80]
    -> waveform [B, (T - F // 2) * 960]: per token after the reference prefix, 40 ms of a tone
    at 110 + 7 * (id mod 97) Hz with 4 speaker-weighted harmonics (silent for SILENCE), plus
    N(0, 1e-3) noise drawn inside the graph. The faithful profile builds S3Gen + HiFT instead (s3gen.py)."""
    if prof.decoder == "s3gen":
        from chatterbox_server.model.stand_in.s3gen import build_s3gen_decoder  # it imports this module

        build_s3gen_decoder(g, W)
        return
    f32 = lambda v: g.const(v, np.float32)  # noqa: E731
    tokens = g.input("speech_tokens", I64, [B, "num_speech_tokens"])
    emb = g.input("speaker_embeddings", F32, [B, SPEAKER_DIM])
    feats = g.input("speaker_features", F32, [B, "feature_frames", MEL_BINS])
    n_ref = g.op("Div", g.dim(feats, 1), g.i64(2))
    gen = g.slice(tokens, n_ref, [INT64_MAX], [1])  # [B, N]
    tone = g.cast(g.op("Mod", gen, g.const(TONE_CLASSES, np.int64)), F32)
    freq = g.op("Add", g.op("Mul", tone, f32(TONE_STEP_HZ)), f32(TONE_BASE_HZ))  # Hz [B, N]
    cycles = g.op("Mul", freq, f32(SAMPLES_PER_TOKEN / SAMPLE_RATE))  # per token
    start = g.op("CumSum", cycles, g.const(1, np.int64), exclusive=1)  # continuous phase
    start = g.op("Mod", start, f32(1.0), fmod=1)
    t = np.arange(SAMPLES_PER_TOKEN, dtype=np.float32).reshape(1, 1, 1, -1) / SAMPLE_RATE
    along = g.op("Mul", g.op("Unsqueeze", freq, g.i64(2, 3)), f32(t))
    phase = g.op("Add", g.op("Unsqueeze", start, g.i64(2, 3)), along)  # [B, N, 1, 960]
    harmonics = np.arange(1, 5, dtype=np.float32).reshape(1, 1, 4, 1) * np.float32(2 * np.pi)
    tones = g.op("Sin", g.op("Mul", phase, f32(harmonics)))  # [B, N, 4, 960]
    w = W.normal("dec.timbre.w", (SPEAKER_DIM, 4), 3.0)
    timbre = g.op("Softmax", g.linear(g.to_compute(emb), "dec.timbre", w), axis=-1)
    timbre = g.op("Unsqueeze", g.to_float(timbre), g.i64(1, 3))  # [B, 1, 4, 1]
    wave = g.op("ReduceSum", g.op("Mul", tones, timbre), g.i64(2), keepdims=0)  # [B, N, 960]
    voiced = g.cast(g.op("Not", g.op("Equal", gen, g.const(SILENCE, np.int64))), F32)
    amp = g.op("Mul", g.op("Unsqueeze", voiced, g.i64(2)), f32(TONE_AMPLITUDE))
    n_samples = g.op("Mul", g.dim(gen, 1), g.i64(SAMPLES_PER_TOKEN))
    wave = g.op("Reshape", g.op("Mul", wave, amp), g.op("Concat", g.dim(gen, 0), n_samples, axis=0))
    noisy = g.op("Add", wave, g.op("RandomNormalLike", wave, scale=NOISE_STD))
    g.op("Clip", noisy, f32(-1.0), f32(1.0), out="waveform")
    g.output("waveform", F32, [B, "num_samples"])


BUILDERS = {
    "speech_encoder": build_speech_encoder,
    "embed_tokens": build_embed_tokens,
    "language_model": build_language_model,
    "conditional_decoder": build_conditional_decoder,
}


def build_graph(graph: str, dtype: str, prof: Profile, W: Weights) -> onnx.ModelProto:
    g = GraphBuilder(dtype)
    BUILDERS[graph](g, W, prof)
    return g.model(f"{graph}_stand_in")


def save_graph(model: onnx.ModelProto, path: Path) -> None:
    """Save with all weights in <name>.onnx_data beside the graph (stale data files removed first,
    since onnx appends to an existing data file)."""
    data = path.with_name(path.name + "_data")
    for f in (path, data):
        f.unlink(missing_ok=True)
    onnx.save_model(
        model, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location=data.name, size_threshold=0
    )
    data.chmod(path.stat().st_mode & 0o777)  # onnx creates it 0600; match the graph's mode
