"""What a new user meets in their first hour: clear one-line errors before anything loads, a
--help that explains each flag, aliases for OpenAI voice names, and one log line per request."""

import re
import socket
import subprocess
import sys
import time
from datetime import datetime

import pytest

from chatterbox_server.benchmark.server_process import REPO, ServerProcess, free_port

SERVER = [sys.executable, str(REPO / "server.py")]


def run_server(
    args: list[str], env: dict[str, str] | None = None, timeout_s: float = 60
) -> subprocess.CompletedProcess:
    import os

    return subprocess.run(
        SERVER + args, capture_output=True, text=True, timeout=timeout_s, env={**os.environ, **(env or {})}
    )


@pytest.mark.parametrize(
    ("args", "env", "expected"),
    [
        (["--model-dtype", "fp17"], {}, "--model-dtype (TTS_MODEL_DTYPE) = 'fp17': Input should be 'auto'"),
        ([], {"TTS_PORT": "abc"}, "--port (TTS_PORT) = 'abc': Input should be a valid integer"),
        (["--max-concurrent-requests", "0"], {}, "--max-concurrent-requests (TTS_MAX_CONCURRENT_REQUESTS) = '0'"),
        (["--voice-aliases", "alloy"], {}, "'alloy' is not name=voice_id"),
    ],
)
def test_a_wrong_setting_is_one_clear_line(args, env, expected):
    proc = run_server(args, env)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0, proc.stderr  # one line
    assert expected in proc.stderr and "Traceback" not in proc.stderr and "pydantic" not in proc.stderr


def test_help_describes_every_flag_with_its_variable_and_default():
    text = " ".join(run_server(["--help"]).stdout.split())
    assert "--max-queue MAX_QUEUE requests waiting for a slot; beyond it 429 [env TTS_MAX_QUEUE; default: 32]" in text
    assert "--model-dtype {auto,fp32,fp16,q8,q4,q4f16}" in text
    from chatterbox_server.server import Settings

    assert text.count("[env TTS_") == len(Settings.model_fields)  # every setting has a described flag


def test_a_missing_model_dir_is_named_as_missing(tmp_path):
    proc = run_server(["--model-dir", str(tmp_path / "nonexistent"), "--port", str(free_port())])
    assert proc.returncode == 2
    assert f"model directory {tmp_path / 'nonexistent'} does not exist" in proc.stderr
    assert "lacks" not in proc.stderr and "Traceback" not in proc.stderr


def test_a_busy_port_is_found_before_the_model_loads(model_dir):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = run_server(["--model-dir", str(model_dir), "--host", "127.0.0.1", "--port", str(port)])
    assert proc.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in proc.stderr and "--port" in proc.stderr
    assert "ready:" not in proc.stderr  # nothing was loaded first


def test_no_network_fails_fast_and_says_what_to_do(tmp_path):
    started = time.monotonic()
    nowhere = f"http://127.0.0.1:{free_port()}"  # nothing listens: the hub is unreachable
    proc = run_server(["--port", str(free_port())], {"HF_HOME": str(tmp_path / "hf"), "HF_ENDPOINT": nowhere})
    assert proc.returncode == 2
    assert "cannot download ResembleAI/chatterbox-turbo-ONNX" in proc.stderr
    assert "--stand-in" in proc.stderr and "HF_HUB_OFFLINE=1" in proc.stderr and "--model-dir" in proc.stderr
    assert "Retry" not in proc.stderr and "Traceback" not in proc.stderr
    assert time.monotonic() - started < 60  # the hub client's retries took 24 s before (generous bound)


@pytest.mark.server
def test_aliases_default_voice_iso_dates_and_one_log_line_per_request(model_dir, tmp_path, voice_a):
    settings = {"voice_aliases": "alloy=alice,echo=nobody", "default_voice": "alice", "warmup": "false"}
    with ServerProcess(model_dir, tmp_path / "voices", tmp_path / "log", **settings) as server, server.client() as c:
        with open(voice_a, "rb") as f:
            assert c.post("/voices/register", files={"voice_file": f}, data={"voice_id": "alice"}).is_success
        created = c.get("/voices").json()["voices"][0]["created_at"]
        assert datetime.fromisoformat(created).tzinfo is not None  # ISO 8601 with its zone
        speech = c.post(
            "/v1/audio/speech", json={"model": "tts-1", "input": "Hi.", "voice": "alloy", "response_format": "wav"}
        )
        assert speech.status_code == 200, speech.text
        # echo's voice is not registered; OpenAI-style objects, and the plain names behind ?format=names
        assert [v["id"] for v in c.get("/v1/audio/voices").json()["voices"]] == ["alice", "alloy"]
        assert c.get("/v1/audio/voices", params={"format": "names"}).json()["voices"] == ["alice", "alloy"]
        assert c.post("/tts", data={"text": "No voice named.", "stream": "false"}).status_code == 200  # default
        empty = c.post("/tts", data={"text": "", "voice_id": "alice"})
        assert empty.status_code == 422 and empty.json()["error"]["message"] == "text is empty"
        assert c.post("/tts", data={"voice_id": "alice"}).json()["error"]["message"] == "text is empty"
        with c.stream("POST", "/tts", data={"text": "Long enough to leave. " * 30, "voice_id": "alice"}) as r:
            next(r.iter_bytes())  # the stream started; leave mid-way
        line = re.compile(
            r"[0-9a-f]{32} POST /tts 200 [0-9.]+s voice=alice chars=15 audio=[0-9.]+s ttfa=[0-9.]+s rtf=[0-9.]+$",
            re.M,
        )
        deadline = time.monotonic() + 30
        while not (line.search(server.log()) and " POST /tts 200 cancelled " in server.log()):
            assert time.monotonic() < deadline, server.log()[-3000:]
            time.sleep(0.2)
        log = server.log()
        assert re.search(r" POST /v1/audio/speech 200 [0-9.]+s voice=alice chars=3 ", log)
        assert " POST /tts 422 " in log
        assert '"POST /tts HTTP/1.1"' not in log  # uvicorn's access line would be a second line per request
