"""Time TTSEngine syntheses on a model directory (real or stand-in): prefill, decode tokens/s, RTF.

    python -m bench.engine_speed --model-dir .cache/stand-in/tiny --dtype fp32 --runs 3
    python -m bench.engine_speed --profile faithful --dtype q4      # generates the stand-in first

Speed is measured here, never asserted in unit tests.
"""

import argparse
import json
import logging
import os
import platform
import statistics
import sys
from pathlib import Path

import numpy as np

from chatterbox_server.engine import TTSConfig, TTSEngine

logger = logging.getLogger(__name__)
DEFAULT_TEXT = "Hello there, this is a quick check of how fast the engine speaks a sentence."


def reference_clip(seconds: float = 10.0, sample_rate: int = 24_000) -> np.ndarray:
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    return (0.3 * np.sin(2 * np.pi * 150 * t) + 0.1 * np.sin(2 * np.pi * 450 * t)).astype(np.float32)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path)
    parser.add_argument("--profile", choices=["tiny", "faithful"], help="generate this stand-in under .cache/")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--text", default=DEFAULT_TEXT)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    model_dir = args.model_dir
    if model_dir is None:
        from chatterbox_server.model.stand_in import ALL_DTYPES, make_stand_in_model

        profile = args.profile or "tiny"
        model_dir = Path(".cache/stand-in") / profile
        dtypes = ("fp32", "q4") if profile == "faithful" else ALL_DTYPES
        if not (model_dir / "tokenizer.json").is_file():
            make_stand_in_model(model_dir, profile=profile, dtypes=dtypes)

    engine = TTSEngine(TTSConfig(model_dir=model_dir, model_dtype=args.dtype, intra_op_threads=args.threads))
    voice = engine.encode_audio(reference_clip())
    engine.synthesize(args.text, voice)  # warm-up
    results = [engine.synthesize(args.text, voice) for _ in range(args.runs)]
    text_tokens = engine.prepare(args.text).text_tokens
    figures = {
        "model_dir": str(model_dir),
        "dtype": engine.model_dtype,
        "providers": engine.active_providers,
        "machine": f"{platform.machine()} {platform.processor()} cores={os.cpu_count()}",
        "text_tokens": text_tokens,
        "prompt_tokens": int(voice.audio_features.shape[1] + text_tokens),
        "tokens_generated": results[0].tokens_generated,
        "audio_s": round(results[0].audio_duration_s, 3),
        "total_s_median": round(statistics.median(r.generation_time_s for r in results), 4),
        "prefill_s_median": round(statistics.median(r.timings.prefill_s for r in results), 4),
        "decode_s_median": round(statistics.median(r.timings.decode_s for r in results), 4),
        "vocoder_s_median": round(statistics.median(r.timings.vocoder_s for r in results), 4),
        "decode_tokens_per_s": round(statistics.median(r.timings.decode_tokens_per_s for r in results), 2),
        "rtf_median": round(statistics.median(r.rtf for r in results), 4),
    }
    print(json.dumps(figures, indent=2))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
