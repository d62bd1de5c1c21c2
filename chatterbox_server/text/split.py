"""Split long text into pieces the model speaks well: sentences, then clauses, then words.

No piece exceeds `max_chars` (so none comes near max_new_tokens), `[tags]` are never cut and
stay attached to the words they belong to, and the first piece can be made short so the first
audio of a stream arrives early.
"""

import re
from dataclasses import dataclass

from chatterbox_server.text.normalize import TAG_PATTERN

DEFAULT_MAX_CHARS = 250  # ≈ 60 GPT-2 tokens ≈ 400 speech tokens ≈ 16 s of audio, well under 1024
DEFAULT_FIRST_MAX_CHARS = 80  # a short first piece: first audio after a second or two of speech
MAX_TAG_CHARS = 32  # a bracketed span longer than this is not a tag (the longest is 15)

# A sentence ends at . ! ? (or …) plus optional closing quotes/brackets, then whitespace.
SENTENCE_END = re.compile(r"(?<=[.!?…])[\"')\]]*\s+")
# Clause boundaries: after , ; : or a dash surrounded by spaces.
CLAUSE_END = re.compile(r"(?<=[,;:])\s+|\s+[-–—]\s+")
_WORD_CHARS = re.compile(r"\w")


@dataclass(frozen=True)
class TextPiece:
    text: str
    start: int  # character span in the original text
    end: int


def _has_words(text: str) -> bool:
    """True if the text says something besides tags and punctuation."""
    return bool(_WORD_CHARS.search(TAG_PATTERN.sub("", text)))


def _cut(text: str, offset: int, pattern: re.Pattern) -> list[TextPiece]:
    """Split text at pattern matches that do not fall inside a tag; spans are absolute."""
    tags = [m.span() for m in TAG_PATTERN.finditer(text)]
    pieces, start = [], 0
    for match in pattern.finditer(text):
        if any(a < match.start() < b for a, b in tags):
            continue
        if match.start() > start:
            pieces.append(TextPiece(text[start : match.start()], offset + start, offset + match.start()))
        start = match.end()
    if start < len(text):
        pieces.append(TextPiece(text[start:], offset + start, offset + len(text)))
    return pieces


def _split_words(piece: TextPiece, max_chars: int) -> list[TextPiece]:
    """Greedy word packing for a clause longer than max_chars (tags count as one word; a word
    longer than max_chars is cut into max_chars slices, so no piece is ever longer)."""
    words = re.compile(rf"\[[^\]]{{0,{MAX_TAG_CHARS}}}\]|\S{{1,{max_chars}}}")
    tokens = list(words.finditer(piece.text))
    out: list[TextPiece] = []
    start: int | None = None
    end = 0
    for m in tokens:
        if start is not None and m.end() - start > max_chars:
            out.append(TextPiece(piece.text[start:end], piece.start + start, piece.start + end))
            start = None
        if start is None:
            start = m.start()
        end = m.end()
    if start is not None:
        out.append(TextPiece(piece.text[start:end], piece.start + start, piece.start + end))
    return out


def _pack(parts: list[TextPiece], max_chars: int, source: str) -> list[TextPiece]:
    """Join neighbouring parts back together while they fit in max_chars."""
    out: list[TextPiece] = []
    for part in parts:
        if out and part.end - out[-1].start <= max_chars:
            last = out[-1]
            out[-1] = TextPiece(source[last.start : part.end], last.start, part.end)
        else:
            out.append(part)
    return out


def _attach_tag_only_pieces(pieces: list[TextPiece], source: str, max_chars: int) -> list[TextPiece]:
    """A piece that is only tags ("[laugh]") joins its neighbour instead of being spoken alone,
    as long as the two fit in max_chars."""
    out: list[TextPiece] = []
    for piece in pieces:
        fits = out and piece.end - out[-1].start <= max_chars
        if fits and (not _has_words(piece.text) or not _has_words(out[-1].text)):
            last = out[-1]
            out[-1] = TextPiece(source[last.start : piece.end], last.start, piece.end)
        else:
            out.append(piece)
    return out


def join_short_pieces(pieces: list[TextPiece], source: str, max_chars: int, min_chars: int) -> list[TextPiece]:
    """A piece with fewer than `min_chars` letters and digits outside its tags ("Yes.", "Hi!"),
    which the model speaks badly alone, joins its neighbour: the piece before it, else the one
    after it, where the two fit in max_chars."""

    def short(piece: TextPiece) -> bool:
        return sum(c.isalnum() for c in TAG_PATTERN.sub("", piece.text)) < min_chars

    out: list[TextPiece] = []
    waiting: TextPiece | None = None  # a short piece that found no room before it
    for piece in pieces:
        if waiting is not None:
            if piece.end - waiting.start <= max_chars:
                piece = TextPiece(source[waiting.start : piece.end], waiting.start, piece.end)
            else:
                out.append(waiting)
            waiting = None
        if short(piece):
            if out and piece.end - out[-1].start <= max_chars:
                out[-1] = TextPiece(source[out[-1].start : piece.end], out[-1].start, piece.end)
                continue
            waiting = piece
            continue
        out.append(piece)
    if waiting is not None:
        out.append(waiting)
    return out


def split_text(
    text: str, max_chars: int = DEFAULT_MAX_CHARS, first_max_chars: int | None = DEFAULT_FIRST_MAX_CHARS
) -> list[TextPiece]:
    """Pieces in reading order, each at most max_chars long (over-long words are cut)."""
    stripped = text.strip()
    if not stripped:
        return []
    offset = text.index(stripped[0])
    pieces: list[TextPiece] = []
    for sentence in _cut(stripped, offset, SENTENCE_END):
        sentence = TextPiece(text[sentence.start : sentence.end], sentence.start, sentence.end)
        if len(sentence.text) <= max_chars:
            pieces.append(sentence)
            continue
        clauses = []
        for clause in _cut(sentence.text, sentence.start, CLAUSE_END):
            clauses += [clause] if len(clause.text) <= max_chars else _split_words(clause, max_chars)
        pieces += _pack(clauses, max_chars, text)
    pieces = _attach_tag_only_pieces(pieces, text, max_chars)
    if first_max_chars and pieces and len(pieces[0].text) > first_max_chars:
        head = _cut(pieces[0].text, pieces[0].start, CLAUSE_END)
        head = _attach_tag_only_pieces(head, text, max_chars)
        if len(head) > 1 and len(head[0].text) <= first_max_chars:
            rest = TextPiece(text[head[1].start : pieces[0].end], head[1].start, pieces[0].end)
            pieces = [head[0], rest, *pieces[1:]]
    return pieces
