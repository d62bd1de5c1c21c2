"""main.py end to end, as a user runs it: a subprocess writing a WAV file."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile as sf

pytestmark = pytest.mark.slow  # each test runs main.py in a subprocess

REPO = Path(__file__).resolve().parents[2]


def run_main(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / "main.py"), *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
        cwd=REPO,
    )


def speak(
    text: str, voice: object, output: object, *flags: str, env: dict | None = None
) -> subprocess.CompletedProcess:
    """main.py --text TEXT --voice VOICE --output OUTPUT FLAGS..."""
    return run_main("--text", text, "--voice", str(voice), "--output", str(output), *flags, env=env)


def test_main_writes_a_16_bit_24k_wav(model_dir, voice_b, tmp_path):
    out = tmp_path / "out.wav"
    proc = speak(
        "Hello from the command line.",
        str(voice_b),
        str(out),
        "--model-dir",
        str(model_dir),
        "--model-dtype",
        "fp32",
    )
    assert proc.returncode == 0, proc.stderr
    summary = proc.stdout.strip()
    assert len(summary.splitlines()) == 1
    assert "RTF" in summary and "CPUExecutionProvider" in summary and "stand-in" in summary
    tokens = int(re.search(r"(\d+) tokens", summary).group(1))
    info = sf.info(out)
    assert (info.samplerate, info.channels, info.subtype) == (24_000, 1, "PCM_16")
    # STOP ends the run: (tokens − STOP + 3 SILENCE) × 960 samples
    assert info.frames == (tokens - 1 + 3) * 960
    audio, _ = sf.read(out, dtype="float32")
    assert 0.05 < abs(audio).max() <= 1.0


def test_main_sampling_flags_and_seed(model_dir, voice_b, tmp_path):
    outputs = []
    for name in ("a.wav", "b.wav"):
        out = tmp_path / name
        proc = speak(
            "Seeded run.",
            str(voice_b),
            str(out),
            "--model-dir",
            str(model_dir),
            "--dtype",
            "q4",
            "--temperature",
            "0.9",
            "--top-p",
            "0.9",
            "--seed",
            "5",
        )
        assert proc.returncode == 0, proc.stderr
        outputs.append(sf.info(out).frames)
    assert outputs[0] == outputs[1]


def test_main_reports_bad_input_without_traceback(model_dir, tmp_path):
    short = tmp_path / "short.wav"
    sf.write(short, [0.1] * 24_000, 24_000)
    proc = speak("hi", short, tmp_path / "x.wav", "--model-dir", str(model_dir), "--dtype", "fp32")
    assert proc.returncode == 2
    assert "at least 5 s" in proc.stderr and "Traceback" not in proc.stderr


def test_offline_hub_download_fails_clearly(voice_b, tmp_path):
    """Without --model-dir the hub is used; offline with an empty cache → one clear error."""
    proc = speak(
        "hi",
        str(voice_b),
        str(tmp_path / "x.wav"),
        "--dtype",
        "fp32",
        "--device",
        "cpu",
        env={"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")},
    )
    assert proc.returncode == 2
    assert "HF_HUB_OFFLINE is set" in proc.stderr and "--model-dir" in proc.stderr and "--stand-in" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_main_speaks_the_server_flag_vocabulary_and_the_stand_in(voice_b, tmp_path):
    """--stand-in, --model-dtype and --intra-op-threads, as server.py spells them."""
    out = tmp_path / "tones.wav"
    proc = run_main(
        "--stand-in",
        "--intra-op-threads",
        "1",
        "--text",
        "Hi.",
        "--voice",
        str(voice_b),
        "--output",
        str(out),
    )
    assert proc.returncode == 0, proc.stderr
    assert "[stand-in model]" in proc.stdout and "fp32" in proc.stdout
    assert sf.info(out).samplerate == 24_000


@pytest.mark.parametrize("kind", ["missing", "directory", "not audio"])
def test_a_bad_voice_clip_is_one_line_before_any_model_or_download(tmp_path, kind):
    """The --voice clip is checked first: offline, with a model id the hub cache lacks, the clip is what fails."""
    clip = tmp_path / "voice.wav"
    if kind == "directory":
        clip.mkdir()
    elif kind == "not audio":
        clip.write_text("this is a text file, not a recording\n")
    proc = speak(
        "hi",
        str(clip),
        str(tmp_path / "x.wav"),
        "--model-id",
        "nobody/no-such-model",
        "--device",
        "cpu",
        env={"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "HF_ENDPOINT": "http://127.0.0.1:9"},
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"main.py: --voice {clip}"), proc.stderr
    expected = {"missing": "no such file", "directory": "is not a file", "not audio": "cannot decode audio"}[kind]
    assert expected in lines[0]
    assert "nobody/no-such-model" not in proc.stderr and "download" not in proc.stderr  # the model was not reached
    assert not (tmp_path / "hf").exists() and not (tmp_path / "x.wav").exists()


def test_a_model_error_names_main_py_not_the_server(voice_b, tmp_path):
    proc = speak("hi", voice_b, tmp_path / "x.wav", "--model-dir", str(tmp_path / "nonexistent"))
    assert proc.returncode == 2
    assert proc.stderr.startswith(f"main.py: model directory {tmp_path / 'nonexistent'} does not exist")
    assert "--stand-in" in proc.stderr and "the server" not in proc.stderr and "Traceback" not in proc.stderr
