"""Estimated character timings: where each character of a spoken text falls in its audio.

What is exact: the engine speaks a text piece by piece (text/split.py), and each spoken piece
carries its `TextPiece` (the characters it covers) and its audio, so the server knows to the
sample where every piece starts and ends. What is estimated: where each character falls inside
its piece. The model emits speech tokens, not phonemes, and nothing in its outputs says which
token speaks which letter, so the piece's time is shared out by a rule:

1. The piece's spoken time is its audio minus the silence tail the decoder appends to every
   piece (SILENCE_PADDING_TOKENS = 3 tokens of 960 samples at 24 kHz: `DEFAULT_TAIL_S` = 0.12 s;
   less when a piece is shorter than that).
2. That time is shared among the piece's characters by weight (`char_weight`): letters and digits
   1, other symbols (emoji, currency, ...) 0.5, whitespace 0.4, punctuation 0.2, combining marks
   and joiners 0 (they belong to the character before); punctuation that ends a sentence
   (. ! ? …) gets a pause of 3 more and punctuation that ends a clause (, ; : and dashes) 1.5
   more, when whitespace or the end of the text follows it. A piece whose weights are all zero
   shares its time evenly.
3. Each character starts where the one before it ends, so the timings are monotonic and
   contiguous; the piece's last character also holds the silence tail, so a piece's timings end
   exactly where its audio does and consecutive pieces tile the audio without gaps or overlaps.
4. Characters outside every piece (the whitespace the splitter dropped between pieces) get
   zero-length entries at the boundary, so an alignment covers every character of its text, in
   order: `"".join(alignment.chars) == text`.

The result is good enough to highlight words as they are spoken, cut a transcript where a
listener interrupted, or follow along in captions; it is not a forced alignment, and every API
that returns these timings says so (`estimated`).
"""

import math
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass

DEFAULT_TAIL_S = 0.12  # SILENCE_PADDING_TOKENS × SAMPLES_PER_TOKEN / 24 kHz (model/contract.py)

LETTER_WEIGHT = 1.0  # letters and digits
SYMBOL_WEIGHT = 0.5  # emoji, currency, maths and other symbols
SPACE_WEIGHT = 0.4
PUNCTUATION_WEIGHT = 0.2
SENTENCE_PAUSE = 3.0  # added to . ! ? … (or the run of closing punctuation after one) before a gap
CLAUSE_PAUSE = 1.5  # added to , ; : and dashes before a gap
SENTENCE_CHARS = frozenset(".!?…")
CLAUSE_CHARS = frozenset(",;:-–—")


@dataclass(frozen=True)
class WordTiming:
    """One word (a run of non-whitespace characters) and the span of its characters."""

    word: str
    start_s: float
    end_s: float


@dataclass(frozen=True)
class Alignment:
    """Characters with their start and end times in seconds (parallel tuples, in text order)."""

    chars: tuple[str, ...] = ()
    starts: tuple[float, ...] = ()
    ends: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if not len(self.chars) == len(self.starts) == len(self.ends):
            raise ValueError("chars, starts and ends must have one entry per character")

    def __len__(self) -> int:
        return len(self.chars)

    def __add__(self, other: "Alignment") -> "Alignment":
        return Alignment(self.chars + other.chars, self.starts + other.starts, self.ends + other.ends)

    @property
    def text(self) -> str:
        return "".join(self.chars)

    @property
    def end_s(self) -> float:
        """Where the last character ends (0 when there is none)."""
        return self.ends[-1] if self.ends else 0.0

    def shifted(self, offset_s: float) -> "Alignment":
        """The same timings, `offset_s` later."""
        return Alignment(self.chars, tuple(s + offset_s for s in self.starts), tuple(e + offset_s for e in self.ends))

    def as_milliseconds(self) -> dict[str, list]:
        """ElevenLabs' WebSocket shape: chars, charStartTimesMs, charDurationsMs (integers).

        Start and end are rounded, then the duration taken between them, so rounding never makes
        one character overlap the next."""
        starts = [round(s * 1000) for s in self.starts]
        ends = [round(e * 1000) for e in self.ends]
        return {
            "chars": list(self.chars),
            "charStartTimesMs": starts,
            "charDurationsMs": [max(0, e - s) for s, e in zip(starts, ends)],
        }

    def as_seconds(self) -> dict[str, list]:
        """ElevenLabs' HTTP shape: characters, character_start_times_seconds, character_end_times_seconds."""
        return {
            "characters": list(self.chars),
            "character_start_times_seconds": [round(s, 4) for s in self.starts],
            "character_end_times_seconds": [round(e, 4) for e in self.ends],
        }

    def words(self) -> list[WordTiming]:
        """The runs of non-whitespace characters, each from its first character's start to its
        last character's end."""
        words: list[WordTiming] = []
        current: list[int] = []
        for i, char in enumerate((*self.chars, " ")):
            if char.isspace():
                if current:
                    first, last = current[0], current[-1]
                    word = "".join(self.chars[first : last + 1])
                    words.append(WordTiming(word, self.starts[first], self.ends[last]))
                    current = []
            else:
                current.append(i)
        return words


@dataclass(frozen=True)
class PieceSpan:
    """Where one piece is: its characters [char_start, char_end) in the text and its audio [start_s, end_s)."""

    char_start: int
    char_end: int
    start_s: float
    end_s: float


def char_weight(text: str, i: int) -> float:
    """How much of its piece's spoken time character `i` of `text` takes (see the module docstring)."""
    char = text[i]
    if char.isspace():
        return SPACE_WEIGHT
    category = unicodedata.category(char)
    if category[0] in "LN":
        return LETTER_WEIGHT
    if category[0] == "M" or category[0] == "C":  # combining marks, joiners, controls: part of the char before
        return 0.0
    if category[0] == "S":
        return SYMBOL_WEIGHT
    # punctuation: a pause when it closes a run of punctuation before a gap or the end
    weight = PUNCTUATION_WEIGHT
    if i + 1 == len(text) or text[i + 1].isspace():
        run = i
        while run > 0 and unicodedata.category(text[run - 1])[0] == "P":
            run -= 1
        punctuation = set(text[run : i + 1])
        if punctuation & SENTENCE_CHARS:
            weight += SENTENCE_PAUSE
        elif punctuation & CLAUSE_CHARS:
            weight += CLAUSE_PAUSE
    return weight


def _finite(value: float, fallback: float = 0.0) -> float:
    return value if math.isfinite(value) else fallback


def at(text: str, time_s: float) -> Alignment:
    """Zero-length entries for every character of `text`, all at `time_s` (text that is not spoken)."""
    n = len(text)
    return Alignment(tuple(text), (time_s,) * n, (time_s,) * n)


def estimate(text: str, start_s: float, end_s: float, tail_s: float = DEFAULT_TAIL_S) -> Alignment:
    """Timings for every character of one piece whose audio spans [start_s, end_s).

    The spoken time (the span less the silence tail) is shared by `char_weight`; the last
    character runs on to end_s, so the timings cover the piece's audio exactly."""
    start_s = _finite(start_s)
    end_s = max(start_s, _finite(end_s, start_s))
    if not text:
        return Alignment()
    duration = end_s - start_s
    spoken = duration - min(max(_finite(tail_s), 0.0), duration)
    weights = [char_weight(text, i) for i in range(len(text))]
    total = sum(weights)
    if total <= 0:
        weights, total = [1.0] * len(text), float(len(text))
    edges = [start_s]
    cumulative = 0.0
    for weight in weights:
        cumulative += weight
        edges.append(min(end_s, start_s + spoken * cumulative / total))
    edges[-1] = end_s  # the last character holds the tail
    for i in range(1, len(edges)):  # float rounding must never step back
        edges[i] = max(edges[i], edges[i - 1])
    return Alignment(tuple(text), tuple(edges[:-1]), tuple(edges[1:]))


def align(text: str, spans: Iterable[PieceSpan], tail_s: float = DEFAULT_TAIL_S) -> Alignment:
    """Timings for every character of `text`, given where its pieces are (in order).

    Characters before, between and after the pieces get zero-length entries at the nearest
    boundary; spans that overlap or run backwards are clipped so the result stays monotonic."""
    out = Alignment()
    position = 0  # characters of text covered so far
    clock = 0.0  # where the last piece's audio ended
    for span in spans:
        char_start = min(max(span.char_start, position), len(text))
        char_end = min(max(span.char_end, char_start), len(text))
        start_s = max(_finite(span.start_s, clock), clock)
        end_s = max(_finite(span.end_s, start_s), start_s)
        out += at(text[position:char_start], start_s)
        out += estimate(text[char_start:char_end], start_s, end_s, tail_s)
        position, clock = char_end, end_s
    return out + at(text[position:], clock)
