"""Connection limits (server/connections.py), driven by hand: sockets that never send, never finish
their headers, send endless headers, or stop reading a response; many idle sockets under a low
open-file limit. Each waits for what the server does with a generous bound, never for a speed."""

import contextlib
import json
import re
import socket
import sys
import time
import urllib.parse
from collections.abc import Iterator

import httpx
import pytest

from chatterbox_server.benchmark.server_process import REPO, ServerProcess
from chatterbox_server.server.connections import CloseReport, ConnectionTable

WAIT_S = 120.0  # what the server is given to act; the limits under test are 1-2 s
LONG_TEXT = " ".join(f"Sentence number {i} is here to make a long answer that takes a while." for i in range(20))


# ----- the table and the report: plain objects, no sockets ---------------------------------------


class Conn:
    def __init__(self, name: str):
        self.name, self.closed = name, False

    def close_idle(self) -> None:
        self.closed = True


def test_the_table_closes_the_longest_idle_connection_for_a_new_one():
    reasons: list[str] = []
    table = ConnectionTable(2, on_close=reasons.append)
    a, b, c = Conn("a"), Conn("b"), Conn("c")
    assert table.admit(a) and table.admit(b)
    table.busy(a)
    table.idle(a)  # a was active after b: b is now the longest idle
    assert table.admit(c)
    assert b.closed and not a.closed and reasons == ["evicted"] and len(table) == 2


def test_the_table_refuses_a_new_connection_when_every_one_is_busy():
    reasons: list[str] = []
    table = ConnectionTable(2, on_close=reasons.append)
    a, b = Conn("a"), Conn("b")
    table.admit(a), table.admit(b)
    table.busy(a), table.busy(b)
    assert not table.admit(Conn("c"))
    assert reasons == ["refused"] and not a.closed and not b.closed
    table.remove(a)
    assert table.admit(Conn("d"))


def test_a_websocket_takes_its_connection_place_and_is_never_evicted():
    table = ConnectionTable(1)
    http = Conn("http")
    assert table.admit(http)
    table.remove(http)  # the upgrade
    ws = Conn("ws")
    table.add_busy(ws)
    assert not table.admit(Conn("next")) and not ws.closed


def test_closes_are_counted_each_and_logged_once_a_minute(caplog):
    counted: list[str] = []
    now = [0.0]
    report = CloseReport(counted.append, clock=lambda: now[0])
    with caplog.at_level("WARNING", logger="chatterbox_server.server.connections"):
        for _ in range(5):
            report("header_timeout")
        now[0] = 61.0
        report("header_timeout")
    assert counted == ["header_timeout"] * 6
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "connections closed by a limit: 1 header_timeout (see tts_connections_closed_total)",
        "connections closed by a limit: 5 header_timeout (see tts_connections_closed_total)",
    ]


# ----- a real server -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(model_dir, tmp_path_factory, voice_a) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("connections")
    with ServerProcess(
        model_dir,
        root / "voices",
        root / "server.log",
        warmup="false",
        header_timeout_s=1,
        body_timeout_s=1,
        max_header_bytes=8192,
        write_timeout_s=2,
    ) as running:
        running.register(voice_a, "alice")
        yield running


def connect(server: ServerProcess, rcvbuf: int | None = None) -> socket.socket:
    sock = socket.socket()
    if rcvbuf is not None:  # before connect, so the window is small from the start
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(WAIT_S)
    sock.connect(("127.0.0.1", server.port))
    return sock


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (a timeout fails the test)."""
    data = b""
    with contextlib.suppress(ConnectionResetError):
        while chunk := sock.recv(65536):
            data += chunk
    return data


def metric(server: ServerProcess, name: str, labels: str = "") -> float:
    text = httpx.get(server.url + "/metrics", timeout=30).text
    found = re.search(rf"^{re.escape(name)}{re.escape(labels)} (\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def wait_for(condition, what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, f"not within {WAIT_S:g} s: {what}"
        time.sleep(0.2)


def test_a_connection_that_sends_nothing_is_closed_silently(server):
    before = metric(server, "tts_connections_closed_total", '{reason="header_timeout"}')
    with connect(server) as sock:
        assert read_until_closed(sock) == b""
    assert metric(server, "tts_connections_closed_total", '{reason="header_timeout"}') == before + 1


def test_headers_sent_a_byte_at_a_time_get_408(server):
    with connect(server) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        received = b""
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            for _ in range(int(WAIT_S / 0.2)):  # one header line every 0.2 s: slowloris
                sock.sendall(b"X-Slow: y\r\n")
                time.sleep(0.2)
                sock.settimeout(0.01)
                with contextlib.suppress(TimeoutError):
                    received += sock.recv(65536)
                if received:
                    break
        sock.settimeout(WAIT_S)
        received += read_until_closed(sock)
    assert received.startswith(b"HTTP/1.1 408 "), received[:200]
    assert b'"type":"header_timeout"' in received


def test_an_endless_header_gets_431_and_health_is_answered_meanwhile(server):
    with connect(server) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: ")
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            for _ in range(256):  # up to 16 MB, the size that used to get 200 after 0.6 s of parsing
                sock.sendall(b"a" * 65536)
        assert httpx.get(server.url + "/health", timeout=30).status_code == 200
        received = read_until_closed(sock)
    assert received.startswith(b"HTTP/1.1 431 "), received[:200]
    assert b'"type":"header_too_large"' in received


def test_headers_under_the_limit_are_served(server):
    r = httpx.get(server.url + "/health", headers={"Cookie": "a" * 6000}, timeout=30)
    assert r.status_code == 200


def test_a_body_that_stops_arriving_gets_408(server):
    with connect(server) as sock:
        head = b"POST /tts/json HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n"
        sock.sendall(head + b'{"text": "Hel')
        received = read_until_closed(sock)
    assert received.startswith(b"HTTP/1.1 408 "), received[:200]
    assert b'"type":"body_timeout"' in received


def test_a_client_that_stops_reading_a_stream_is_dropped_and_its_slot_freed(server):
    before = metric(server, "tts_connections_closed_total", '{reason="write_timeout"}')
    with connect(server, rcvbuf=4096) as sock:
        sock.sendall(streamed_tts_request())
        # never read: the stream fills the socket buffers and the server's writes stall
        wait_for(
            lambda: metric(server, "tts_connections_closed_total", '{reason="write_timeout"}') > before,
            "the stalled stream's connection dropped",
        )
        wait_for(lambda: metric(server, "tts_requests_in_flight") == 0, "the slot given back")
    assert "stopped reading for 2 s: connection dropped" in server.log()


def streamed_tts_request() -> bytes:
    """A streamed POST /tts of LONG_TEXT in alice's voice, as bytes on the wire."""
    form = urllib.parse.urlencode({"text": LONG_TEXT, "voice_id": "alice"}).encode()
    head = "POST /tts HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
    return f"{head}Content-Length: {len(form)}\r\n\r\n".encode() + form


def test_a_websocket_client_that_stops_reading_is_dropped(server):
    before = metric(server, "tts_connections_closed_total", '{reason="write_timeout"}')
    with connect(server, rcvbuf=4096) as sock:
        sock.sendall(
            b"GET /v1/audio/speech/realtime HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        assert sock.recv(4096).startswith(b"HTTP/1.1 101")
        for message in ({"type": "config", "voice": "alice"}, {"type": "text", "delta": LONG_TEXT}, {"type": "flush"}):
            sock.sendall(masked_text_frame(json.dumps(message).encode()))
        wait_for(
            lambda: metric(server, "tts_connections_closed_total", '{reason="write_timeout"}') > before,
            "the stalled socket dropped",
        )
        wait_for(lambda: metric(server, "tts_requests_in_flight") == 0, "the slot given back")


def masked_text_frame(payload: bytes) -> bytes:
    """One client-to-server WebSocket text frame (RFC 6455: clients mask; the zero mask keeps it readable)."""
    header = bytes([0x81])
    if len(payload) < 126:
        header += bytes([0x80 | len(payload)])
    elif len(payload) < 1 << 16:
        header += bytes([0x80 | 126]) + len(payload).to_bytes(2, "big")
    else:
        header += bytes([0x80 | 127]) + len(payload).to_bytes(8, "big")
    return header + b"\0\0\0\0" + payload


def test_a_stream_nobody_reads_gives_its_slot_back_when_the_engine_is_done(model_dir, tmp_path, voice_a):
    """With no write deadline in reach, the slot still goes back once the audio is made: the
    connection keeps its buffered audio, not a synthesis slot."""
    with ServerProcess(model_dir, tmp_path / "voices", tmp_path / "log", warmup="false", write_timeout_s=600) as srv:
        srv.register(voice_a, "alice")
        with connect(srv, rcvbuf=4096) as sock:
            sock.sendall(streamed_tts_request())
            wait_for(lambda: metric(srv, "tts_requests_in_flight") == 1, "the synthesis started")
            wait_for(lambda: metric(srv, "tts_requests_in_flight") == 0, "the slot given back")
            assert metric(srv, "tts_connections_closed_total", '{reason="write_timeout"}') == 0


IDLE_SOCKETS = 500


def test_idle_sockets_under_a_low_open_file_limit_leave_room_for_health(model_dir, tmp_path):
    """400 open files, 500 idle sockets: the oldest idle ones are closed for new ones, and
    /health is answered (it used to fail with every new request once ~380 were open)."""
    limited = [
        sys.executable,
        "-c",
        "import resource, runpy, sys; resource.setrlimit(resource.RLIMIT_NOFILE, (400, 400)); "
        f"sys.argv = ['server.py']; runpy.run_path({str(REPO / 'server.py')!r}, run_name='__main__')",
    ]
    with ServerProcess(model_dir, tmp_path / "voices", tmp_path / "log", limited, warmup="false") as srv:
        sockets = []
        try:
            for _ in range(IDLE_SOCKETS):
                sockets.append(socket.create_connection(("127.0.0.1", srv.port), timeout=WAIT_S))
            assert httpx.get(srv.url + "/health", timeout=30).status_code == 200
            assert metric(srv, "tts_connections_closed_total", '{reason="evicted"}') > 0
            assert metric(srv, "tts_connections_open") <= 400
        finally:
            for sock in sockets:
                sock.close()
        log = srv.log()
    assert "TTS_MAX_CONNECTIONS=1000 needs 1064 open files and the limit is 400" in log
    assert "connections closed by a limit:" in log and "evicted" in log


def test_a_connection_over_the_limit_when_all_are_busy_gets_503(model_dir, tmp_path, voice_a):
    with ServerProcess(
        model_dir, tmp_path / "voices", tmp_path / "log", warmup="false", max_connections=2, write_timeout_s=600
    ) as srv:
        srv.register(voice_a, "alice")
        held = [connect(srv, rcvbuf=4096), connect(srv, rcvbuf=4096)]
        try:
            for sock in held:  # each busy with a stream it does not read past its status line
                sock.sendall(streamed_tts_request())
                assert sock.recv(12) == b"HTTP/1.1 200"
            with connect(srv) as third:
                received = read_until_closed(third)
            assert received.startswith(b"HTTP/1.1 503 "), received[:200]
            assert b'"type":"too_many_connections"' in received
        finally:
            for sock in held:
                sock.close()
