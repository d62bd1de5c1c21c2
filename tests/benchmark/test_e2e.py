"""benchmark.py and run_benchmark.sh against the real server on the tiny stand-in."""

import json
import os
import subprocess
import sys

import pytest

from chatterbox_server.benchmark.server_process import REPO, ServerProcess, free_port

pytestmark = [pytest.mark.server, pytest.mark.slow]

LEVEL_FIELDS = {
    "mode",
    "concurrency",
    "requests",
    "successful",
    "failed",
    "errors",
    "wall_s",
    "rtf_mean",
    "rtf_p50",
    "rtf_p95",
    "client_rtf_mean",
    "client_rtf_p50",
    "client_rtf_p95",
    "latency_p50_s",
    "latency_p95_s",
    "latency_p99_s",
    "first_audio_p50_s",
    "first_audio_p95_s",
    "throughput_rps",
    "audio_s_per_wall_s",
    "audio_s_total",
    "tokens_total",
}


@pytest.fixture(scope="module")
def server(model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    with ServerProcess(model_dir, root / "voices", root / "log", warmup="false") as running:
        yield running


def bench(*args, timeout=600):
    return subprocess.run(
        [sys.executable, str(REPO / "benchmark.py"), *args], capture_output=True, text=True, timeout=timeout, cwd=REPO
    )


@pytest.fixture(scope="module")
def voice_id(server, voice_a):
    proc = bench("--server-url", server.url, "--register-voice", str(voice_a))
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def test_sweep_writes_every_figure(server, voice_id, tmp_path):
    texts = tmp_path / "texts.txt"
    texts.write_text("Hello there.\nA slightly longer sentence [chuckle] for the benchmark.\n")
    out = tmp_path / "result.json"
    proc = bench(
        "--server-url",
        server.url,
        "--voice-id",
        voice_id,
        "--concurrency",
        "1,3",
        "--requests",
        "5",
        "--warmup",
        "1",
        "--texts",
        str(texts),
        "--output",
        str(out),
        "--quiet",
    )
    assert proc.returncode == 0, proc.stderr
    assert "Optimal concurrency (lowest mean RTF):" in proc.stdout
    assert "Max concurrency with RTF < 1.0:" in proc.stdout
    assert "Conc |   RTF Mean |    RTF P95 |   Throughput |    Audio/s" in proc.stdout
    assert proc.stderr == ""  # --quiet: no progress bar
    doc = json.loads(out.read_text())
    assert {"timestamp", "arguments", "machine", "server", "levels", "metrics_before", "metrics_after"} <= set(doc)
    assert doc["server"]["providers"] == ["CPUExecutionProvider"] and doc["server"]["dtype"] == "fp32"
    assert [lv["concurrency"] for lv in doc["levels"]] == [1, 3]
    for level in doc["levels"]:
        assert set(level) == LEVEL_FIELDS
        assert level["requests"] == 5 and level["successful"] + level["failed"] == 5
        assert level["failed"] == sum(level["errors"].values()) == 0
        assert 0 < level["rtf_p50"] <= level["rtf_p95"]
        assert level["latency_p50_s"] <= level["latency_p95_s"] <= level["latency_p99_s"]
    # the server counted exactly warm-up + measured requests on /tts/json
    before, after = doc["metrics_before"]["json"], doc["metrics_after"]["json"]
    assert after["successful_requests"] - before["successful_requests"] == 1 + 10
    assert "tts_requests_total" in doc["metrics_after"]["text"]


def test_streaming_and_open_loop(server, voice_id, tmp_path):
    out = tmp_path / "open.json"
    proc = bench(
        "--server-url",
        server.url,
        "--voice-id",
        voice_id,
        "--rate",
        "4",
        "--requests",
        "4",
        "--warmup",
        "0",
        "--stream",
        "--output",
        str(out),
        "--quiet",
    )
    assert proc.returncode == 0, proc.stderr
    (level,) = json.loads(out.read_text())["levels"]
    assert level["mode"] == "open" and level["rate_rps"] == 4 and level["successful"] == 4
    assert 0 < level["first_audio_p50_s"] <= level["latency_p95_s"]


def test_find_max_concurrency_with_bound(server, voice_id, tmp_path):
    out = tmp_path / "max.json"
    proc = bench(
        "--server-url",
        server.url,
        "--voice-id",
        voice_id,
        "--find-max-concurrency",
        "--max-concurrency-bound",
        "2",
        "--requests",
        "2",
        "--warmup",
        "0",
        "--output",
        str(out),
        "--quiet",
    )
    assert proc.returncode == 0, proc.stderr
    search = json.loads(out.read_text())["max_concurrency_search"]
    assert search["bound"] == 2 and set(search["tried"]) <= {"1", "2"}
    if search["bound_reached"]:
        assert "the search bound" in proc.stdout and search["max_concurrency"] == 2


def test_unreachable_server_is_a_clear_error():
    proc = bench("--server-url", f"http://127.0.0.1:{free_port()}", "--voice-id", "x", "--quiet")
    assert proc.returncode == 2 and "cannot reach" in proc.stderr


def test_run_benchmark_sh_end_to_end(tmp_path):
    port = free_port()
    env = {
        **os.environ,
        "BENCH_URL": f"http://127.0.0.1:{port}",
        "BENCH_CONCURRENCY": "1,2",
        "BENCH_REQUESTS": "2",
        "BENCH_MAX_BOUND": "2",
        "BENCH_OUTPUT": str(tmp_path / "bench.json"),
        "BENCH_EXTRA_ARGS": "--quiet --warmup 0",
        "TTS_VOICES_DIR": str(tmp_path / "voices"),
        "TTS_STAND_IN_DIR": str(tmp_path / "stand-in"),
        "TTS_WARMUP": "false",
    }
    proc = subprocess.run(
        [str(REPO / "run_benchmark.sh"), "--stand-in"], capture_output=True, text=True, timeout=600, cwd=REPO, env=env
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "starting ./run.sh" in proc.stderr and "generated reference clip" in proc.stderr
    assert "Max concurrency with RTF < 1.0:" in proc.stdout
    assert "tts_requests_total" in proc.stdout  # the final /metrics
    doc = json.loads((tmp_path / "bench.json").read_text())
    assert doc["server"]["stand_in"] is True
    assert [lv["concurrency"] for lv in doc["levels"]][:2] == [1, 2]
    # the server it started is gone
    import httpx

    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{port}/health", timeout=2)
