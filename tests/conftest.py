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


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory):
    """A real S3-compatible server (SeaweedFS) for the session; any credentials are accepted."""
    from tests.system_tools import seaweedfs

    with seaweedfs(tmp_path_factory.mktemp("seaweedfs")) as endpoint:
        yield endpoint


@pytest.fixture
def s3_env(s3_endpoint, monkeypatch):
    """The standard AWS environment pointing at the test server, as a deployment would set it."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test-key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test-secret")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    return s3_endpoint


@pytest.fixture
def s3_bucket(s3_env) -> str:
    """A fresh, empty bucket (its name) on the test server."""
    import uuid

    from chatterbox_server.voice_store.s3 import make_s3_client

    name = f"voices-{uuid.uuid4().hex[:12]}"
    make_s3_client().create_bucket(Bucket=name)
    return name
