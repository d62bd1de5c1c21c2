"""Generate a stand-in for Resemble AI's Chatterbox Turbo ONNX release.

The four graphs (speech_encoder, embed_tokens, language_model, conditional_decoder) follow the
real release's contract exactly -- input/output names and order, dtypes, ranks, symbolic dims,
file layout (``onnx/<graph><suffix>.onnx`` + ``.onnx_data``) and tokenizer ids -- but hold
deterministic random weights and a few hand-wired behaviours the test suite relies on:

* audio_features channel 1023 is 1.0 (conditioning marker), embed_tokens channel 1023 is 0.0;
* the language model is a real pre-LN GPT-2-style decoder (causal attention over the KV cache and
  the attention mask) that also carries a *stop rule*: layer 0 stores bookkeeping in the value
  cache (head 0, channel 0 = text length of the call, channel 1 = marker) and every call forces
  STOP once the 1-based index of the predicted token reaches MIN_TOKENS + 6 * n_text; the tiny
  profile adds a position-dependent term to the speech logits, so that greedy decoding of its
  random weights does not settle into one token or a short cycle (Profile.variety);
* the decoder cuts the reference tokens (P = feature_frames // 2) and emits 960 samples of a
  token-dependent tone per remaining token (silence for SILENCE), plus a little random noise.

Profiles: ``tiny`` (inner width 32, 24 layers sharing one weight set; fast tests) and
``faithful`` (GPT-2 medium shapes for the language model and the embedding table; ~1.5 GB fp32).
``--behaviour never_stop`` (STOP never comes) or ``loop`` (never stops, and repeats three tokens
from token 40 on) changes only the language model's rule: a runaway model, for the runaway guards.
Weights are drawn per name from ``numpy.random.default_rng([seed, crc32(name)])``, so every dtype
is a conversion of the same float32 weights and the output is byte-for-byte reproducible.

Usage: ``python -m chatterbox_server.model.stand_in OUT_DIR [--profile tiny|faithful]
[--dtypes fp32,fp16,q8,q4,q4f16] [--seed N] [--behaviour stop|never_stop|loop]``
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path

from chatterbox_server.model.stand_in.graphs import (
    ALL_DTYPES,
    BEHAVIOURS,
    DTYPE_SUFFIX,
    GENERATOR_VERSION,
    GRAPHS,
    HEAD_DIM,
    HIDDEN,
    LOOP_PATTERN,
    LOOP_START,
    MAX_COND_FRAMES,
    MAX_POSITIONS,
    MAX_PROMPT_TOKENS,
    MEL_BINS,
    MIN_TOKENS,
    N_HEADS,
    N_LAYERS,
    PROFILES,
    SAMPLE_RATE,
    SAMPLES_PER_TOKEN,
    SILENCE,
    SPEAKER_DIM,
    SPEECH_VOCAB,
    START_SPEECH,
    STOP_SPEECH,
    TEXT_VOCAB,
    TOKENS_PER_TEXT_TOKEN,
    Weights,
    build_graph,
    save_graph,
)
from chatterbox_server.model.stand_in.tokenizer import _tokenizer_config, build_tokenizer

__all__ = ["ALL_DTYPES", "DEFAULT_TINY_DIR", "PROFILES", "ensure_tiny_stand_in", "main", "make_stand_in_model"]

DEFAULT_TINY_DIR = Path(".cache/stand-in/tiny")  # where --stand-in generates it (server and main.py)

logger = logging.getLogger(__name__)


def _configs(profile: str, dtypes: list[str], seed: int, behaviour: str = "stop") -> dict[str, dict]:
    config = {
        "model_type": "chatterbox_turbo_stand_in",
        "architectures": ["ChatterboxTurboStandIn"],
        "stand_in": True,
        "stand_in_profile": profile,
        "generator_version": GENERATOR_VERSION,
        "sampling_rate": SAMPLE_RATE,
        "samples_per_speech_token": SAMPLES_PER_TOKEN,
        "start_speech_token": START_SPEECH,
        "stop_speech_token": STOP_SPEECH,
        "silence_token": SILENCE,
        "speech_vocab_size": SPEECH_VOCAB,
        "text_vocab_size": TEXT_VOCAB,
        "hidden_size": HIDDEN,
        "num_hidden_layers": N_LAYERS,
        "num_attention_heads": N_HEADS,
        "num_key_value_heads": N_HEADS,
        "head_dim": HEAD_DIM,
        "max_position_embeddings": MAX_POSITIONS,
        "speaker_embedding_size": SPEAKER_DIM,
        "mel_bins": MEL_BINS,
        "max_conditioning_frames": MAX_COND_FRAMES,
        "max_prompt_tokens": MAX_PROMPT_TOKENS,
        "stand_in_inner_width": PROFILES[profile].lm_width,
        "stand_in_stop_rule": {
            "min_tokens": MIN_TOKENS,
            "tokens_per_text_token": TOKENS_PER_TEXT_TOKEN,
            "description": "STOP is forced as generated token number min_tokens + "
            "tokens_per_text_token * n_text (n_text = masked-in prompt rows whose "
            "embedding channel 1023 is 0); START is always suppressed.",
        },
    }
    if behaviour != "stop":  # the default files stay as they were
        config["stand_in_behaviour"] = {
            "behaviour": behaviour,
            "description": "STOP is never generated"
            + (f"; from token {LOOP_START} on the tokens repeat {list(LOOP_PATTERN)}" if behaviour == "loop" else ""),
        }
    generation = {
        "max_new_tokens": 1024,
        "repetition_penalty": 1.2,
        "do_sample": False,
        "bos_token_id": START_SPEECH,
        "eos_token_id": STOP_SPEECH,
        "temperature": 0.8,
        "top_k": 1000,
        "top_p": 0.95,
    }
    preprocessor = {
        "sampling_rate": SAMPLE_RATE,
        "feature_size": 1,
        "padding_value": 0.0,
        "return_attention_mask": False,
    }
    stand_in = {
        "stand_in": True,
        "profile": profile,
        "generator_version": GENERATOR_VERSION,
        "dtypes": dtypes,
        "seed": seed,
    }
    if behaviour != "stop":
        stand_in["behaviour"] = behaviour
    return {
        "config.json": config,
        "generation_config.json": generation,
        "preprocessor_config.json": preprocessor,
        "tokenizer_config.json": _tokenizer_config(),
        "stand_in.json": stand_in,
    }


# ----------------------------------------------------------------------------- entry points
def make_stand_in_model(
    out_dir, profile: str = "tiny", dtypes: Sequence[str] = ALL_DTYPES, seed: int = 0, behaviour: str = "stop"
) -> Path:
    """Write the stand-in model (tokenizer, configs, onnx/<graph><suffix>.onnx + .onnx_data)
    to out_dir and return its path. Same arguments -> byte-identical files. behaviour: the
    language model's rule (graphs.BEHAVIOURS; "stop" is the stop rule, the others run away)."""
    if isinstance(dtypes, str):
        dtypes = [d.strip() for d in dtypes.split(",") if d.strip()]
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose from {sorted(PROFILES)}")
    if behaviour not in BEHAVIOURS:
        raise ValueError(f"unknown behaviour {behaviour!r}; choose from {list(BEHAVIOURS)}")
    bad = [d for d in dtypes if d not in DTYPE_SUFFIX]
    if bad:
        raise ValueError(f"unknown dtypes {bad}; choose from {list(DTYPE_SUFFIX)}")
    out = Path(out_dir)
    (out / "onnx").mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    build_tokenizer().save(str(out / "tokenizer.json"), pretty=True)
    for name, content in _configs(profile, list(dtypes), seed, behaviour).items():
        (out / name).write_text(json.dumps(content, indent=2) + "\n")
    prof, weights = dataclasses.replace(PROFILES[profile], behaviour=behaviour), Weights(seed)
    for dtype in dtypes:
        for graph in GRAPHS:
            path = out / "onnx" / f"{graph}{DTYPE_SUFFIX[dtype]}.onnx"
            save_graph(build_graph(graph, dtype, prof, weights), path)
            size = path.with_name(path.name + "_data").stat().st_size
            logger.info("wrote %s (%.1f MB)", path, size / 1e6)
    logger.info("stand-in model (%s; %s) ready in %.1f s", profile, ",".join(dtypes), time.perf_counter() - t0)
    return out


def ensure_tiny_stand_in(out_dir: Path = DEFAULT_TINY_DIR) -> Path:
    """The tiny stand-in (fp32) at out_dir, generated on first use (what --stand-in serves)."""
    if not (Path(out_dir) / "tokenizer.json").is_file():
        logger.warning("generating the tiny stand-in model in %s", out_dir)
        make_stand_in_model(out_dir, profile="tiny", dtypes=("fp32",))
    return Path(out_dir)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--profile", choices=sorted(PROFILES), default="tiny")
    parser.add_argument(
        "--dtypes", default=",".join(ALL_DTYPES), help="comma-separated subset of " + ",".join(ALL_DTYPES)
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--behaviour", choices=BEHAVIOURS, default="stop", help="the language model's rule (others run away)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    make_stand_in_model(args.out_dir, args.profile, args.dtypes, args.seed, args.behaviour)
    return 0
