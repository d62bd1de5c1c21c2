"""Benchmark arithmetic: per-request results → per-level figures, and the max-concurrency search.
Pure functions (no HTTP), so they are tested against hand-computed cases."""

import math
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

RTF_LIMIT = 1.0  # real time: generation must not take longer than the audio lasts


@dataclass(frozen=True)
class RequestResult:
    """One request as the client saw it. status is the HTTP code, or an error name."""

    status: int | str
    latency_s: float  # request sent → response fully read
    audio_s: float = 0.0  # server-reported audio duration
    generation_s: float = 0.0  # server-reported generation time
    first_audio_s: float | None = None  # request sent → first audio byte (streaming only)
    tokens: int = 0

    @property
    def ok(self) -> bool:
        return self.status == 200 and self.audio_s > 0


def percentile(values: list[float], q: float) -> float | None:
    """q-th percentile (0..100) with linear interpolation between ranks (numpy's default);
    None for no values (JSON has no NaN)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def summarize(results: list[RequestResult], wall_s: float) -> dict:
    """Figures for one load level. RTF = server generation time / audio duration; client RTF =
    wall latency / audio duration (includes queueing and transfer)."""
    ok = [r for r in results if r.ok]
    rtf = [r.generation_s / r.audio_s for r in ok]
    client_rtf = [r.latency_s / r.audio_s for r in ok]
    latency = [r.latency_s for r in ok]
    first_audio = [r.first_audio_s for r in ok if r.first_audio_s is not None]
    audio_total = sum(r.audio_s for r in ok)
    errors = Counter(str(r.status) for r in results if not r.ok)
    return {
        "requests": len(results),
        "successful": len(ok),
        "failed": len(results) - len(ok),
        "errors": dict(sorted(errors.items())),
        "wall_s": wall_s,
        "rtf_mean": mean(rtf),
        "rtf_p50": percentile(rtf, 50),
        "rtf_p95": percentile(rtf, 95),
        "client_rtf_mean": mean(client_rtf),
        "client_rtf_p50": percentile(client_rtf, 50),
        "client_rtf_p95": percentile(client_rtf, 95),
        "latency_p50_s": percentile(latency, 50),
        "latency_p95_s": percentile(latency, 95),
        "latency_p99_s": percentile(latency, 99),
        "first_audio_p50_s": percentile(first_audio, 50),
        "first_audio_p95_s": percentile(first_audio, 95),
        "throughput_rps": len(ok) / wall_s if wall_s > 0 else None,
        "audio_s_per_wall_s": audio_total / wall_s if wall_s > 0 else None,
        "audio_s_total": audio_total,
        "tokens_total": sum(r.tokens for r in ok),
    }


def within_real_time(level: dict) -> bool:
    """A level passes when every request succeeded and p95 RTF stays under 1."""
    return level["failed"] == 0 and level["successful"] > 0 and level["rtf_p95"] < RTF_LIMIT


@dataclass
class SearchResult:
    max_concurrency: int  # 0 when even concurrency 1 fails
    bound_reached: bool  # the search stopped at the bound while still passing
    tried: dict[int, bool] = field(default_factory=dict)  # concurrency → passed, in order tried


async def find_max_concurrency(passes: Callable[[int], Awaitable[bool]], bound: int) -> SearchResult:
    """Highest concurrency in [1, bound] for which `passes` holds, assuming it is monotone:
    double from 1 until a level fails or the bound is hit, then bisect the last gap."""
    tried: dict[int, bool] = {}

    async def check(c: int) -> bool:
        if c not in tried:
            tried[c] = await passes(c)
        return tried[c]

    good, bad = 0, None
    c = 1
    while c <= bound:
        if await check(c):
            good = c
            if c == bound:
                return SearchResult(good, True, tried)
            c = min(c * 2, bound)
        else:
            bad = c
            break
    if bad is None:  # pragma: no cover - the loop returns at the bound
        return SearchResult(good, True, tried)
    while bad - good > 1:
        mid = (good + bad) // 2
        if await check(mid):
            good = mid
        else:
            bad = mid
    return SearchResult(good, False, tried)
