"""Benchmark a running TTS server: RTF under load, and the highest concurrency under RTF 1.

    python benchmark.py --register-voice voice.wav
    python benchmark.py --voice-id ID --concurrency 1,2,4,8,16 --requests 50
    python benchmark.py --voice-id ID --find-max-concurrency
    python benchmark.py --voice-id ID --rate 0.5,1,2 --requests 40      # open loop, Poisson arrivals

RTF is server generation time over audio duration; client RTF is wall latency over audio
duration (it includes queueing). A level passes when p95 RTF < 1 with no errors.
"""

import argparse
import asyncio
import json
import logging
import sys
from datetime import datetime, timezone
from pathlib import Path

import httpx

from chatterbox_server.benchmark.client import DEFAULT_TEXTS, Bench, fetch_server_state, format_report, machine
from chatterbox_server.benchmark.stats import find_max_concurrency, within_real_time


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--server-url", default="http://localhost:8000")
    p.add_argument("--register-voice", type=Path, metavar="WAV", help="register this clip and print its id")
    p.add_argument("--voice-id", help="registered voice to speak with")
    p.add_argument(
        "--concurrency",
        help="closed-loop levels, e.g. 1,2,4,8,16 (default 1,2,4,8 unless only --find-max-concurrency is asked)",
    )
    p.add_argument("--requests", type=int, default=20, help="requests per level")
    p.add_argument("--warmup", type=int, default=2, help="unmeasured requests before measuring")
    p.add_argument("--texts", type=Path, help="one text per line (default: built-in short→long set)")
    p.add_argument("--output", type=Path, help="write every figure here as JSON")
    p.add_argument("--timeout", type=float, default=300.0, help="per-request timeout, seconds")
    p.add_argument("--stream", action="store_true", help="use /tts and time the first audio byte")
    p.add_argument("--rate", help="open loop: Poisson arrivals at these requests/s, e.g. 0.5,1,2")
    p.add_argument("--find-max-concurrency", action="store_true", help="search the max under RTF 1")
    p.add_argument("--max-concurrency-bound", type=int, default=64, help="the search's upper bound")
    p.add_argument("--seed", type=int, default=0, help="seed of the text order and arrival times")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    sweep = args.concurrency or ("" if args.find_max_concurrency else "1,2,4,8")
    args.levels = [int(c) for c in sweep.split(",") if c.strip()]
    args.rates = [float(r) for r in args.rate.split(",")] if args.rate else []
    if min(args.levels, default=1) < 1 or args.requests < 1 or any(r <= 0 for r in args.rates):
        p.error("concurrency, requests and rates must be positive")
    return args


async def run(args) -> int:
    timeout = httpx.Timeout(args.timeout, connect=10.0)
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    async with httpx.AsyncClient(base_url=args.server_url, timeout=timeout, limits=limits) as client:
        if args.register_voice:
            with open(args.register_voice, "rb") as f:
                r = await client.post("/voices/register", files={"voice_file": (args.register_voice.name, f)})
            if r.status_code != 200:
                print(f"error: registration failed ({r.status_code}): {r.text}", file=sys.stderr)
                return 2
            print(r.json()["voice_id"])
            if not args.voice_id:
                return 0
        if not args.voice_id:
            print("error: --voice-id is required (register one with --register-voice)", file=sys.stderr)
            return 2
        texts = DEFAULT_TEXTS
        if args.texts:
            texts = tuple(line.strip() for line in args.texts.read_text().splitlines() if line.strip())
        bench = Bench(args, client, list(texts))
        before = await fetch_server_state(client)
        for _ in range(args.warmup):
            await bench.one(bench.next_text())

        levels: list[dict] = []
        search = None
        if args.rates:
            for rate in args.rates:
                with bench.progress(f"{rate:g} req/s") as bar:
                    levels.append(await bench.open_loop(rate, bar))
        else:
            for c in args.levels:
                await bench.measure(c)
            if args.find_max_concurrency:

                async def passes(c: int) -> bool:
                    return within_real_time(await bench.measure(c))

                found = await find_max_concurrency(passes, args.max_concurrency_bound)
                search = {
                    "max_concurrency": found.max_concurrency,
                    "bound_reached": found.bound_reached,
                    "bound": args.max_concurrency_bound,
                    "tried": {str(k): v for k, v in found.tried.items()},
                }
            levels = [bench.levels[c] for c in sorted(bench.levels)]
        after = await fetch_server_state(client)

    report = format_report(levels, search)
    print(report)
    if args.output:
        arguments = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
        document = {
            "timestamp": datetime.now(timezone.utc).isoformat(),
            "arguments": arguments,
            "machine": machine(),
            "server": before["health"],
            "levels": levels,
            "max_concurrency_search": search,
            "metrics_before": {"json": before["metrics_json"], "text": before["metrics_text"]},
            "metrics_after": {"json": after["metrics_json"], "text": after["metrics_text"]},
            "report": report,
        }
        args.output.write_text(json.dumps(document, indent=2, default=str))
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    try:
        return asyncio.run(run(args))
    except httpx.ConnectError as e:
        print(f"error: cannot reach {args.server_url}: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
