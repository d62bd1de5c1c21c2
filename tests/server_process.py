"""Start the real server (uvicorn in a subprocess on a free port) for HTTP tests."""

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import uvicorn

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """`python server.py` with TTS_* settings; `url`, `client`, `stop()`; a context manager."""

    def __init__(
        self, model_dir: Path | None, voices_dir: Path, log_path: Path, command: list[str] | None = None, **settings
    ):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        env = {
            **os.environ,
            "TTS_MODEL_DTYPE": "fp32",
            "TTS_VOICES_DIR": str(voices_dir),
            "TTS_HOST": "127.0.0.1",
            "TTS_PORT": str(self.port),
            "TTS_SHUTDOWN_GRACE_S": "20",
        }
        if model_dir is not None:
            env["TTS_MODEL_DIR"] = str(model_dir)
        env.update({f"TTS_{k.upper()}": str(v) for k, v in settings.items()})
        self._log = open(log_path, "wb")  # noqa: SIM115  (closed in stop(), lives as long as the process)
        self._terminated = False
        self.process = subprocess.Popen(
            command or [sys.executable, str(REPO / "server.py")],
            cwd=REPO,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self._wait_ready()

    def _wait_ready(self, timeout_s: float = 90.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.log()}")
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"server not ready in {timeout_s} s:\n{self.log()}")

    def client(self, **kwargs) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=kwargs.pop("timeout", 120), **kwargs)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def terminate(self) -> None:
        """SIGTERM once: uvicorn drains; a second signal would force it down."""
        if not self._terminated:
            self._terminated = True
            self.process.send_signal(signal.SIGTERM)

    def stop(self) -> int:
        if self.process.poll() is None:
            self.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        return self.process.returncode

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


@contextlib.contextmanager
def serve_in_thread(app, timeout_s: float = 30.0) -> Iterator[str]:
    """Serve an app object with uvicorn on a free port in this process; yields its base URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                if httpx.get(url + "/health").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"app not ready in {timeout_s} s")
            time.sleep(0.05)
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=30)
