"""The generated stand-in must have the real release's contract, for every dtype.

The table below is written from ../shared/chatterbox-turbo-onnx.md (§1–§3), independently of
the generator, so a drift on either side fails here.
"""

import json

import numpy as np
import onnxruntime as ort
import pytest
from tokenizers import Tokenizer

DTYPE_SUFFIXES = {"fp32": "", "fp16": "_fp16", "q8": "_quantized", "q4": "_q4", "q4f16": "_q4f16"}
HALF_KV = {"fp16", "q4f16"}
LAYERS = 24
TAGS = [
    "[angry]",
    "[fear]",
    "[surprised]",
    "[whispering]",
    "[advertisement]",
    "[dramatic]",
    "[narration]",
    "[crying]",
    "[happy]",
    "[sarcastic]",
    "[clear throat]",
    "[sigh]",
    "[shush]",
    "[cough]",
    "[groan]",
    "[sniff]",
    "[gasp]",
    "[chuckle]",
    "[laugh]",
]

# name, element type, shape: int = fixed dim, str = symbolic (dynamic) dim
SPEECH_ENCODER = {
    "inputs": [("audio_values", "tensor(float)", ["batch", "samples"])],
    "outputs": [
        ("audio_features", "tensor(float)", ["batch", "n", 1024]),
        ("audio_tokens", "tensor(int64)", ["batch", "p"]),
        ("speaker_embeddings", "tensor(float)", ["batch", 192]),
        ("speaker_features", "tensor(float)", ["batch", "f", 80]),
    ],
}
EMBED_TOKENS = {
    "inputs": [("input_ids", "tensor(int64)", ["batch", "seq"])],
    "outputs": [("inputs_embeds", "tensor(float)", ["batch", "seq", 1024])],
}
CONDITIONAL_DECODER = {
    "inputs": [
        ("speech_tokens", "tensor(int64)", ["batch", "t"]),
        ("speaker_embeddings", "tensor(float)", ["batch", 192]),
        ("speaker_features", "tensor(float)", ["batch", "f", 80]),
    ],
    "outputs": [("waveform", "tensor(float)", ["batch", "samples"])],
}


def language_model_spec(dtype: str) -> dict:
    kv = "tensor(float16)" if dtype in HALF_KV else "tensor(float)"
    inputs = [
        ("inputs_embeds", "tensor(float)", ["batch", "seq", 1024]),
        ("attention_mask", "tensor(int64)", ["batch", "total"]),
        ("position_ids", "tensor(int64)", ["batch", "seq"]),
    ]
    outputs = [("logits", None, ["batch", "seq", 6563])]  # fp16 logits dtype unconfirmed
    for i in range(LAYERS):
        for kind in ("key", "value"):
            inputs.append((f"past_key_values.{i}.{kind}", kv, ["batch", 16, "past", 64]))
            outputs.append((f"present.{i}.{kind}", kv, ["batch", 16, "total", 64]))
    return {"inputs": inputs, "outputs": outputs}


def session(model_dir, graph, dtype):
    path = model_dir / "onnx" / f"{graph}{DTYPE_SUFFIXES[dtype]}.onnx"
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def assert_matches(args_list, spec):
    assert [a.name for a in args_list] == [s[0] for s in spec]
    for arg, (name, element_type, shape) in zip(args_list, spec):
        if element_type is not None:
            assert arg.type == element_type, name
        assert len(arg.shape) == len(shape), name
        for dim, expected in zip(arg.shape, shape):
            if isinstance(expected, int):
                assert dim == expected, (name, arg.shape)
            else:
                assert isinstance(dim, str) or dim is None, (name, arg.shape)


def test_repo_layout(model_dir):
    for name in (
        "tokenizer.json",
        "tokenizer_config.json",
        "config.json",
        "generation_config.json",
        "preprocessor_config.json",
    ):
        assert (model_dir / name).is_file(), name
    assert json.loads((model_dir / "preprocessor_config.json").read_text())["sampling_rate"] == 24_000
    for suffix in DTYPE_SUFFIXES.values():
        for graph in ("speech_encoder", "embed_tokens", "language_model", "conditional_decoder"):
            onnx_file = model_dir / "onnx" / f"{graph}{suffix}.onnx"
            assert onnx_file.is_file() and (model_dir / "onnx" / f"{onnx_file.name}_data").is_file()


@pytest.mark.parametrize("dtype", DTYPE_SUFFIXES)
def test_graph_io_contract(model_dir, dtype):
    for graph, spec in [
        ("speech_encoder", SPEECH_ENCODER),
        ("embed_tokens", EMBED_TOKENS),
        ("conditional_decoder", CONDITIONAL_DECODER),
        ("language_model", language_model_spec(dtype)),
    ]:
        s = session(model_dir, graph, dtype)
        assert_matches(s.get_inputs(), spec["inputs"])
        assert_matches(s.get_outputs(), spec["outputs"])


@pytest.mark.parametrize("dtype", DTYPE_SUFFIXES)
def test_runtime_shapes_follow_the_rules(model_dir, dtype):
    """Run each graph once: encoder sizes, batch 2 through the LM, decoder length rule."""
    samples = 8 * 24_000  # 8 s → 200 frames of 960
    audio = np.random.default_rng(0).uniform(-0.3, 0.3, (1, samples)).astype(np.float32)
    features, tokens, spk, mel = session(model_dir, "speech_encoder", dtype).run(None, {"audio_values": audio})
    assert features.shape == (1, 1 + 200, 1024)
    assert tokens.shape == (1, 200) and tokens.dtype == np.int64 and tokens.max() < 6561
    assert spk.shape == (1, 192) and mel.shape == (1, 400, 80)

    embeds = session(model_dir, "embed_tokens", dtype).run(None, {"input_ids": np.array([[1, 2, 3]] * 2)})[0]
    assert embeds.shape == (2, 3, 1024) and embeds.dtype == np.float32

    lm = session(model_dir, "language_model", dtype)
    kv_type = np.float16 if dtype in HALF_KV else np.float32
    feeds = {
        "inputs_embeds": embeds,
        "attention_mask": np.ones((2, 3), dtype=np.int64),
        "position_ids": np.tile(np.arange(3), (2, 1)),
    }
    for i in range(LAYERS):
        for kind in ("key", "value"):
            feeds[f"past_key_values.{i}.{kind}"] = np.zeros((2, 16, 0, 64), dtype=kv_type)
    logits, *present = lm.run(None, feeds)
    assert logits.shape == (2, 3, 6563)
    assert len(present) == 2 * LAYERS
    assert all(p.shape == (2, 16, 3, 64) and p.dtype == kv_type for p in present)

    speech = np.concatenate([tokens, np.array([[10, 20, 30, 4299, 4299, 4299]])], axis=1)
    waveform = session(model_dir, "conditional_decoder", dtype).run(
        None, {"speech_tokens": speech, "speaker_embeddings": spk, "speaker_features": mel}
    )[0]
    assert waveform.shape == (1, 6 * 960) and waveform.dtype == np.float32


def test_tokenizer_ids(model_dir):
    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    assert tokenizer.get_vocab_size(with_added_tokens=True) == 50_276
    assert tokenizer.token_to_id("<|endoftext|>") == 50_256
    for offset, tag in enumerate(TAGS):
        assert tokenizer.token_to_id(tag) == 50_257 + offset
    ids = tokenizer.encode("Hi [clear throat] there [chuckle]").ids
    assert 50_267 in ids and 50_274 in ids
    plain = tokenizer.encode("An ordinary sentence, with punctuation! And numbers: 12345.").ids
    assert plain and max(plain) < 50_256
    assert tokenizer.decode(plain) == "An ordinary sentence, with punctuation! And numbers: 12345."


# ----- the faithful profile's decoder (S3Gen + HiFT): the same contract at the real cost ----------


@pytest.fixture(scope="module")
def faithful_decoder(tmp_path_factory):
    from chatterbox_server.model.stand_in.graphs import PROFILES, Weights, build_graph, save_graph

    path = tmp_path_factory.mktemp("faithful") / "conditional_decoder.onnx"
    save_graph(build_graph("conditional_decoder", "fp32", PROFILES["faithful"], Weights(0)), path)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def decoder_feeds(prompt: int, new: int, seeds: list[int]) -> dict[str, np.ndarray]:
    rows = [np.random.default_rng(seed) for seed in seeds]
    return {
        "speech_tokens": np.stack([r.integers(0, 6561, prompt + new) for r in rows]).astype(np.int64),
        "speaker_embeddings": np.stack([r.standard_normal(192) for r in rows]).astype(np.float32),
        "speaker_features": np.stack([r.standard_normal((2 * prompt, 80)) for r in rows]).astype(np.float32),
    }


@pytest.mark.slow
def test_the_faithful_decoder_keeps_the_contract_and_batches_row_by_row(faithful_decoder):
    from chatterbox_server.engine.vocoder import spectral_distance_db

    inputs = [(i.name, i.type) for i in faithful_decoder.get_inputs()]
    assert inputs == [(n, t) for n, t, _ in CONDITIONAL_DECODER["inputs"]]
    for prompt, new in ((20, 5), (40, 5), (0, 3)):
        (wave,) = faithful_decoder.run(None, decoder_feeds(prompt, new, [1]))
        assert wave.shape == (1, new * 960) and np.isfinite(wave).all()  # the prompt is cut inside
        assert 0.01 < float(np.sqrt(np.mean(wave**2))) < 0.9  # audible, not clipped
    single = [faithful_decoder.run(None, decoder_feeds(20, 8, [s]))[0][0] for s in (1, 2)]
    again = faithful_decoder.run(None, decoder_feeds(20, 8, [1]))[0][0]
    (batched,) = faithful_decoder.run(None, decoder_feeds(20, 8, [1, 2]))
    spread = spectral_distance_db(single[0], again)  # its own noise: two runs differ slightly
    assert np.abs(single[0] - again).max() > 0 and spread < 0.5
    for row, alone, other in zip(batched, single, single[::-1]):
        assert spectral_distance_db(row, alone) < 2 * spread + 0.5 < spectral_distance_db(row, other)
