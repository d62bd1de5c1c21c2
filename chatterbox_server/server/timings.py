"""Estimated character timings of a `Speech`, piece by piece, while its audio is read.

Every route that reports timings (the ElevenLabs socket and `/with-timestamps`, the OpenAI SSE
events with `include_timestamps`, the realtime socket's `segment.timestamps`) follows its
`Speech` with a `SpeechTimings`: after each waveform it reads, `poll()` returns the timings of
the pieces completed since the last call. A piece's timings are known once the piece is
complete (its audio length is what the estimate shares out; see text/alignment.py), so they
come with its last audio, never before it.
"""

from typing import Any

from chatterbox_server import audio
from chatterbox_server.model.contract import SAMPLES_PER_TOKEN, SILENCE_PADDING_TOKENS
from chatterbox_server.server.serving import Speech
from chatterbox_server.text.alignment import Alignment, at, estimate

TAIL_S = SILENCE_PADDING_TOKENS * SAMPLES_PER_TOKEN / audio.SAMPLE_RATE_HZ  # the decoder's silence at each piece's end


class SpeechTimings:
    """Follows one Speech of `text` (the text given to `SpeechService.prepare`).

    The timings are of the text as spoken, the plan's (after the text clean-up, pause marks
    removed: text/cleanup.py), which is `text` itself when the clean-up changed nothing; a
    piece's pause (silence at the end of its audio) goes to its last character."""

    def __init__(self, text: str, speech: Speech):
        self.text = speech.job.plan.text or text
        self.speech = speech
        self._pieces_seen = 0
        self._chars_done = 0  # characters of text already in an alignment returned
        self._samples_done = 0  # audio (at the requested speed) covered by those alignments
        self._planned = len(speech.job.plan.pieces)

    def poll(self) -> Alignment | None:
        """Timings (seconds from the start of this speech's audio) of the pieces completed since
        the last call, the text between them included; None when no piece completed."""
        speech = self.speech
        pieces = speech.collected.pieces
        if len(pieces) == self._pieces_seen:
            return None
        speed = speech.job.speed
        total = speech.audio_samples
        out = Alignment()
        new = pieces[self._pieces_seen :]
        for k, spoken in enumerate(new):
            start = self._samples_done
            if k == len(new) - 1:  # the audio read so far ends with this piece
                end = total
            else:  # several at once (a caller that polls late): each piece's own length at this speed
                end = min(total, start + round(spoken.waveform.shape[0] / speed))
            end = max(start, end)
            start_s, end_s = start / audio.SAMPLE_RATE_HZ, end / audio.SAMPLE_RATE_HZ
            piece = spoken.piece
            char_start = min(max(piece.start, self._chars_done), len(self.text))
            char_end = min(max(piece.end, char_start), len(self.text))
            out += at(self.text[self._chars_done : char_start], start_s)
            out += estimate(self.text[char_start:char_end], start_s, end_s, (TAIL_S + spoken.pause_s) / speed)
            self._chars_done, self._samples_done = char_end, end
        self._pieces_seen = len(pieces)
        if self._pieces_seen >= self._planned:  # the last piece: the text after it, at its end
            out += at(self.text[self._chars_done :], self._samples_done / audio.SAMPLE_RATE_HZ)
            self._chars_done = len(self.text)
        return out

    @property
    def complete(self) -> bool:
        """Every piece's timings have been returned."""
        return self._pieces_seen >= self._planned

    @property
    def audio_s(self) -> float:
        """Seconds of audio the returned timings cover."""
        return self._samples_done / audio.SAMPLE_RATE_HZ


def timestamps_payload(alignment: Alignment) -> dict[str, Any]:
    """The timings of our own events (realtime's segment.timestamps, the SSE speech.audio.timestamps):
    every character, and the words they make, in seconds; flagged as estimated."""
    return {
        "estimated": True,
        "alignment": alignment.as_seconds(),
        "words": [{"word": w.word, "start": round(w.start_s, 4), "end": round(w.end_s, 4)} for w in alignment.words()],
    }
