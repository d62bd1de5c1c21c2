"""Cut text that arrives in pieces (an LLM's deltas) into segments as soon as each is complete.

A voice agent streams text; speaking must start at the first complete sentence, not at the end
of the reply. A segment ends at a sentence end; a long sentence also ends at a clause boundary
once CLAUSE_MIN_CHARS have gathered (so a rambling first sentence does not hold up the first
audio), and text with no boundary at all is cut at a word once it reaches MAX_SEGMENT_CHARS.
A fenced code block (``` or ~~~ at the start of a line) is one segment, held until its closing
fence arrives (or the text is flushed), so the clean-up (text/cleanup.py) sees it whole.
"""

import re

from chatterbox_server.text.invisible import has_visible_text
from chatterbox_server.text.split import CLAUSE_END, DEFAULT_MAX_CHARS, SENTENCE_END

CLAUSE_MIN_CHARS = 80  # a clause boundary ends a segment only past this many characters
MAX_SEGMENT_CHARS = DEFAULT_MAX_CHARS  # never hold more than one piece's worth without a cut
_LINE_END = re.compile(r"\n\s*")
_WORD_GAP = re.compile(r"\s+")
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})", re.MULTILINE)


def _code_block(text: str) -> tuple[int, int | None] | None:
    """The first fenced code block in `text`: (where it starts, where its closing fence's line
    ends, or None while it is open); None when there is none."""
    for opening in _FENCE.finditer(text):
        fence = opening.group(1)
        line_end = text.find("\n", opening.end())
        if line_end < 0:
            return opening.start(), None  # the opening line itself is still arriving
        if fence in text[opening.end() : line_end]:
            continue  # ```x``` on one line: inline code, no block
        for closing in _FENCE.finditer(text, line_end + 1):
            mark = closing.group(1)
            end = text.find("\n", closing.end())
            if mark[0] == fence[0] and len(mark) >= len(fence) and end >= 0 and not text[closing.end() : end].strip():
                return opening.start(), end + 1
        return opening.start(), None
    return None


class TextSegmenter:
    """feed(delta) → the segments completed by it; flush() → whatever is left."""

    def __init__(self, clause_min_chars: int = CLAUSE_MIN_CHARS, max_chars: int = MAX_SEGMENT_CHARS):
        self.clause_min_chars = clause_min_chars
        self.max_chars = max_chars
        self._pending = ""

    @property
    def pending(self) -> str:
        """Text received but not yet part of a segment."""
        return self._pending

    def feed(self, delta: str) -> list[str]:
        self._pending += delta
        segments = []
        while (cut := self._next_cut()) is not None:
            segment, self._pending = self._pending[:cut], self._pending[cut:]
            if has_visible_text(segment):  # a run of zero-width spaces is no more a segment than spaces are
                segments.append(segment.strip())
        return segments

    def flush(self) -> list[str]:
        rest, self._pending = self._pending.strip(), ""
        return [rest] if has_visible_text(rest) else []

    def clear(self) -> None:
        self._pending = ""

    def _next_cut(self) -> int | None:
        """Where the first complete segment of the pending text ends (None: not yet)."""
        text = self._pending
        block = _code_block(text)
        if block is not None:
            start, end = block
            if start == 0:
                return end  # the whole block once it is closed; until then, nothing
            text = text[:start]  # only the text before the block may be cut now
        # a boundary needs the whitespace after it: "3." of "3.5" is no sentence end until more arrives
        ends = [m.end() for m in (SENTENCE_END.search(text), _LINE_END.search(text)) if m]
        if ends:
            return min(ends)
        if len(text) >= self.clause_min_chars:
            clauses = [m.end() for m in CLAUSE_END.finditer(text) if m.start() >= self.clause_min_chars // 2]
            if clauses:
                return clauses[0]
        if len(text) >= self.max_chars:
            gaps = [m.end() for m in _WORD_GAP.finditer(text, 0, self.max_chars)]
            return gaps[-1] if gaps else self.max_chars
        return None
