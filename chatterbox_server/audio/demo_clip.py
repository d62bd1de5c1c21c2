"""A stand-in reference clip for when you have no voice recording: a voiced-sounding tone.

    python -m chatterbox_server.audio.demo_clip voice.wav            # 6 s, 24 kHz mono WAV
    python -m chatterbox_server.audio.demo_clip voice.wav --seconds 10

It is a 160 Hz tone with a 3 Hz swell, not speech: enough to register a voice and try every
endpoint, but the cloned "voice" sounds like that tone. The server warms up on the same signal.
"""

import argparse
import sys
from pathlib import Path

import numpy as np

from chatterbox_server.audio.decode import MIN_VOICE_SECONDS
from chatterbox_server.audio.pcm import SAMPLE_RATE_HZ, write_wav

DEMO_CLIP_SECONDS = 6.0


def demo_clip(seconds: float = DEMO_CLIP_SECONDS) -> np.ndarray:
    """A voiced-sounding float32 [samples] test clip at 24 kHz."""
    t = np.arange(int(seconds * SAMPLE_RATE_HZ)) / SAMPLE_RATE_HZ
    return (0.3 * np.sin(2 * np.pi * 160 * t) * (1 + 0.3 * np.sin(2 * np.pi * 3 * t))).astype(np.float32)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m chatterbox_server.audio.demo_clip",
        description="Write a voiced-sounding test clip (24 kHz mono 16-bit WAV) to use as a reference voice.",
    )
    parser.add_argument("output", type=Path, help="the WAV file to write, e.g. voice.wav")
    parser.add_argument(
        "--seconds",
        type=float,
        default=DEMO_CLIP_SECONDS,
        help=f"length (default {DEMO_CLIP_SECONDS:g}; a voice needs at least {MIN_VOICE_SECONDS:g})",
    )
    args = parser.parse_args(argv)
    if not args.seconds > 0:
        parser.error(f"--seconds must be above 0, not {args.seconds:g}")
    try:
        write_wav(args.output, demo_clip(args.seconds))
    except (OSError, RuntimeError) as e:  # soundfile raises LibsndfileError (a RuntimeError) for a bad path
        print(f"demo_clip: cannot write {args.output}: {e}", file=sys.stderr)
        return 1
    note = (
        "" if args.seconds >= MIN_VOICE_SECONDS else f"; too short to register (a voice needs {MIN_VOICE_SECONDS:g} s)"
    )
    print(f"wrote {args.output}: {args.seconds:g} s of a 160 Hz test tone, 24 kHz mono{note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
