"""Text that speaks well: an LLM's reply cleaned up before it is split, normalised and spoken.

LLM replies are written to be read: Markdown, links, emoji, quotes, `(laughs)`. Read aloud by
Turbo, `**` and `#` become noise, a bare `"` a sigh, a URL a minute of letters. `clean` rewrites a
text into what should be said, step by step, each step switchable (`CleanupRules`); the engine
applies it to every request before splitting (engine/prepare.py), so every route and socket gets
it. Upstream's punctuation clean-up (normalize.py) still runs afterwards, on each piece.

The steps, in order (each a pure function of the text):

1. pause markup: `[pause:0.5s]`, `[pause:500ms]`, `[pause]` (0.5 s) and SSML `<break time="500ms"/>`
   become exact silence after the words before them (`CleanText.pauses`), at most MAX_PAUSE_S
   each and MAX_TOTAL_PAUSE_S per text; a pause before the first word is dropped, and a mark
   that does not parse is removed (never spoken).
2. Markdown (and HTML, and URLs): a fenced code block becomes "Code omitted." (an unclosed fence
   runs to the end of the text); headings, list markers, block quotes, table rules and
   reference definitions go, and a heading, list item or table row (cells joined by commas)
   ends in a full stop, as does a paragraph before a blank line; links and images become their
   text (alt text, or nothing); emphasis, strikethrough and inline code marks go (their text
   stays); HTML tags and comments go, entities are decoded; a bare URL becomes its host name
   (`https://www.example.com/a?b` → "example.com"), or "link" when it has none.
3. stage directions (read after code blocks go and before the rest of the Markdown, so that
   `*sighs*` is a sigh, not emphasis): `(laughs)`, `*sighs*`, `_coughs_`, `<laugh>`, `[laughs]`,
   `(clears throat)`, `*chuckles softly*` (at most three words, one a known sound) become the tags
   (`[laugh]`, `[sigh]`, `[cough]`, `[clear throat]`, `[chuckle]`, ...; see STAGE_DIRECTIONS).
   Other brackets are left to the Markdown and symbol steps.
4. lexicon: a deployment's own pronunciations (`Lexicon`, whole words, case-insensitive), never
   inside a tag.
5. emoji: dropped (pictographs, dingbats, flags, keycaps, skin tones, joiners, variation
   selectors); the tags stay.
6. symbols Turbo misreads: straight and curly double quotes and guillemets removed (apostrophes
   kept, curly ones made straight); `&` → "and"; `%` → "percent"; `…` → "..."; an em or en dash →
   a comma pause (an en dash between numbers → "to"); `#` before a number → "number", else dropped;
   `*`, `~`, `^`, `` ` ``, `\\`, `{`, `}` and brackets that are not a tag dropped; `_`, `|`, `•`
   → a space.
7. short text: a text with fewer than SHORT_TEXT_CHARS letters and digits ("hi", "Yes") gets a
   capital first letter and a full stop (upstream's own rules for every text, made visible);
   and the planner speaks such a short sentence together with its neighbour instead of alone
   (`split.join_short_pieces`). No words are added: a lone "Hi!" is still "Hi!".

Whitespace is collapsed last, and spaces before punctuation removed.
"""

import html
import math
import re
import unicodedata
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from chatterbox_server.text.invisible import EMOJI_CHARS, EMOJI_SELECTORS, KEYCAP, ZWJ
from chatterbox_server.text.normalize import TAG_PATTERN, TAGS

MAX_PAUSE_S = 5.0  # the longest silence one pause mark (or a run of them) asks for
MAX_TOTAL_PAUSE_S = 20.0  # the most silence pause marks add to one text
DEFAULT_PAUSE_S = 0.5  # [pause] and <break/> without a time
SHORT_TEXT_CHARS = 8  # fewer letters and digits than this is a "short" text or sentence
CODE_OMITTED = "Code omitted."
_PAUSE_BASE = 0xE000  # pause marks travel through the steps as private-use characters
_PAUSE_SLOTS = 0x1900  # E000..F8FF
_PRIVATE_USE = re.compile("[\ue000-\uf8ff]")

# Turbo's tags and the words an LLM writes for them (a stage direction is one of these words,
# with at most two more: "(laughs softly)", "*nervous chuckle*").
STAGE_DIRECTIONS: dict[str, tuple[str, ...]] = {
    "[laugh]": ("laugh", "laughs", "laughing", "laughed", "laughter", "haha", "hahaha"),
    "[chuckle]": ("chuckle", "chuckles", "chuckling", "chuckled", "giggle", "giggles", "giggling", "snicker"),
    "[sigh]": ("sigh", "sighs", "sighing", "sighed"),
    "[gasp]": ("gasp", "gasps", "gasping", "gasped"),
    "[cough]": ("cough", "coughs", "coughing", "coughed"),
    "[sniff]": ("sniff", "sniffs", "sniffing", "sniffle", "sniffles", "sniffling"),
    "[groan]": ("groan", "groans", "groaning", "groaned"),
    "[shush]": ("shush", "shushes", "shushing", "shh", "shhh"),
    "[crying]": ("cry", "cries", "crying", "sob", "sobs", "sobbing"),
    "[whispering]": ("whisper", "whispers", "whispering", "whispered"),
    "[angry]": ("angry", "angrily"),
    "[surprised]": ("surprised",),
    "[happy]": ("happy", "happily"),
    "[sarcastic]": ("sarcastic", "sarcastically"),
    "[dramatic]": ("dramatic", "dramatically"),
    "[fear]": ("afraid", "fearful", "fearfully", "scared"),
    "[clear throat]": ("ahem",),  # and "clears (his/her/...) throat", below
}
_DIRECTION_OF = {word: tag for tag, words in STAGE_DIRECTIONS.items() for word in words}
_CLEAR_THROAT = re.compile(r"\bclear(?:s|ing|ed)?\b(?:\s+\w+)?\s+throat\b")
assert set(STAGE_DIRECTIONS) <= set(TAGS)


class Lexicon:
    """A deployment's pronunciations: word → spoken form, matched as whole words, any case."""

    def __init__(self, entries: dict[str, str] | None = None):
        self.entries = {word.lower(): spoken for word, spoken in (entries or {}).items()}
        words = sorted(self.entries, key=len, reverse=True)  # "New York City" before "New York"
        alternatives = "|".join(re.escape(w) for w in words)
        self._pattern = re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)", re.IGNORECASE) if words else None

    def __bool__(self) -> bool:
        return bool(self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    def __repr__(self) -> str:
        return f"Lexicon({len(self.entries)} entries)"

    def apply(self, text: str) -> str:
        """`text` with every lexicon word replaced by its spoken form."""
        if self._pattern is None:
            return text
        return self._pattern.sub(lambda m: self.entries.get(m.group(0).lower(), m.group(0)), text)

    @classmethod
    def parse(cls, content: str, source: str = "lexicon") -> "Lexicon":
        """One entry a line: `word = spoken form` or `word<TAB>spoken form`; blank lines and
        lines starting with # are skipped. ValueError names the first bad line."""
        entries: dict[str, str] = {}
        lines: dict[str, int] = {}
        for number, raw in enumerate(content.splitlines(), 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            separator = "\t" if "\t" in line else "="
            word, _, spoken = line.partition(separator)
            word, spoken = word.strip(), spoken.strip()
            if not _ or not word or not spoken:
                raise ValueError(
                    f"{source} line {number}: expected 'word = spoken form' or 'word<TAB>spoken form', got {raw!r}"
                )
            key = word.lower()
            if key in entries:
                raise ValueError(f"{source} line {number}: {word!r} is already defined on line {lines[key]}")
            entries[key], lines[key] = spoken, number
        return cls(entries)

    @classmethod
    def load(cls, path: Path | str) -> "Lexicon":
        """Read a lexicon file (UTF-8; ValueError on a bad line, an unreadable file or bad UTF-8)."""
        try:
            content = Path(path).read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as e:
            raise ValueError(f"cannot read lexicon {path}: {e}") from None
        return cls.parse(content, f"lexicon {path}")


@dataclass(frozen=True)
class CleanupRules:
    """Which steps `clean` runs (all on by default; `off()`: the text as given)."""

    pause_markup: bool = True
    markdown: bool = True
    stage_directions: bool = True
    emoji: bool = True
    symbols: bool = True
    short_text: bool = True
    lexicon: Lexicon = field(default_factory=Lexicon)

    @classmethod
    def off(cls) -> "CleanupRules":
        return cls(False, False, False, False, False, False)

    @property
    def any(self) -> bool:
        return any(
            (self.pause_markup, self.markdown, self.stage_directions, self.emoji, self.symbols, self.short_text)
        ) or bool(self.lexicon)


@dataclass(frozen=True)
class Pause:
    """Silence of `seconds` after the first `at` characters of the clean text."""

    at: int
    seconds: float


@dataclass(frozen=True)
class CleanText:
    """What `clean` returns: the text to speak, and the silences to put in it."""

    text: str
    pauses: tuple[Pause, ...] = ()

    def segments(self) -> list[tuple[int, int, float]]:
        """(start, end, pause after) of the stretches between pauses, in order."""
        out, start = [], 0
        for pause in self.pauses:
            out.append((start, pause.at, pause.seconds))
            start = pause.at
        if start < len(self.text) or not out:
            out.append((start, len(self.text), 0.0))
        return out


def clean(text: str, rules: CleanupRules | None = None) -> CleanText:
    """`text` as it should be said (see the module docstring); the steps `rules` turns on."""
    rules = CleanupRules() if rules is None else rules
    if not rules.any:
        return CleanText(text)
    text = _PRIVATE_USE.sub("", text.replace("\r\n", "\n").replace("\r", "\n"))
    seconds: list[float] = []
    if rules.pause_markup:
        text = _mark_pauses(text, seconds)
    if rules.markdown:
        text = _drop_code_blocks(text)
    if rules.stage_directions:
        text = stage_directions(text)
    if rules.markdown:
        text = strip_urls(strip_markdown(text))
    if rules.lexicon:
        text = _outside_tags(text, rules.lexicon.apply)
    if rules.emoji:
        text = strip_emoji(text)
    if rules.symbols:
        text = _outside_tags(text, replace_symbols)
    return _assemble(text, seconds, rules.short_text)


def is_speakable(text: str) -> bool:
    """True if `text` says something: a letter or digit outside the tags, or a tag."""
    return bool(TAG_PATTERN.search(text)) or any(c.isalnum() for c in text)


# ----- pause markup ----------------------------------------------------------------------------

_PAUSE_MARK = re.compile(r"\[\s*pause\b[^\]\n]{0,40}\]|<\s*break\b[^<>\n]{0,80}>|<\s*/\s*break\s*>", re.IGNORECASE)
_PAUSE_VALUE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*(ms|milliseconds?|s|secs?|seconds?)?\b", re.IGNORECASE)


def pause_seconds(mark: str) -> float:
    """The silence one pause mark asks for, within [0, MAX_PAUSE_S] (0: a mark that does not parse)."""
    if re.match(r"<\s*/", mark):
        return 0.0  # a closing </break>
    body = mark.strip("[]<>/ \t")
    if mark.startswith("<"):
        time = re.search(r"\btime\s*=\s*[\"']?([^\"'\s/>]*)", body, re.IGNORECASE)
        if time is None:
            return DEFAULT_PAUSE_S if re.fullmatch(r"break\b[^=]*", body, re.IGNORECASE) else 0.0
        body = time.group(1)
    else:
        body = re.sub(r"^pause\s*[:=]?\s*", "", body, flags=re.IGNORECASE)
        if not body:
            return DEFAULT_PAUSE_S
    value = _PAUSE_VALUE.fullmatch(body.strip())
    if value is None:
        return 0.0
    seconds = float(value.group(1))
    if (value.group(2) or "s").lower().startswith("m"):
        seconds /= 1000
    return min(seconds, MAX_PAUSE_S) if math.isfinite(seconds) else MAX_PAUSE_S


def _mark_pauses(text: str, seconds: list[float]) -> str:
    def mark(match: re.Match[str]) -> str:
        if len(seconds) >= _PAUSE_SLOTS:
            return " "
        seconds.append(pause_seconds(match.group(0)))
        return f" {chr(_PAUSE_BASE + len(seconds) - 1)} "

    return _PAUSE_MARK.sub(mark, text)


def _assemble(text: str, seconds: list[float], short_text: bool) -> CleanText:
    """Tidy the text and turn the pause characters into `Pause`s (stretches between two pauses
    that say nothing are dropped, their pauses added up)."""
    parts = re.split("([\ue000-\uf8ff])", text)
    if len(parts) == 1:
        return CleanText(_short(tidy(text)) if short_text else tidy(text))
    words: list[str] = []
    pauses: list[Pause] = []
    length, pending, total = 0, 0.0, 0.0
    for k, part in enumerate(parts):
        if k % 2:  # a pause character
            pending += seconds[ord(part) - _PAUSE_BASE]
            continue
        part = tidy(part)
        if not is_speakable(part):
            continue
        if words:
            give = min(pending, MAX_PAUSE_S, MAX_TOTAL_PAUSE_S - total)
            if give > 0:
                pauses.append(Pause(length, give))
                total += give
            length += 1  # the space between
        words.append(part)
        length += len(part)
        pending = 0.0
    give = min(pending, MAX_PAUSE_S, MAX_TOTAL_PAUSE_S - total)
    if words and give > 0:
        pauses.append(Pause(length, give))
    joined = " ".join(words)
    if short_text and not pauses:
        joined = _short(joined)
    return CleanText(joined, tuple(pauses))


def _short(text: str) -> str:
    """A short text ("hi", "Yes,") as upstream would say it: a capital letter and a full stop."""
    if not text or count_chars(text) >= SHORT_TEXT_CHARS or not is_speakable(text):
        return text
    if text[0].islower():
        text = text[0].upper() + text[1:]
    text = text.rstrip(",;:-–— ")
    if not text.endswith((".", "!", "?", "…")):
        text += "."
    return text


def count_chars(text: str) -> int:
    """Letters and digits outside the tags."""
    return sum(c.isalnum() for c in TAG_PATTERN.sub("", text))


# ----- Markdown, HTML, URLs -------------------------------------------------------------------

_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")


def _drop_code_blocks(text: str) -> str:
    """Each fenced code block → a line "Code omitted." (an unclosed one runs to the end)."""
    if "```" not in text and "~~~" not in text:
        return text
    out: list[str] = []
    fence = ""
    for line in text.split("\n"):
        opening = _FENCE.match(line)
        if fence:
            mark = opening.group(1) if opening else ""
            if mark[:1] == fence[0] and len(mark) >= len(fence) and not line.strip().strip(fence[0]):
                fence = ""
            continue
        if opening and opening.group(1) not in line[opening.end() :]:  # ```x``` on one line is inline code
            fence = opening.group(1)
            out += ["", CODE_OMITTED, ""]
            continue
        out.append(line)
    return "\n".join(out)


_HEADING = re.compile(r" {0,3}#{1,6}(?:\s|$)")
_HEADING_CLOSE = re.compile(r"\s#+$")
_SETEXT = re.compile(r"^ {0,3}(?:=+|-+)\s*$")
_RULE = re.compile(r"^ {0,3}([-*_])(?:\s*\1){2,}\s*$")
_TABLE_RULE = re.compile(r"\|?(?: *:?-+:? *\|)+(?: *:?-+:? *)?")  # matched against the stripped line
_TABLE_ROW = re.compile(r"^\s*\|(.*)\|\s*$")
_QUOTE = re.compile(r"^ {0,3}(?:>\s?)+")
_LIST = re.compile(r"^\s*(?:[-*+•]|\d{1,3}[.)])\s+(?:\[[ xX]\]\s+)?")
_DEFINITION = re.compile(r"^ {0,3}\[[^\]]+\]:\s*\S+.*$")
_ENDS_CLAUSE = (".", "!", "?", "…", ",", ";", ":")

_IMAGE = re.compile(r"!\[([^\[\]\n]*)\]\([^()\n]*(?:\([^()\n]*\)[^()\n]*)*\)")
_LINK = re.compile(r"\[([^\[\]\n]*)\]\(([^()\s]*(?:\([^()\s]*\)[^()\s]*)*)(?:\s+(?:\"[^\"\n]*\"|'[^'\n]*'))?\s*\)")
_REF_LINK = re.compile(r"\[([^\[\]\n]+)\]\[[^\[\]\n]*\]")
_FOOTNOTE = re.compile(r"\[\^[^\]\s]+\]")
_AUTOLINK = re.compile(r"<((?:https?|ftp)://[^<>\s]+|[^<>\s@]+@[^<>\s@]+)>")
_INLINE_CODE = re.compile(r"(?<!`)(`{1,3})(?!`)([^`\n]+?)(?<!`)\1(?!`)")
_HTML_COMMENT = re.compile(r"<!--.*?(?:-->|$)", re.DOTALL)
_HTML_TAG = re.compile(r"</?[A-Za-z][A-Za-z0-9-]{0,31}(?:\s[^<>\n]{0,200})?/?>")
_ENTITY = re.compile(r"&(?:#\d{1,7}|#x[0-9a-fA-F]{1,6}|[A-Za-z][A-Za-z0-9]{1,31});")
_EMPHASIS = (
    re.compile(r"(\*{1,3})(?=[^\s*])([^*\n]*?[^\s*])\1"),
    re.compile(r"(?<![\w_])(_{1,3})(?=[^\s_])([^_\n]*?[^\s_])\1(?![\w_])"),
    re.compile(r"(~~)(?=\S)([^~\n]*?\S)\1"),
)
_ESCAPE = re.compile(r"\\([!-/:-@\[-`{-~])")


def strip_markdown(text: str) -> str:
    """Markdown and HTML → the words they show (see the module docstring, step 2)."""
    lines: list[tuple[str, bool]] = []  # (text, is a block element that ends in a full stop)
    for line in text.split("\n"):
        if _RULE.match(line) or _TABLE_RULE.fullmatch(line.strip()) or _DEFINITION.match(line):
            lines.append(("", False))
        elif _SETEXT.match(line) and lines and lines[-1][0].strip():
            lines[-1] = (lines[-1][0], True)
            lines.append(("", False))
        elif heading := _HEADING.match(line):
            lines.append((_HEADING_CLOSE.sub("", line[heading.end() :].strip()), True))
        elif row := _TABLE_ROW.match(line):
            cells = [c.strip() for c in row.group(1).split("|")]
            lines.append((", ".join(c for c in cells if c), True))
        else:
            line = _QUOTE.sub("", line)
            item = _LIST.match(line)
            lines.append((line[item.end() :] if item else line, bool(item)))
    out: list[str] = []
    for k, (line, block) in enumerate(lines):
        line = _inline(line).strip()
        following = next((t for t, _ in lines[k + 1 :] if t.strip()), None)
        next_is_block = k + 1 < len(lines) and (not lines[k + 1][0].strip() or lines[k + 1][1])
        ends = line.rstrip("\"')]”’»*_~`").endswith(_ENDS_CLAUSE)
        if line and (block or (following is not None and next_is_block)) and not ends:
            line += "."
        out.append(line)
    return "\n".join(out)


def _inline(text: str) -> str:
    if not text:
        return text
    text = _HTML_COMMENT.sub(" ", text)
    text = _IMAGE.sub(lambda m: m.group(1), text)
    text = _LINK.sub(lambda m: m.group(1).strip() or m.group(2), text)
    text = _REF_LINK.sub(lambda m: m.group(1), text)
    text = _FOOTNOTE.sub("", text)
    text = _AUTOLINK.sub(lambda m: m.group(1), text)
    text = _INLINE_CODE.sub(lambda m: m.group(2).strip(), text)
    text = _HTML_TAG.sub(" ", text)
    text = _ENTITY.sub(lambda m: html.unescape(m.group(0)), text)
    for _ in range(4):  # nested emphasis, one level a pass
        before = text
        for pattern in _EMPHASIS:
            text = pattern.sub(lambda m: m.group(2), text)
        if text == before:
            break
    return _ESCAPE.sub(lambda m: m.group(1), text)


_URL = re.compile(r"\b(?:(?:https?|ftp)://|www\.)[^\s<>\"'()\[\]{}]*", re.IGNORECASE)
_URL_TRAILER = ".,;:!?'\""


def strip_urls(text: str) -> str:
    """Each bare URL → its host name without "www." ("link" when it has none)."""

    def host(match: re.Match[str]) -> str:
        url = match.group(0)
        trailer = url[len(url.rstrip(_URL_TRAILER)) :]
        url = url[: len(url) - len(trailer)]
        try:
            name = urllib.parse.urlsplit(url if "://" in url else "http://" + url).hostname or ""
        except ValueError:
            name = ""
        name = name.removeprefix("www.")
        return (name or "link") + trailer

    return _URL.sub(host, text)


# ----- stage directions ------------------------------------------------------------------------

_DIRECTION = re.compile(
    r"\(([^()\n]{1,40})\)"
    r"|\*{1,3}(?=[^\s*])([^*\n]{1,40}?)\*{1,3}"
    r"|(?<!\w)_{1,2}(?=[^\s_])([^_\n]{1,40}?)_{1,2}(?!\w)"
    r"|\[([^\[\]\n]{1,40})\](?![(\[])"
    r"|<\s*([A-Za-z][^<>\n]{0,39}?)\s*/?\s*>"
)


def direction_tag(words: str) -> str | None:
    """The tag a stage direction's words stand for ("laughs softly" → "[laugh]"), or None."""
    words = words.strip().lower()
    if _CLEAR_THROAT.search(words) and len(words.split()) <= 4:
        return "[clear throat]"
    tokens = re.findall(r"[a-z]+", words)
    if not tokens or len(tokens) > 3 or len(words.split()) > 3:
        return None
    for token in tokens:
        if token in _DIRECTION_OF:
            return _DIRECTION_OF[token]
    return None


def stage_directions(text: str) -> str:
    """`(laughs)`, `*sighs*`, `<cough>`, `[gasps]` ... → `[laugh]`, `[sigh]`, `[cough]`, `[gasp]`."""

    def replace(match: re.Match[str]) -> str:
        words = next(g for g in match.groups() if g is not None)
        tag = direction_tag(words)
        return f" {tag} " if tag is not None else match.group(0)

    return _DIRECTION.sub(replace, text)


# ----- emoji and symbols -----------------------------------------------------------------------

_EMOJI = re.compile(
    f"[{EMOJI_CHARS}"
    f"{ZWJ}{EMOJI_SELECTORS}{KEYCAP}"  # what joins and dresses them: kept by invisible.py only inside an emoji
    "\U000e0020-\U000e007f"  # tag characters (subdivision flags)
    "]+"
)


def strip_emoji(text: str) -> str:
    """Emoji (and the characters that build them) removed; the text around them stays."""
    return _EMOJI.sub(" ", text)


_SYMBOLS: tuple[tuple[re.Pattern[str], str | Callable[[re.Match[str]], str]], ...] = (
    (re.compile('["“”„‟«»〝〞＂]'), ""),
    (re.compile("[‘’‚‛]"), "'"),
    (re.compile("&"), " and "),
    (re.compile("%"), " percent"),
    (re.compile("…"), "..."),
    (re.compile(r"(?<=\d)–(?=\d)|(?<=\d) – (?=\d)"), " to "),
    (re.compile("[—–]+"), ", "),
    (re.compile(r"#+(?=\d)"), "number "),
    (re.compile(r"[#*~^`\\{}\[\]]"), ""),
    (re.compile("[_|•]"), " "),
)


def replace_symbols(text: str) -> str:
    """Characters Turbo misreads (see the module docstring, step 6); call it outside tags."""
    for pattern, replacement in _SYMBOLS:
        text = pattern.sub(replacement, text)
    return text


# ----- whitespace ------------------------------------------------------------------------------


def tidy(text: str) -> str:
    """Whitespace collapsed, no space before punctuation, no comma before other punctuation."""
    text = "".join(" " if unicodedata.category(c) == "Zs" else c for c in text) if not text.isascii() else text
    text = " ".join(text.split())
    text = re.sub(r" +(?=[,.!?;:])", "", text)
    text = re.sub(r"\(\s*\)", "", text)
    text = text.lstrip(",; ")
    text = re.sub(r",(?:\s*,)+", ",", text)
    text = re.sub(r",(?=[.!?])", "", text)
    return " ".join(text.split())


def _outside_tags(text: str, step: Callable[[str], str]) -> str:
    """`step` applied to the text between the tags; the tags stay as they are."""
    out, last = [], 0
    for match in TAG_PATTERN.finditer(text):
        out += [step(text[last : match.start()]), f" {match.group(0)} "]
        last = match.end()
    out.append(step(text[last:]))
    return "".join(out)
