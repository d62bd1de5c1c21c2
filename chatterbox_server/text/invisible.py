"""Characters nobody can see are never spoken: a safety rule, applied to every text, whatever
the clean-up settings say.

Zero-width spaces, joiners, the byte-order mark, soft hyphens, bidirectional controls, variation
selectors and every other format (Unicode Cf) or default-ignorable code point render as nothing,
but each is two or three bytes to the tokenizer: 4999 zero-width spaces made 119 pieces and a
minute of audio out of a text that shows nothing. They are removed, as are control characters
other than newline and tab (a carriage return becomes a newline; the separating controls, vertical
tab, form feed, the information separators and NEL, a space, so the words either side stay apart).

The one exception is what builds an emoji: a zero-width joiner between two emoji ("👩‍💻"), a
variation selector right after one ("❤️", "1️⃣") and the tag characters of a subdivision flag stay
inside that emoji, so that with TTS_CLEANUP_EMOJI=false the emoji reaches the model as written,
not as its parts. With the emoji step on (the default) the whole emoji goes anyway. Such a
character anywhere else (a joiner between letters, a selector without a base) is removed.
"""

import re

# What starts or continues an emoji (the clean-up's emoji step, cleanup.py, drops these ranges).
EMOJI_CHARS = (
    "\U0001f000-\U0001faff"  # mahjong to symbols and pictographs extended-A: faces, flags, skin tones
    "\u2600-\u27bf"  # miscellaneous symbols, dingbats (☀ ✅ ❤ ✂)
    "\u2300-\u23ff"  # ⌚ ⏰ ⏩
    "\u2b00-\u2bff"  # ⭐ ⬆ ⭕
    "\u2190-\u21ff"  # arrows (→ ↩)
    "\u3030\u303d\u3297\u3299"
)
ZWJ = "\u200d"
EMOJI_SELECTORS = "\ufe0e\ufe0f"  # text and emoji presentation
KEYCAP = "\u20e3"

# Every format character (Cf) and default-ignorable code point of Unicode 15, as ranges
# (tests/text/test_invisible.py checks them against the installed unicodedata).
INVISIBLE_CHARS = (
    "\u00ad"  # soft hyphen
    "\u034f"  # combining grapheme joiner
    "\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2"  # Arabic and Syriac format marks, the letter mark
    "\u115f\u1160\u17b4\u17b5"  # Hangul fillers, Khmer inherent vowels
    "\u180b-\u180f"  # Mongolian variation selectors and vowel separator
    "\u200b-\u200f"  # zero-width space, non-joiner, joiner; left-to-right and right-to-left marks
    "\u202a-\u202e"  # bidirectional embeddings and overrides
    "\u2060-\u206f"  # word joiner, invisible operators, bidirectional isolates, deprecated format
    "\u3164\ufe00-\ufe0f\ufeff\uffa0"  # Hangul filler, variation selectors, byte-order mark
    "\ufff0-\ufffb"  # unassigned, interlinear annotation
    "\U000110bd\U000110cd"  # Kaithi number signs
    "\U00013430-\U0001343f"  # Egyptian hieroglyph format controls
    "\U0001bca0-\U0001bca3"  # shorthand format controls
    "\U0001d173-\U0001d17a"  # musical beams and ties
    "\U000e0000-\U000e0fff"  # language tags, tag characters, variation selectors supplement
)
# control characters other than \t \n \r: those that separate become a space, the rest go
SEPARATING_CONTROLS = "\x0b\x0c\x1c-\x1f\x85"
SILENT_CONTROLS = "\x00-\x08\x0e-\x1b\x7f-\x84\x86-\x9f"

_INVISIBLE = re.compile(f"[{INVISIBLE_CHARS}{SILENT_CONTROLS}]+")
_SEPARATOR = re.compile(f"[{SEPARATING_CONTROLS}]")
_CARRIAGE_RETURN = re.compile("\r\n?")
_ELEMENT = f"[{EMOJI_CHARS}][{EMOJI_SELECTORS}]?"
# a subdivision flag (🏴 + tag letters + cancel tag), a keycap, or emoji joined by ZWJs
_EMOJI_SEQUENCE = re.compile(
    f"\U0001f3f4[\U000e0020-\U000e007e]+\U000e007f|[0-9#*]\ufe0f?{KEYCAP}|{_ELEMENT}(?:{ZWJ}{_ELEMENT})*"
)
_BUILDS_EMOJI = re.compile(f"[{ZWJ}{EMOJI_SELECTORS}\U000e0020-\U000e007f]")  # what a sequence may keep


def strip_invisible(text: str) -> str:
    """`text` without the characters nobody sees (module docstring); the emoji they build stay."""
    if _BUILDS_EMOJI.search(text) is None:
        return _strip(text)
    out, last = [], 0
    for sequence in _EMOJI_SEQUENCE.finditer(text):
        out += [_strip(text[last : sequence.start()]), sequence.group(0)]
        last = sequence.end()
    out.append(_strip(text[last:]))
    return "".join(out)


def _strip(text: str) -> str:
    text = _CARRIAGE_RETURN.sub("\n", text)
    return _INVISIBLE.sub("", _SEPARATOR.sub(" ", text))


def has_visible_text(text: str) -> bool:
    """True if anything but whitespace is left once the invisible characters are gone."""
    return bool(strip_invisible(text).strip())
