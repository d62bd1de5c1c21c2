"""Settings from TTS_ environment variables and CLI flags; ./run.sh --stand-in as a user runs it."""

import re
from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError

from chatterbox_server.benchmark.server_process import REPO, ServerProcess
from chatterbox_server.engine import TTSConfig
from chatterbox_server.engine.config import ENGINE_FIELDS, SECTIONS
from chatterbox_server.flags import flag_of
from chatterbox_server.server.settings import Settings, SettingsError, build_parser, settings_from_cli


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
    assert s.engine_config().model.model_dir == Path("/m")


def test_invalid_settings_are_refused(monkeypatch):
    monkeypatch.setenv("TTS_MAX_CONCURRENT_REQUESTS", "0")
    with pytest.raises(ValidationError):
        Settings()
    with pytest.raises(SettingsError, match=r"--model-dtype \(TTS_MODEL_DTYPE\) = 'int3'"):
        settings_from_cli(["--model-dtype", "int3"])


def test_stand_in_uses_fp32_unless_told():
    s = Settings(stand_in=True, stand_in_dir=Path("/x"))
    config = s.engine_config()
    assert (config.model.model_dir, config.model.model_dtype) == (Path("/x"), "fp32")


def test_engine_settings_are_the_engine_configs_fields():
    for section in SECTIONS.values():
        for name, field in section.model_fields.items():
            mine = Settings.model_fields[name]
            assert (mine.annotation, mine.default, mine.description) == (
                field.annotation,
                field.default,
                field.description,
            )
    assert Settings().engine_config() == TTSConfig()  # the same defaults, not two copies of them
    s = Settings(max_batch_size=4, prefix_cache_mb=0, window_lookahead_s=2.5, kv_on_device=False, lm_threads=1)
    config = s.engine_config()
    assert (config.loop.max_batch_size, config.loop.prefix_cache_mb, config.vocoder.window_lookahead_s) == (4, 0, 2.5)
    assert (config.model.kv_on_device, config.model.lm_threads) == (False, 1)
    assert config == TTSConfig(**{name: getattr(s, name) for name in ENGINE_FIELDS})


def test_settings_can_be_changed_after_they_are_read():
    s = Settings()
    s.max_batch_size, s.port = 2, 9000
    assert s.engine_config().loop.max_batch_size == 2 and s.port == 9000


def test_kv_on_device_is_unset_unless_told(monkeypatch):
    assert Settings().kv_on_device is None
    monkeypatch.setenv("TTS_KV_ON_DEVICE", "false")
    assert Settings().engine_config().model.kv_on_device is False
    assert settings_from_cli(["--kv-on-device"]).kv_on_device is True


def test_a_check_across_window_settings_is_one_line_naming_both_flags():
    with pytest.raises(SettingsError) as caught:
        settings_from_cli(["--first-window-tokens", "50", "--max-window-tokens", "20"])
    message = str(caught.value)
    assert "\n" not in message
    assert message == "--max-window-tokens (TTS_MAX_WINDOW_TOKENS) = '20': must be ≥ --first-window-tokens (50)"


def test_server_flags_are_one_per_setting_and_bools_have_a_no_form():
    flags = {s for action in build_parser()._actions for s in action.option_strings} - {"-h", "--help"}
    expected = {flag_of(name) for name in Settings.model_fields}
    bools = [name for name, f in Settings.model_fields.items() if f.annotation in (bool, bool | None)]
    expected |= {"--no-" + flag_of(name)[2:] for name in bools}
    assert flags == expected


def readme_default(value: object) -> str:
    """A default as the README's table writes it."""
    if value in (None, ""):
        return "unset"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def test_the_readme_table_is_every_setting_with_its_flag_and_default():
    section = (REPO / "README.md").read_text().split("### Configuration", 1)[1].split("\n### ", 1)[0]
    rows = {}
    for line in section.splitlines():
        if match := re.match(r"\| `TTS_(\w+)` \| `(--[a-z0-9-]+)` \| ([^|]+) \|", line):
            rows[match[1].lower()] = (match[2], match[3].strip().strip("`"))
    expected = {name: (flag_of(name), readme_default(f.default)) for name, f in Settings.model_fields.items()}
    assert rows == expected


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
