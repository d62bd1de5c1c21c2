"""Start a real server (`python server.py` in a subprocess on a loopback port) to measure or test it.

One launcher for the tests and the bench scripts: `ServerProcess` runs server.py from a checkout
(this one unless told) with settings as TTS_* environment variables and optional extra flags,
waits for /health, and stops it with SIGTERM (the server drains, then exits). `serve_in_thread`
serves an app object with uvicorn inside this process instead.

    with ServerProcess(model_dir, voices_dir, log_path, warmup="false") as server:
        server.register(clip, "alice")
        with server.client() as c:
            c.post("/tts", data={"text": "Hi.", "voice_id": "alice"})
"""

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import uvicorn

REPO = Path(__file__).resolve().parents[2]  # the checkout this package runs from (server.py lives there)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (right now)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerProcess:
    """`python server.py` with TTS_* settings; `url`, `port`, `pid`, `client()`, `stop()`; a context manager.

    model_dir, voices_dir: TTS_MODEL_DIR and TTS_VOICES_DIR where given (None: the server's own
    defaults, or what `args` says). With a model_dir the dtype defaults to fp32 (the stand-in
    files' dtype); the shutdown grace defaults to 20 s. Any other keyword is a setting:
    `max_queue=2` is TTS_MAX_QUEUE=2, and overrides those defaults.
    checkout: the git checkout whose server.py runs (its folder is the working directory and
    PYTHONPATH); args: extra command-line flags; command: a whole other command line instead
    (run.sh, say), run from the checkout. The server listens on 127.0.0.1 on `port` (a free one
    unless told), set as TTS_HOST/TTS_PORT; a checkout that reads no such variables needs
    --host/--port in args.
    """

    def __init__(
        self,
        model_dir: Path | None,
        voices_dir: Path | None,
        log_path: Path,
        command: Sequence[str] | None = None,
        *,
        checkout: Path = REPO,
        args: Sequence[str] = (),
        port: int | None = None,
        ready_timeout_s: float = 90.0,
        **settings: object,
    ):
        self.checkout = Path(checkout)
        self.port = port if port is not None else free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = Path(log_path)
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(self.checkout), *filter(None, [os.environ.get("PYTHONPATH")])]),
            "TTS_HOST": "127.0.0.1",
            "TTS_PORT": str(self.port),
            "TTS_SHUTDOWN_GRACE_S": "20",
        }
        if model_dir is not None:
            env["TTS_MODEL_DIR"] = str(model_dir)
            env["TTS_MODEL_DTYPE"] = "fp32"
        if voices_dir is not None:
            env["TTS_VOICES_DIR"] = str(voices_dir)
        env.update({f"TTS_{k.upper()}": str(v) for k, v in settings.items()})
        self._log = open(self.log_path, "wb")  # noqa: SIM115  (closed in stop(), lives as long as the process)
        self._terminated = False
        self.process = subprocess.Popen(
            [*(command or [sys.executable, str(self.checkout / "server.py")]), *args],
            cwd=self.checkout,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self._wait_ready(ready_timeout_s)

    def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self._log.close()
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.log()}")
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"server not ready in {timeout_s} s:\n{self.log()}")

    @property
    def pid(self) -> int:
        return self.process.pid

    def client(self, **kwargs: Any) -> httpx.Client:
        """An HTTP client on the server's URL (timeout 120 s unless given)."""
        return httpx.Client(base_url=self.url, timeout=kwargs.pop("timeout", 120), **kwargs)

    def log(self) -> str:
        """Everything the server printed so far (stdout and stderr)."""
        return self.log_path.read_text(errors="replace")

    def rss_mb(self) -> float:
        """Resident memory of the server process in MiB (Linux /proc; NaN where unknown)."""
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        return float("nan")

    def register(self, clip: Path, voice_id: str, timeout_s: float = 120.0) -> None:
        """Register a reference clip as voice_id; raises on an error status."""
        with open(clip, "rb") as f:
            r = httpx.post(
                self.url + "/voices/register",
                files={"voice_file": (Path(clip).name, f)},
                data={"voice_id": voice_id},
                timeout=timeout_s,
            )
        r.raise_for_status()

    def terminate(self) -> None:
        """SIGTERM once: uvicorn drains; a second signal would force it down."""
        if not self._terminated:
            self._terminated = True
            self.process.send_signal(signal.SIGTERM)

    def stop(self, timeout_s: float = 60.0) -> int:
        """SIGTERM, wait up to timeout_s (then SIGKILL); returns the exit status."""
        if self.process.poll() is None:
            self.terminate()
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        return int(self.process.returncode)

    def __enter__(self) -> "ServerProcess":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def serve_in_thread(app: Any, timeout_s: float = 30.0) -> Iterator[str]:
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
