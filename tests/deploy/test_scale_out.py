"""Scale-out end to end, with real parts: a real S3-compatible server (SeaweedFS), two server
processes on the stand-in sharing it, and nginx in front with the deploy config (the same template
compose runs). What a platform engineer relies on: any replica serves any voice, a deletion or
re-registration reaches the other replica within the documented staleness, and a replica that
is SIGTERMed mid-stream finishes that stream while its new requests go to the other one."""

import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest

from chatterbox_server.benchmark.server_process import ServerProcess
from tests.support import LONG_PIECE, decode_wav
from tests.system_tools import nginx, nginx_binary

pytestmark = [pytest.mark.slow, pytest.mark.server]

REVALIDATE_S = 1.0  # the staleness bound under test (production default: 5 s)
TEXT = "Shared voices, any replica."


def speak(client: httpx.Client, voice_id: str, **extra) -> httpx.Response:
    return client.post("/tts", data={"text": TEXT, "voice_id": voice_id, "seed": "3", "stream": "false", **extra})


# Two processes give the same seeded speech up to float rounding (ONNX Runtime's threaded
# reductions): measured here 0.5-0.7 % for one voice, 168 % between the two test voices.
SAME_VOICE, DIFFERENT_VOICES = 0.05, 0.5


def difference(x: httpx.Response, y: httpx.Response) -> float:
    """Relative RMS difference of two responses' audio (0: identical)."""
    a, b = decode_wav(x.content)[0], decode_wav(y.content)[0]
    n = min(len(a), len(b))
    return float(np.sqrt(np.mean((a[:n] - b[:n]) ** 2) / max(np.mean(a[:n] ** 2), 1e-12)))


def wait_for(condition, timeout_s: float, what: str) -> float:
    """Seconds until condition() held; fails after timeout_s."""
    start = time.monotonic()
    while not condition():
        assert time.monotonic() - start < timeout_s, f"not within {timeout_s} s: {what}"
        time.sleep(0.1)
    return time.monotonic() - start


def in_flight(server: ServerProcess) -> float:
    summary = httpx.get(server.url + "/metrics?format=json", timeout=5).json()
    return float(summary["concurrent_requests"])


@pytest.fixture
def replicas(model_dir, tmp_path, s3_bucket):
    nginx_binary()  # skip (or fail under CI) before starting anything
    settings = {
        "voice_store": f"s3://{s3_bucket}/tts",
        "voice_revalidate_s": REVALIDATE_S,
        "warmup": "false",
        "shutdown_grace_s": 30,
    }
    with ThreadPoolExecutor(2) as pool:  # both load at once
        started = [
            pool.submit(ServerProcess, model_dir, tmp_path / f"local-{name}", tmp_path / f"{name}.log", **settings)
            for name in ("a", "b")
        ]
        a, b = (s.result() for s in started)
    try:
        yield a, b
    finally:
        a.stop()
        b.stop()


def test_any_replica_serves_any_voice_and_changes_reach_the_other(replicas, voice_a, voice_b):
    a, b = replicas
    with a.client() as ca, b.client() as cb:
        with open(voice_a, "rb") as f:
            assert ca.post("/voices/register", files={"voice_file": ("a", f)}, data={"voice_id": "alice"}).is_success
        # registered on A, served by B: the stored encoder outputs give A's seeded speech
        on_a, on_b = speak(ca, "alice"), speak(cb, "alice")
        assert on_b.status_code == 200, on_b.text
        assert decode_wav(on_b.content)[0].shape[0] > 0
        assert difference(on_b, on_a) < SAME_VOICE
        assert [v["voice_id"] for v in cb.get("/voices").json()["voices"]] == ["alice"]

        # re-registered on B with another clip: A speaks the new version within the bound
        with open(voice_b, "rb") as f:
            assert cb.post("/voices/register", files={"voice_file": ("b", f)}, data={"voice_id": "alice"}).is_success
        new_on_b = speak(cb, "alice")
        assert difference(new_on_b, on_b) > DIFFERENT_VOICES
        wait_for(
            lambda: difference(speak(ca, "alice"), new_on_b) < SAME_VOICE, REVALIDATE_S + 10, "A speaks the new version"
        )
        assert ca.get("/voices/alice").json()["duration"] == pytest.approx(7.5, abs=0.01)  # voice_b's clip

        # deleted on A: B answers 404 within the bound, and lists nothing
        assert ca.delete("/voices/alice").is_success
        assert speak(ca, "alice").status_code == 404
        took = wait_for(lambda: speak(cb, "alice").status_code == 404, REVALIDATE_S + 10, "B sees the deletion")
        assert cb.get("/voices").json()["voices"] == []
        assert b.process.poll() is None and a.process.poll() is None
    print(f"deletion reached the other replica after {took:.2f} s (bound {REVALIDATE_S} s + one read)")


def test_sigterm_mid_stream_behind_nginx_no_client_sees_a_5xx(replicas, voice_a, tmp_path):
    a, b = replicas
    upstreams = [f"127.0.0.1:{r.port} max_fails=1 fail_timeout=2s" for r in (a, b)]
    with nginx(upstreams, tmp_path / "nginx") as lb_url, httpx.Client(base_url=lb_url, timeout=120) as lb:
        with open(voice_a, "rb") as f:
            assert lb.post("/voices/register", files={"voice_file": ("a", f)}, data={"voice_id": "alice"}).is_success
        pinned = {"X-Voice-ID": "alice"}  # consistent hashing: every request below goes to one replica
        form = {"text": LONG_PIECE, "voice_id": "alice", "max_new_tokens": "150", "seed": "5"}
        whole = lb.post("/tts", data={**form, "stream": "false"}, headers=pinned)
        assert whole.status_code == 200
        with lb.stream("POST", "/tts", data=form, headers=pinned) as stream:
            chunks = stream.iter_bytes()
            received = [next(chunks)]  # live: it cannot finish before we read it
            serving = a if in_flight(a) == 1 else b
            other = b if serving is a else a
            assert in_flight(serving) == 1 and in_flight(other) == 0
            serving.terminate()
            wait_for(
                lambda: httpx.get(serving.url + "/health/ready", timeout=5).status_code == 503, 10, "readiness 503"
            )
            # new requests hashed to the draining replica: it answers 503, nginx retries the other one
            statuses = [speak(lb, "alice", max_new_tokens="20").status_code for _ in range(4)]
            statuses += [lb.get("/voices").status_code, lb.get("/health/ready").status_code]
            received += list(chunks)
        assert statuses == [200] * len(statuses)
        streamed, _ = decode_wav(b"".join(received))
        assert streamed.shape[0] == decode_wav(whole.content)[0].shape[0]  # the stream finished whole
        assert serving.process.wait(timeout=30) == 0
        assert "draining before shutdown" in serving.log()
        assert " POST /tts 503 " in serving.log()  # it did turn requests away: nginx retried them
        # with the drained replica gone, everything goes to the survivor
        assert speak(lb, "alice").status_code == 200
        assert other.process.poll() is None
