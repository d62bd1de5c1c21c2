"""The CPU and CUDA images, built from the repository's Dockerfiles and run: what an operator's `docker run` does.

No Docker engine runs here, so deploy/tools/build_images.py builds both images with buildah on a Debian bookworm base
that mmdebstrap makes (the Dockerfiles' BASE_IMAGE build argument; by default they build on python:slim). Each image
then runs its own ENTRYPOINT with `--stand-in` through `buildah run --isolation chroot`, as the image's user, on the
host's network, on a free loopback port (TTS_HOST and TTS_PORT, the way an operator sets them), with the image's
declared volumes mounted (buildah gives each working container its own, seeded from the image, like Docker's
anonymous volumes). The CUDA image runs on the CPU provider here: what is checked of its GPU half is that the CUDA
provider library loads against the CUDA and cuDNN wheels the image carries.

Needs root, buildah and mmdebstrap (Debian's packages; .ci/run installs them): skipped with that message where they are
missing, a failure under CI. The image store is .cache/images (TTS_TEST_IMAGE_STORAGE overrides it); it keeps the
base tarball and the build layers, so a second run rebuilds only what changed. From nothing a run takes several
minutes, mostly pip inside the two builds.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from chatterbox_server.benchmark.server_process import free_port
from tests.support import decode_wav
from tests.system_tools import require_tool

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "deploy" / "tools"))
import build_images  # noqa: E402  (a standalone script, not a package)

pytestmark = [pytest.mark.slow, pytest.mark.server, pytest.mark.timeout(2400)]

SAMPLE_RATE_HZ = 24_000
STARTUP_TIMEOUT_S = 240  # the first start generates the stand-in model inside the container
STOP_TIMEOUT_S = 60
VOICE_ID = "alice"


@pytest.fixture(scope="module")
def buildah() -> build_images.Buildah:
    require_tool("buildah", ["buildah"], "apt-get install -y buildah mmdebstrap (Debian's packages; .ci/run does)")
    require_tool("mmdebstrap", ["mmdebstrap"], "apt-get install -y mmdebstrap (Debian's package; .ci/run does)")
    if os.geteuid() != 0:
        message = "the image tests build with buildah as root (chroot isolation); run them as root"
        pytest.fail(message) if os.environ.get("CI", "").lower() == "true" else pytest.skip(message)
    storage = Path(os.environ.get("TTS_TEST_IMAGE_STORAGE", build_images.DEFAULT_STORAGE)).resolve()
    tool = build_images.Buildah(storage)
    build_images.make_base(tool)
    return tool


@dataclass
class Image:
    name: str
    built: build_images.Built
    config: dict

    @property
    def env(self) -> dict[str, str]:
        return dict(item.split("=", 1) for item in self.config["Env"])


@pytest.fixture(scope="module")
def images(buildah) -> Callable[[str], Image]:
    """Each image built once per run, on first use."""
    built: dict[str, Image] = {}

    def get(name: str) -> Image:
        if name not in built:
            result = build_images.build_image(buildah, name)
            built[name] = Image(name, result, buildah.image_config(result.tag))
        return built[name]

    return get


@pytest.fixture(scope="module", params=sorted(build_images.IMAGES))
def image(request, images) -> Image:
    return images(request.param)


@contextmanager
def working_container(buildah: build_images.Buildah, image: Image, role: str) -> Iterator[str]:
    """A fresh working container of the image (fresh volumes too); removed afterwards."""
    name = f"tts-test-{image.name}-{role}-{os.getpid()}"
    subprocess.run(buildah.command("rm", name), capture_output=True, check=False)  # a leftover of a killed run
    buildah.run("from", "--name", name, image.built.tag)
    try:
        yield name
    finally:
        buildah.run("rm", name)


@pytest.fixture(scope="module")
def container(buildah, image) -> Iterator[str]:
    with working_container(buildah, image, "serve") as name:
        yield name


def run_in(buildah: build_images.Buildah, container: str, *cmd: str, env: dict[str, str] | None = None):
    """One command inside the container (as the image's user, in its working directory, on the host's network)."""
    return subprocess.run(
        run_argv(buildah, container, list(cmd), env), capture_output=True, text=True, timeout=120, check=False
    )


def run_argv(buildah: build_images.Buildah, container: str, cmd: list[str], env: dict[str, str] | None) -> list[str]:
    """`buildah run` of `cmd` in the container with chroot isolation and `env` added to the image's environment."""
    flags = [arg for key, value in (env or {}).items() for arg in ("--env", f"{key}={value}")]
    return buildah.command("run", "--isolation", "chroot", *flags, container, "--", *cmd)


def descendants(pid: int) -> list[int]:
    """Every process below `pid`, from /proc (buildah run → chroot runtime → exec → the server)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    found, frontier = [], [pid]
    while frontier:
        children = [child for child, parent in parents.items() if parent in frontier]
        found += children
        frontier = children
    return found


@dataclass
class Served:
    """The image's entrypoint running in the container; start() and stop() it (the volumes outlive it)."""

    buildah: build_images.Buildah
    image: Image
    container: str
    log_dir: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None
    starts: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        return {"TTS_HOST": "127.0.0.1", "TTS_PORT": str(self.port)}

    @property
    def log(self) -> Path:
        return self.log_dir / f"{self.image.name}-{self.starts}.log"

    def start(self) -> None:
        self.starts += 1
        entrypoint = [*self.image.config["Entrypoint"], *(self.image.config.get("Cmd") or []), "--stand-in"]
        argv = run_argv(self.buildah, self.container, entrypoint, self.env)
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"the entrypoint exited with {self.process.returncode}:\n{self.tail()}")
            try:
                if httpx.get(f"{self.url}/health/ready", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise AssertionError(f"/health/ready not 200 after {STARTUP_TIMEOUT_S} s:\n{self.tail()}")

    def server_pid(self) -> int:
        """The server's own process (run.sh execs python server.py), found below buildah run."""
        assert self.process is not None
        for pid in descendants(self.process.pid):
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"server.py" in cmdline:
                return pid
        raise AssertionError(f"no server.py process below buildah run ({self.process.pid})")

    def stop(self) -> int:
        """SIGTERM the server (the image's STOPSIGNAL) and return the container's exit status."""
        assert self.process is not None
        if self.process.poll() is None:
            os.kill(self.server_pid(), signal.Signals[self.image.config.get("StopSignal") or "SIGTERM"])
            try:
                self.process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        return self.process.returncode

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


@pytest.fixture(scope="module")
def served(buildah, image, container, tmp_path_factory) -> Iterator[Served]:
    server = Served(buildah, image, container, tmp_path_factory.mktemp(f"logs-{image.name}"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def voice(served, voice_a) -> str:
    """A voice registered through the running image."""
    with voice_a.open("rb") as clip:
        response = httpx.post(
            f"{served.url}/voices/register",
            files={"voice_file": ("voice.wav", clip, "audio/wav")},
            data={"voice_id": VOICE_ID},
            timeout=60,
        )
    assert response.status_code == 200, response.text
    return VOICE_ID


# ----- the image's declared contract ---------------------------------------------------------------------------


def test_image_declares_user_volumes_healthcheck_and_entrypoint(image) -> None:
    """What `docker run`, compose and Kubernetes rely on: a numeric non-root user, the two volumes and every written
    path inside one of them, a HEALTHCHECK, the drain signal and run.sh as the entrypoint."""
    config = image.config
    uid, _, gid = config["User"].partition(":")
    assert uid.isdigit() and int(uid) != 0 and gid.isdigit() and int(gid) != 0
    volumes = sorted(config["Volumes"])
    assert volumes == ["/cache", "/data"]
    for setting in ("TTS_VOICES_DIR", "TTS_STAND_IN_DIR", "HF_HOME", "NUMBA_CACHE_DIR"):
        assert any(image.env[setting].startswith(volume + "/") for volume in volumes), setting
    assert config["Healthcheck"]["Test"][0] == "CMD"
    assert config["StopSignal"] == "SIGTERM"
    assert config["Entrypoint"] == ["./run.sh"] and config["WorkingDir"] == "/app"


# ----- the image running -----------------------------------------------------------------------------------------


def test_entrypoint_registers_a_voice_and_speaks(served, voice) -> None:
    response = httpx.post(f"{served.url}/tts", data={"text": "Hello from the image.", "voice_id": voice}, timeout=120)
    assert response.status_code == 200, response.text
    audio, info = decode_wav(response.content)
    assert info.samplerate == SAMPLE_RATE_HZ and info.channels == 1
    assert audio.shape[0] > SAMPLE_RATE_HZ // 2 and float(abs(audio).max()) > 0.01


def test_server_runs_as_the_image_user(served) -> None:
    """The server process itself (not just a shell in the image) has the image's uid and gid, real and effective."""
    status = Path(f"/proc/{served.server_pid()}/status").read_text().splitlines()
    ids = {line.split(":")[0]: line.split()[1:] for line in status if line.startswith(("Uid:", "Gid:"))}
    uid, _, gid = served.image.config["User"].partition(":")
    assert set(ids["Uid"]) == {uid} and set(ids["Gid"]) == {gid}


def test_healthcheck_command_succeeds_inside_the_image(served) -> None:
    command = served.image.config["Healthcheck"]["Test"][1:]
    result = run_in(served.buildah, served.container, *command, env=served.env)
    assert result.returncode == 0, result.stderr


def test_model_cache_and_voices_live_in_the_declared_volumes(served, voice) -> None:
    """Seen from inside: each written path sits on the /data or /cache mount (not the image's writable layer), and the
    voice and the generated model are there. Seen from the host: the container's own layer holds neither."""
    env = served.image.env
    paths = {
        "/data": f"{env['TTS_VOICES_DIR']}/{voice}",
        "/cache": env["TTS_STAND_IN_DIR"],
    }
    check = "; ".join(
        [
            "import os, sys",
            f"paths = {paths!r}",
            "assert all(os.path.ismount(v) for v in paths), [os.path.ismount(v) for v in paths]",
            "assert os.stat('/').st_dev not in {os.stat(v).st_dev for v in paths}",
            "files = {v: [os.path.join(d, f) for d, _, fs in os.walk(p) for f in fs] for v, p in paths.items()}",
            "assert all(files.values()), files",
            "assert all(os.stat(f).st_dev == os.stat(v).st_dev for v, fs in files.items() for f in fs)",
            "print(sum(len(fs) for fs in files.values()))",
        ]
    )
    result = run_in(served.buildah, served.container, "/app/.venv/bin/python", "-c", check)
    assert result.returncode == 0, result.stderr
    assert int(result.stdout.strip()) >= 2

    root = Path(served.buildah.run("mount", served.container).strip())
    try:
        for written in paths.values():
            assert not (root / written.lstrip("/")).exists() or not any((root / written.lstrip("/")).iterdir())
    finally:
        served.buildah.run("umount", served.container)


def test_sigterm_drains_exits_0_and_a_restart_keeps_the_voice(served, voice) -> None:
    """docker stop: SIGTERM, the drain, exit status 0; then the HEALTHCHECK fails (it can fail). A second start on the
    same volumes serves the voice registered before it, with no new registration."""
    assert served.stop() == 0, served.tail()
    assert "SIGTERM: draining before shutdown" in served.tail(), served.tail()
    command = served.image.config["Healthcheck"]["Test"][1:]
    assert run_in(served.buildah, served.container, *command, env=served.env).returncode != 0

    served.start()
    listed = httpx.get(f"{served.url}/voices", timeout=10)
    assert listed.status_code == 200 and voice in listed.text, listed.text
    response = httpx.post(f"{served.url}/tts", data={"text": "Back again.", "voice_id": voice}, timeout=120)
    assert response.status_code == 200, response.text
    assert decode_wav(response.content)[0].shape[0] > 0


# ----- the CUDA image's GPU half ---------------------------------------------------------------------------------

PROVIDER_LOAD = (
    "import ctypes, os, onnxruntime; "
    "ctypes.CDLL(os.path.join(os.path.dirname(onnxruntime.__file__), 'capi', 'libonnxruntime_providers_cuda.so'))"
)


def test_cuda_image_provider_loads_its_cuda_libraries(buildah, images) -> None:
    """Every library the CUDA provider links (cudart, cuBLAS, cuFFT, cuRAND, cuDNN) resolves from the image's wheels
    once the server's preload has run, and not without it: on a GPU host only the driver (the Container Toolkit's)
    is added. A missing or mismatched wheel fails here, on a machine without a GPU."""
    python = "/app/.venv/bin/python"
    preloaded = "from chatterbox_server.model.sessions import preload_cuda_libraries; preload_cuda_libraries(); "
    with working_container(buildah, images("cuda"), "cuda-libs") as container:
        with_preload = run_in(buildah, container, python, "-c", preloaded + PROVIDER_LOAD)
        without = run_in(buildah, container, python, "-c", PROVIDER_LOAD)
    assert with_preload.returncode == 0, with_preload.stderr
    assert without.returncode != 0 and "cannot open shared object file" in without.stderr, without.stderr
