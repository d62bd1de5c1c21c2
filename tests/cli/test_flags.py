"""Flags made from fields (flags.py), and main.py's parser made with them: every spelling it
ever had still works, and means what it meant."""

import argparse
import logging
from pathlib import Path
from typing import Literal

import pytest
from pydantic import BaseModel, Field, ValidationError

from chatterbox_server.cli.synthesize import ENGINE_FLAG_FIELDS, build_parser, main
from chatterbox_server.engine import TTSConfig
from chatterbox_server.flags import add_field_flags, describe_validation_error, given_flags

# main.py's flags before they were generated, and those it keeps writing itself
MAIN_FLAGS = [
    *("--text", "--voice", "--output", "--stand-in", "-v", "--verbose"),
    *("--model-dir", "--model-id", "--revision", "--model-dtype", "--dtype", "--encoder-dtype", "--device"),
    *("--temperature", "--top-k", "--top-p", "--repetition-penalty", "--seed", "--max-new-tokens"),
    *("--no-normalize-text", "--no-normalize", "--apply-watermark", "--watermark", "--intra-op-threads", "--threads"),
]


class Example(BaseModel):
    size: int = Field(3, ge=1, description="how many")
    mode: Literal["a", "b"] = Field("a", description="which one")
    kind: Literal["x", "y"] | None = Field(None, description="unset: either")
    loud: bool = Field(False, description="say it loudly")
    quiet: bool | None = Field(None, description="unset: by device")


def test_a_flag_per_field_with_choices_bools_and_help():
    parser = argparse.ArgumentParser()
    assert add_field_flags(parser, Example, env_prefix="EX_", aliases={"size": ["-n"], "loud": ["--no-soft"]}) == [
        "size",
        "mode",
        "kind",
        "loud",
        "quiet",
    ]
    text = " ".join(parser.format_help().split())
    assert "--size SIZE, -n SIZE how many [env EX_SIZE; default: 3]" in text
    assert "--mode {a,b}" in text and "--kind {x,y}" in text and "unset: either [env EX_KIND; default: unset]" in text
    assert "--quiet, --no-quiet" in text
    args = parser.parse_args(["-n", "5", "--no-soft", "--quiet"])
    assert given_flags(args, Example.model_fields) == {"size": "5", "loud": False, "quiet": True}
    assert given_flags(parser.parse_args([]), Example.model_fields) == {}


def test_an_invalid_value_is_one_line_naming_the_flag():
    with pytest.raises(ValidationError) as caught:
        Example(size="0", mode="c")  # type: ignore[arg-type]
    assert describe_validation_error(caught.value, Example.model_fields, env_prefix=None) == (
        "--size = '0': Input should be greater than or equal to 1; --mode = 'c': Input should be 'a' or 'b'"
    )


def test_main_keeps_every_flag_spelling():
    spellings = {s for action in build_parser()._actions for s in action.option_strings}
    assert set(MAIN_FLAGS) <= spellings


def test_main_old_spellings_mean_what_they_meant():
    args = build_parser().parse_args(
        [
            *("--text", "t", "--voice", "v.wav", "--dtype", "q4", "--threads", "2", "--no-normalize", "--watermark"),
            *("--max-new-tokens", "50", "--repetition-penalty", "1.5", "--encoder-dtype", "fp32", "--model-dir", "m"),
        ]
    )
    config = TTSConfig(**given_flags(args, ENGINE_FLAG_FIELDS))
    assert (config.model.model_dtype, config.model.encoder_dtype, config.model.intra_op_threads) == ("q4", "fp32", 2)
    assert (config.model.model_dir, config.model.apply_watermark, config.generation.normalize_text) == (
        Path("m"),
        True,
        False,
    )
    assert (config.generation.max_new_tokens, config.generation.repetition_penalty) == (50, 1.5)
    plain = build_parser().parse_args(["--text", "t", "--voice", "v.wav", "--no-normalize-text", "--apply-watermark"])
    assert given_flags(plain, ENGINE_FLAG_FIELDS) == {"normalize_text": False, "apply_watermark": True}
    assert TTSConfig(**given_flags(build_parser().parse_args(["--text", "t", "--voice", "v"]), ENGINE_FLAG_FIELDS)) == (
        TTSConfig()
    )  # nothing given: the engine's own defaults


def test_main_help_names_no_environment_variable(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "[env " not in text and "TTS_" not in text
    assert "--model-dtype {auto,fp32,fp16,q8,q4,q4f16}, --dtype" in text and "[default: auto]" in text


def test_main_a_bad_flag_is_one_line_before_the_clip_or_model(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(logging, "basicConfig", lambda **_: None)  # main() would set up the root logger
    clip = tmp_path / "missing.wav"
    assert main(["--text", "hi", "--voice", str(clip), "--max-new-tokens", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "main.py: --max-new-tokens = '0': Input should be greater than or equal to 1"
    assert main(["--text", "hi", "--voice", str(clip), "--dtype", "int3"]) == 2
    assert capsys.readouterr().err.startswith("main.py: unknown model dtype 'int3'")
    assert main(["--text", "hi", "--voice", str(clip), "--threads", "1"]) == 2  # the flags are fine: the clip is not
    assert capsys.readouterr().err.strip() == f"main.py: --voice {clip}: no such file"
