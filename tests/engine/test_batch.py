"""DecodeBatch on the tiny stand-in: left padding, dropping rows and joining newcomers never change
what a row computes. Every check compares a row's next-token logits in the batch with the same
row run alone (one uncached LM call over its whole sequence: no padding, no KV cache), on both
KV back ends (host numpy, and OrtValues with IO binding on the CPU device)."""

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pytest

from chatterbox_server import audio
from chatterbox_server.engine import TTSConfig, TTSEngine
from chatterbox_server.engine.batch import DecodeBatch, compute_prefix, prefill
from chatterbox_server.engine.kv import KVList
from chatterbox_server.engine.language_model import LanguageModel
from chatterbox_server.model.contract import START_SPEECH_TOKEN

# fp32 throughout; padded, cached and uncached runs differ only in summation order (~1e-6 seen)
RTOL, ATOL = 1e-5, 1e-4
STEPS = 6  # tokens each case can be fed
SHORT_PREFIX = 40  # conditioning positions of the truncated voices, well under a whole clip's
TINY_PREFIX = 10


@dataclass(frozen=True)
class Case:
    """One row's inputs: conditioning float [1, N, hidden], text ids int64 [n], then the speech
    tokens int64 [STEPS] it is fed one per step (START first, as the engine feeds)."""

    features: np.ndarray
    text_ids: np.ndarray
    tokens: np.ndarray

    @property
    def prefix_length(self) -> int:
        return int(self.features.shape[1])


@dataclass(eq=False)
class Row:
    """All DecodeBatch reads of a sequence: the position id of its next token."""

    case: Case
    position: int
    fed: int = 0  # tokens fed so far


def make_case(features: np.ndarray, text_len: int, seed: int) -> Case:
    rng = np.random.default_rng(seed)
    text_ids = rng.integers(1, 200, text_len).astype(np.int64)
    codes = rng.integers(0, START_SPEECH_TOKEN, STEPS - 1)
    return Case(features, text_ids, np.concatenate([[START_SPEECH_TOKEN], codes]).astype(np.int64))


def embed(lm: LanguageModel, ids: np.ndarray) -> np.ndarray:
    """int64 [n] → float [n, hidden]."""
    return lm.embed(ids[None, :])[0]


def alone(lm: LanguageModel, case: Case, fed: int) -> np.ndarray:
    """float32 [vocab]: the case's next-token logits after `fed` tokens, from one uncached LM call."""
    embeds = np.concatenate([case.features[0], embed(lm, case.text_ids), embed(lm, case.tokens[:fed])])
    length = embeds.shape[0]
    mask = np.ones((1, length), np.int64)
    positions = np.arange(length, dtype=np.int64)[None, :]
    logits, _ = lm.run(embeds[None].astype(lm.spec.embeds_dtype), mask, positions, lm.empty_past(1))
    return logits[0]


def admit(lm: LanguageModel, cases: list[Case]) -> tuple[list[Row], KVList, np.ndarray, np.ndarray]:
    """Prefill cases together on their prefix KV, as the engine admits newcomers."""
    prefixes = [compute_prefix(lm, c.features) for c in cases]
    kv, mask, logits = prefill(lm, prefixes, [embed(lm, c.text_ids) for c in cases])
    rows = [Row(c, p.length + c.text_ids.shape[0]) for c, p in zip(cases, prefixes)]
    return rows, kv, mask, logits


def step(batch: DecodeBatch) -> None:
    """Feed every row its next token."""
    rows: list[Row] = batch.rows
    batch.step(np.array([r.case.tokens[r.fed] for r in rows], np.int64))
    for r in rows:
        r.fed += 1


def assert_rows_match_alone(lm: LanguageModel, batch: DecodeBatch) -> None:
    assert batch.logits.shape[0] == len(batch.rows) == batch.mask.shape[0]
    for b, row in enumerate(batch.rows):
        want = alone(lm, row.case, row.fed)
        np.testing.assert_allclose(batch.logits[b], want, rtol=RTOL, atol=ATOL, err_msg=f"row {b}")


def first_real_column(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask.any(axis=0))[0])


@pytest.fixture(scope="module", params=[False, True], ids=["host-kv", "device-kv"])
def engine(request, model_dir) -> Iterator[TTSEngine]:
    engine = TTSEngine(TTSConfig(model_dir=model_dir, model_dtype="fp32", kv_on_device=request.param))
    assert engine.kv_on_device is request.param
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def lm(engine) -> LanguageModel:
    return engine._lm


@pytest.fixture(scope="module")
def features(engine, voice_a, voice_b) -> dict[str, np.ndarray]:
    """Conditioning float [1, N, hidden] of two voices, whole and cut short (four prefix lengths)."""
    out = {}
    for name, path in (("a", voice_a), ("b", voice_b)):
        clip = audio.prepare_reference_audio(path.read_bytes(), max_seconds=30.0)
        out[name] = engine.encode_audio(clip).audio_features
    out["a_short"] = out["a"][:, :SHORT_PREFIX]
    out["b_tiny"] = out["b"][:, :TINY_PREFIX]
    lengths = [out[name].shape[1] for name in ("a", "b", "a_short", "b_tiny")]
    assert len(set(lengths)) == 4, lengths  # one longest prefix, so dropping it trims padding
    return out


@pytest.fixture(scope="module")
def cases(features) -> dict[str, Case]:
    """Rows of different voices, prefix lengths and text lengths."""
    return {
        "a": make_case(features["a"], 6, seed=1),
        "b": make_case(features["b"], 11, seed=2),
        "a_short": make_case(features["a_short"], 2, seed=3),
        "b_tiny": make_case(features["b_tiny"], 3, seed=4),
    }


def test_a_joined_prefill_and_its_steps_match_each_row_alone(lm, cases):
    chosen = [cases["a"], cases["b"], cases["a_short"]]
    rows, kv, mask, logits = admit(lm, chosen)
    longest_prefix = max(c.prefix_length for c in chosen)
    longest_text = max(c.text_ids.shape[0] for c in chosen)
    assert mask.shape == (3, longest_prefix + longest_text)  # left-padded to one length
    assert mask.sum(axis=1).tolist() == [c.prefix_length + c.text_ids.shape[0] for c in chosen]
    batch = DecodeBatch(lm)
    batch.join(rows, kv, mask, logits)
    assert_rows_match_alone(lm, batch)
    # the rows really differ, so a row-for-row match is not one shared answer
    assert np.abs(batch.logits[0] - batch.logits[2]).max() > 1e-2
    for _ in range(STEPS):
        step(batch)
        assert_rows_match_alone(lm, batch)
    assert batch.kv_length == longest_prefix + longest_text + STEPS


def test_dropping_rows_leaves_the_others_unchanged_and_trims_shared_padding(lm, cases):
    chosen = [cases["a_short"], cases["a"], cases["b"], cases["b_tiny"]]
    batch = DecodeBatch(lm)
    batch.join(*admit(lm, chosen))
    step(batch)
    step(batch)

    batch.keep(np.ones(4, bool))  # keeping every row changes nothing
    assert len(batch) == 4

    # drop a row that is not the longest: nothing to trim
    width = batch.kv_length
    logits_before = batch.logits.copy()
    batch.keep(np.array([True, True, True, False]))
    assert batch.kv_length == width and first_real_column(batch.mask) == 0
    np.testing.assert_array_equal(batch.logits, logits_before[:3])
    step(batch)
    assert_rows_match_alone(lm, batch)

    # drop the longest prefix: the padding every remaining row shared is trimmed
    rows: list[Row] = batch.rows
    prefixes = [r.case.prefix_length for r in rows]
    longest = int(np.argmax(prefixes))
    remaining = [p for i, p in enumerate(prefixes) if i != longest]
    width = batch.kv_length
    logits_before = batch.logits.copy()
    batch.keep(np.arange(len(rows)) != longest)
    assert batch.kv_length == width - (prefixes[longest] - max(remaining)) < width
    assert first_real_column(batch.mask) == 0
    assert batch.mask.shape == (2, batch.kv_length)
    np.testing.assert_array_equal(batch.logits, np.delete(logits_before, longest, axis=0))
    for _ in range(2):
        step(batch)
        assert_rows_match_alone(lm, batch)

    batch.keep(np.zeros(len(batch), bool))  # the last rows leave: an empty batch
    assert len(batch) == 0 and batch.kv_length == 0 and batch.kv == []


def test_joining_newcomers_into_a_running_batch_equals_running_them_separately(lm, cases):
    batch = DecodeBatch(lm)
    batch.join(*admit(lm, [cases["a_short"]]))
    for _ in range(3):
        step(batch)
    running_width = batch.kv_length

    # newcomers wider than the running batch: the running rows are padded on the left
    rows, kv, mask, logits = admit(lm, [cases["a"], cases["b"]])
    assert mask.shape[1] > running_width
    batch.join(rows, kv, mask, logits)
    assert batch.kv_length == mask.shape[1] and len(batch) == 3
    assert_rows_match_alone(lm, batch)
    for _ in range(2):
        step(batch)
        assert_rows_match_alone(lm, batch)

    # a newcomer narrower than the running batch: it is the one padded
    rows, kv, mask, logits = admit(lm, [cases["b_tiny"]])
    width = batch.kv_length
    assert mask.shape[1] < width
    batch.join(rows, kv, mask, logits)
    assert batch.kv_length == width and len(batch) == 4
    assert_rows_match_alone(lm, batch)
    step(batch)
    assert_rows_match_alone(lm, batch)
    assert [r.fed for r in batch.rows] == [6, 3, 3, 1]
