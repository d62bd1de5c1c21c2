"""Overload: bursts at 2-4x capacity. Every request beyond slots + queue must get 429 at once with
Retry-After; the counts the clients saw must agree with /metrics.

    python -m bench.overload --model-dir .cache/stand-in/tiny --slots 2 --queue 2 --bursts 8,12,16
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
from prometheus_client.parser import text_string_to_metric_families

from bench.engine_speed import reference_clip
from chatterbox_server.benchmark.server_process import ServerProcess

TEXT = "Thanks for calling, how can I help you today?"


def rejected(metrics_text: str, reason: str) -> float:
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            if sample.name == "tts_requests_rejected_total" and sample.labels.get("reason") == reason:
                return sample.value
    return 0.0


async def burst(url: str, size: int) -> dict:
    async with httpx.AsyncClient(base_url=url, timeout=300, limits=httpx.Limits(max_connections=None)) as client:
        before = (await client.get("/metrics")).text

        async def one() -> tuple[int, float, bool]:
            started = time.perf_counter()
            r = await client.post("/tts/json", json={"text": TEXT, "voice_id": "bench"})
            return r.status_code, time.perf_counter() - started, "retry-after" in r.headers

        outcomes = await asyncio.gather(*(one() for _ in range(size)))
        after = (await client.get("/metrics")).text
    statuses = Counter(status for status, _, _ in outcomes)
    refused = [(latency, retry) for status, latency, retry in outcomes if status == 429]
    return {
        "burst": size,
        "statuses": dict(sorted(statuses.items())),
        "429_with_retry_after": sum(retry for _, retry in refused),
        "429_slowest_s": round(max((latency for latency, _ in refused), default=0.0), 3),
        "metrics_queue_full_delta": rejected(after, "queue_full") - rejected(before, "queue_full"),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, default=Path(".cache/stand-in/tiny"))
    parser.add_argument("--slots", type=int, default=2)
    parser.add_argument("--queue", type=int, default=2)
    parser.add_argument("--bursts", default="8,12,16")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="overload-"))
    clip = work / "voice.wav"
    sf.write(clip, reference_clip(), 24_000)
    server = ServerProcess(
        args.model_dir.resolve(),
        work / "voices",
        work / "server.log",
        ready_timeout_s=300,
        max_concurrent_requests=args.slots,
        max_queue=args.queue,
    )
    try:
        server.register(clip, "bench")
        rows = [asyncio.run(burst(server.url, int(size))) for size in args.bursts.split(",")]
    finally:
        server.stop()
    capacity = args.slots + args.queue
    for row in rows:
        row["capacity"] = capacity
        row["holds"] = (
            row["statuses"].get(429, 0) == max(0, row["burst"] - capacity)
            and row["429_with_retry_after"] == row["statuses"].get(429, 0)
            and row["metrics_queue_full_delta"] == row["statuses"].get(429, 0)
        )
        print(json.dumps(row))
    return 0 if all(r["holds"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
