"""The benchmark client: closed- and open-loop load over HTTP, per-request figures, the report.

RTF is server generation time over audio duration; client RTF is wall latency over audio
duration (it includes queueing). A level passes when p95 RTF < 1 with no errors.
"""

import asyncio
import logging
import os
import platform
import random
import sys
import time

import httpx
from tqdm import tqdm

from chatterbox_server.benchmark.stats import RequestResult, summarize, within_real_time

logger = logging.getLogger(__name__)

SAMPLE_RATE_HZ = 24_000
WAV_HEADER_BYTES = 44  # the streamed WAV: one header, then 16-bit mono PCM

DEFAULT_TEXTS = (
    "Hello there!",
    "Thanks for calling, how can I help you today?",
    "Hi there, Sarah here from MochaFone calling you back [chuckle], have you got one minute to chat?",
    "The quick brown fox jumps over the lazy dog, and then it naps in the afternoon sun.",
    "Before we begin, please make sure your microphone is muted. Today we will walk through the "
    "quarterly results, then open the floor for questions from the team.",
    "Once upon a time, in a small village at the edge of a great forest, there lived an old "
    "clockmaker who could fix anything at all, except, as it turned out, his own broken heart. "
    "Every morning he opened his shop at seven and waited for the bell above the door to ring.",
)


class Bench:
    def __init__(self, args, client: httpx.AsyncClient, texts: list[str]):
        self.args = args
        self.client = client
        self.texts = texts
        self.rng = random.Random(args.seed)
        self.levels: dict[int, dict] = {}
        # behind the deploy's load balancer, one voice's requests go to one replica (its prefix cache stays warm)
        self.affinity = {"X-Voice-ID": args.voice_id} if args.voice_id else {}

    def next_text(self) -> str:
        return self.rng.choice(self.texts)

    async def one(self, text: str) -> RequestResult:
        started = time.perf_counter()
        try:
            if self.args.stream:
                return await self._one_streamed(text, started)
            r = await self.client.post(
                "/tts/json", json={"text": text, "voice_id": self.args.voice_id}, headers=self.affinity
            )
            latency = time.perf_counter() - started
            if r.status_code != 200:
                return RequestResult(r.status_code, latency)
            body = r.json()
            return RequestResult(
                200, latency, body["audio_duration"], body["generation_time"], tokens=body["tokens_generated"]
            )
        except httpx.TimeoutException:
            return RequestResult("timeout", time.perf_counter() - started)
        except httpx.HTTPError as e:
            return RequestResult(type(e).__name__, time.perf_counter() - started)

    async def _one_streamed(self, text: str, started: float) -> RequestResult:
        """A streamed /tts: the audio's length is counted from the PCM received, and the time
        to its last byte stands in for generation time (no header can carry it up front)."""
        first, size = None, 0
        form = {"text": text, "voice_id": self.args.voice_id}
        async with self.client.stream("POST", "/tts", data=form, headers=self.affinity) as r:
            async for chunk in r.aiter_bytes():
                if first is None and chunk:
                    first = time.perf_counter() - started
                size += len(chunk)
            latency = time.perf_counter() - started
            if r.status_code != 200:
                return RequestResult(r.status_code, latency)
        audio_s = max(size - WAV_HEADER_BYTES, 0) / (2 * SAMPLE_RATE_HZ)
        return RequestResult(200, latency, audio_s, latency, first_audio_s=first)

    async def closed_loop(self, concurrency: int, progress) -> dict:
        """`requests` requests with `concurrency` of them in flight at all times."""
        todo = [self.next_text() for _ in range(self.args.requests)]
        results: list[RequestResult] = []

        async def worker():
            while todo:
                results.append(await self.one(todo.pop()))
                progress.update(1)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        level = summarize(results, time.perf_counter() - started)
        return {"mode": "closed", "concurrency": concurrency, **level}

    async def open_loop(self, rate: float, progress) -> dict:
        """`requests` arrivals spaced by exponential gaps of mean 1/rate, whatever is in flight."""
        results: list[RequestResult] = []
        peak, in_flight = 0, 0

        async def send(text):
            nonlocal in_flight, peak
            in_flight += 1
            peak = max(peak, in_flight)
            results.append(await self.one(text))
            in_flight -= 1
            progress.update(1)

        started = time.perf_counter()
        tasks = []
        for _ in range(self.args.requests):
            tasks.append(asyncio.create_task(send(self.next_text())))
            await asyncio.sleep(self.rng.expovariate(rate))
        await asyncio.gather(*tasks)
        level = summarize(results, time.perf_counter() - started)
        return {"mode": "open", "rate_rps": rate, "concurrency": peak, **level}

    async def measure(self, concurrency: int) -> dict:
        if concurrency not in self.levels:
            with self.progress(f"concurrency {concurrency}") as bar:
                self.levels[concurrency] = await self.closed_loop(concurrency, bar)
        return self.levels[concurrency]

    def progress(self, label: str):
        return tqdm(total=self.args.requests, desc=label, disable=self.args.quiet, file=sys.stderr, leave=False)


async def fetch_server_state(client: httpx.AsyncClient) -> dict:
    health = await client.get("/health")
    summary = await client.get("/metrics", params={"format": "json"})
    text = await client.get("/metrics")
    return {"health": health.json(), "metrics_json": summary.json(), "metrics_text": text.text}


def fmt(value: float | None, width: int, spec: str, suffix: str = "") -> str:
    return f"{'-':>{width + len(suffix)}}" if value is None else f"{value:>{width}{spec}}{suffix}"


def format_report(levels: list[dict], search: dict | None) -> str:
    closed = [lv for lv in levels if lv["mode"] == "closed" and lv["successful"]]
    lines = []
    if closed:
        best = min(closed, key=lambda lv: lv["rtf_mean"])
        lines.append(f"Optimal concurrency (lowest mean RTF): {best['concurrency']}")
    if search is not None:
        bound_note = " (the search bound; more may pass)" if search["bound_reached"] else ""
        lines.append(f"Max concurrency with RTF < 1.0: {search['max_concurrency']}{bound_note}")
    elif closed:
        passing = [lv["concurrency"] for lv in closed if within_real_time(lv)]
        lines.append(f"Max concurrency with RTF < 1.0: {max(passing) if passing else 'none'} (of the levels run)")
    lines.append(
        f"{'Conc':>6} | {'RTF Mean':>10} | {'RTF P95':>10} | {'Throughput':>12} | {'Audio/s':>10} | "
        f"{'Client RTF':>10} | {'Lat P95':>8} | {'TTFA P50':>8} | Errors"
    )
    for lv in sorted(levels, key=lambda lv: (lv["mode"], lv.get("rate_rps", 0), lv["concurrency"])):
        label = f"{lv['concurrency']:>6}" if lv["mode"] == "closed" else f"{lv['rate_rps']:>4g}/s"
        errors = ", ".join(f"{k}×{v}" for k, v in lv["errors"].items()) or "-"
        lines.append(
            f"{label} | {fmt(lv['rtf_mean'], 10, '.3f')} | {fmt(lv['rtf_p95'], 10, '.3f')} | "
            f"{fmt(lv['throughput_rps'], 10, '.2f', '/s')} | {fmt(lv['audio_s_per_wall_s'], 9, '.1f', 'x')} | "
            f"{fmt(lv['client_rtf_p50'], 10, '.3f')} | {fmt(lv['latency_p95_s'], 7, '.2f', 's')} | "
            f"{fmt(lv['first_audio_p50_s'], 7, '.3f', 's')} | {errors}"
        )
    return "\n".join(lines)


def machine() -> dict:
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
    }
