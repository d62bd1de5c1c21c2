"""What the engine takes per request and gives back: options, plans, timings, results."""

import time
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np

from chatterbox_server.audio.pcm import SAMPLE_RATE_HZ
from chatterbox_server.engine.sampling import SamplingParams
from chatterbox_server.text.split import TextPiece

Truncation = Literal["runaway", "length"]  # why a piece ended without STOP: a runaway guard, or max_new_tokens


@dataclass(frozen=True)
class GenerationOptions:
    """Per-request choices; None means the engine's default. temperature 0 is greedy."""

    temperature: float | None = None
    top_k: int | None = None
    top_p: float | None = None
    repetition_penalty: float | None = None
    seed: int | None = None
    max_new_tokens: int | None = None
    normalize_text: bool | None = None


@dataclass(frozen=True)
class StageTimings:
    """Seconds spent per stage of one synthesis."""

    voice_encode_s: float = 0.0
    prefill_s: float = 0.0
    decode_s: float = 0.0
    vocoder_s: float = 0.0
    total_s: float = 0.0
    decode_steps: int = 0

    @property
    def decode_tokens_per_s(self) -> float:
        return self.decode_steps / self.decode_s if self.decode_s > 0 else 0.0

    @classmethod
    def combined(cls, parts: list["StageTimings"], total_s: float) -> "StageTimings":
        """Stage times summed over several syntheses; total_s is their wall time together."""
        return cls(
            voice_encode_s=sum(t.voice_encode_s for t in parts),
            prefill_s=sum(t.prefill_s for t in parts),
            decode_s=sum(t.decode_s for t in parts),
            vocoder_s=sum(t.vocoder_s for t in parts),
            total_s=total_s,
            decode_steps=sum(t.decode_steps for t in parts),
        )


class _RealTimeFigures:
    """Audio duration and real-time factor of a result with `waveform`, `sample_rate` and
    `generation_time_s`."""

    waveform: np.ndarray
    sample_rate: int

    @property
    def generation_time_s(self) -> float:
        raise NotImplementedError

    @property
    def audio_duration_s(self) -> float:
        return self.waveform.shape[0] / self.sample_rate

    @property
    def rtf(self) -> float:
        """Real-time factor: generation time over audio duration (< 1 is faster than real time)."""
        duration = self.audio_duration_s
        return self.generation_time_s / duration if duration > 0 else float("inf")


@dataclass(frozen=True)
class SynthesisResult(_RealTimeFigures):
    waveform: np.ndarray  # float32 [samples] at 24 kHz
    speech_tokens: np.ndarray  # int64 [n], what the decoder spoke (no START/STOP/padding)
    tokens_generated: int  # language-model outputs, STOP included
    stopped: bool  # True when STOP_SPEECH ended generation, False when max_new_tokens or a runaway guard did
    timings: StageTimings
    sample_rate: int = SAMPLE_RATE_HZ
    truncated: Truncation | None = None  # None: it ended on STOP_SPEECH (engine/runaway.py for "runaway")

    @property
    def generation_time_s(self) -> float:
        return self.timings.total_s


@dataclass(frozen=True)
class SpokenPiece:
    """One piece of a long text, spoken and faded at its edges, ready to append to a stream."""

    piece: TextPiece  # the text and its character span in the request
    waveform: np.ndarray  # float32 [samples] at 24 kHz
    start_s: float  # where it starts in the joined audio
    result: SynthesisResult  # the piece's own synthesis figures
    pause_s: float = 0.0  # the silence its waveform ends with (pause markup; part of the waveform)

    @property
    def end_s(self) -> float:
        return self.start_s + self.waveform.shape[0] / SAMPLE_RATE_HZ


@dataclass(frozen=True)
class AudioChunk:
    """Audio of part of a piece, sent as soon as it is decoded (token-window streaming)."""

    piece: TextPiece
    waveform: np.ndarray  # float32 [samples] at 24 kHz
    result: SynthesisResult | None = None  # the piece's figures, on its last chunk
    pause_s: float = 0.0  # the silence this (last) chunk ends with (pause markup; part of the waveform)


@dataclass(frozen=True)
class SpeechResult(_RealTimeFigures):
    """A whole request, spoken piece by piece and joined (what TTSEngine.synthesize returns)."""

    waveform: np.ndarray  # float32 [samples] at 24 kHz
    pieces: list[SpokenPiece]
    total_s: float
    time_to_first_audio_s: float
    sample_rate: int = SAMPLE_RATE_HZ
    voice_encode_s: float = 0.0  # a clip encoded for this request (part of total_s)

    @property
    def generation_time_s(self) -> float:
        return self.total_s

    @property
    def tokens_generated(self) -> int:
        return sum(p.result.tokens_generated for p in self.pieces)

    @property
    def speech_tokens(self) -> np.ndarray:
        """int64 [n]: every piece's spoken tokens, in order."""
        return np.concatenate([p.result.speech_tokens for p in self.pieces])

    @property
    def stopped(self) -> bool:
        """True when every piece ended on STOP_SPEECH (none ran into max_new_tokens or a runaway guard)."""
        return all(p.result.stopped for p in self.pieces)

    @property
    def truncated(self) -> Truncation | None:
        """Why pieces ended early: "runaway" if a runaway guard stopped any, else "length" if any reached
        max_new_tokens; None when every piece ended on STOP_SPEECH."""
        reasons = {p.result.truncated for p in self.pieces}
        return "runaway" if "runaway" in reasons else "length" if "length" in reasons else None

    @property
    def timings(self) -> StageTimings:
        """Stage times summed over pieces (total_s is the wall time of the whole text)."""
        combined = StageTimings.combined([p.result.timings for p in self.pieces], self.total_s)
        return replace(combined, voice_encode_s=self.voice_encode_s)


@dataclass
class SpeechCollector:
    """Joins a request's outputs, in delivery order, into a SpeechResult: whole pieces as they
    are, token-window chunks gathered into their piece (placed where it starts in the audio)."""

    started: float = field(default_factory=time.perf_counter)
    pieces: list[SpokenPiece] = field(default_factory=list)
    first_audio_s: float | None = None
    _chunks: list[np.ndarray] = field(default_factory=list)  # the current piece's chunks so far
    _position_s: float = 0.0

    def add(self, output: "AudioChunk | SpokenPiece") -> SpokenPiece | None:
        """Take one output; returns the piece it completed, if any."""
        if self.first_audio_s is None:
            self.first_audio_s = time.perf_counter() - self.started
        if isinstance(output, AudioChunk):
            self._chunks.append(output.waveform)
            if output.result is None:
                return None
            waveform = np.concatenate(self._chunks)
            self._chunks = []
            output = SpokenPiece(output.piece, waveform, self._position_s, output.result, output.pause_s)
        self._position_s = output.end_s
        self.pieces.append(output)
        return output

    def result(self, total_s: float | None = None) -> SpeechResult:
        """What was collected (total_s: the wall time to report; default since the collector began)."""
        waves = [p.waveform for p in self.pieces]
        return SpeechResult(
            waveform=np.concatenate(waves) if waves else np.zeros(0, np.float32),
            pieces=list(self.pieces),
            total_s=time.perf_counter() - self.started if total_s is None else total_s,
            time_to_first_audio_s=self.first_audio_s or 0.0,
        )


@dataclass(frozen=True)
class PlannedPiece:
    """One piece of a request's text with its token ids, ready for a prefill."""

    piece: TextPiece
    token_ids: np.ndarray  # int64 [n], normalised and tokenized once
    max_new_tokens: int | None = None  # its text's runaway bound, where below the plan's limit (None: the plan's)
    pause_after_s: float = 0.0  # exact silence after its audio (pause markup, text/cleanup.py)


@dataclass(frozen=True)
class SpeechPlan:
    """A request resolved once (engine/prepare.py): the pieces to speak, in order, and how."""

    pieces: tuple[PlannedPiece, ...]
    options: GenerationOptions  # as the caller gave them
    sampling: SamplingParams  # resolved against the engine's defaults and checked
    max_new_tokens: int  # per piece, within the engine's ceiling
    runaway_guard: bool = True  # stop loops and silence runs (engine/runaway.py); pieces carry their bound
    text: str = ""  # the text as spoken (after text/cleanup.py): what the pieces' character spans index

    @property
    def text_tokens(self) -> int:
        return sum(p.token_ids.shape[0] for p in self.pieces)

    @property
    def pause_s(self) -> float:
        """Seconds of silence the pause markup adds."""
        return sum(p.pause_after_s for p in self.pieces)
