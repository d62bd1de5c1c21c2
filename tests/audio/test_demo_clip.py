"""The one-line test clip for a newcomer without a recording: python -m chatterbox_server.audio.demo_clip."""

import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from chatterbox_server import audio
from chatterbox_server.audio.demo_clip import demo_clip
from chatterbox_server.benchmark.server_process import REPO


def make(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "chatterbox_server.audio.demo_clip", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )


@pytest.mark.parametrize(("flags", "seconds"), [((), 6.0), (("--seconds", "7.5"), 7.5)])
def test_writes_a_24k_mono_clip_that_registers_as_a_voice(tmp_path, flags, seconds):
    path = tmp_path / "voice.wav"
    proc = make(str(path), *flags)
    assert proc.returncode == 0, proc.stderr
    assert str(path) in proc.stdout
    samples, rate = sf.read(path, dtype="float32", always_2d=True)
    assert rate == 24_000 and samples.shape == (int(seconds * 24_000), 1)
    assert float(np.sqrt(np.mean(samples**2))) > 0.1  # not silent
    reference = audio.prepare_reference_audio(path.read_bytes(), max_seconds=30)
    assert reference.shape == (int(seconds * 24_000),)


def test_the_server_warms_up_on_the_same_signal():
    clip = demo_clip()
    assert clip.dtype == np.float32 and clip.shape == (6 * 24_000,)


def test_a_bad_length_or_path_is_one_clear_error(tmp_path):
    proc = make(str(tmp_path / "voice.wav"), "--seconds", "0")
    assert proc.returncode == 2 and "--seconds" in proc.stderr
    proc = make(str(tmp_path / "missing-dir" / "voice.wav"))
    assert proc.returncode == 1 and proc.stderr.startswith("demo_clip: cannot write")
