"""The Chatterbox Turbo graph contract: token ids, audio framing, and what the language model and
decoder sessions must expose (read from the sessions, since exports differ in dtype and shape).
See ../shared/chatterbox-turbo-onnx.md for the contract this encodes."""

import logging
from dataclasses import dataclass

import numpy as np
import onnxruntime as ort

from chatterbox_server.errors import ModelLoadError

logger = logging.getLogger(__name__)

SAMPLES_PER_TOKEN = 960  # 25 speech tokens per second of audio at 24 kHz
START_SPEECH_TOKEN = 6561
STOP_SPEECH_TOKEN = 6562
SILENCE_TOKEN = 4299
SPEECH_VOCAB_SIZE = 6563  # logits' last dim: 6561 speech codes + START + STOP
SILENCE_PADDING_TOKENS = 3  # appended before the decoder so speech does not end abruptly
KV_HEADS, KV_HEAD_DIM = 16, 64  # GPT-2 medium: 16 heads × 64 = 1024 wide


def is_spoken(token: int) -> bool:
    """True for an id the decoder speaks (the speech codebook, not START or STOP)."""
    return token < START_SPEECH_TOKEN


LM_INPUTS = ("inputs_embeds", "attention_mask", "position_ids")
DECODER_INPUTS = ("speech_tokens", "speaker_embeddings", "speaker_features")
_ORT_TO_NUMPY: dict[str, type] = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
}


def numpy_type(ort_type: str, what: str) -> type:
    """'tensor(float16)' → np.float16; ModelLoadError names the input for any other type."""
    try:
        return _ORT_TO_NUMPY[ort_type]
    except KeyError:
        raise ModelLoadError(f"{what} has unsupported type {ort_type}") from None


@dataclass(frozen=True)
class LanguageModelSpec:
    """What the contract leaves open, read from the language_model session."""

    past_names: tuple[str, ...]  # past_key_values.{i}.key/.value in input order
    present_names: tuple[str, ...]  # present.{i}.key/.value, same order
    kv_dtype: type
    num_heads: int
    head_dim: int
    embeds_dtype: type

    @property
    def num_layers(self) -> int:
        return len(self.past_names) // 2


def read_language_model_spec(session: ort.InferenceSession) -> LanguageModelSpec:
    """Check the LM's inputs and outputs against the contract and read its KV layout."""
    inputs = {i.name: i for i in session.get_inputs()}
    outputs = {o.name for o in session.get_outputs()}
    missing = [n for n in LM_INPUTS if n not in inputs] + [n for n in ["logits"] if n not in outputs]
    past = [i for i in session.get_inputs() if i.name.startswith("past_key_values.")]
    presents = tuple(i.name.replace("past_key_values", "present", 1) for i in past)
    missing += [n for n in presents if n not in outputs]
    if missing or not past:
        raise ModelLoadError(
            f"language_model does not match the Chatterbox Turbo contract; missing {missing or 'KV inputs'}"
        )
    first = past[0]
    if len(first.shape) != 4:
        raise ModelLoadError(f"unexpected KV rank {first.shape} for {first.name}")
    heads, head_dim = first.shape[1], first.shape[3]
    if not (isinstance(heads, int) and isinstance(head_dim, int)):
        # an export may leave them symbolic; the contract fixes them for this model
        logger.warning(
            "KV dims of %s are symbolic (%s); using %d heads x %d", first.name, first.shape, KV_HEADS, KV_HEAD_DIM
        )
        heads, head_dim = KV_HEADS, KV_HEAD_DIM
    return LanguageModelSpec(
        past_names=tuple(i.name for i in past),
        present_names=presents,
        kv_dtype=numpy_type(first.type, first.name),
        num_heads=heads,
        head_dim=head_dim,
        embeds_dtype=numpy_type(inputs["inputs_embeds"].type, "inputs_embeds"),
    )


def read_decoder_types(session: ort.InferenceSession) -> dict[str, type]:
    """conditional_decoder input name → the numpy dtype it takes."""
    inputs = {i.name: i for i in session.get_inputs()}
    missing = [n for n in DECODER_INPUTS if n not in inputs]
    if missing:
        raise ModelLoadError(f"conditional_decoder lacks inputs {missing}")
    return {n: numpy_type(inputs[n].type, n) for n in DECODER_INPUTS}
