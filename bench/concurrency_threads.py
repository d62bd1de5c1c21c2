"""Aggregate decode throughput of N concurrent syntheses for several ONNX Runtime intra-op
thread counts, in one run (compare as ratios; this machine is noisy).

    python -m bench.concurrency_threads --model-dir .cache/stand-in/faithful --dtype q4 --concurrency 2 --threads 0,1
"""

import argparse
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench.engine_speed import DEFAULT_TEXT, reference_clip
from chatterbox_server.engine import GenerationOptions, TTSConfig, TTSEngine


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--threads", default="0,1", help="intra-op thread counts to compare")
    parser.add_argument("--max-new-tokens", type=int, default=100)
    args = parser.parse_args()
    options = GenerationOptions(max_new_tokens=args.max_new_tokens)
    rows = []
    for threads in [int(t) for t in args.threads.split(",")]:
        engine = TTSEngine(TTSConfig(model_dir=args.model_dir, model_dtype=args.dtype, intra_op_threads=threads))
        voice = engine.encode_audio(reference_clip())
        engine.synthesize("Warm up.", voice, options)
        started = time.perf_counter()
        with ThreadPoolExecutor(args.concurrency) as pool:
            jobs = [pool.submit(engine.synthesize, DEFAULT_TEXT, voice, options) for _ in range(args.concurrency)]
            results = [job.result() for job in jobs]
        wall = time.perf_counter() - started
        tokens = sum(r.tokens_generated for r in results)
        rows.append(
            {
                "intra_op_threads": threads,
                "concurrency": args.concurrency,
                "wall_s": round(wall, 2),
                "aggregate_tokens_per_s": round(tokens / wall, 2),
                "mean_rtf": round(sum(r.rtf for r in results) / len(results), 3),
            }
        )
        engine.close()
    base = rows[0]["aggregate_tokens_per_s"]
    for row in rows:
        row["throughput_vs_first"] = round(row["aggregate_tokens_per_s"] / base, 3)
    print(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
