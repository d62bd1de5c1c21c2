"""Settings from TTS_ environment variables and CLI flags; ./run.sh --stand-in as a user runs it."""

from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError

from chatterbox_server.benchmark.server_process import REPO, ServerProcess
from chatterbox_server.server.settings import Settings, SettingsError, settings_from_cli


def test_defaults_work():
    s = Settings()
    assert (s.port, s.max_concurrent_requests, s.max_queue, s.max_text_length) == (8000, 8, 32, 5000)
    assert s.max_voice_file_size == 50 * 1024 * 1024 and s.request_timeout_s == 120
    assert s.voices_dir == Path("voices") and s.voice_cache_size == 100


def test_environment_then_flags(monkeypatch):
    monkeypatch.setenv("TTS_PORT", "9001")
    monkeypatch.setenv("TTS_MAX_QUEUE", "5")
    monkeypatch.setenv("TTS_MODEL_DTYPE", "q4")
    s = settings_from_cli(["--max-queue", "7", "--no-warmup", "--model-dir", "/m"])
    assert (s.port, s.max_queue, s.model_dtype, s.warmup, s.model_dir) == (9001, 7, "q4", False, Path("/m"))
    assert s.engine_config().model_dir == Path("/m")


def test_invalid_settings_are_refused(monkeypatch):
    monkeypatch.setenv("TTS_MAX_CONCURRENT_REQUESTS", "0")
    with pytest.raises(ValidationError):
        Settings()
    with pytest.raises(SettingsError, match=r"--model-dtype \(TTS_MODEL_DTYPE\) = 'int3'"):
        settings_from_cli(["--model-dtype", "int3"])


def test_stand_in_uses_fp32_unless_told():
    s = Settings(stand_in=True, stand_in_dir=Path("/x"))
    config = s.engine_config()
    assert (config.model_dir, config.model_dtype) == (Path("/x"), "fp32")


@pytest.mark.server
@pytest.mark.slow
def test_run_sh_stand_in_generates_and_serves(tmp_path):
    stand_in = tmp_path / "stand-in"
    command = [str(REPO / "run.sh"), "--stand-in", "--stand-in-dir", str(stand_in)]
    with ServerProcess(None, tmp_path / "voices", tmp_path / "log", command=command) as server:
        body = httpx.get(server.url + "/health").json()
        assert body["stand_in"] is True and "tones" in body["note"]
        assert (stand_in / "stand_in.json").is_file()
        assert "STAND-IN" in server.log()


def test_server_without_model_files_exits_with_one_clear_line(tmp_path):
    import subprocess
    import sys

    (tmp_path / "nothing").mkdir()  # a folder without the model's files

    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "server.py"),
            "--model-dir",
            str(tmp_path / "nothing"),
            "--model-dtype",
            "fp32",
            "--port",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "cannot start" in proc.stderr and "tokenizer.json" in proc.stderr and "--model-dir" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_server_with_a_missing_bucket_exits_with_one_clear_line_before_loading(s3_env, model_dir):
    import subprocess
    import sys

    command = [sys.executable, str(REPO / "server.py"), "--model-dir", str(model_dir), "--model-dtype", "fp32"]
    proc = subprocess.run(
        [*command, "--voice-store", "s3://no-such-bucket/voices", "--port", "1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "cannot start" in proc.stderr and "'no-such-bucket' does not exist" in proc.stderr
    assert "Traceback" not in proc.stderr
