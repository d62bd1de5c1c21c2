"""Start this checkout's server (python server.py) for a bench script, and stop it."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class BenchServer:
    """A server process with TTS_* settings from keyword arguments; `url`, `pid`, `rss_mb()`, `stop()`."""

    def __init__(self, log: Path, **settings: object):
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        env = {**os.environ, "TTS_HOST": "127.0.0.1", "TTS_PORT": str(port)}
        env.update({f"TTS_{k.upper()}": str(v) for k, v in settings.items()})
        self._log = open(log, "wb")  # noqa: SIM115  (closed in stop())
        self.process = subprocess.Popen(
            [sys.executable, str(REPO / "server.py")], cwd=REPO, env=env, stdout=self._log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 300
        while True:
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start; see {log}")
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)

    @property
    def pid(self) -> int:
        return self.process.pid

    def rss_mb(self) -> float:
        """Resident memory of the server process (Linux /proc)."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def register(self, clip: Path, voice_id: str) -> None:
        with open(clip, "rb") as f:
            r = httpx.post(
                self.url + "/voices/register", files={"voice_file": f}, data={"voice_id": voice_id}, timeout=120
            )
        r.raise_for_status()

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        return int(self.process.returncode)
