"""Synthesise one WAV file: `chatterbox-tts` or `python main.py`.

python main.py --text "Hello there." --voice voice.wav --output out.wav [--model-dir DIR | --stand-in]

Flags that the server also has are spelled as the server spells them (--model-dtype,
--intra-op-threads, --stand-in, ...); the older --dtype and --threads still work.
"""

import argparse
import logging
import sys
from pathlib import Path

from chatterbox_server import audio
from chatterbox_server.engine import GenerationOptions, TTSConfig, TTSEngine
from chatterbox_server.errors import InvalidAudioError, TTSError
from chatterbox_server.model.files import STAND_IN_ADVICE
from chatterbox_server.model.stand_in import DEFAULT_TINY_DIR, ensure_tiny_stand_in

PROG = "main.py"  # how error lines name this tool (`server.py: ...` for the server)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Chatterbox Turbo (ONNX) text to speech, one file.")
    parser.add_argument("--text", required=True, help="text to speak; [tags] such as [laugh] allowed")
    parser.add_argument("--voice", required=True, type=Path, help="reference clip (5 s or more)")
    parser.add_argument("--output", default=Path("output.wav"), type=Path, help="WAV file to write")
    parser.add_argument("--model-dir", type=Path, help="local model in the hub layout (default: download)")
    parser.add_argument("--model-id", default=TTSConfig.model_id, help="hub repo to download from")
    parser.add_argument("--revision", help="hub revision (branch, tag or commit)")
    parser.add_argument(
        "--model-dtype",
        "--dtype",
        dest="model_dtype",
        default="auto",
        choices=["auto", "fp32", "fp16", "q8", "q4", "q4f16"],
        help="language-model weights; auto: fp16 on CUDA, q4 on CPU (fp32 for the stand-in)",
    )
    parser.add_argument(
        "--stand-in",
        action="store_true",
        help=f"use the generated tiny stand-in (tones, not words; made in {DEFAULT_TINY_DIR} on first use)",
    )
    parser.add_argument("--encoder-dtype", help="speech_encoder dtype if different")
    parser.add_argument("--device", default="auto", choices=["auto", "cuda", "cpu"])
    parser.add_argument("--temperature", type=float, help="> 0 samples; default greedy")
    parser.add_argument("--top-k", type=int)
    parser.add_argument("--top-p", type=float)
    parser.add_argument("--repetition-penalty", type=float)
    parser.add_argument("--seed", type=int, help="seed of this request's random generator")
    parser.add_argument("--max-new-tokens", type=int, default=TTSConfig.max_new_tokens)
    parser.add_argument(
        "--no-normalize-text",
        "--no-normalize",
        dest="no_normalize",
        action="store_true",
        help="skip punctuation clean-up",
    )
    parser.add_argument(
        "--apply-watermark", "--watermark", dest="watermark", action="store_true", help="apply the Perth watermark"
    )
    parser.add_argument(
        "--intra-op-threads",
        "--threads",
        dest="intra_op_threads",
        type=int,
        default=0,
        help="ONNX Runtime threads per operator (0: its default)",
    )
    parser.add_argument("-v", "--verbose", action="store_true")
    return parser.parse_args(argv)


def voice_clip_problem(path: Path, max_seconds: float = TTSConfig.max_voice_seconds) -> str | None:
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
    if (problem := voice_clip_problem(args.voice)) is not None:
        return fail(problem)
    if args.stand_in and args.model_dir is None:
        args.model_dir = ensure_tiny_stand_in()
        args.model_dtype = "fp32" if args.model_dtype == "auto" else args.model_dtype
    config = TTSConfig(
        model_dir=args.model_dir,
        model_id=args.model_id,
        revision=args.revision,
        model_dtype=args.model_dtype,
        encoder_dtype=args.encoder_dtype,
        device=args.device,
        max_new_tokens=args.max_new_tokens,
        normalize_text=not args.no_normalize,
        apply_watermark=args.watermark,
        intra_op_threads=args.intra_op_threads,
    )
    options = GenerationOptions(
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        repetition_penalty=args.repetition_penalty,
        seed=args.seed,
    )
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
