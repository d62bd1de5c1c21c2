"""Runaway guards: a piece may not speak far longer than its text needs, nor loop or fall silent.

Two guards, both on unless `runaway_guard=False` (engine/config.py; README "Runaway guards"):

**The bound** (request preparation, prepare.py): a piece may generate at most
`base + per_text_token × text tokens` speech tokens, where that is below `max_new_tokens`.
Derivation, from speech rates:

- the model speaks 25 speech tokens per second of audio (960 samples at 24 kHz);
- GPT-2's byte-level BPE averages about 4 characters of English per token (spaces included);
- people speak 12-16 characters a second in conversation (~150 words a minute) and about 8 at
  their slowest (deliberate narration, ~90 words a minute), so one text token takes at most about
  0.5 s = 12.5 speech tokens;
- twice that is the headroom: **25 speech tokens (1 s) per text token**, as if the text were read
  at 4 characters a second. Digit strings read out as numbers are the densest text ("1,234,567":
  5 tokens, ~4.5 s spoken, 23 per token), and still fit;
- **a base of 50 tokens (2 s)** for what does not scale with the text: the silence the model
  leaves before and after speaking, a tag ([laugh], [sigh]: one text token, a second or two of
  sound), and the shortest pieces ("Hi." is 2 tokens: 100 tokens, 4 s).

So "Hello." may run 4 s instead of `max_new_tokens`' 41 s, a 10-word sentence (~13 tokens) 15 s;
a 250-character piece (~60 tokens, 1550) keeps `max_new_tokens` as its limit.

**Loops and silence** (the engine loop, per token): `RunawayDetector` watches a piece's spoken
tokens and fires when, over the last `WINDOW_TOKENS` (50 = 2 s),

- *loop*: the tokens repeat with a period of 1 to `MAX_PERIOD` (20) tokens: a stretch of at least
  50 tokens where every token equals the one a period before (period 1: one token held);
- *silence*: at least `SILENCE_SHARE` (90 %) of them are SILENCE;
- *low variety*: they hold at most `LOW_VARIETY_DISTINCT` (4) distinct ids (a near-loop or a
  noisy pause that no exact period catches).

It costs O(MAX_PERIOD) per token (a run length per period, a count per id in the window); the
check before a token is taken (`check`) changes nothing. The run's start is where the piece went
wrong: its tokens from there on are dropped, those the vocoder has not decoded yet (see
vocoder_stage.VocoderStage.push, and the README for why nothing is held back from the decoder).
"""

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from math import ceil

from chatterbox_server.model.contract import SILENCE_TOKEN

TOKENS_PER_SECOND = 25  # speech tokens per second of audio
BASE_TOKENS = 50  # the bound's allowance per piece (2 s; see the module docstring)
TOKENS_PER_TEXT_TOKEN = 25.0  # the bound's speech tokens per text token (1 s)
WINDOW_TOKENS = 2 * TOKENS_PER_SECOND  # a loop or a silence this long (2 s) is a runaway
MAX_PERIOD = 20  # longest repeating pattern looked for, in tokens (0.8 s)
SILENCE_SHARE = 0.9  # this share of SILENCE in the window is a silence run
LOW_VARIETY_DISTINCT = 4  # this few distinct ids in the window is a low-variety run

KINDS = ("bound", "loop", "silence", "low_variety")


@dataclass(frozen=True)
class RunawayBound:
    """The most speech tokens a piece of `text_tokens` tokens may generate (module docstring)."""

    base_tokens: int = BASE_TOKENS
    tokens_per_text_token: float = TOKENS_PER_TEXT_TOKEN

    def __post_init__(self) -> None:
        if self.base_tokens < 1 or not self.tokens_per_text_token > 0:
            raise ValueError("the runaway bound needs base_tokens ≥ 1 and tokens_per_text_token > 0")

    def tokens_for(self, text_tokens: int) -> int:
        return self.base_tokens + ceil(self.tokens_per_text_token * text_tokens)


@dataclass(frozen=True)
class Runaway:
    """Why a piece was stopped: `kind` (KINDS), the spoken-token index its run starts at (the
    tokens from `start` on are dropped), how many spoken tokens it had when it was caught, and
    the loop's period (0 for the other kinds)."""

    kind: str
    start: int
    detected_at: int
    period: int = 0

    def describe(self) -> str:
        if self.kind == "bound":
            return f"ran to its text's bound ({self.detected_at} spoken tokens)"
        names = {"loop": f"a loop of period {self.period}", "silence": "a silence run"}
        what = names.get(self.kind, "a low-variety run")
        return f"{what} from spoken token {self.start}, caught at {self.detected_at}"


@dataclass
class RunawayDetector:
    """Incremental loop and silence detection over one piece's spoken tokens (module docstring).

    `check(token)` says what taking `token` next would reveal, without changing anything;
    `push(token)` takes it (and returns the same)."""

    window: int = WINDOW_TOKENS
    max_period: int = MAX_PERIOD
    tokens: list[int] = field(default_factory=list)  # every spoken token pushed
    # _runs[p - 1]: how many of the latest tokens each equal the token p places before them
    _runs: list[int] = field(default_factory=list)
    _counts: dict[int, int] = field(default_factory=dict)  # ids in the last `window` tokens
    _silent: int = 0  # SILENCE tokens in the last `window` tokens
    _checked: tuple | None = None  # (token, what _advance said) of the last check, for the push that follows

    def __post_init__(self) -> None:
        if not 1 <= self.max_period < self.window:
            raise ValueError("max_period must be at least 1 and below the window")
        self._runs = [0] * self.max_period

    def check(self, token: int) -> Runaway | None:
        self._checked = (token, self._advance(token))
        return self._checked[1][0]

    def push(self, token: int) -> Runaway | None:
        checked, self._checked = self._checked, None
        found, runs, removed = checked[1] if checked is not None and checked[0] == token else self._advance(token)
        self._runs = runs
        self.tokens.append(token)
        self._counts[token] = self._counts.get(token, 0) + 1
        self._silent += token == SILENCE_TOKEN
        if removed is not None:
            left = self._counts[removed] - 1
            if left:
                self._counts[removed] = left
            else:
                del self._counts[removed]
            self._silent -= removed == SILENCE_TOKEN
        return found

    def _advance(self, token: int) -> tuple[Runaway | None, list[int], int | None]:
        """(what taking `token` reveals, the run lengths after it, the id leaving the window)."""
        tokens, n, window = self.tokens, len(self.tokens), self.window
        runs = [
            run + 1 if period <= n and token == tokens[n - period] else 0
            for period, run in enumerate(self._runs, start=1)
        ]
        removed = tokens[n - window] if n >= window else None
        if n + 1 < window:
            return None, runs, removed
        for period, run in enumerate(runs, start=1):  # the shortest period first: the loop's own
            if run + period >= window:
                return Runaway("loop", n + 1 - run - period, n + 1, period), runs, removed
        silent = self._silent + (token == SILENCE_TOKEN) - (removed == SILENCE_TOKEN)
        distinct = len(self._counts) + (token not in self._counts)
        if removed is not None and removed != token and self._counts[removed] == 1:
            distinct -= 1
        if silent >= SILENCE_SHARE * window:
            start = n + 1 - window
            while tokens[start] != SILENCE_TOKEN:  # the window holds silence: this ends in it
                start += 1
            while start > 0 and tokens[start - 1] == SILENCE_TOKEN:
                start -= 1
            return Runaway("silence", start, n + 1), runs, removed
        if distinct <= LOW_VARIETY_DISTINCT:  # the run: from the first id that recurs in the window
            counts = Counter([*tokens[n + 1 - window :], token])
            recurring = {t for t, count in counts.items() if count > 1}
            start = n + 1 - window
            while tokens[start] not in recurring:  # a few ids at the window's start are what came before
                start += 1
            while start > 0 and tokens[start - 1] in recurring:
                start -= 1
            return Runaway("low_variety", start, n + 1), runs, removed
        return None, runs, removed


def find_runaway(tokens: Iterable[int], window: int = WINDOW_TOKENS, max_period: int = MAX_PERIOD) -> Runaway | None:
    """The first loop or silence run in a list of spoken tokens, as the engine would catch it."""
    detector = RunawayDetector(window, max_period)
    for token in tokens:
        if (found := detector.push(token)) is not None:
            return found
    return None
