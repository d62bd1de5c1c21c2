"""Decode-step cost against batch size: ms per step, ms per token and aggregate tokens/s.

Builds a batch of B rows at a realistic context (a 10 s voice's conditioning + a sentence, ~410
positions), then times decode steps through the engine's own batch code (KV on the host, or on
the device with IO binding). This is what `max_batch_size` trades: a step reads the weights once
for every row, so until compute saturates, more rows cost little more time. The peak resident
size after each batch (ascending batches: each row adds its KV, past and present, to the peak) is
what `max_batch_size` costs in memory (README "Memory").

    python -m bench.batch_steps --model-dir .cache/stand-in/faithful --dtype fp32 --batch 1,2,4,8,16
    python -m bench.batch_steps --model-dir DIR --dtype fp16 --device cuda --batch 1,8,32,64
"""

import argparse
import json
import resource
import statistics
import sys
import time
from pathlib import Path

from bench.engine_speed import reference_clip
from chatterbox_server.engine import GenerationOptions, GenerationRequest, TTSConfig, TTSEngine
from chatterbox_server.engine.outputs import SyncOutputs

TEXT = "The quick brown fox jumps over the lazy dog, and then it naps in the afternoon sun."


def measure(engine: TTSEngine, batch: int, steps: int) -> dict:
    core = engine.core
    voice = engine.encode_audio(reference_clip(), "bench-voice")
    plan = engine.prepare(TEXT, GenerationOptions(max_new_tokens=steps + 4), max_chars=10_000, first_max_chars=None)
    for _ in range(batch):
        core.add_request(GenerationRequest(plan, voice), SyncOutputs())
    core.step()  # admission: prefill every row, first tokens
    assert core.running_count() == batch, "max_batch_size is below the batch asked for"
    times = []
    for _ in range(steps):
        started = time.perf_counter()
        core.step()
        times.append(time.perf_counter() - started)
    while core.running_count():
        core.step()
    step_s = statistics.median(times)
    return {
        "batch": batch,
        "ms_per_step": round(step_s * 1000, 2),
        "ms_per_token": round(step_s * 1000 / batch, 2),
        "tokens_per_s": round(batch / step_s, 1),
        "audio_s_per_s": round(batch / step_s / 25, 2),
        "conditioning_positions": int(voice.audio_features.shape[1]),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),  # Linux: KiB
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--dtype", default="fp32")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--batch", default="1,2,4,8,16")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    batches = [int(b) for b in args.batch.split(",")]
    engine = TTSEngine(
        TTSConfig(model_dir=args.model_dir, model_dtype=args.dtype, device=args.device, max_batch_size=max(batches))
    )
    rows = [measure(engine, b, args.steps) for b in batches]
    engine.close()
    header = "| batch | ms / step | ms / token | tokens/s | audio s / s | peak RSS MiB |\n|---|---|---|---|---|---|"
    table = "\n".join(
        [header]
        + [
            f"| {r['batch']} | {r['ms_per_step']} | {r['ms_per_token']} | {r['tokens_per_s']} | {r['audio_s_per_s']} | {r['peak_rss_mib']} |"
            for r in rows
        ]
    )
    print(f"{args.dtype} on {engine.active_providers[0]} (KV on device: {engine.kv_on_device})")
    print(table)
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
