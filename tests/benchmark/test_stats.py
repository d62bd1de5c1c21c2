"""Benchmark arithmetic against hand-computed cases."""

import asyncio

import pytest

from chatterbox_server.benchmark.stats import (
    RequestResult,
    find_max_concurrency,
    percentile,
    summarize,
    within_real_time,
)


def test_percentile_interpolates_like_numpy():
    values = [1.0, 2.0, 3.0, 4.0]
    assert percentile(values, 50) == 2.5
    assert percentile(values, 0) == 1.0 and percentile(values, 100) == 4.0
    assert percentile(values, 95) == pytest.approx(3.85)  # rank 2.85 → 3 + 0.85 × 1
    assert percentile([7.0], 99) == 7.0
    assert percentile([], 50) is None
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0  # unsorted input


def test_summarize_hand_computed_level():
    results = [
        RequestResult(200, latency_s=2.0, audio_s=4.0, generation_s=1.0, tokens=100),  # rtf 0.25
        RequestResult(200, latency_s=3.0, audio_s=2.0, generation_s=1.5, tokens=50),  # rtf 0.75
        RequestResult(429, latency_s=0.01),
        RequestResult("timeout", latency_s=30.0),
    ]
    level = summarize(results, wall_s=5.0)
    assert (level["requests"], level["successful"], level["failed"]) == (4, 2, 2)
    assert level["errors"] == {"429": 1, "timeout": 1}
    assert level["rtf_mean"] == pytest.approx(0.5)
    assert level["rtf_p50"] == pytest.approx(0.5)
    assert level["rtf_p95"] == pytest.approx(0.25 + 0.95 * 0.5)
    assert level["client_rtf_mean"] == pytest.approx((0.5 + 1.5) / 2)
    assert level["latency_p50_s"] == pytest.approx(2.5)
    assert level["throughput_rps"] == pytest.approx(2 / 5.0)
    assert level["audio_s_per_wall_s"] == pytest.approx(6.0 / 5.0)
    assert level["tokens_total"] == 150
    assert level["first_audio_p50_s"] is None
    assert not within_real_time(level)  # errors fail a level whatever the RTF


def test_first_audio_percentiles_when_streaming():
    results = [RequestResult(200, 1.0, 2.0, 0.5, first_audio_s=t) for t in (0.1, 0.2, 0.3)]
    level = summarize(results, 1.0)
    assert level["first_audio_p50_s"] == pytest.approx(0.2)
    assert within_real_time(level)


def test_level_with_high_p95_fails():
    results = [RequestResult(200, 1.0, 1.0, rtf) for rtf in (0.2, 0.3, 0.4, 0.5, 2.0)]
    assert not within_real_time(summarize(results, 1.0))


def run_search(limit, bound):
    calls = []

    async def passes(c):
        calls.append(c)
        return c <= limit

    return asyncio.run(find_max_concurrency(passes, bound)), calls


@pytest.mark.parametrize(
    "limit, bound, expected, reached",
    [
        (5, 64, 5, False),  # 1 2 4 8✗ → bisect 6✗ 5✓
        (8, 64, 8, False),  # 1 2 4 8 16✗ → 12✗ 10✗ 9✗
        (1, 64, 1, False),
        (0, 64, 0, False),  # even one request is too slow
        (100, 16, 16, True),  # still passing at the bound
        (100, 10, 10, True),  # a bound that is no power of two is tried itself
        (12, 12, 12, True),
    ],
)
def test_search_finds_the_boundary(limit, bound, expected, reached):
    result, calls = run_search(limit, bound)
    assert (result.max_concurrency, result.bound_reached) == (expected, reached)
    assert len(calls) == len(set(calls))  # each level measured once


def test_search_sequence_is_doubling_then_bisection():
    result, calls = run_search(5, 64)
    assert calls == [1, 2, 4, 8, 6, 5]
    assert result.tried == {1: True, 2: True, 4: True, 8: False, 6: False, 5: True}
