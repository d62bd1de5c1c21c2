"""Text clean-up applied before tokenisation, as upstream Chatterbox Turbo does it."""

import re

EMPTY_TEXT_REPLACEMENT = "You need to add some text for me to talk."

# Order matters: it is upstream's (tts_turbo.punc_norm).
_PUNCTUATION_REPLACEMENTS = (
    ("…", ", "),
    (":", ","),
    ("—", "-"),
    ("–", "-"),
    (" ,", ","),
    ("“", '"'),
    ("”", '"'),
    ("‘", "'"),
    ("’", "'"),
)
_SENTENCE_ENDERS = (".", "!", "?", "-", ",")

# The paralinguistic tags the tokenizer knows (ids 50257..50275, in id order).
TAGS = (
    "[angry]",
    "[fear]",
    "[surprised]",
    "[whispering]",
    "[advertisement]",
    "[dramatic]",
    "[narration]",
    "[crying]",
    "[happy]",
    "[sarcastic]",
    "[clear throat]",
    "[sigh]",
    "[shush]",
    "[cough]",
    "[groan]",
    "[sniff]",
    "[gasp]",
    "[chuckle]",
    "[laugh]",
)
TAG_PATTERN = re.compile("|".join(re.escape(tag) for tag in TAGS))


def normalize_text(text: str) -> str:
    """Return `text` with upstream's punctuation clean-up; `[tags]` pass through unchanged.

    None of the replacements can touch a tag's characters (lower-case letters, one space,
    brackets), so tags survive without being split out first.
    """
    if not text:
        return EMPTY_TEXT_REPLACEMENT
    if text[0].islower():
        text = text[0].upper() + text[1:]
    text = " ".join(text.split())
    for old, new in _PUNCTUATION_REPLACEMENTS:
        text = text.replace(old, new)
    text = text.rstrip(" ")
    if not text.endswith(_SENTENCE_ENDERS):
        text += "."
    return text
