"""Build the CPU and CUDA images without a Docker engine or a registry: buildah, on a Debian base made by mmdebstrap.

Where no Docker daemon runs (a CI runner, a locked-down build host) and Docker Hub's python:slim cannot be pulled,
this makes the images' base itself from Debian's archive and builds both Dockerfiles on it. As root, with Debian's
buildah and mmdebstrap (apt-get install buildah mmdebstrap):

    python deploy/tools/build_images.py                       # both images; storage under .cache/images
    python deploy/tools/build_images.py --image cpu           # one of them
    python deploy/tools/build_images.py --storage DIR         # another image store (kept between runs: layers cache)

1. mmdebstrap: Debian bookworm minbase + python3, python3-venv, ca-certificates, as a tarball (kept; ~45 s to make).
   That is what python:3.11-slim-bookworm provides the Dockerfiles (python3 with venv, useradd, a CA store).
2. buildah from scratch, add the tarball, commit: the image BASE_TAG.
3. buildah bud --isolation chroot --format docker --build-arg BASE_IMAGE=BASE_TAG for each Dockerfile. The docker
   format keeps HEALTHCHECK (OCI's drops it); the host's CA bundle is mounted for the RUN steps only, so pip trusts a
   TLS-inspecting proxy the host trusts and the bundle never lands in an image.

Prints one line per image: its tag, build seconds and size. The images stay in the store for `buildah run`, or
`buildah push --root STORAGE/root --runroot STORAGE/run TAG docker://registry.example.com/chatterbox-tts:TAG`.
On failure prints one line to stderr and exits 1. Standard library only.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEFAULT_STORAGE = REPO / ".cache" / "images"
SUITE = "bookworm"
BASE_PACKAGES = ("python3", "python3-venv", "ca-certificates")
BASE_TAG = f"localhost/chatterbox-base:{SUITE}"
# (name, Dockerfile, tag) of each image this repository ships.
IMAGES = {
    "cpu": (REPO / "Dockerfile", "localhost/chatterbox-tts:cpu"),
    "cuda": (REPO / "Dockerfile.cuda", "localhost/chatterbox-tts:cuda"),
}
HOST_CA_DIR = Path("/etc/ssl/certs")
BUILD_TIMEOUT_S = 1800


class BuildError(Exception):
    """A failure worth one line to the user; the tool's own output is in the log it names."""


@dataclass(frozen=True)
class Built:
    tag: str
    seconds: float
    size: str  # as `buildah images` prints it, e.g. "1.09 GB" (uncompressed, on disk)


@dataclass(frozen=True)
class Buildah:
    """buildah on one image store (its own root and runroot, so nothing touches the host's default store)."""

    storage: Path

    def command(self, *args: str) -> list[str]:
        root, run = self.storage / "root", self.storage / "run"
        return ["buildah", "--root", str(root), "--runroot", str(run), *args]

    def run(self, *args: str, log: Path | None = None, timeout_s: float = 300) -> str:
        """Run buildah; its stdout, or BuildError with the tail of its output (all of it in `log`, if given)."""
        result = subprocess.run(self.command(*args), capture_output=True, text=True, timeout=timeout_s, check=False)
        if log is not None:
            log.write_text(result.stdout + result.stderr)
        if result.returncode != 0:
            tail = (result.stderr.strip() or result.stdout.strip()).splitlines()[-5:]
            where = f" (log: {log})" if log is not None else ""
            raise BuildError(f"buildah {args[0]} failed{where}: " + " | ".join(tail))
        return result.stdout

    def image_config(self, tag: str) -> dict:
        """The image's Docker config (User, Env, Volumes, Healthcheck, Entrypoint, Cmd, WorkingDir)."""
        return json.loads(self.run("inspect", "--type", "image", tag))["Docker"]["config"]

    def size(self, tag: str) -> str:
        for image in json.loads(self.run("images", "--json", tag)):
            return str(image["size"])
        raise BuildError(f"{tag} is not in {self.storage}")

    def has_image(self, tag: str) -> bool:
        result = subprocess.run(self.command("inspect", "--type", "image", tag), capture_output=True, check=False)
        return result.returncode == 0


def base_tarball(storage: Path) -> Path:
    """Debian minbase + the base packages as a tarball, made once by mmdebstrap and kept in the store's folder."""
    tarball = storage / f"debian-{SUITE}-{'-'.join(BASE_PACKAGES)}.tar"
    if tarball.is_file():
        return tarball
    storage.mkdir(parents=True, exist_ok=True)
    partial = tarball.with_suffix(".partial.tar")
    log = storage / "mmdebstrap.log"
    sources = [
        f"deb http://deb.debian.org/debian {SUITE} main",
        f"deb http://deb.debian.org/debian {SUITE}-updates main",
        f"deb http://deb.debian.org/debian-security {SUITE}-security main",
    ]
    cmd = ["mmdebstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}", SUITE, str(partial), *sources]
    with log.open("w") as out:
        result = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, timeout=900, check=False)
    if result.returncode != 0:
        raise BuildError(f"mmdebstrap failed (log: {log}): {log.read_text().strip().splitlines()[-1:]}")
    partial.rename(tarball)
    return tarball


def make_base(buildah: Buildah) -> str:
    """The base image (BASE_TAG) from the Debian tarball: what the Dockerfiles' BASE_IMAGE build argument names."""
    if buildah.has_image(BASE_TAG):
        return BASE_TAG
    tarball = base_tarball(buildah.storage)
    container = buildah.run("from", "scratch").strip()
    try:
        buildah.run("add", container, str(tarball), "/", timeout_s=600)  # a local tar archive is extracted
        buildah.run("config", "--env", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", container)
        buildah.run("config", "--cmd", "/bin/bash", container)
        buildah.run("commit", "--format", "docker", container, BASE_TAG, timeout_s=600)
    finally:
        buildah.run("rm", container)
    return BASE_TAG


def build_image(buildah: Buildah, name: str, base: str = BASE_TAG) -> Built:
    """Build IMAGES[name] on `base` from the repository (its .dockerignore applies); layers are cached in the store."""
    dockerfile, tag = IMAGES[name]
    args = ["bud", "--isolation", "chroot", "--format", "docker", "--layers", "--build-arg", f"BASE_IMAGE={base}"]
    if HOST_CA_DIR.is_dir():
        args += ["--volume", f"{HOST_CA_DIR}:{HOST_CA_DIR}:ro"]
    args += ["-f", str(dockerfile), "-t", tag, str(REPO)]
    started = time.monotonic()
    buildah.run(*args, log=buildah.storage / f"build-{name}.log", timeout_s=BUILD_TIMEOUT_S)
    return Built(tag=tag, seconds=time.monotonic() - started, size=buildah.size(tag))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--image", choices=sorted(IMAGES), action="append", help="an image to build (repeatable; default: all)"
    )
    parser.add_argument(
        "--storage", type=Path, default=DEFAULT_STORAGE, help=f"buildah's image store (default: {DEFAULT_STORAGE})"
    )
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("build_images.py: run as root (buildah's chroot isolation and mmdebstrap need it)", file=sys.stderr)
        return 1
    buildah = Buildah(args.storage.resolve())
    try:
        started = time.monotonic()
        base = make_base(buildah)
        print(f"{base}: {time.monotonic() - started:.0f} s, {buildah.size(base)}")
        for name in args.image or sorted(IMAGES):
            built = build_image(buildah, name, base)
            print(f"{built.tag}: {built.seconds:.0f} s, {built.size}")
    except (BuildError, FileNotFoundError, subprocess.TimeoutExpired) as e:
        print(f"build_images.py: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
