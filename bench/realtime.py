"""The realtime socket as a voice agent uses it: an LLM's reply arrives in deltas; how long after
the first sentence's last delta does its first audio arrive, and when is the whole reply spoken?

    python -m bench.realtime --model-dir .cache/stand-in/tiny --dtype fp32 --runs 10
"""

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import soundfile as sf
from websockets.sync.client import connect

from bench.engine_speed import reference_clip
from chatterbox_server.benchmark.server_process import ServerProcess

# An LLM's reply as it streams: the first sentence completes at the fifth delta.
DELTAS = ["Sure,", " I can", " help with", " that.", " ", "What is", " your order", " number?", " "]


def one_reply(url: str) -> tuple[float, float]:
    """(seconds from the first sentence's last delta to its first audio, seconds to the reply's end)."""
    with connect(url, max_size=2**22) as ws:
        ws.send(json.dumps({"type": "config", "voice": "bench", "seed": 1}))
        json.loads(ws.recv())
        started = time.perf_counter()
        for delta in DELTAS[:5]:
            ws.send(json.dumps({"type": "text", "delta": delta}))
        sentence_done = time.perf_counter()
        while not isinstance(ws.recv(), bytes):
            pass
        first_audio = time.perf_counter() - sentence_done
        for delta in DELTAS[5:]:
            ws.send(json.dumps({"type": "text", "delta": delta}))
        ws.send(json.dumps({"type": "close"}))
        for frame in ws:
            if isinstance(frame, str) and json.loads(frame)["type"] == "done":
                break
        return first_audio, time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, default=Path(".cache/stand-in/tiny"))
    parser.add_argument("--dtype", default="fp32")
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        clip = work / "voice.wav"
        sf.write(clip, reference_clip(), 24_000)
        server = ServerProcess(
            args.model_dir.resolve(), work / "v", work / "server.log", ready_timeout_s=300, model_dtype=args.dtype
        )
        try:
            server.register(clip, "bench")
            url = server.url.replace("http://", "ws://") + "/v1/audio/speech/realtime"
            one_reply(url)  # unmeasured: first-call costs
            firsts, totals = zip(*(one_reply(url) for _ in range(args.runs)), strict=True)
        finally:
            server.stop()
    report = {
        "runs": args.runs,
        "first_audio_after_sentence_ms": {
            "p50": round(statistics.median(firsts) * 1000),
            "min": round(min(firsts) * 1000),
            "max": round(max(firsts) * 1000),
        },
        "reply_done_s_p50": round(statistics.median(totals), 3),
    }
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
