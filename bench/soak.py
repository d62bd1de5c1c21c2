"""Soak: many mixed requests at steady concurrency; the server's memory must level off.

Prints the server's RSS at start, after the warm-up share of requests, every `--every` requests
and at the end, with the status counts and the growth after warm-up (exit 1 past
`--max-growth-pct`, or on any status but 200). Requests rotate through /tts (streamed and whole),
/tts/json, /v1/audio/speech (wav, mp3, sse) and a registration every so often.

    python -m bench.soak --model-dir .cache/stand-in/tiny --requests 500 --concurrency 4
    python -m bench.soak --model-dir .cache/stand-in/faithful --requests 2000 --warmup 200 --setting model_dtype=q4
"""

import argparse
import asyncio
import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx
import soundfile as sf

from bench.engine_speed import reference_clip
from chatterbox_server.benchmark.server_process import ServerProcess

TEXTS = (
    "Hello there.",
    "Thanks for calling, how can I help you today?",
    "The quick brown fox jumps over the lazy dog. Then it naps [sigh] in the sun.",
)


async def one(client: httpx.AsyncClient, index: int, clip: bytes) -> int:
    text = TEXTS[index % len(TEXTS)]
    kind = index % 7
    if kind == 0:
        r = await client.post("/tts", data={"text": text, "voice_id": "bench", "stream": "false"})
    elif kind == 1:
        async with client.stream("POST", "/tts", data={"text": text, "voice_id": "bench"}) as r:
            async for _ in r.aiter_bytes():
                pass
    elif kind == 2:
        r = await client.post("/tts/json", json={"text": text, "voice_id": "bench", "temperature": 0.8, "seed": index})
    elif kind in (3, 4):
        fmt = "wav" if kind == 3 else "mp3"
        r = await client.post(
            "/v1/audio/speech", json={"model": "tts-1", "input": text, "voice": "bench", "response_format": fmt}
        )
    elif kind == 5:
        r = await client.post(
            "/v1/audio/speech",
            json={"model": "tts-1", "input": text, "voice": "bench", "response_format": "pcm", "stream_format": "sse"},
        )
    else:
        r = await client.post("/voices/register", files={"voice_file": clip}, data={"voice_id": f"soak-{index % 5}"})
    return r.status_code


async def run(url: str, requests: int, concurrency: int, clip: bytes, checkpoint, warmup: int, every: int) -> Counter:
    statuses: Counter = Counter()
    counter = iter(range(requests))
    async with httpx.AsyncClient(base_url=url, timeout=300) as client:

        async def worker() -> None:
            for index in counter:
                statuses[await one(client, index, clip)] += 1
                if index == warmup:
                    checkpoint("after_warmup")
                if every and index and index % every == 0:
                    checkpoint(str(index))

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return statuses


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, default=Path(".cache/stand-in/tiny"))
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--every", type=int, default=100, help="RSS every this many requests (0: never)")
    parser.add_argument("--max-growth-pct", type=float, default=5.0, help="RSS growth after warm-up that fails")
    parser.add_argument("--max-new-tokens", type=int, default=20, help="the server's cap: many short requests")
    parser.add_argument(
        "--setting", action="append", default=[], metavar="NAME=VALUE", help="a server setting (repeatable)"
    )
    args = parser.parse_args()
    settings = dict(item.split("=", 1) for item in args.setting)
    settings.setdefault("max_new_tokens", str(args.max_new_tokens))
    work = Path(tempfile.mkdtemp(prefix="soak-"))
    clip_path = work / "voice.wav"
    sf.write(clip_path, reference_clip(seconds=6.0), 24_000)  # a short voice keeps the KV, and the run, small
    server = ServerProcess(
        args.model_dir.resolve(), work / "voices", work / "server.log", ready_timeout_s=300, **settings
    )
    rss: dict[str, float] = {}
    started = time.perf_counter()
    try:
        server.register(clip_path, "bench")
        rss["start"] = round(server.rss_mb(), 1)
        statuses = asyncio.run(
            run(
                server.url,
                args.requests,
                args.concurrency,
                clip_path.read_bytes(),
                lambda name: rss.__setitem__(name, round(server.rss_mb(), 1)),
                args.warmup,
                args.every,
            )
        )
        rss["end"] = round(server.rss_mb(), 1)
    finally:
        server.stop()
    growth_mb = rss["end"] - rss["after_warmup"]
    growth_pct = 100 * growth_mb / rss["after_warmup"]
    report = {
        "requests": args.requests,
        "concurrency": args.concurrency,
        "settings": settings,
        "wall_s": round(time.perf_counter() - started, 1),
        "statuses": dict(sorted(statuses.items())),
        "rss_mb": rss,
        "growth_after_warmup_mb": round(growth_mb, 1),
        "growth_after_warmup_pct": round(growth_pct, 2),
    }
    print(json.dumps(report))
    return 0 if set(statuses) <= {200} and growth_pct <= args.max_growth_pct else 1


if __name__ == "__main__":
    sys.exit(main())
