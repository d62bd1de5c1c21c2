import pytest

from chatterbox_server.text.normalize import TAGS
from chatterbox_server.text.split import split_text

LONG_SENTENCE = (
    "When the morning train finally arrived, forty minutes late and packed to the doors, "
    "the passengers on the platform sighed, shuffled forward, and squeezed in anyway; "
    "nobody wanted to wait for the next one, which, according to the board, might never come"
)


def texts(pieces):
    return [p.text for p in pieces]


def test_sentences_become_pieces_with_spans():
    text = "Hello there. How are you? I'm fine!"
    pieces = split_text(text, first_max_chars=None)
    assert texts(pieces) == ["Hello there.", "How are you?", "I'm fine!"]
    for piece in pieces:
        assert text[piece.start : piece.end] == piece.text


def test_short_sentences_are_not_merged_or_lost():
    text = "One. Two. Three."
    assert "".join(texts(split_text(text))).replace(" ", "") == text.replace(" ", "")


def test_long_sentence_splits_at_clauses_within_limit():
    pieces = split_text(LONG_SENTENCE, max_chars=100, first_max_chars=None)
    assert len(pieces) > 1
    assert all(len(p.text) <= 100 for p in pieces)
    assert " ".join(texts(pieces)) == LONG_SENTENCE


def test_clause_free_run_splits_at_words():
    text = " ".join(["word"] * 100)
    pieces = split_text(text, max_chars=60)
    assert all(len(p.text) <= 60 for p in pieces)
    assert " ".join(texts(pieces)) == text


@pytest.mark.parametrize("tag", TAGS)
def test_tags_stay_whole_and_attached(tag):
    text = f"That was funny. {tag} Anyway, let's go on with the meeting, shall we? Sure {tag}."
    pieces = split_text(text, max_chars=30, first_max_chars=None)
    joined = " ".join(texts(pieces))
    assert joined.count(tag) == 2
    for piece in pieces:
        assert piece.text.count("[") == piece.text.count("]")
        assert piece.text.strip() != tag  # never spoken alone


def test_tag_at_the_end_joins_the_last_sentence():
    assert texts(split_text("Done. [laugh]", first_max_chars=None)) == ["Done. [laugh]"]
    assert texts(split_text("[sigh] Fine. Okay.", first_max_chars=None)) == ["[sigh] Fine.", "Okay."]


def test_a_tag_with_a_space_is_never_cut():
    text = ("word " * 20) + "[clear throat] " + ("word " * 20)
    for piece in split_text(text, max_chars=40):
        assert "[clear" not in piece.text or "[clear throat]" in piece.text


def test_first_piece_is_short_for_fast_first_audio():
    pieces = split_text(LONG_SENTENCE + ". And then?", max_chars=250, first_max_chars=80)
    assert len(pieces[0].text) <= 80
    assert pieces[0].text == "When the morning train finally arrived,"


def test_empty_text():
    assert split_text("   ") == []


def test_five_thousand_characters():
    text = " ".join([LONG_SENTENCE + "."] * 24)[:5000]
    pieces = split_text(text)
    assert all(len(p.text) <= 250 for p in pieces)
    assert sum(len(p.text) for p in pieces) >= 4900
