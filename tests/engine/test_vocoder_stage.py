"""The vocoder stage: its policy as a pure function of streams and a clock (no threads, no timing),
then the stage and the batched decoder on the tiny stand-in's real graphs."""

import threading
from collections.abc import Iterator
from types import SimpleNamespace

import numpy as np
import pytest

from chatterbox_server.engine import GenerationRequest, TTSConfig, TTSEngine
from chatterbox_server.engine.observer import EngineObserver
from chatterbox_server.engine.outputs import SyncOutputs
from chatterbox_server.engine.turns import StageTurns
from chatterbox_server.engine.vocoder import PROBE_TOLERANCE_DB, DecoderRow, probe_batching, spectral_distance_db
from chatterbox_server.engine.vocoder_stage import Stream, WindowPolicy, next_call
from chatterbox_server.model.contract import SAMPLES_PER_TOKEN

NOW = 1000.0


def stream(tokens: int, *, order: int = 0, prompt: int = 250, final: bool = False, sent: int = 0, **request) -> Stream:
    """A stream over a fake request: first_audio_at, audio_sent_s, windows_decoded, chunked, submitted_at."""
    state = SimpleNamespace(
        first_audio_at=request.get("first_audio_at"),
        audio_sent_s=request.get("audio_sent_s", 0.0),
        windows_decoded=request.get("windows_decoded", 0),
        next_to_deliver=request.get("next_to_deliver", 0),
        submitted_at=request.get("submitted_at", 0.0),
        request=SimpleNamespace(chunked=request.get("chunked", True)),
    )
    sequence = SimpleNamespace(request=state, piece_index=request.get("piece", 0))
    return Stream(sequence, order, prompt, tokens=list(range(tokens)), final=final, sent=sent)  # type: ignore[arg-type]


def test_windows_grow_from_a_small_first_one_to_the_cap():
    policy = WindowPolicy(first_window_tokens=12, window_growth=2.0, max_window_tokens=200)
    assert [policy.target_tokens(i) for i in range(6)] == [12, 24, 48, 96, 192, 200]
    with pytest.raises(ValueError):
        WindowPolicy(first_window_tokens=50, max_window_tokens=20)


def test_a_window_is_due_only_once_its_target_has_piled_up():
    policy = WindowPolicy()
    assert next_call([stream(11)], policy, NOW)[0] == []
    (window,), _, due = next_call([stream(12)], policy, NOW)
    assert (window.start, window.end, window.context, window.final, due) == (0, 12, 0, False, 1)
    later = stream(12 + 23, sent=12, windows_decoded=1, first_audio_at=NOW - 0.1, audio_sent_s=0.5)
    assert next_call([later], policy, NOW)[0] == []  # 23 < 24


def test_a_stream_takes_every_token_that_piled_up_while_the_decoder_was_busy():
    policy = WindowPolicy()
    backlog = stream(12 + 70, sent=12, windows_decoded=1, first_audio_at=NOW - 3, audio_sent_s=0.5)
    (window,), _, _ = next_call([backlog], policy, NOW)
    assert (window.start, window.end, window.context) == (12, 82, 10)
    huge = stream(12 + 500, sent=12, windows_decoded=1, first_audio_at=NOW - 3, audio_sent_s=0.5)
    assert next_call([huge], policy, NOW)[0][0].end == 12 + policy.max_window_tokens
    final = stream(12 + 500, sent=12, final=True, windows_decoded=1, first_audio_at=NOW - 3)
    (last,), _, _ = next_call([final], policy, NOW)
    assert (last.end, last.final) == (512, True)  # the last window is never split


def test_first_windows_go_before_later_ones_then_the_listener_closest_to_running_dry():
    policy = WindowPolicy()
    comfortable = stream(200, order=0, sent=12, windows_decoded=1, first_audio_at=NOW - 1, audio_sent_s=1.5)
    starving = stream(200, order=1, sent=12, windows_decoded=1, first_audio_at=NOW - 5, audio_sent_s=1.0)
    newcomer = stream(12, order=2, submitted_at=NOW - 0.2)
    order = []
    streams = [comfortable, starving, newcomer]
    while streams:
        (window,), _, _ = next_call(streams, policy, NOW)
        order.append(window.stream)
        streams.remove(window.stream)
    assert order == [newcomer, starving, comfortable]


def test_a_request_far_ahead_of_its_listener_waits_for_a_bigger_window():
    policy = WindowPolicy(lookahead_s=4.0)
    ahead = stream(100, sent=12, windows_decoded=1, first_audio_at=NOW - 1.0, audio_sent_s=10.0)
    windows, wake, _ = next_call([ahead], policy, NOW)
    assert windows == [] and wake == pytest.approx(NOW + 5.0)  # 9 s buffered: due when 4 s are left
    assert next_call([ahead], policy, NOW + 5.01)[0][0].end == 100
    ahead.final = True
    assert next_call([ahead], policy, NOW)[0][0].final  # a finished piece never waits


def test_a_later_piece_cuts_no_window_until_the_earlier_ones_are_delivered():
    policy = WindowPolicy()
    later = stream(150, piece=1, windows_decoded=1, first_audio_at=NOW - 1, audio_sent_s=0.5)
    assert next_call([later], policy, NOW)[0] == []  # piece 0 is still being delivered
    later.final = True
    (window,), _, _ = next_call([later], policy, NOW)
    assert (window.start, window.end, window.final) == (0, 150, True)  # one call for the whole piece
    current = stream(150, piece=1, windows_decoded=1, first_audio_at=NOW - 1, audio_sent_s=0.5, next_to_deliver=1)
    assert next_call([current], policy, NOW)[0][0].end == 150  # its turn: windows as usual


def test_a_whole_piece_request_is_decoded_once_at_its_end():
    policy = WindowPolicy()
    whole = stream(300, chunked=False)
    assert next_call([whole], policy, NOW)[0] == []
    whole.final = True
    (window,), _, _ = next_call([whole], policy, NOW)
    assert (window.start, window.end, window.context, window.final) == (0, 300, 0, True)


def test_identical_shapes_share_a_call_up_to_the_row_limit():
    policy = WindowPolicy(max_batch_rows=3)
    firsts = [stream(12 + i, order=i, submitted_at=i) for i in range(4)]  # 12..15 pending
    other_voice = stream(12, order=9, prompt=100)
    windows, _, due = next_call([*firsts, other_voice], policy, NOW)
    assert due == 5 and len(windows) == 3
    assert [w.stream for w in windows] == firsts[:3]
    assert {(w.start, w.end, w.context) for w in windows} == {(0, 12, 0)}  # exactly the target each
    # padding is part of the shape: a final window joins only final windows of its length
    ending, also_ending = (stream(12, order=o, final=True, submitted_at=-1) for o in (5, 6))
    windows, _, _ = next_call([firsts[0], ending, also_ending], policy, NOW)
    assert [w.stream for w in windows] == [ending, also_ending]  # older requests first
    also_ending.tokens.append(1)
    windows, _, _ = next_call([ending, also_ending], policy, NOW)
    assert [w.stream for w in windows] == [ending]


# ----- the stage and the decoder on the tiny stand-in ------------------------------------------


class CallLog(EngineObserver):
    def __init__(self) -> None:
        self.calls: list[tuple[int, float]] = []
        self.lock = threading.Lock()

    def on_decoder_call(self, rows: int, decoder_s: float, audio_s: float, waits_s: list[float]) -> None:
        with self.lock:
            self.calls.append((rows, round(audio_s * 25)))


@pytest.fixture(scope="module")
def engines(model_dir, voice_a, voice_b) -> Iterator[dict[int, TTSEngine]]:
    """Engines whose loop is stepped by hand, with 1 and 4 decoder rows per call (0: a reference
    engine whose loop thread runs)."""
    made = {}
    for rows in (0, 1, 4):
        # the tiny stand-in runs far ahead of real time: never hold a window back for the listener here
        config = TTSConfig(
            model_dir=model_dir,
            model_dtype="fp32",
            decoder_batch_rows=rows or 1,
            window_lookahead_s=1e6,
            window_growth=2.0,
        )
        engine = TTSEngine(config)
        made[rows] = engine
    VOICES.update(a=made[0].encode_clip(voice_a), b=made[0].encode_clip(voice_b))
    yield made
    for engine in made.values():
        engine.close()


VOICES: dict = {}  # "a", "b": encoder outputs of voice_a and voice_b (fp32, as every engine here)
LONG_PIECE = "This one sentence runs long enough that its tokens fill several growing windows in a row"
TEXTS = (("Hello there, how are you today?", "a"), ("The quick brown fox jumps over it.", "b"), ("Short one.", "a"))


def run_by_hand(engine: TTSEngine, requests: list[GenerationRequest]) -> tuple[list[list], CallLog]:
    """Step the loop one step at a time, letting the vocoder stage finish between steps."""
    log = CallLog()
    engine.set_observer(log)
    sinks = []
    for request in requests:
        sink: SyncOutputs = SyncOutputs()
        engine.core.add_request(request, sink)
        sinks.append(sink)
    while engine.core.running or engine.core.waiting:
        engine.core.step()
        engine.core.wait_for_vocoder()
    return [list(s) for s in sinks], log


def test_an_idle_stream_decodes_exactly_the_growing_schedule(engines):
    engine = engines[1]
    plan = engine.prepare(LONG_PIECE, max_chars=10_000, first_max_chars=None)
    (chunks,), log = run_by_hand(engine, [GenerationRequest(plan, VOICES["a"], chunked=True)])
    spoken = len(chunks[-1].result.speech_tokens)
    sizes = [n for _, n in log.calls]
    assert sizes[:3] == [12, 24, 48] and sum(sizes) == spoken + 3  # the last window carries the padding
    assert [c.waveform.shape[0] for c in chunks[:2]] == [12 * SAMPLES_PER_TOKEN - 480, 24 * SAMPLES_PER_TOKEN]
    whole = engines[0].synthesize(LONG_PIECE, VOICES["a"])
    assert sum(c.waveform.shape[0] for c in chunks) == whole.waveform.shape[0]


def test_batched_decoder_calls_give_each_request_its_unbatched_audio(engines):
    results = {}
    for rows in (1, 4):
        engine = engines[rows]
        requests = [GenerationRequest(engine.prepare(t), VOICES[v], chunked=True) for t, v in TEXTS]
        outputs, log = run_by_hand(engine, requests)
        results[rows] = ([np.concatenate([c.waveform for c in chunks]) for chunks in outputs], log)
    (single, single_log), (batched, batched_log) = results[1], results[4]
    assert max(rows for rows, _ in single_log.calls) == 1
    assert max(rows for rows, _ in batched_log.calls) == 2  # the two voice-a requests (voice b: another prompt length)
    assert len(batched_log.calls) < len(single_log.calls)
    for alone, together in zip(single, batched):
        assert alone.shape == together.shape
        assert np.abs(alone - together).max() < 0.02  # the tiny decoder's own noise is N(0, 1e-3)


def test_decode_rows_matches_single_calls_and_the_probe_says_so(engines):
    engine = engines[0]
    vocoder = engine._vocoder
    rng = np.random.default_rng(3)
    rows = [DecoderRow(rng.integers(0, 6561, 20), VOICES[v], True) for v in ("a", "a")]
    together = vocoder.decode_rows(rows)
    for row, wave in zip(rows, together):
        alone, again = vocoder.decode_rows([row])[0], vocoder.decode_rows([row])[0]
        assert wave.shape == alone.shape == ((20 + 3) * SAMPLES_PER_TOKEN,)
        # the decoder's own noise moves even two single calls apart: the probe's rule, spread and tolerance
        spread = spectral_distance_db(alone, again)
        assert spectral_distance_db(wave, alone) < 2 * spread + PROBE_TOLERANCE_DB
    assert probe_batching(vocoder).exact


# ----- taking turns on the CPU ------------------------------------------------------------------


def test_an_exclusive_decoder_call_waits_for_the_step_in_progress_and_holds_the_next_one():
    turns = StageTurns()
    events: list[str] = []
    step_started, decoder_asked = threading.Event(), threading.Event()
    release_step = threading.Event()

    def loop() -> None:
        with turns.step():
            step_started.set()
            release_step.wait(5)
            events.append("step 1 ends")
        decoder_asked.wait(5)
        with turns.step():
            events.append("step 2")

    def decoder() -> None:
        step_started.wait(5)
        with turns.decoder():
            events.append("decoder call")

    loop_thread = threading.Thread(target=loop)
    loop_thread.start()
    decoder_thread = threading.Thread(target=decoder)
    decoder_thread.start()
    while not turns.decoder_holds:  # the decoder has asked: no new step may start now
        threading.Event().wait(0.001)
    decoder_asked.set()
    assert events == []  # it waits for the step in progress
    release_step.set()
    loop_thread.join(5)
    decoder_thread.join(5)
    assert events == ["step 1 ends", "decoder call", "step 2"]
