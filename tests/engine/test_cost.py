"""The engine's cost model (engine/cost.py): fed measurements by hand, then by a real engine."""

import numpy as np
import pytest

from chatterbox_server.engine import GenerationOptions, TTSConfig, TTSEngine
from chatterbox_server.engine.cost import CostModel
from chatterbox_server.engine.sampling import SamplingParams
from chatterbox_server.engine.types import PlannedPiece, SpeechPlan
from chatterbox_server.engine.vocoder_stage import WindowPolicy
from chatterbox_server.text.split import TextPiece


def plan_of(text_tokens: list[int], max_new_tokens: int = 1000, limits: list[int | None] | None = None) -> SpeechPlan:
    pieces = tuple(
        PlannedPiece(TextPiece("x", 0, 1), np.zeros(n, dtype=np.int64), max_new_tokens=(limits or [None] * 99)[i])
        for i, n in enumerate(text_tokens)
    )
    return SpeechPlan(pieces, GenerationOptions(), SamplingParams(), max_new_tokens)


def measured() -> CostModel:
    cost = CostModel(WindowPolicy())
    cost.on_prefill(2, 0.3, 0.1)  # 0.1 s a piece, after a voice's prefix (0.1 s, once)
    cost.on_step(4, 0.3 + 0.04, 100)  # the step held that prefill: 0.01 s a row
    cost.on_decoder_call(2, 0.6, 1.0, [0.0, 0.0])  # 0.3 s a row
    cost.on_piece_finished(10, 100, stopped=True)  # 10 speech tokens a text token
    return cost


def test_nothing_is_estimated_before_anything_is_measured():
    cost = CostModel(WindowPolicy())
    assert cost.estimate_s(plan_of([10]), chunked=False) is None
    cost.on_prefill(1, 0.1, 0.0)
    cost.on_step(1, 0.2, 10)
    assert cost.estimate_s(plan_of([10]), chunked=False) is None  # no decoder call, no finished piece yet


def test_a_whole_piece_costs_its_prefill_its_steps_and_one_decoder_call():
    estimate = measured().estimate_s(plan_of([10]), chunked=False)
    assert estimate == pytest.approx(0.1 + 100 * 0.01 + 0.3)


def test_pieces_add_up_and_each_is_held_to_its_limit():
    cost = measured()
    two = cost.estimate_s(plan_of([10, 10]), chunked=False)
    assert two == pytest.approx(2 * (0.1 + 1.0 + 0.3))
    capped = cost.estimate_s(plan_of([10, 10], max_new_tokens=5), chunked=False)  # max_new_tokens=5
    assert capped == pytest.approx(2 * (0.1 + 5 * 0.01 + 0.3))
    bounded = cost.estimate_s(plan_of([10], limits=[20]), chunked=False)  # the runaway bound
    assert bounded == pytest.approx(0.1 + 20 * 0.01 + 0.3)


def test_a_streamed_piece_pays_a_decoder_call_per_window_of_the_schedule():
    cost = measured()
    policy = cost.windows
    expected_windows, covered = 0, 0
    while covered < 100:
        covered += policy.target_tokens(expected_windows)
        expected_windows += 1
    assert cost.windows_for(100) == expected_windows > 1
    assert cost.estimate_s(plan_of([10]), chunked=True) == pytest.approx(0.1 + 1.0 + expected_windows * 0.3)


def test_figures_follow_new_measurements_smoothly():
    cost = measured()
    for _ in range(200):
        cost.on_decoder_call(1, 1.0, 1.0, [0.0])
    assert cost.decoder_s_per_row == pytest.approx(1.0, rel=1e-3)
    cost.on_piece_finished(10, 5, stopped=False)  # a piece cut by its limit says nothing of what text needs
    assert cost.tokens_per_text_token == pytest.approx(10.0)


def test_a_real_engine_measures_itself_and_longer_texts_cost_more(model_dir, voice_a):
    engine = TTSEngine(TTSConfig(model_dir=model_dir, model_dtype="fp32"))
    try:
        short = engine.prepare("One short sentence.")
        assert engine.estimate_s(short) is None
        engine.synthesize(short, voice_a)
        long = engine.prepare(" ".join(["One short sentence."] * 40))
        one, forty = engine.estimate_s(short), engine.estimate_s(long)
        assert one is not None and forty is not None and 0 < one < forty
        assert forty == pytest.approx(40 * one, rel=0.35)  # forty such pieces (joined in twos or threes)
    finally:
        engine.close()
