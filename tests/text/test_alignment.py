"""Estimated character timings (text/alignment.py): whatever the text, they cover every character
in order, never step back, stay inside the audio, and tile consecutive pieces exactly."""

import itertools
import math

import pytest

from chatterbox_server.model.contract import SAMPLES_PER_TOKEN, SILENCE_PADDING_TOKENS
from chatterbox_server.text import split_text
from chatterbox_server.text.alignment import (
    DEFAULT_TAIL_S,
    Alignment,
    PieceSpan,
    align,
    at,
    char_weight,
    estimate,
)

HOSTILE = [
    "",
    " ",
    "a",
    "...",
    "?!?!?!",
    "—",
    "Hello, world.",
    "Hi there. How are you? Fine!",
    "👋🏽 hello 👨‍👩‍👧 family 🇫🇷",
    "e\u0301te\u0301",  # combining accents
    "x" * 600,  # one very long word
    "[laugh] that was [chuckle] funny",
    "3.5 apples cost $4.99 — or 20%",
    "\u200b\u200d\ufeff",  # only zero-width characters
    "line one\nline two\ttabbed",
]


def check(alignment: Alignment, text: str, start_s: float, end_s: float) -> None:
    """The properties every alignment of `text` over [start_s, end_s] has."""
    assert alignment.text == text and len(alignment) == len(text)
    for s, e in zip(alignment.starts, alignment.ends):
        assert math.isfinite(s) and math.isfinite(e)
        assert start_s - 1e-9 <= s <= e <= end_s + 1e-9
    for e, next_s in zip(alignment.ends, alignment.starts[1:]):
        assert e <= next_s + 1e-9  # no character overlaps the next
    assert list(alignment.starts) == sorted(alignment.starts)


@pytest.mark.parametrize("text", HOSTILE)
def test_one_piece_covers_every_character_monotonically_inside_its_audio(text):
    alignment = estimate(text, 1.5, 3.25)
    check(alignment, text, 1.5, 3.25)
    if text:
        assert alignment.starts[0] == 1.5 and alignment.ends[-1] == 3.25  # the piece's audio, exactly


@pytest.mark.parametrize("text", HOSTILE)
def test_degenerate_spans_still_give_valid_timings(text):
    for start, end in [(2.0, 2.0), (2.0, 1.0), (0.0, 0.05), (0.0, float("nan")), (float("inf"), 1.0)]:
        alignment = estimate(text, start, end)
        assert alignment.text == text
        assert all(math.isfinite(v) for v in alignment.starts + alignment.ends)
        assert list(alignment.starts) == sorted(alignment.starts)
        assert all(s <= e for s, e in zip(alignment.starts, alignment.ends))


def test_the_silence_tail_is_left_to_the_last_character():
    alignment = estimate("abcd", 0.0, 1.12, tail_s=0.12)
    # four letters of equal weight share the spoken second; the last also holds the 0.12 s tail
    assert alignment.starts == pytest.approx((0.0, 0.25, 0.5, 0.75))
    assert alignment.ends == pytest.approx((0.25, 0.5, 0.75, 1.12))


def test_a_piece_shorter_than_the_tail_is_all_tail():
    alignment = estimate("ab", 0.0, 0.05, tail_s=0.12)
    assert alignment.ends[-1] == 0.05 and alignment.starts == (0.0, 0.0)


def test_the_tail_matches_the_decoders_padding():
    assert pytest.approx(SILENCE_PADDING_TOKENS * SAMPLES_PER_TOKEN / 24_000) == DEFAULT_TAIL_S


def test_weights_letters_full_spaces_and_punctuation_less_and_pauses_after_sentences():
    text = "Hi, you. Ok"
    weights = [char_weight(text, i) for i in range(len(text))]
    letter, comma, space, stop = weights[0], weights[2], weights[3], weights[7]
    assert letter == 1.0 and space < letter
    assert comma > space and stop > comma  # a clause pause, a longer sentence pause
    assert char_weight("3.5", 1) < 1.0  # a decimal point is no sentence end
    assert char_weight('Done."', 5) > char_weight('Done."', 4)  # the pause goes after the closing quote
    assert char_weight("e\u0301", 1) == 0.0  # a combining mark belongs to its letter


def test_a_sentence_pause_makes_the_next_word_start_later():
    paused = estimate("ab. cd", 0.0, 1.0, tail_s=0.0)
    plain = estimate("ab  cd", 0.0, 1.0, tail_s=0.0)
    assert paused.starts[4] > plain.starts[4]


@pytest.mark.parametrize("text", [t for t in HOSTILE if t.strip()] + ["One. Two, three! " * 40])
def test_pieces_of_a_split_text_tile_the_audio_and_cover_the_whole_text(text):
    pieces = split_text(text, max_chars=60, first_max_chars=20)
    spans, clock = [], 0.0
    for piece in pieces:
        duration = 0.2 + 0.05 * len(piece.text)
        spans.append(PieceSpan(piece.start, piece.end, clock, clock + duration))
        clock += duration
    alignment = align(text, spans)
    check(alignment, text, 0.0, clock)
    for span in spans:  # each piece's characters start at its audio's start and end at its end
        first = next(i for i in range(span.char_start, span.char_end))
        assert alignment.starts[first] == pytest.approx(span.start_s)
        assert alignment.ends[span.char_end - 1] == pytest.approx(span.end_s)
    dropped = [i for i in range(len(text)) if not any(s.char_start <= i < s.char_end for s in spans)]
    assert all(alignment.starts[i] == alignment.ends[i] for i in dropped)  # zero-length at a boundary


def test_align_clips_overlapping_and_backwards_spans():
    text = "aaaa bbbb cccc"
    spans = [PieceSpan(0, 9, 0.0, 1.0), PieceSpan(5, 14, 0.5, 0.8), PieceSpan(20, 30, 2.0, 3.0)]
    check(align(text, spans), text, 0.0, 3.0)


def test_align_without_pieces_gives_zero_length_entries():
    alignment = align("unspoken", [])
    assert alignment.text == "unspoken" and set(alignment.starts) == {0.0} and set(alignment.ends) == {0.0}


def test_milliseconds_never_overlap_after_rounding():
    alignment = estimate("The quick brown fox, jumps. Over!", 0.0003, 1.2347)
    ms = alignment.as_milliseconds()
    assert len(ms["chars"]) == len(ms["charStartTimesMs"]) == len(ms["charDurationsMs"])
    ends = [s + d for s, d in zip(ms["charStartTimesMs"], ms["charDurationsMs"])]
    assert all(isinstance(v, int) for v in ms["charStartTimesMs"] + ms["charDurationsMs"])
    assert all(e <= s for e, s in zip(ends, ms["charStartTimesMs"][1:]))
    assert ends[-1] == 1235


def test_seconds_shape_and_words():
    alignment = at("  ", 0.0) + estimate("Hello there.", 0.0, 1.0) + at(" ", 1.0) + estimate("Bye", 1.0, 1.5)
    seconds = alignment.as_seconds()
    assert "".join(seconds["characters"]) == "  Hello there. Bye"
    assert len(seconds["character_start_times_seconds"]) == len(seconds["character_end_times_seconds"]) == 18
    words = alignment.words()
    assert [w.word for w in words] == ["Hello", "there.", "Bye"]
    assert words[0].start_s == 0.0 and words[-1].end_s == 1.5
    assert all(a.end_s <= b.start_s for a, b in itertools.pairwise(words))


def test_shifted_moves_every_time():
    alignment = estimate("ab", 0.0, 1.0).shifted(2.0)
    assert alignment.starts[0] == 2.0 and alignment.end_s == 3.0


def test_mismatched_lengths_are_refused():
    with pytest.raises(ValueError):
        Alignment(("a",), (0.0, 1.0), (1.0,))
