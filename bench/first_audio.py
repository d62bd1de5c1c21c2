"""Time to first audio vs total time for a multi-sentence text: whole pieces (synthesize)
and token windows (a chunked request, what /tts streams).

    python -m bench.first_audio --model-dir .cache/stand-in/faithful --dtype q4
"""

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from bench.engine_speed import reference_clip
from chatterbox_server.engine import GenerationRequest, TTSConfig, TTSEngine

TEN_SENTENCES = (
    "Good morning, and welcome to the weekly update. We have a lot to cover today. "
    "First, the new office opens next month. The move will happen over a single weekend. "
    "Second, the budget review is finished. Most teams came in under their targets. "
    "Third, we are hiring two more engineers. Please send referrals my way. "
    "Finally, thank you all for a great quarter [chuckle]. Let's keep it going."
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--text", default=TEN_SENTENCES)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    engine = TTSEngine(TTSConfig(model_dir=args.model_dir, model_dtype=args.dtype))
    voice = engine.encode_audio(reference_clip())
    engine.synthesize("Warm up.", voice)
    result = engine.synthesize(args.text, voice)
    started = time.perf_counter()
    chunk_times = []
    for _ in engine.submit(GenerationRequest(engine.prepare(args.text), voice, chunked=True)):
        chunk_times.append(time.perf_counter() - started)
    print(
        json.dumps(
            {
                "dtype": engine.model_dtype,
                "providers": engine.active_providers,
                "pieces": len(result.pieces),
                "first_piece": result.pieces[0].piece.text,
                "time_to_first_audio_s": round(result.time_to_first_audio_s, 3),
                "token_window_time_to_first_audio_s": round(chunk_times[0], 3),
                "token_window_total_s": round(chunk_times[-1], 3),
                "token_window_chunks": len(chunk_times),
                "total_s": round(result.total_s, 3),
                "audio_s": round(result.audio_duration_s, 3),
                "rtf": round(result.rtf, 3),
                "piece_times_s": [round(p.result.generation_time_s, 3) for p in result.pieces],
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
