"""The engine's configuration: four sections, each default written once, the flat names routed."""

from pathlib import Path
from typing import get_args

import pytest
from pydantic import ValidationError

from chatterbox_server.engine import TTSConfig, vocoder_stage
from chatterbox_server.engine.config import (
    ENGINE_FIELDS,
    SECTIONS,
    EncoderDtype,
    LoopConfig,
    ModelConfig,
    ModelDtype,
    StageTurns,
    VocoderConfig,
)
from chatterbox_server.engine.turns import TURN_MODES
from chatterbox_server.engine.vocoder_stage import WindowPolicy
from chatterbox_server.errors import ModelLoadError
from chatterbox_server.model.files import MODEL_DTYPES


def test_flat_names_go_to_their_sections():
    config = TTSConfig(
        model_dir="m",
        model_dtype="fp32",
        encoder_dtype="fp32",
        kv_on_device=True,
        apply_watermark=True,
        max_new_tokens=50,
        max_batch_size=4,
        prefix_cache_mb=0,
        decoder_batch_rows=1,
        window_growth=2.0,
        window_lookahead_s=1e6,
    )
    assert (config.model.model_dir, config.model.model_dtype, config.model.encoder_dtype) == (Path("m"), "fp32", "fp32")
    assert config.model.kv_on_device is True and config.model.apply_watermark is True
    assert config.generation.max_new_tokens == 50
    assert (config.loop.max_batch_size, config.loop.prefix_cache_mb) == (4, 0)
    assert (config.vocoder.decoder_batch_rows, config.vocoder.window_growth) == (1, 2.0)
    assert config.vocoder.window_lookahead_s == 1e6
    # sections and flat names together: the flat name wins over the section's own value
    mixed = TTSConfig(model=ModelConfig(model_dir=Path("x"), device="cpu"), model_dtype="q4", loop=LoopConfig())
    assert (mixed.model.model_dir, mixed.model.device, mixed.model.model_dtype) == (Path("x"), "cpu", "q4")


def test_every_field_is_in_one_section_with_a_description():
    names = [name for section in SECTIONS.values() for name in section.model_fields]
    assert len(names) == len(set(names)) == len(ENGINE_FIELDS)
    for section in SECTIONS.values():
        for name, field in section.model_fields.items():
            assert field.description, name


def test_unknown_and_old_names_are_refused_by_name():
    with pytest.raises(TypeError, match="no setting 'prefix_cache_bytes'; use prefix_cache_mb"):
        TTSConfig(prefix_cache_bytes=0)
    with pytest.raises(TypeError, match="no setting 'windows'; use first_window_tokens"):
        TTSConfig(windows=WindowPolicy())
    with pytest.raises(TypeError, match="did you mean max_batch_size"):
        TTSConfig(max_batch=4)


def test_bounds_and_choices():
    with pytest.raises(ValidationError, match="greater than or equal to 1"):
        TTSConfig(max_batch_size=0)
    with pytest.raises(ValidationError, match="stage_turns"):
        TTSConfig(stage_turns="sometimes")
    with pytest.raises(ValidationError, match="must be ≥ first_window_tokens"):
        TTSConfig(first_window_tokens=50, max_window_tokens=20)
    # a dtype or device the engine cannot load is its ModelLoadError, as it always was
    with pytest.raises(ModelLoadError, match="unknown model dtype 'int3'"):
        TTSConfig(model_dtype="int3")
    with pytest.raises(ModelLoadError, match="unknown device 'gpu'"):
        TTSConfig(device="gpu")


def test_the_choices_are_what_the_engine_knows():
    assert get_args(ModelDtype) == ("auto", *MODEL_DTYPES)
    assert get_args(EncoderDtype) == MODEL_DTYPES
    assert get_args(StageTurns) == ("auto", *TURN_MODES)


def test_the_config_is_frozen():
    config = TTSConfig()
    with pytest.raises(ValidationError):
        config.loop.max_batch_size = 3  # type: ignore[misc]
    assert hash(config) == hash(TTSConfig())


def test_window_policy_defaults_are_the_vocoder_sections():
    policy, section = WindowPolicy(), VocoderConfig()
    assert (policy.first_window_tokens, policy.max_window_tokens, policy.lookahead_s) == (
        section.first_window_tokens,
        section.max_window_tokens,
        section.window_lookahead_s,
    )
    assert policy.window_growth == vocoder_stage.GPU_WINDOW_GROWTH and section.window_growth is None
    on_cpu = section.window_policy("cpu", batch_rows=4)
    assert (on_cpu.window_growth, on_cpu.max_batch_rows) == (vocoder_stage.CPU_WINDOW_GROWTH, 4)
    assert section.window_policy("cuda", batch_rows=1) == WindowPolicy()
    own = VocoderConfig(window_growth=3.0, window_lookahead_s=1e6).window_policy("cuda", 1)
    assert (own.window_growth, own.lookahead_s) == (3.0, 1e6)
