"""What holding back the runaway guard's window from the vocoder would cost first audio.

A loop or a silence run is caught once it has lasted `WINDOW_TOKENS` (50 = 2 s, engine/runaway.py).
To drop every token of it, the vocoder stage would have to keep the newest 50 tokens of every
stream undecoded, so a request's first window (12 tokens) could leave only once 62 tokens exist:
its first audio would wait for 50 more decode steps. This prints that wait (50 × the measured
step time at each batch size) beside the first audio a streamed request gets today.

    python -m bench.runaway_holdback --model-dir .cache/stand-in/faithful --dtype fp32 --batch 1,8
"""

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from bench.batch_steps import measure
from bench.engine_speed import reference_clip
from chatterbox_server.engine import GenerationRequest, TTSConfig, TTSEngine
from chatterbox_server.engine.runaway import WINDOW_TOKENS

TEXT = "The quick brown fox jumps over the lazy dog, and then it naps in the afternoon sun."


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--dtype", default="fp32")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--batch", default="1,8")
    parser.add_argument("--steps", type=int, default=12)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    batches = [int(b) for b in args.batch.split(",")]
    config = TTSConfig(
        model_dir=args.model_dir, model_dtype=args.dtype, device=args.device, max_batch_size=max(batches)
    )
    engine = TTSEngine(config)
    report: dict = {"window_tokens": WINDOW_TOKENS, "first_window_tokens": config.vocoder.first_window_tokens}
    for batch in batches:  # steps driven by hand, before the loop thread starts
        step = measure(engine, batch, args.steps)
        report[f"batch_{batch}"] = {
            "ms_per_step": step["ms_per_step"],
            "hold_back_adds_to_first_audio_s": round(WINDOW_TOKENS * step["ms_per_step"] / 1000, 2),
        }
    voice = engine.encode_audio(reference_clip())
    engine.synthesize("Warm up.", voice, chunked=True)
    started = time.perf_counter()
    for _ in engine.submit(GenerationRequest(engine.prepare(TEXT), voice, chunked=True)):
        report["first_audio_s_today_batch_1"] = round(time.perf_counter() - started, 2)
        break
    engine.close()
    json.dump(report, sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
