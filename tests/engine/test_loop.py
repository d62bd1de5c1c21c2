"""The engine loop on the tiny stand-in: continuous batching, the voice-prefix KV cache, cancels and
deadlines. Token-level tests drive the loop's steps by hand (no thread, no timing)."""

import asyncio
import threading
import time
from collections.abc import Iterator

import pytest

from chatterbox_server.engine import (
    GenerationOptions,
    GenerationRequest,
    TTSConfig,
    TTSEngine,
    VoiceEmbedding,
    speech_tokens_of,
)
from chatterbox_server.engine.outputs import SyncOutputs
from chatterbox_server.errors import GenerationCancelledError, SynthesisTimeoutError

TEXT_A = "Hello there, how are you today?"
TEXT_B = "The quick brown fox jumps over the lazy dog."
TEXT_C = "Short one."
LONG = "First sentence is here. Then a second one follows. A third closes it, with a comma or two."


VOICES: dict[str, VoiceEmbedding] = {}  # "a", "b": the fp32 encoder outputs of voice_a and voice_b


def fp32_engine(model_dir) -> Iterator[TTSEngine]:
    engine = TTSEngine(TTSConfig(model_dir=model_dir, model_dtype="fp32", max_batch_size=4))
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def engine(model_dir, voice_a, voice_b) -> Iterator[TTSEngine]:
    """An engine driven by its own loop thread (the reference runs go through it)."""
    for engine in fp32_engine(model_dir):
        VOICES.update(a=engine.encode_clip(voice_a), b=engine.encode_clip(voice_b))
        yield engine


def alone(engine: TTSEngine, text: str, voice: str, options: GenerationOptions | None = None) -> list[int]:
    return engine.synthesize(text, VOICES[voice], options).speech_tokens.tolist()


class Driver:
    """Drives an engine's loop step by step on the calling thread."""

    def __init__(self, engine: TTSEngine):
        self.core = engine.core
        self.engine = engine

    def add(self, text: str, voice: str, options: GenerationOptions | None = None, **kwargs):
        request = GenerationRequest(
            self.engine.prepare(text, options, max_chars=10_000, first_max_chars=None),
            VOICES[voice],
            **kwargs,
        )
        outputs: SyncOutputs = SyncOutputs()
        state = self.core.add_request(request, outputs)
        return request, state, outputs

    def run(self, steps: int = 10_000) -> None:
        for _ in range(steps):
            if not self.core.running and not self.core.waiting:
                return
            self.core.step()


@pytest.fixture(scope="module")
def manual_engine(model_dir, engine) -> Iterator[TTSEngine]:
    """An engine whose loop only steps when a test says so (its thread never starts)."""
    yield from fp32_engine(model_dir)


@pytest.fixture
def driver(manual_engine):
    yield Driver(manual_engine)
    assert not manual_engine.core.running and not manual_engine.core.waiting


def speech_tokens(seq) -> list[int]:
    return speech_tokens_of(seq.tokens).tolist()


def only_sequence(driver: Driver, state):
    found = [s for s in driver.core.running + driver.core.waiting if s.request is state]
    assert len(found) == 1
    return found[0]


def test_a_sequence_joining_at_a_staggered_step_matches_its_solo_run(engine, driver):
    _, first, _ = driver.add(TEXT_A, "a")
    a = only_sequence(driver, first)
    for _ in range(9):
        driver.core.step()
    assert a.tokens_generated == 9
    _, second, _ = driver.add(TEXT_B, "b")
    b = only_sequence(driver, second)
    driver.core.step()
    assert len(driver.core.running) == 2  # b joined a batch that was 9 tokens in
    driver.run()
    assert speech_tokens(a) == alone(engine, TEXT_A, "a")
    assert speech_tokens(b) == alone(engine, TEXT_B, "b")


def test_a_seeded_sampled_row_ignores_its_batch_mates(engine, driver):
    sampled = GenerationOptions(temperature=0.9, top_p=0.95, top_k=200, seed=7)
    _, solo_state, _ = driver.add(TEXT_A, "a", sampled)
    solo = only_sequence(driver, solo_state)
    driver.run()
    _, with_mates, _ = driver.add(TEXT_A, "a", sampled)
    row = only_sequence(driver, with_mates)
    driver.add(TEXT_B, "b")
    driver.add(TEXT_C, "a", GenerationOptions(temperature=1.3, seed=99))
    driver.run()
    assert row.tokens == solo.tokens and len(row.tokens) > 10


def test_a_cancelled_row_leaves_within_one_step_and_the_others_are_intact(engine, driver):
    doomed, _, doomed_out = driver.add(TEXT_B, "a")
    _, kept_state, _ = driver.add(TEXT_A, "b")
    kept = only_sequence(driver, kept_state)
    for _ in range(5):
        driver.core.step()
    assert len(driver.core.running) == 2
    assert driver.core.abort(doomed.request_id)
    driver.core.step()
    assert [s.request for s in driver.core.running] == [kept_state]
    with pytest.raises(GenerationCancelledError):
        list(doomed_out)
    driver.run()
    assert speech_tokens(kept) == alone(engine, TEXT_A, "b")


def test_a_deadline_ends_the_request_with_a_timeout(engine, driver):
    _, state, outputs = driver.add(TEXT_B, "a", deadline=time.perf_counter() + 3600)
    driver.core.step()
    state.request.deadline = time.perf_counter() - 1
    driver.core.step()
    assert not driver.core.running
    with pytest.raises(SynthesisTimeoutError):
        list(outputs)


def test_max_batch_size_is_respected_and_the_rest_wait(engine, driver):
    states = [driver.add(TEXT_C, "a")[1] for _ in range(6)]
    driver.core.step()
    assert len(driver.core.running) == 4 and len(driver.core.waiting) == 2
    assert [s.request for s in driver.core.waiting] == states[4:]  # first come, first served
    driver.run()


@pytest.mark.slow
def test_prefix_cache_gives_identical_tokens_and_counts_hits(model_dir, voice_a):
    cached = TTSEngine(TTSConfig(model_dir=model_dir, model_dtype="fp32"))
    uncached = TTSEngine(TTSConfig(model_dir=model_dir, model_dtype="fp32", prefix_cache_mb=0))
    try:
        voice = cached.encode_clip(voice_a)
        with_cache = [cached.synthesize(t, voice).speech_tokens.tolist() for t in (TEXT_A, TEXT_B, TEXT_A)]
        without = [uncached.synthesize(t, voice).speech_tokens.tolist() for t in (TEXT_A, TEXT_B, TEXT_A)]
        assert with_cache == without
        stats = cached.prefix_cache.stats
        assert (stats.misses, stats.hits) == (1, 2) and len(cached.prefix_cache) == 1
        assert cached.prefix_cache.bytes > 0
        assert len(uncached.prefix_cache) == 0 and uncached.prefix_cache.stats.hits == 0
        assert cached.forget_voice(voice.content_hash)
        assert len(cached.prefix_cache) == 0
    finally:
        cached.close()
        uncached.close()


@pytest.mark.slow
def test_a_long_text_runs_pieces_in_parallel_and_delivers_them_in_order(engine):
    plan = engine.prepare(LONG)
    assert len(plan.pieces) >= 3
    chunks = list(engine.submit(GenerationRequest(plan, VOICES["a"], chunked=True)))
    order = [c.piece.start for c in chunks]
    assert order == sorted(order)
    finals = [c for c in chunks if c.result is not None]
    assert [c.piece for c in finals] == [p.piece for p in plan.pieces]
    for final in finals:
        own = sum(c.waveform.shape[0] for c in chunks if c.piece == final.piece)
        assert own == engine.synthesize(final.piece.text, VOICES["a"]).waveform.shape[0]


@pytest.mark.slow
def test_batched_streams_add_up_to_their_whole_audio(engine):
    requests = [
        GenerationRequest(engine.prepare(t), VOICES[v], chunked=True)
        for t, v in ((TEXT_A, "a"), (TEXT_B, "b"), (TEXT_C, "a"))
    ]
    streams = [engine.submit(r) for r in requests]  # all queued before any is read: they share steps
    for (text, voice), stream in zip(((TEXT_A, "a"), (TEXT_B, "b"), (TEXT_C, "a")), streams):
        streamed = sum(c.waveform.shape[0] for c in stream)
        assert streamed == engine.synthesize(text, VOICES[voice]).waveform.shape[0]


@pytest.mark.slow
def test_threads_stay_bounded_under_32_concurrent_requests(engine):
    before = threading.active_count()
    peak = 0

    async def main():
        nonlocal peak

        async def one(i: int) -> int:
            request = GenerationRequest(engine.prepare(TEXT_C), VOICES["ab"[i % 2]], chunked=True)
            return sum([c.waveform.shape[0] async for c in engine.generate(request)])

        jobs = [asyncio.create_task(one(i)) for i in range(32)]
        while not all(j.done() for j in jobs):
            peak = max(peak, threading.active_count())
            await asyncio.sleep(0.01)
        return [j.result() for j in jobs]

    lengths = asyncio.run(main())
    assert len(lengths) == 32 and min(lengths) > 0
    assert peak <= before + 2  # at most the loop and the vocoder thread, not one per request


def test_abort_by_id_stops_an_async_request(engine):
    async def main():
        request = GenerationRequest(engine.prepare(LONG), VOICES["a"], chunked=True)
        stream = engine.generate(request)
        first = await stream.__anext__()
        assert first.waveform.size > 0
        assert engine.abort(request.request_id)
        with pytest.raises(GenerationCancelledError):
            async for _ in stream:
                pass

    asyncio.run(main())
    assert not engine.core.running


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["fp32", "fp16"])
def test_kv_kept_as_device_values_gives_the_same_tokens(model_dir, voice_a, voice_b, dtype):
    """The IO-binding path (KV as OrtValues, joins/drops/trims as helper graphs), run on the
    CPU device here: rows joining, leaving and sampling give exactly the host path's tokens."""
    texts = [(TEXT_A, "a", None), (TEXT_B, "b", None), (TEXT_C, "a", GenerationOptions(temperature=0.8, seed=3))]
    outcomes = {}
    for on_device in (False, True):
        engine = TTSEngine(TTSConfig(model_dir=model_dir, model_dtype=dtype, kv_on_device=on_device))
        try:
            assert engine.kv_on_device is on_device
            own = {"a": engine.encode_clip(voice_a), "b": engine.encode_clip(voice_b)}  # this dtype's encoder
            streams = [engine.submit(GenerationRequest(engine.prepare(t, o), own[v])) for t, v, o in texts]
            outcomes[on_device] = [[p.result.speech_tokens.tolist() for p in s] for s in streams]
            again = engine.synthesize(TEXT_A, own["a"])  # a prefix-cache hit on the device
            assert again.speech_tokens.tolist() == outcomes[on_device][0][0]
        finally:
            engine.close()
    assert outcomes[True] == outcomes[False]
