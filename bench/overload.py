"""Overload: bursts at 2-4x capacity, and hostile clients beside a well-behaved one.

Bursts: every request beyond slots + queue must get 429 at once with Retry-After; the counts the
clients saw must agree with /metrics.

Attacks (`--attacks`): while one attack runs (clients that never read their streams, slowloris
sockets, idle sockets, endless headers), a well-behaved client keeps asking for /health and a
short /tts/json; each row gives its latency (p50, p95) and failures beside the same with no attack,
and what the server's connection limits did (tts_connections_closed_total).

    python -m bench.overload --model-dir .cache/stand-in/tiny --slots 2 --queue 2 --bursts 8,12,16
    python -m bench.overload --attacks none,non_reading,slowloris,idle,header_flood
"""

import argparse
import asyncio
import contextlib
import json
import socket
import statistics
import sys
import tempfile
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx
import soundfile as sf
from prometheus_client.parser import text_string_to_metric_families

from bench.engine_speed import reference_clip
from chatterbox_server.benchmark.server_process import ServerProcess

TEXT = "Thanks for calling, how can I help you today?"


def rejected(metrics_text: str, reason: str) -> float:
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            if sample.name == "tts_requests_rejected_total" and sample.labels.get("reason") == reason:
                return sample.value
    return 0.0


async def burst(url: str, size: int) -> dict:
    async with httpx.AsyncClient(base_url=url, timeout=300, limits=httpx.Limits(max_connections=None)) as client:
        before = (await client.get("/metrics")).text

        async def one() -> tuple[int, float, bool]:
            started = time.perf_counter()
            r = await client.post("/tts/json", json={"text": TEXT, "voice_id": "bench"})
            return r.status_code, time.perf_counter() - started, "retry-after" in r.headers

        outcomes = await asyncio.gather(*(one() for _ in range(size)))
        after = (await client.get("/metrics")).text
    statuses = Counter(status for status, _, _ in outcomes)
    refused = [(latency, retry) for status, latency, retry in outcomes if status == 429]
    return {
        "burst": size,
        "statuses": dict(sorted(statuses.items())),
        "429_with_retry_after": sum(retry for _, retry in refused),
        "429_slowest_s": round(max((latency for latency, _ in refused), default=0.0), 3),
        "metrics_queue_full_delta": rejected(after, "queue_full") - rejected(before, "queue_full"),
    }


# ----- attacks ------------------------------------------------------------------------------------

LONG_TEXT = " ".join(f"Sentence {i} of a long answer nobody will ever read back." for i in range(20))
ATTACK_SOCKETS = {"non_reading": 16, "slowloris": 300, "idle": 2000, "header_flood": 8}


def _non_reading(port: int, stop: threading.Event, sockets: list[socket.socket]) -> None:
    """Streamed /tts requests whose responses are never read (a tiny receive window)."""
    form = urllib.parse.urlencode({"text": LONG_TEXT, "voice_id": "bench"}).encode()
    head = "POST /tts HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
    request = f"{head}Content-Length: {len(form)}\r\n\r\n".encode() + form
    while not stop.is_set():  # a new one whenever the server drops one
        sockets[:] = [s for s in sockets if s.fileno() != -1]
        while len(sockets) < ATTACK_SOCKETS["non_reading"] and not stop.is_set():
            with contextlib.suppress(OSError):
                sock = socket.socket()
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                sock.connect(("127.0.0.1", port))
                sock.sendall(request)
                sockets.append(sock)
        stop.wait(1.0)
        for sock in list(sockets):  # a dropped one reads as closed: replace it
            sock.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                if sock.recv(1, socket.MSG_PEEK) == b"":
                    sock.close()
            with contextlib.suppress(OSError):
                sock.setblocking(True)


def _slowloris(port: int, stop: threading.Event, sockets: list[socket.socket]) -> None:
    """Sockets that send a request's headers one short line every 5 s, never ending them."""
    while not stop.is_set():
        sockets[:] = [s for s in sockets if s.fileno() != -1]
        while len(sockets) < ATTACK_SOCKETS["slowloris"] and not stop.is_set():
            with contextlib.suppress(OSError):
                sock = socket.create_connection(("127.0.0.1", port), timeout=5)
                sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
                sockets.append(sock)
        for sock in list(sockets):
            try:
                sock.sendall(b"X-a: b\r\n")
            except OSError:
                sock.close()
        stop.wait(5.0)


def _idle(port: int, stop: threading.Event, sockets: list[socket.socket]) -> None:
    """Sockets that connect and send nothing, reopened as the server closes them."""
    while not stop.is_set():
        sockets[:] = [s for s in sockets if s.fileno() != -1]
        while len(sockets) < ATTACK_SOCKETS["idle"] and not stop.is_set():
            with contextlib.suppress(OSError):
                sockets.append(socket.create_connection(("127.0.0.1", port), timeout=5))
        for sock in list(sockets):
            sock.setblocking(False)
            try:
                if sock.recv(1) == b"":
                    sock.close()
            except BlockingIOError:
                sock.setblocking(True)
            except OSError:
                sock.close()
        stop.wait(1.0)


def _header_flood(port: int, stop: threading.Event, sockets: list[socket.socket]) -> None:
    """Connections that each stream one endless header value as fast as they can."""
    chunk = b"a" * 65536

    def flood() -> None:
        while not stop.is_set():
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Flood: ")
                while not stop.is_set():
                    sock.sendall(chunk)

    threads = [threading.Thread(target=flood, daemon=True) for _ in range(ATTACK_SOCKETS["header_flood"])]
    for t in threads:
        t.start()
    stop.wait()
    for t in threads:
        t.join(timeout=10)


ATTACKS: dict[str, Callable[[int, threading.Event, list[socket.socket]], None]] = {
    "non_reading": _non_reading,
    "slowloris": _slowloris,
    "idle": _idle,
    "header_flood": _header_flood,
}


def _percentiles(latencies: list[float]) -> dict:
    if not latencies:
        return {"p50_s": None, "p95_s": None}
    ordered = sorted(latencies)
    return {
        "p50_s": round(statistics.median(ordered), 3),
        "p95_s": round(ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))], 3),
    }


def _closed_by_limits(metrics_text: str) -> dict[str, float]:
    closed: dict[str, float] = {}
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            if sample.name == "tts_connections_closed_total":
                closed[sample.labels["reason"]] = sample.value
    return closed


def well_behaved(url: str, attack: str, settle_s: float, health_calls: int, tts_calls: int) -> dict:
    """Run `attack` (or nothing) against the server and time a polite client meanwhile."""
    port = int(url.rsplit(":", 1)[1])
    stop, sockets = threading.Event(), []  # type: ignore[var-annotated]
    attacker = None
    if attack != "none":
        attacker = threading.Thread(target=ATTACKS[attack], args=(port, stop, sockets), daemon=True)
        attacker.start()
    time.sleep(settle_s)  # let the attack build up before measuring
    health: list[float] = []
    tts: list[float] = []
    failures: Counter[str] = Counter()
    before = httpx.get(url + "/metrics", timeout=60).text
    with httpx.Client(base_url=url, timeout=60) as client:
        for i in range(health_calls):
            started = time.perf_counter()
            try:
                status = client.get("/health").status_code
                health.append(time.perf_counter() - started)
                if status != 200:
                    failures[f"health {status}"] += 1
            except httpx.HTTPError as e:
                failures[f"health {type(e).__name__}"] += 1
            if i % max(1, health_calls // tts_calls) == 0 and len(tts) + failures["tts"] < tts_calls:
                started = time.perf_counter()
                try:
                    r = client.post("/tts/json", json={"text": TEXT, "voice_id": "bench"})
                    tts.append(time.perf_counter() - started)
                    if r.status_code != 200:
                        failures[f"tts {r.status_code}"] += 1
                except httpx.HTTPError as e:
                    failures[f"tts {type(e).__name__}"] += 1
            time.sleep(0.05)
    after = httpx.get(url + "/metrics", timeout=60).text
    stop.set()
    if attacker is not None:
        attacker.join(timeout=30)
    for sock in sockets:
        sock.close()
    closed_before, closed_after = _closed_by_limits(before), _closed_by_limits(after)
    return {
        "attack": attack,
        "attack_sockets": ATTACK_SOCKETS.get(attack, 0),
        "health": _percentiles(health),
        "short_tts": _percentiles(tts),
        "failures": dict(failures),
        "closed_by_limits": {
            k: v - closed_before.get(k, 0.0) for k, v in closed_after.items() if v > closed_before.get(k, 0.0)
        },
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, default=Path(".cache/stand-in/tiny"))
    parser.add_argument("--slots", type=int, default=2)
    parser.add_argument("--queue", type=int, default=2)
    parser.add_argument("--bursts", default="8,12,16")
    parser.add_argument("--attacks", default="", help=f"comma-separated: none,{','.join(ATTACKS)} (instead of bursts)")
    parser.add_argument("--settle-s", type=float, default=10.0, help="attack time before measuring")
    parser.add_argument("--health-calls", type=int, default=100)
    parser.add_argument("--tts-calls", type=int, default=10)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="overload-"))
    clip = work / "voice.wav"
    sf.write(clip, reference_clip(), 24_000)
    server = ServerProcess(
        args.model_dir.resolve(),
        work / "voices",
        work / "server.log",
        ready_timeout_s=300,
        max_concurrent_requests=args.slots,
        max_queue=args.queue,
    )
    try:
        server.register(clip, "bench")
        if args.attacks:
            for attack in args.attacks.split(","):
                print(json.dumps(well_behaved(server.url, attack, args.settle_s, args.health_calls, args.tts_calls)))
            return 0
        rows = [asyncio.run(burst(server.url, int(size))) for size in args.bursts.split(",")]
    finally:
        server.stop()
    capacity = args.slots + args.queue
    for row in rows:
        row["capacity"] = capacity
        row["holds"] = (
            row["statuses"].get(429, 0) == max(0, row["burst"] - capacity)
            and row["429_with_retry_after"] == row["statuses"].get(429, 0)
            and row["metrics_queue_full_delta"] == row["statuses"].get(429, 0)
        )
        print(json.dumps(row))
    return 0 if all(r["holds"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
