"""TextSegmenter: deltas in, segments out as soon as each is complete (pure, no timing)."""

from chatterbox_server.text.incremental import TextSegmenter


def feed_all(segmenter: TextSegmenter, deltas: list[str]) -> list[list[str]]:
    return [segmenter.feed(d) for d in deltas]


def test_a_sentence_is_released_when_the_space_after_its_end_arrives():
    s = TextSegmenter()
    assert feed_all(s, ["Hel", "lo there", ".", " How", " are you?", " "]) == [
        [],
        [],
        [],
        ["Hello there."],
        [],
        ["How are you?"],
    ]
    assert s.pending == ""


def test_a_decimal_point_is_not_a_sentence_end():
    s = TextSegmenter()
    assert s.feed("It costs 3.") == []
    assert s.feed("5 dollars. Ok") == ["It costs 3.5 dollars."]
    assert s.flush() == ["Ok"]


def test_newlines_end_segments_and_blank_ones_are_skipped():
    s = TextSegmenter()
    assert s.feed("First line\n\nSecond line\n") == ["First line", "Second line"]


def test_a_long_sentence_is_cut_at_a_clause_and_endless_text_at_a_word():
    s = TextSegmenter(clause_min_chars=40, max_chars=60)
    long_clause = "This opening clause keeps going for quite a while, and then more"
    assert s.feed(long_clause) == ["This opening clause keeps going for quite a while,"]
    s.clear()
    words = "word " * 20
    out = s.feed(words)
    assert out and all(len(seg) <= 60 for seg in out)
    assert " ".join(out + s.flush()).split() == words.split()


def test_tags_and_quotes_stay_with_their_sentence():
    s = TextSegmenter()
    assert s.feed('She said "stop." [laugh] Then ') == ['She said "stop."']
    assert s.flush() == ["[laugh] Then"]


def test_flush_and_clear():
    s = TextSegmenter()
    s.feed("unfinished thought")
    assert s.flush() == ["unfinished thought"] and s.flush() == []
    s.feed("dropped")
    s.clear()
    assert s.pending == "" and s.flush() == []
