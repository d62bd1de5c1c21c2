"""The runaway guards (engine/runaway.py): the detector as a pure function on token lists, the
per-piece bound, and the engine on stand-ins whose language model never stops or loops."""

import random
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from chatterbox_server.cli.synthesize import build_parser
from chatterbox_server.engine import EngineObserver, GenerationOptions, TTSConfig, TTSEngine
from chatterbox_server.engine.runaway import (
    LOW_VARIETY_DISTINCT,
    MAX_PERIOD,
    SILENCE_SHARE,
    WINDOW_TOKENS,
    Runaway,
    RunawayBound,
    RunawayDetector,
    find_runaway,
)
from chatterbox_server.model.contract import SAMPLES_PER_TOKEN, SILENCE_PADDING_TOKENS, SILENCE_TOKEN
from chatterbox_server.model.stand_in import make_stand_in_model
from chatterbox_server.model.stand_in.graphs import LOOP_PATTERN, LOOP_START
from chatterbox_server.server.settings import Settings, settings_from_cli
from tests.support import LONG_PIECE, LONG_TEXT, MULTI_SENTENCE
from tests.support import TEXT as SERVER_TEXT

W = WINDOW_TOKENS
TWO_PIECES = "Hi there. Good day to you."  # two pieces at max_chars=16
SPEECH_IDS = [t for t in range(6561) if t != SILENCE_TOKEN]


def speech(n: int, seed: int, avoid: set[int] | None = None) -> list[int]:
    """n tokens as varied as speech's: random ids below 3000 (none of `avoid`)."""
    rng = random.Random(seed)
    pool = [t for t in SPEECH_IDS[:3000] if t not in (avoid or set())]
    return [rng.choice(pool) for _ in range(n)]


def distinct_ids(count: int, seed: int, avoid: list[int]) -> list[int]:
    """`count` different ids from 3000 up (so never one of speech()'s)."""
    return random.Random(seed).sample([t for t in SPEECH_IDS[3000:] if t not in avoid], count)


def brute_force(tokens: list[int]) -> Runaway | None:
    """The detector's rules, re-derived from scratch at every length (slow and obvious)."""
    for n in range(W, len(tokens) + 1):
        seen = tokens[:n]
        for period in range(1, MAX_PERIOD + 1):
            run = 0
            while run < n - period and seen[n - 1 - run] == seen[n - 1 - run - period]:
                run += 1
            if run + period >= W:
                return Runaway("loop", n - run - period, n, period)
        window = seen[n - W :]
        if window.count(SILENCE_TOKEN) >= SILENCE_SHARE * W:
            start = n - W + window.index(SILENCE_TOKEN)
            while start > 0 and seen[start - 1] == SILENCE_TOKEN:
                start -= 1
            return Runaway("silence", start, n)
        counts = Counter(window)
        if len(counts) <= LOW_VARIETY_DISTINCT:
            recurring = {t for t, c in counts.items() if c > 1}
            start = n - W + next(i for i, t in enumerate(window) if t in recurring)
            while start > 0 and seen[start - 1] in recurring:
                start -= 1
            return Runaway("low_variety", start, n)
    return None


# ----- the detector: a pure function on token lists ------------------------------------------------


@pytest.mark.parametrize("period", range(1, MAX_PERIOD + 1))
def test_a_loop_is_caught_within_the_window_and_cut_where_it_began(period):
    before = speech(30, seed=period)
    pattern = distinct_ids(period, seed=100 + period, avoid=before)
    tokens = before + (pattern * 200)[:120]
    found = find_runaway(tokens)
    assert found is not None and found.start == len(before)
    if period > LOW_VARIETY_DISTINCT:
        assert (found.kind, found.period, found.detected_at) == ("loop", period, len(before) + W)
    else:  # a few ids: low variety catches it a few tokens sooner (the window still holds what came before)
        assert found.kind in ("loop", "low_variety")
        assert len(before) + W - LOW_VARIETY_DISTINCT <= found.detected_at <= len(before) + W
    assert found == brute_force(tokens)


@pytest.mark.parametrize("period", range(LOW_VARIETY_DISTINCT + 1, MAX_PERIOD + 1))
def test_a_loop_one_token_short_of_the_window_is_not_a_runaway(period):
    before = speech(30, seed=period)
    pattern = distinct_ids(period, seed=200 + period, avoid=before)
    after = speech(200, seed=300 + period, avoid=set(pattern))
    tokens = before + (pattern * 10)[: W - 1] + after
    assert find_runaway(tokens) is None
    assert find_runaway(before + (pattern * 10)[:W] + after) is not None


@pytest.mark.parametrize("period", range(1, LOW_VARIETY_DISTINCT + 1))
def test_a_few_ids_held_shorter_than_the_window_with_speech_around_them_pass(period):
    """Every window that holds the run also holds enough of the speech around it."""
    pattern = distinct_ids(period, seed=400 + period, avoid=[])
    held = W - (LOW_VARIETY_DISTINCT + 1 - period)  # the window's other tokens make 5 distinct ids
    tokens = speech(40, seed=1, avoid=set(pattern)) + (pattern * W)[:held] + speech(40, seed=2, avoid=set(pattern))
    assert find_runaway(tokens) is None


def test_silence_runs_are_caught_and_cut_at_their_first_silence():
    before = speech(30, seed=5)
    found = find_runaway(before + [SILENCE_TOKEN] * 80)
    assert found == Runaway("silence", 30, 30 + int(np.ceil(SILENCE_SHARE * W)))
    # silence with a breath now and then (9 of 10 SILENCE; the breaths vary): still silence
    breaths = speech(20, seed=6)
    noisy = before + [b for i in range(20) for b in [SILENCE_TOKEN] * 9 + [breaths[i]]]
    found = find_runaway(noisy)
    assert found is not None and (found.kind, found.start) == ("silence", 30)
    assert found == brute_force(noisy)


def test_pauses_and_thin_silence_are_not_runaways():
    # a 1.5 s pause between two stretches of speech
    assert find_runaway(speech(100, seed=7) + [SILENCE_TOKEN] * 37 + speech(100, seed=8)) is None
    # 44 of every 50 tokens SILENCE (88 %), the others varied: never 90 %, never 4 ids, no short period
    others = speech(60, seed=9)
    thin = [t for block in range(10) for t in [SILENCE_TOKEN] * 44 + others[6 * block : 6 * block + 6]]
    assert find_runaway(thin) is None


def test_low_variety_runs_are_caught_and_five_ids_are_not():
    before = speech(30, seed=10)
    rng = random.Random(11)
    four = distinct_ids(4, seed=12, avoid=before)
    tokens = before + [rng.choice(four) for _ in range(200)]
    found = find_runaway(tokens)
    assert found is not None and (found.kind, found.start) == ("low_variety", 30)
    assert found == brute_force(tokens)
    five = distinct_ids(5, seed=13, avoid=before)
    assert find_runaway(before + [rng.choice(five) for _ in range(2000)]) is None


def test_speech_like_tokens_never_trigger():
    assert find_runaway(speech(3000, seed=14)) is None


def test_the_incremental_detector_agrees_with_the_rules_on_random_structured_lists():
    rng = random.Random(15)
    for case in range(150):
        tokens: list[int] = []
        while len(tokens) < 150:
            kind = rng.choice(["speech", "loop", "silence", "few"])
            length = rng.randrange(5, 70)
            if kind == "speech":
                tokens += speech(length, seed=case * 1000 + len(tokens))
            elif kind == "loop":
                pattern = distinct_ids(rng.randrange(1, MAX_PERIOD + 1), seed=case + len(tokens), avoid=[])
                tokens += (pattern * 70)[:length]
            elif kind == "silence":
                tokens += [SILENCE_TOKEN if rng.random() < 0.92 else rng.choice(SPEECH_IDS) for _ in range(length)]
            else:
                few = distinct_ids(rng.randrange(2, 7), seed=case - len(tokens), avoid=[])
                tokens += [rng.choice(few) for _ in range(length)]
        assert find_runaway(tokens) == brute_force(tokens), case


def test_check_changes_nothing_and_push_returns_what_check_said():
    detector = RunawayDetector()
    tokens = speech(30, seed=16) + [5000] * 60
    for token in tokens:
        before = (list(detector.tokens), detector.check(token))
        assert detector.check(token) == before[1] and detector.tokens == before[0]
        assert detector.push(token) == before[1]
        if before[1] is not None:
            break
    assert before[1] is not None and before[1].start == 30


# ----- the bound ------------------------------------------------------------------------------


def test_the_bound_is_base_plus_a_share_per_text_token():
    bound = RunawayBound()
    assert [bound.tokens_for(n) for n in (0, 1, 4, 40)] == [50, 75, 150, 1050]
    assert RunawayBound(10, 2.5).tokens_for(3) == 18  # 10 + ceil(7.5)
    with pytest.raises(ValueError):
        RunawayBound(0, 25)


def test_plans_carry_each_pieces_bound_where_it_is_below_max_new_tokens(engine):
    plan = engine.prepare(TWO_PIECES, max_chars=16, first_max_chars=None)
    assert plan.runaway_guard and len(plan.pieces) == 2
    for piece in plan.pieces:
        assert piece.max_new_tokens == 50 + 25 * len(piece.token_ids) < plan.max_new_tokens
    (long,) = engine.prepare(LONG_PIECE).pieces
    assert long.max_new_tokens is None  # ~50 text tokens: the bound is past max_new_tokens (1024)
    small = engine.prepare("Hi.", GenerationOptions(max_new_tokens=60))
    assert small.pieces[0].max_new_tokens is None  # the request's own limit is lower: it reads "length"


# ----- the engine on the stand-ins --------------------------------------------------------------


@pytest.fixture(scope="module")
def engine(model_dir) -> TTSEngine:
    return TTSEngine(TTSConfig(model_dir=model_dir, model_dtype="fp32"))


@pytest.fixture(scope="module")
def runaway_models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("runaway-stand-ins")
    return {b: make_stand_in_model(root / b, "tiny", ("fp32",), behaviour=b) for b in ("never_stop", "loop")}


def engine_for(models: dict[str, Path], behaviour: str, **settings) -> TTSEngine:
    return TTSEngine(TTSConfig(model_dir=models[behaviour], model_dtype="fp32", **settings))


class Truncations(EngineObserver):
    def __init__(self) -> None:
        self.reasons: list[str] = []

    def on_piece_truncated(self, reason: str) -> None:
        self.reasons.append(reason)


@pytest.mark.parametrize("chunked", [False, True])
def test_a_piece_that_never_stops_ends_at_its_texts_bound(runaway_models, voice_a, chunked):
    observer = Truncations()
    engine = engine_for(runaway_models, "never_stop")
    engine.set_observer(observer)
    try:
        plan = engine.prepare(TWO_PIECES, max_chars=16, first_max_chars=None)
        result = engine.synthesize(plan, engine.encode_clip(voice_a), chunked=chunked)
    finally:
        engine.close()
    assert len(result.pieces) == 2 and result.truncated == "runaway"
    for planned, piece in zip(plan.pieces, result.pieces):
        bound = 50 + 25 * len(planned.token_ids)
        assert piece.result.tokens_generated == bound < 1024  # its own text's bound, not max_new_tokens
        assert (piece.result.truncated, piece.result.stopped) == ("runaway", False)
        assert len(piece.result.speech_tokens) == bound  # a bound drops nothing
    assert observer.reasons == ["runaway", "runaway"]


def test_without_the_guard_a_piece_that_never_stops_runs_to_max_new_tokens(runaway_models, voice_a):
    observer = Truncations()
    engine = engine_for(runaway_models, "never_stop", runaway_guard=False, max_new_tokens=300)
    engine.set_observer(observer)
    try:
        result = engine.synthesize("Hi.", engine.encode_clip(voice_a))
    finally:
        engine.close()
    assert result.tokens_generated == 300 and result.truncated == "length"
    assert (result.pieces[0].result.truncated, observer.reasons) == ("length", ["length"])


def test_a_request_limit_below_the_bound_is_length_not_runaway(runaway_models, voice_a):
    engine = engine_for(runaway_models, "never_stop")
    try:
        result = engine.synthesize("Hi.", engine.encode_clip(voice_a), GenerationOptions(max_new_tokens=30))
    finally:
        engine.close()
    assert (result.tokens_generated, result.truncated) == (30, "length")


def loop_tokens(tokens: np.ndarray) -> int:
    return int(np.isin(tokens, LOOP_PATTERN).sum())


def test_a_loop_is_cut_where_it_began(runaway_models, voice_a):
    engine = engine_for(runaway_models, "loop")
    unguarded = engine_for(runaway_models, "loop", runaway_guard=False, max_new_tokens=200)
    try:
        voice = engine.encode_clip(voice_a)
        result = engine.synthesize("Hello there, how are you today?", voice)  # whole pieces: nothing decoded early
        free = unguarded.synthesize("Hello there, how are you today?", voice).speech_tokens
    finally:
        engine.close()
        unguarded.close()
    piece = result.pieces[0].result
    assert (piece.truncated, piece.stopped) == ("runaway", False)
    before_loop = LOOP_START - 1  # spoken tokens before generated token number LOOP_START
    assert free[before_loop : before_loop + 6].tolist() == [*LOOP_PATTERN, *LOOP_PATTERN]  # the stand-in loops
    assert piece.speech_tokens.tolist() == free[:before_loop].tolist()  # everything before it, none of it
    assert piece.tokens_generated <= before_loop + W  # caught within the window
    assert result.waveform.shape == ((before_loop + SILENCE_PADDING_TOKENS) * SAMPLES_PER_TOKEN,)


def test_a_streamed_loop_keeps_at_most_what_was_decoded_before_it_was_caught(runaway_models, voice_a):
    engine = engine_for(runaway_models, "loop")
    try:
        result = engine.synthesize("Hello there, how are you today?", engine.encode_clip(voice_a), chunked=True)
    finally:
        engine.close()
    piece = result.pieces[0].result
    assert piece.truncated == "runaway"
    spoken = piece.speech_tokens
    assert len(spoken) >= LOOP_START - 1
    assert loop_tokens(spoken) < W  # what the decoder had claimed of the run, never the run beyond the window
    assert loop_tokens(spoken) == len(spoken) - (LOOP_START - 1)
    assert result.waveform.shape[0] == (len(spoken) + SILENCE_PADDING_TOKENS) * SAMPLES_PER_TOKEN


LONG_TEXT_SENTENCE = LONG_TEXT.split(". ")[0] + "."  # LONG_TEXT is 25 of it
ENGINE_TEXTS = [  # tests/engine's texts
    "Hello there, how are you today?",
    "Hello there, how are you today? I hope the weather is fine where you are.",
    "The quick brown fox jumps over the lazy dog.",
    "Short one.",
    "First sentence is here. Then a second one follows. A third closes it, with a comma or two.",
    "Hi.",
]


@pytest.mark.parametrize(
    "options", [None, GenerationOptions(temperature=0.8, top_k=1000, top_p=0.95, seed=7)], ids=["greedy", "sampled"]
)
def test_the_normal_stand_in_is_never_truncated(engine, voice_a, voice_b, options):
    """No false positive over the texts the other tests speak, in both voices."""
    observer = Truncations()
    engine.set_observer(observer)
    try:
        for clip in (voice_a, voice_b):
            voice = engine.encode_clip(clip)
            for text in [*ENGINE_TEXTS, SERVER_TEXT, LONG_PIECE, MULTI_SENTENCE, LONG_TEXT_SENTENCE]:
                result = engine.synthesize(text, voice, options)
                assert result.truncated is None and result.stopped, text
                assert find_runaway(result.speech_tokens.tolist()) is None
    finally:
        engine.set_observer(EngineObserver())
    assert observer.reasons == []


# ----- the switch -------------------------------------------------------------------------------


def test_the_guard_is_on_by_default_and_off_by_setting_or_flag(monkeypatch):
    assert TTSConfig().generation.runaway_guard and Settings().runaway_guard
    monkeypatch.setenv("TTS_RUNAWAY_GUARD", "false")
    assert Settings().engine_config().generation.runaway_guard is False
    assert settings_from_cli(["--runaway-guard"]).runaway_guard is True
    args = build_parser().parse_args(["--text", "x", "--voice", "v.wav", "--no-runaway-guard"])
    assert args.runaway_guard is False
    assert TTSConfig(runaway_guard=False).generation.runaway_bound() is None
