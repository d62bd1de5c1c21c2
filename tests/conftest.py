"""Shared fixtures: the tiny stand-in model (real ONNX graphs run by ONNX Runtime) and
synthetic reference clips. No mocks: every engine test runs the four graphs."""

import os
from pathlib import Path

import pytest
import soundfile as sf

from chatterbox_server.model.stand_in import make_stand_in_model
from tests.clips import make_clip

SAMPLE_RATE_HZ = 24_000


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory) -> Path:
    """The tiny stand-in with all five dtypes: run_tests.sh's copy, else a fresh one."""
    prepared = os.environ.get("TTS_TEST_MODEL_DIR")
    if prepared and (Path(prepared) / "tokenizer.json").is_file():
        return Path(prepared).resolve()
    return make_stand_in_model(tmp_path_factory.mktemp("stand-in") / "tiny", profile="tiny")


@pytest.fixture(scope="session")
def clips_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("clips")


@pytest.fixture(scope="session")
def voice_a(clips_dir) -> Path:
    path = clips_dir / "voice_a.wav"
    sf.write(path, make_clip(6.0, SAMPLE_RATE_HZ, 140.0, seed=1), SAMPLE_RATE_HZ)
    return path


@pytest.fixture(scope="session")
def voice_b(clips_dir) -> Path:
    """Another speaker, and another container: 44.1 kHz stereo FLAC (exercises downmix + resample)."""
    path = clips_dir / "voice_b.flac"
    sf.write(path, make_clip(7.5, 44_100, 220.0, seed=2, channels=2), 44_100)
    return path
