"""Synthesise one WAV file: `chatterbox-tts` or `python main.py`.

python main.py --text "Hello there." --voice voice.wav --output out.wav [--model-dir DIR | --stand-in]

The engine's flags come from the same fields as the server's (engine/config.py's model and
generation sections, through flags.py), so they are spelled, checked and defaulted as the
server's are (--model-dtype, --intra-op-threads, ...); the older --dtype, --threads, --no-normalize
and --watermark still work. Unlike server.py, main.py reads no environment variables.
"""

import argparse
import logging
import sys
from pathlib import Path

from pydantic import ValidationError

from chatterbox_server import audio
from chatterbox_server.engine import GenerationOptions, TTSConfig, TTSEngine
from chatterbox_server.engine.config import DEFAULT_MAX_VOICE_SECONDS, EngineSection, GenerationConfig, ModelConfig
from chatterbox_server.errors import InvalidAudioError, TTSError
from chatterbox_server.flags import add_field_flags, describe_validation_error, given_flags
from chatterbox_server.model.files import STAND_IN_ADVICE
from chatterbox_server.model.stand_in import DEFAULT_TINY_DIR, ensure_tiny_stand_in

PROG = "main.py"  # how error lines name this tool (`server.py: ...` for the server)
# the engine flags main.py offers: the model and the defaults of its one request
ENGINE_SECTIONS: dict[str, type[EngineSection]] = {"model": ModelConfig, "generation": GenerationConfig}
ENGINE_FLAG_FIELDS = [name for section in ENGINE_SECTIONS.values() for name in section.model_fields]
ALIASES = {  # main.py's spellings from before it shared the server's
    "model_dtype": ["--dtype"],
    "intra_op_threads": ["--threads"],
    "normalize_text": ["--no-normalize"],
    "apply_watermark": ["--watermark"],
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Chatterbox Turbo (ONNX) text to speech, one file.")
    parser.add_argument("--text", required=True, help="text to speak; [tags] such as [laugh] allowed")
    parser.add_argument("--voice", required=True, type=Path, help="reference clip (5 s or more)")
    parser.add_argument("--output", default=Path("output.wav"), type=Path, help="WAV file to write")
    parser.add_argument(
        "--stand-in",
        action="store_true",
        help=f"use the generated tiny stand-in (tones, not words; made in {DEFAULT_TINY_DIR} on first use; "
        "--model-dtype auto is fp32 for it)",
    )
    parser.add_argument("-v", "--verbose", action="store_true")
    sampling = parser.add_argument_group("sampling (this request)")
    sampling.add_argument("--temperature", type=float, help="> 0 samples; default greedy")
    sampling.add_argument("--top-k", type=int)
    sampling.add_argument("--top-p", type=float)
    sampling.add_argument("--seed", type=int, help="seed of this request's random generator")
    for title, section in ENGINE_SECTIONS.items():
        group = parser.add_argument_group(f"{title} (engine, as server.py)", section.__doc__)
        add_field_flags(group, section, env_prefix=None, aliases=ALIASES)
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def voice_clip_problem(path: Path, max_seconds: float = DEFAULT_MAX_VOICE_SECONDS) -> str | None:
    """Why the --voice clip cannot be used (None: it can); checked before any model loads or downloads."""
    if not path.exists():
        return f"--voice {path}: no such file"
    if not path.is_file():
        return f"--voice {path} is not a file"
    try:
        audio.prepare_reference_audio(audio.read_audio_bytes(path), max_seconds=max_seconds)
    except InvalidAudioError as e:
        return f"--voice {path}: {e}"
    return None


def fail(message: str) -> int:
    """One error line, `main.py: ...`, on stderr; the exit status 2."""
    message = message.replace(STAND_IN_ADVICE, "--stand-in to synthesise without the weights (tones, not words)")
    print(f"{PROG}: {' '.join(message.split())}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    fields = given_flags(args, ENGINE_FLAG_FIELDS)
    try:  # the flags' values, checked as the server checks its settings (nothing loads here)
        config = TTSConfig(**fields)
    except ValidationError as e:
        return fail(describe_validation_error(e, ENGINE_FLAG_FIELDS, env_prefix=None))
    except TTSError as e:  # an unknown dtype or device
        return fail(str(e))
    if (problem := voice_clip_problem(args.voice, config.model.max_voice_seconds)) is not None:
        return fail(problem)
    if args.stand_in and config.model.model_dir is None:
        fields["model_dir"] = ensure_tiny_stand_in()
        if config.model.model_dtype == "auto":
            fields["model_dtype"] = "fp32"
        config = TTSConfig(**fields)
    options = GenerationOptions(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, seed=args.seed)
    try:
        engine = TTSEngine(config)
        result = engine.synthesize(args.text, args.voice, options)
    except TTSError as e:
        return fail(str(e))
    try:
        audio.write_wav(args.output, result.waveform)
    except (OSError, RuntimeError) as e:  # soundfile raises LibsndfileError (a RuntimeError)
        return fail(f"cannot write --output {args.output}: {e}")
    t = result.timings
    print(
        f"wrote {args.output}: {result.audio_duration_s:.2f} s audio in {result.generation_time_s:.2f} s "
        f"(RTF {result.rtf:.3f}; voice {t.voice_encode_s:.2f} s, prefill {t.prefill_s:.2f} s, "
        f"decode {t.decode_s:.2f} s at {t.decode_tokens_per_s:.1f} tok/s, vocoder {t.vocoder_s:.2f} s), "
        f"{result.tokens_generated} tokens, {engine.model_dtype} on {', '.join(engine.active_providers)}"
        + (" [stand-in model]" if engine.is_stand_in else "")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
