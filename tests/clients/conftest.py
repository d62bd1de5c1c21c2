"""Shared by the client conformance tests: a real server per module, what the server says the same
text lasts, decoders that do not use the server's own code, and the table of exchanges each test
records (printed at the end of the run, so a reader sees what every client asked for and got)."""

import contextlib
import importlib
import io
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import httpx
import numpy as np
import pytest
import soundfile as sf
from prometheus_client.parser import text_string_to_metric_families

from chatterbox_server.benchmark.server_process import ServerProcess

VOICE = "alice"  # the registered voice every client ends up speaking in
API_KEY = "client-conformance-key"  # what the clients that require a key are given

# Short sentences, so every route splits them the same way (each sentence one piece).
TEXT = "Hello from a real client. This is the second sentence."


# ----- the clients ---------------------------------------------------------------------------

PIPECAT_HOW = (
    "pip install --no-deps -r tests/clients/requirements-nodeps.txt (after requirements-dev.txt: "
    "pipecat-ai declares plain onnxruntime, which must not replace onnxruntime-gpu)"
)


def require(module: str, how: str = "pip install -r requirements-dev.txt") -> None:
    """Import `module` or skip the test with how to get it; under CI (CI=true) a missing client
    is a failure, as a missing system tool is (tests/system_tools.py): CI installs them."""
    try:
        importlib.import_module(module)
    except ImportError as error:
        message = f"{module} is not installed ({error}): {how}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message, pytrace=False)
        pytest.skip(message, allow_module_level=True)


# ----- the server ------------------------------------------------------------------------------


@contextlib.contextmanager
def running_server(model_dir: Path, root: Path, clip: Path, **settings: object) -> Iterator[ServerProcess]:
    """A server on the tiny stand-in with VOICE registered; stopped (and waited for) on exit."""
    settings.setdefault("warmup", "false")
    with ServerProcess(model_dir, root / "voices", root / "server.log", **settings) as server:
        server.register(clip, VOICE)
        yield server


@dataclass(frozen=True)
class Reference:
    """What the server itself says `text` lasts in VOICE (POST /tts/json; greedy, so every route agrees)."""

    duration_s: float
    sample_rate: int
    pieces: list[dict]


def reference(server: ServerProcess, text: str = TEXT, voice: str = VOICE) -> Reference:
    with server.client() as c:
        r = c.post("/tts/json", json={"text": text, "voice_id": voice})
    assert r.status_code == 200, r.text
    body = r.json()
    return Reference(body["audio_duration"], body["sample_rate"], body["pieces"])


def metric(server: ServerProcess, name: str) -> float:
    """The sum of a metric's samples over all labels (0 when absent)."""
    text = httpx.get(server.url + "/metrics", timeout=30).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    )


def wait_idle(server: ServerProcess, timeout_s: float = 120.0) -> None:
    """Until the server has nothing in flight or queued (a bounded poll, not a timing assertion)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        health = httpx.get(server.url + "/health", timeout=30).json()
        if health["in_flight"] == 0 and health["queued"] == 0:
            return
        time.sleep(0.2)
    raise AssertionError(f"server still busy after {timeout_s} s: {health}")


def wait_metric_change(server: ServerProcess, name: str, before: float, timeout_s: float = 60.0) -> float:
    """A metric's value once it differs from `before` (a response's figures land as it ends)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = metric(server, name)
        if value != before:
            return value
        time.sleep(0.1)
    return metric(server, name)


# ----- decoding, independent of chatterbox_server --------------------------------------------


def pcm_seconds(data: bytes, sample_rate: int) -> float:
    assert len(data) % 2 == 0, f"{len(data)} bytes of 16-bit PCM"
    return len(data) / 2 / sample_rate


def ulaw_to_float(data: bytes) -> np.ndarray:
    """G.711 µ-law bytes → float32 (the ITU formula, written out)."""
    u = (~np.frombuffer(data, dtype=np.uint8)).astype(np.int32)
    sign = u & 0x80
    exponent = (u >> 4) & 0x07
    mantissa = u & 0x0F
    magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84
    return (np.where(sign, -magnitude, magnitude) / 32768).astype(np.float32)


def opus_input_rate(data: bytes) -> int:
    """The input sample rate an Ogg Opus stream declares in its OpusHead (RFC 7845 §5.1)."""
    head = data.find(b"OpusHead")
    assert head >= 0, "no OpusHead in the stream"
    return int.from_bytes(data[head + 12 : head + 16], "little")


def decode(data: bytes, fmt: str, pcm_rate: int = 24_000) -> tuple[float, int]:
    """(seconds, sample rate) of a whole response body in an OpenAI `response_format`.

    pcm is raw 16-bit little-endian mono at `pcm_rate`; ulaw 8 kHz µ-law; wav by libsndfile;
    flac, mp3, aac and opus by FFmpeg (PyAV): libsndfile cannot read a FLAC stream whose header
    leaves the length unknown, as a streamed one must (see soundfile_reads). Opus decodes at
    48 kHz: the rate returned is the one its header declares."""
    if fmt == "pcm":
        return pcm_seconds(data, pcm_rate), pcm_rate
    if fmt == "ulaw":
        return ulaw_to_float(data).shape[0] / 8000, 8000
    if fmt == "wav":
        audio, rate = sf.read(io.BytesIO(data), dtype="float32")
        assert np.abs(audio).max() > 0.01, "silent"
        return audio.shape[0] / rate, rate
    container = {"mp3": "mp3", "aac": "aac", "opus": "ogg", "flac": "flac"}[fmt]
    samples = 0
    decoded_rate = 0
    with av.open(io.BytesIO(data), format=container) as f:
        for frame in f.decode(audio=0):
            samples += frame.samples
            decoded_rate = frame.sample_rate
    assert samples, f"no {fmt} frames decoded"
    rate = opus_input_rate(data) if fmt == "opus" else decoded_rate
    return samples / decoded_rate, rate


def soundfile_reads(data: bytes) -> bool:
    """Whether soundfile.read (libsndfile) reads the whole body: it refuses a FLAC whose STREAMINFO
    says "length unknown" (total samples 0), libsndfile issue #1038."""
    try:
        sf.read(io.BytesIO(data), dtype="float32")
    except (ValueError, RuntimeError, sf.LibsndfileError):
        return False
    return True


# lossless formats come back sample-exact; lossy codecs add priming and pad their last frame
# (an mp3 frame is 1152 samples, AAC 1024, Opus 20 ms): a few frames at most
LOSSLESS = {"pcm", "wav", "flac"}
LOSSY_TOLERANCE_S = 0.15


def tolerance_s(fmt: str) -> float:
    if fmt in LOSSLESS:
        return 1e-6
    if fmt == "ulaw":
        return 1 / 8000  # 24 kHz → 8 kHz rounds to a sample
    return LOSSY_TOLERANCE_S


# ----- the record ------------------------------------------------------------------------------


@dataclass
class Exchange:
    client: str
    request: str  # path (and what it asked for)
    fmt: str
    requested_rate: int | None
    received_s: float | None
    received_rate: int | None
    expected_s: float | None
    ttfa_s: float | None
    ok: bool
    note: str = ""


EXCHANGES: list[Exchange] = []


@pytest.fixture
def record():
    """record(Exchange(...)) keeps a row for the table printed at the end of the run; returns it."""

    def add(exchange: Exchange) -> Exchange:
        EXCHANGES.append(exchange)
        return exchange

    return add


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def pytest_terminal_summary(terminalreporter):
    if not EXCHANGES:
        return
    terminalreporter.section("client conformance: what each client requested and received")
    header = ["client", "request", "format", "asked Hz", "got s", "got Hz", "server s", "ttfa s", "ok", "note"]
    rows = [
        [
            e.client,
            e.request,
            e.fmt,
            _cell(e.requested_rate),
            _cell(e.received_s),
            _cell(e.received_rate),
            _cell(e.expected_s),
            _cell(e.ttfa_s),
            "yes" if e.ok else "NO",
            e.note,
        ]
        for e in EXCHANGES
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, ["-" * w for w in widths], *rows]:
        terminalreporter.write_line(" | ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
