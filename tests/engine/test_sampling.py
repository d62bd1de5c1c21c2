"""Repetition penalty and sampling against hand-computed cases."""

import numpy as np
import pytest

from chatterbox_server.engine.sampling import (
    SamplingParams,
    apply_repetition_penalty,
    filter_top_k,
    filter_top_p,
    sample_row,
    select_next_tokens,
    softmax,
)


def test_repetition_penalty_divides_positive_and_multiplies_negative():
    logits = np.array([[2.0, -1.0, 0.5, 3.0]], dtype=np.float32)
    seen = np.array([[True, True, False, False]])
    out = apply_repetition_penalty(logits, seen, np.array([2.0]))
    np.testing.assert_allclose(out, [[1.0, -2.0, 0.5, 3.0]])
    assert logits[0, 0] == 2.0  # input untouched


def test_repetition_penalty_applies_once_per_distinct_id_and_per_row():
    logits = np.array([[1.2, 1.2], [1.2, 1.2]], dtype=np.float32)
    # seen is a set: an id generated three times is penalised once, like HF's gather/scatter
    seen = np.array([[True, False], [False, True]])
    out = apply_repetition_penalty(logits, seen, np.array([1.2, 3.0]))
    np.testing.assert_allclose(out, [[1.0, 1.2], [1.2, 0.4]], rtol=1e-6)


def test_model_card_penalty_formula_on_card_example():
    """The card's processor on tokens [START, 3, 3]: id 3 once, START once."""
    vocab = 6563
    logits = np.linspace(-2, 2, vocab, dtype=np.float32)[None, :]
    seen = np.zeros((1, vocab), dtype=bool)
    seen[0, [6561, 3]] = True
    out = apply_repetition_penalty(logits, seen, np.array([1.2]))
    assert out[0, 3] == pytest.approx(logits[0, 3] * 1.2)
    assert out[0, 6561] == pytest.approx(logits[0, 6561] / 1.2)
    changed = np.flatnonzero(out[0] != logits[0])
    assert set(changed) == {3, 6561}


def test_greedy_takes_argmax_after_penalty():
    logits = np.array([[3.0, 2.9, 0.0]], dtype=np.float32)
    seen = np.array([[True, False, False]])
    tokens = select_next_tokens(logits, seen, [SamplingParams(repetition_penalty=1.2)], [None])
    assert tokens.tolist() == [1]  # 3.0 / 1.2 = 2.5 < 2.9
    tokens = select_next_tokens(logits, seen, [SamplingParams(repetition_penalty=1.0)], [None])
    assert tokens.tolist() == [0]


def test_top_k_keeps_k_largest():
    row = np.array([1.0, 5.0, 3.0, 4.0], dtype=np.float32)
    out = filter_top_k(row, 2)
    assert np.isneginf(out[[0, 2]]).all()
    assert out[1] == 5.0 and out[3] == 4.0
    np.testing.assert_array_equal(filter_top_k(row, 0), row)


def test_top_p_keeps_smallest_set_reaching_mass():
    probs = np.array([0.5, 0.3, 0.15, 0.05])
    row = np.log(probs).astype(np.float32)
    # 0.5 < 0.6, 0.5 + 0.3 = 0.8 ≥ 0.6: keep the first two
    out = filter_top_p(row, 0.6)
    assert np.isfinite(out[[0, 1]]).all() and np.isneginf(out[[2, 3]]).all()
    # exactly reaching the mass stops there: 0.5 + 0.3 = 0.8
    out = filter_top_p(row, 0.8)
    assert np.isfinite(out[[0, 1]]).all() and np.isneginf(out[[2, 3]]).all()
    # tiny top_p still keeps the most likely token
    out = filter_top_p(row, 1e-6)
    assert np.isfinite(out[0]) and np.isneginf(out[1:]).all()


def test_softmax_normalises():
    p = softmax(np.array([0.0, np.log(3.0)], dtype=np.float32))
    np.testing.assert_allclose(p, [0.25, 0.75])


def test_sampling_follows_distribution_and_seed():
    row = np.log(np.array([0.7, 0.2, 0.1])).astype(np.float32)
    params = SamplingParams(temperature=1.0, repetition_penalty=1.0)
    draws = [sample_row(row, params, np.random.default_rng(s)) for s in range(3000)]
    freq = np.bincount(draws, minlength=3) / len(draws)
    np.testing.assert_allclose(freq, [0.7, 0.2, 0.1], atol=0.03)
    a = [sample_row(row, params, rng) for rng in [np.random.default_rng(7)] for _ in range(20)]
    b = [sample_row(row, params, rng) for rng in [np.random.default_rng(7)] for _ in range(20)]
    assert a == b


def test_low_temperature_sharpens():
    row = np.log(np.array([0.6, 0.4])).astype(np.float32)
    params = SamplingParams(temperature=0.05, repetition_penalty=1.0)
    rng = np.random.default_rng(0)
    assert all(sample_row(row, params, rng) == 0 for _ in range(200))


def test_rows_keep_their_own_params():
    logits = np.array([[0.0, 10.0], [0.0, 10.0]], dtype=np.float32)
    seen = np.zeros((2, 2), dtype=bool)
    params = [SamplingParams(), SamplingParams(temperature=1.0, top_k=1)]
    tokens = select_next_tokens(logits, seen, params, [None, np.random.default_rng(0)])
    assert tokens.tolist() == [1, 1]


@pytest.mark.parametrize(
    "params",
    [
        SamplingParams(temperature=1e-38, seed=1),
        SamplingParams(temperature=5e-324, seed=1),
        SamplingParams(temperature=0.7, repetition_penalty=1e-38, seed=1),
        SamplingParams(temperature=10.0, top_k=1, top_p=1e-9, repetition_penalty=10.0, seed=1),
    ],
)
def test_sampling_is_numerically_safe_for_every_accepted_value(params):
    rng = np.random.default_rng(0)
    logits = np.repeat(rng.normal(size=(1, 6563)).astype(np.float32) * 10, 2, axis=0)
    seen = np.zeros_like(logits, dtype=bool)
    seen[:, :100] = True
    tokens = select_next_tokens(logits, seen, [params, params], [np.random.default_rng(1), np.random.default_rng(1)])
    assert tokens.dtype == np.int64 and ((tokens >= 0) & (tokens < 6563)).all()
    assert tokens[0] == tokens[1]  # same seed, same row: same draw


def test_a_tiny_temperature_samples_the_argmax():
    logits = np.array([[0.1, 3.0, 2.9, -1.0]], dtype=np.float32)
    seen = np.zeros_like(logits, dtype=bool)
    picked = select_next_tokens(
        logits, seen, [SamplingParams(temperature=1e-30, repetition_penalty=1.0)], [np.random.default_rng(5)]
    )
    assert picked.tolist() == [1]
