"""Prometheus metrics (one registry per app, so tests can build many apps) and the seed's JSON summary."""

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from chatterbox_server.engine import EngineObserver, TTSEngine
from chatterbox_server.voice_store.cache import VoiceCache

LATENCY_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300)
STEP_BUCKETS_S = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
RTF_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2, 3, 5, 10)


@dataclass
class Summary:
    """The seed's /metrics?format=json figures."""

    total_requests: int = 0
    successful_requests: int = 0
    failed_requests: int = 0
    total_audio_seconds: float = 0.0
    total_generation_time: float = 0.0
    rtf_sum: float = 0.0
    syntheses: int = 0
    concurrent: int = 0
    peak_concurrent: int = 0
    queued: int = 0


class Metrics(EngineObserver):
    """Every metric family on one registry; also the engine loop's observer."""

    def __init__(self, max_concurrent: int):
        self.registry = CollectorRegistry()
        self.max_concurrent = max_concurrent
        self._lock = threading.Lock()
        self._summary = Summary()
        r = self.registry
        self.requests = Counter("tts_requests", "HTTP requests by route and status", ["route", "status"], registry=r)
        self.request_duration = Histogram(
            "tts_request_duration_seconds",
            "Wall time of requests until the response ends",
            ["route"],
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.rtf = Histogram(
            "tts_rtf", "Real-time factor: generation time / audio duration", buckets=RTF_BUCKETS, registry=r
        )
        self.time_to_first_byte = Histogram(
            "tts_time_to_first_audio_seconds",
            "Request arrival to its first audio ready to send",
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.audio_seconds = Counter("tts_audio_seconds", "Seconds of audio produced", registry=r)
        self.tokens = Counter("tts_tokens_generated", "Speech tokens generated", registry=r)
        self.in_flight = Gauge("tts_requests_in_flight", "Syntheses running now", registry=r)
        self.queued = Gauge("tts_requests_queued", "Requests waiting for a synthesis slot", registry=r)
        self.queue_wait = Histogram(
            "tts_queue_wait_seconds", "Time spent waiting for a slot", buckets=LATENCY_BUCKETS_S, registry=r
        )
        self.rejected = Counter("tts_requests_rejected", "Requests turned away", ["reason"], registry=r)
        self.cancelled = Counter("tts_requests_cancelled", "Syntheses stopped early", ["reason"], registry=r)
        self.connections_open = Gauge(
            "tts_connections_open", "Client connections open (HTTP and WebSocket)", registry=r
        )
        self.connections_closed = Counter(
            "tts_connections_closed",
            "Connections a limit closed: header_timeout, header_too_large, body_timeout, write_timeout, "
            "evicted (the longest idle, for a new one), refused (every one busy: 503)",
            ["reason"],
            registry=r,
        )
        self.pieces_truncated = Counter(
            "tts_pieces_truncated",
            "Text pieces that ended without STOP: runaway (a runaway guard stopped it), length (max_new_tokens)",
            ["reason"],
            registry=r,
        )
        for reason in ("runaway", "length"):
            self.pieces_truncated.labels(reason=reason)  # both series exist from the start, at 0
        self.stage_seconds = Histogram(
            "tts_engine_stage_seconds", "Engine time per stage", ["stage"], buckets=LATENCY_BUCKETS_S, registry=r
        )

        self.batch_size = Histogram(
            "tts_engine_batch_size", "Rows sampled per engine loop step", buckets=BATCH_BUCKETS, registry=r
        )
        self.step_seconds = Histogram(
            "tts_engine_step_seconds",
            "Wall time of one engine loop step (prefill, sampling, LM call)",
            buckets=STEP_BUCKETS_S,
            registry=r,
        )
        self.prefill_tokens = Counter(
            "tts_engine_prefill_tokens", "Prompt tokens run through the language model at admission", registry=r
        )
        self.queue_to_first_token = Histogram(
            "tts_queue_to_first_token_seconds",
            "Engine submission to a request's first speech token",
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )

        self.decoder_calls = Counter("tts_decoder_calls", "conditional_decoder calls", registry=r)
        self.decoder_seconds = Counter("tts_decoder_seconds", "Wall time inside conditional_decoder calls", registry=r)
        self.decoder_audio_seconds = Counter(
            "tts_decoder_audio_seconds",
            "New audio the decoder produced (tts_decoder_seconds / this = decoder seconds per audio second)",
            registry=r,
        )
        self.decoder_rows = Histogram(
            "tts_decoder_rows_per_call", "Windows decoded together in one call", buckets=BATCH_BUCKETS, registry=r
        )
        self.vocoder_wait = Histogram(
            "tts_vocoder_wait_seconds",
            "A due window's wait for the decoder (first and later windows alike)",
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.vocoder_queue = Gauge("tts_vocoder_queue_windows", "Windows due and waiting for the decoder", registry=r)

    # ----- the engine loop and the vocoder stage (EngineObserver) --------------------------------

    def on_step(self, batch_size: int, step_s: float, prefill_tokens: int) -> None:
        self.batch_size.observe(batch_size)
        self.step_seconds.observe(step_s)
        if prefill_tokens:
            self.prefill_tokens.inc(prefill_tokens)

    def on_first_token(self, queue_to_first_token_s: float) -> None:
        self.queue_to_first_token.observe(queue_to_first_token_s)

    def on_decoder_call(self, rows: int, decoder_s: float, audio_s: float, waits_s: list[float]) -> None:
        self.decoder_calls.inc()
        self.decoder_seconds.inc(decoder_s)
        self.decoder_audio_seconds.inc(audio_s)
        self.decoder_rows.observe(rows)
        for wait in waits_s:
            self.vocoder_wait.observe(wait)

    def on_vocoder_queue(self, windows_due: int) -> None:
        self.vocoder_queue.set(windows_due)

    def on_piece_truncated(self, reason: str) -> None:
        self.pieces_truncated.labels(reason=reason).inc()

    def attach_engine(self, engine: TTSEngine) -> None:
        """Export the engine's prefix cache and loop occupancy at scrape time; observe its loop."""
        prefixes = engine.prefix_cache

        def families() -> Iterator[Metric]:
            yield from _cache_families("tts_prefix_cache", "Voice-prefix KV cache", prefixes.stats)
            yield _gauge("tts_prefix_cache_bytes", "Bytes of voice-prefix KV held in memory", prefixes.bytes)
            waiting, running = engine.load
            yield _gauge("tts_engine_sequences_waiting", "Text pieces waiting for a batch slot", waiting)
            yield _gauge("tts_engine_sequences_running", "Text pieces in the running batch", running)

        self.registry.register(_Collector(families))
        engine.set_observer(self)

    def attach_voices(self, voices: VoiceCache) -> None:
        """Export the voice service's embedding cache (hits, misses, evictions, size) at scrape time."""

        def families() -> Iterator[Metric]:
            yield from _cache_families("tts_voice_cache", "Voice cache", voices.stats)
            yield _gauge("tts_voice_cache_size", "Voices held in memory", len(voices))

        self.registry.register(_Collector(families))

    # ----- the JSON summary ---------------------------------------------------------------

    def started(self) -> None:
        with self._lock:
            s = self._summary
            s.concurrent += 1
            s.peak_concurrent = max(s.peak_concurrent, s.concurrent)
        self.in_flight.inc()

    def set_queued(self, waiting: int) -> None:
        with self._lock:
            self._summary.queued = waiting
        self.queued.set(waiting)

    def finished(self) -> None:
        with self._lock:
            self._summary.concurrent -= 1
        self.in_flight.dec()

    def record_outcome(self, route: str, outcome: str, synthesis: bool) -> None:
        """Count a finished request by route and outcome: its status code, or "incomplete" for a
        stream that started with 200 but was cut short. Synthesis routes also count in the JSON
        summary (an incomplete stream as failed)."""
        self.requests.labels(route=route, status=outcome).inc()
        if not synthesis:
            return
        with self._lock:
            self._summary.total_requests += 1
            if outcome.isdigit() and int(outcome) < 400:
                self._summary.successful_requests += 1
            else:
                self._summary.failed_requests += 1

    def record_synthesis(
        self, audio_duration_s: float, generation_time_s: float, tokens_generated: int, timings
    ) -> None:
        """Account one finished synthesis request (timings: synthesis_types.StageTimings)."""
        rtf = generation_time_s / audio_duration_s if audio_duration_s > 0 else 0.0
        self.rtf.observe(rtf)
        self.audio_seconds.inc(audio_duration_s)
        self.tokens.inc(tokens_generated)
        for stage, seconds in (
            ("voice_encode", timings.voice_encode_s),
            ("prefill", timings.prefill_s),
            ("decode", timings.decode_s),
            ("vocoder", timings.vocoder_s),
        ):
            self.stage_seconds.labels(stage=stage).observe(seconds)
        with self._lock:
            s = self._summary
            s.total_audio_seconds += audio_duration_s
            s.total_generation_time += generation_time_s
            s.rtf_sum += rtf
            s.syntheses += 1

    def summary(self) -> dict:
        with self._lock:
            s = self._summary
            return {
                "total_requests": s.total_requests,
                "successful_requests": s.successful_requests,
                "failed_requests": s.failed_requests,
                "total_audio_seconds": round(s.total_audio_seconds, 3),
                "total_generation_time": round(s.total_generation_time, 3),
                "average_rtf": round(s.rtf_sum / s.syntheses, 4) if s.syntheses else 0.0,
                "concurrent_requests": s.concurrent,
                "queued_requests": s.queued,
                "peak_concurrent_requests": s.peak_concurrent,
                "max_concurrent_allowed": self.max_concurrent,
            }


class _Collector(Collector):
    """Families computed at scrape time."""

    def __init__(self, families: Callable[[], Iterator[Metric]]):
        self._families = families

    def collect(self) -> Iterator[Metric]:
        return self._families()


def _cache_families(prefix: str, what: str, stats: Any) -> Iterator[Metric]:
    """{prefix}_hits / _misses / _evictions counters from a cache's stats object."""
    for name in ("hits", "misses", "evictions"):
        counter = CounterMetricFamily(f"{prefix}_{name}", f"{what} {name}")
        counter.add_metric([], getattr(stats, name))
        yield counter


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    gauge = GaugeMetricFamily(name, documentation)
    gauge.add_metric([], value)
    return gauge
