"""Invisible characters are never spoken (text/invisible.py; issue "Reliability round 3", finding 6)."""

import sys
import unicodedata

import pytest

from chatterbox_server.text.incremental import TextSegmenter
from chatterbox_server.text.invisible import has_visible_text, strip_invisible

# Default_Ignorable_Code_Point (DerivedCoreProperties.txt, Unicode 15): not in unicodedata
DEFAULT_IGNORABLE = [
    (0x00AD, 0x00AD),
    (0x034F, 0x034F),
    (0x061C, 0x061C),
    (0x115F, 0x1160),
    (0x17B4, 0x17B5),
    (0x180B, 0x180F),
    (0x200B, 0x200F),
    (0x202A, 0x202E),
    (0x2060, 0x206F),
    (0x3164, 0x3164),
    (0xFE00, 0xFE0F),
    (0xFEFF, 0xFEFF),
    (0xFFA0, 0xFFA0),
    (0xFFF0, 0xFFF8),
    (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A),
    (0xE0000, 0xE0FFF),
]


def invisible_code_points() -> list[int]:
    format_chars = [c for c in range(sys.maxunicode + 1) if unicodedata.category(chr(c)) == "Cf"]
    ignorable = [c for first, last in DEFAULT_IGNORABLE for c in range(first, last + 1)]
    controls = [c for c in range(sys.maxunicode + 1) if unicodedata.category(chr(c)) == "Cc"]
    return sorted(set(format_chars + ignorable + controls) - {ord("\n"), ord("\t"), ord("\r")})


def test_every_format_ignorable_and_control_character_is_removed_or_a_space():
    for code in invisible_code_points():
        kept = strip_invisible(f"a{chr(code)}b")
        assert kept in ("ab", "a b"), (hex(code), unicodedata.name(chr(code), "?"), kept)


def test_separating_controls_keep_words_apart_and_newlines_and_tabs_stay():
    assert strip_invisible("one\x0btwo\x0cthree\x1ffour\x85five") == "one two three four five"
    assert strip_invisible("a\r\nb\rc\nd\te") == "a\nb\nc\nd\te"
    assert strip_invisible("bell\x07 null\x00 del\x7f") == "bell null del"


@pytest.mark.parametrize(
    "text",
    [
        "\u200b" * 4999,
        "\ufeff\u200c\u200d\u2060\u00ad",
        "\u202e\u2066\u2069\u200e\u200f",
        "\ufe0f\ufe0e\U000e0100",  # variation selectors with no base
        "\x00\x01\x1b",
        "\u200b \u200b\n\u200b\t",
    ],
)
def test_text_of_invisible_characters_only_has_nothing_to_say(text):
    assert strip_invisible(text).strip() == ""
    assert not has_visible_text(text)


def test_visible_text_loses_only_what_is_invisible():
    assert strip_invisible("Hello\u200b there, co\u00adoperate\ufeff!") == "Hello there, cooperate!"
    assert strip_invisible("\u202eevil\u202c text") == "evil text"
    assert strip_invisible("a\u200db") == "ab"  # a joiner between letters joins nothing
    assert strip_invisible("x\ufe0f") == "x"  # an emoji selector after a letter selects nothing


@pytest.mark.parametrize(
    "emoji",
    [
        "👩\u200d💻",  # a ZWJ sequence
        "👩🏽\u200d💻",  # with a skin tone
        "❤\ufe0f",  # emoji presentation
        "1\ufe0f\u20e3",  # a keycap
        "\U0001f3f4\U000e0067\U000e0062\U000e0073\U000e0063\U000e0074\U000e007f",  # Scotland's flag
    ],
)
def test_what_builds_an_emoji_stays_inside_it(emoji):
    assert strip_invisible(f"Hi {emoji} there") == f"Hi {emoji} there"


def test_a_joiner_flood_after_an_emoji_keeps_one_emoji():
    assert strip_invisible("😀" + "\u200d" * 1000 + "\ufe0f" * 1000) == "😀"


def test_the_realtime_segmenter_treats_invisible_segments_like_spaces():
    segmenter = TextSegmenter()
    assert segmenter.feed("Hello there. \u200b\u200b\n") == ["Hello there."]
    assert segmenter.feed("\u200b\u200b\u200b") == [] and segmenter.flush() == []
