"""Connection limits below the ASGI app, where uvicorn has none.

uvicorn's httptools protocol takes a request head of any size (its parse time grows with the square
of the size, stalling the event loop), keeps a connection that never sends a byte for ever, and a
response waits in `send()` for ever for a client that stopped reading. These protocol subclasses
add the limits an operator of a public endpoint expects and leave the rest to uvicorn:

- at most `max_connections` sockets (below the open-file limit): at the limit the oldest idle
  connection (no request of its own in the app) is closed for the new one; when every one is busy
  the new one gets 503;
- a request's line and headers must arrive within `header_timeout_s` and `max_header_bytes`
  (else 408 / 431 and close), from the connection's start or the first byte of its next request;
- a request body may pause at most `body_timeout_s` between two reads (else 408 and close);
- a write may wait at most `write_timeout_s` for the client to read (the transport's buffer over
  its high-water mark, HTTP or WebSocket): then the connection is dropped, the app sees the
  client leave, and its synthesis stops and gives its slot back.
"""

import asyncio
import logging
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, ClassVar, Protocol

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from chatterbox_server.server.http_errors import RETRY_AFTER_S, error_response
from chatterbox_server.server.upgrades import QuietRefusalsProtocol

logger = logging.getLogger(__name__)

FD_RESERVE = 64  # open files kept back for the model, logs, the voice store, sockets to S3, the pool
REPORT_INTERVAL_S = 60.0  # closes by a limit are logged once a minute per reason, with their count

# why a limit closed a connection (the `reason` of tts_connections_closed_total)
CLOSE_REASONS = ("header_timeout", "header_too_large", "body_timeout", "write_timeout", "evicted", "refused")


@dataclass(frozen=True)
class ConnectionLimits:
    max_connections: int
    header_timeout_s: float
    max_header_bytes: int
    body_timeout_s: float
    write_timeout_s: float


class Closable(Protocol):
    def close_idle(self) -> None: ...


class ConnectionTable:
    """The open connections, and which are idle (between requests), least recently active first.

    Lives on the event loop; `on_close(reason)` hears of every connection a limit closes."""

    def __init__(self, max_connections: int, on_close: Callable[[str], None] = lambda reason: None):
        self.max_connections = max_connections
        self.on_close = on_close
        self._open: set[Closable] = set()
        self._idle: dict[Closable, None] = {}  # insertion order: the longest idle first

    def __len__(self) -> int:
        return len(self._open)

    def admit(self, conn: Closable) -> bool:
        """Take a new connection (idle until its first request). At the limit the longest idle one
        is closed for it; False when every open connection is busy (refuse this one)."""
        if len(self._open) >= self.max_connections:
            if not self._idle:
                self.on_close("refused")
                return False
            oldest = next(iter(self._idle))
            self.remove(oldest)
            oldest.close_idle()
            self.on_close("evicted")
        self._open.add(conn)
        self._idle[conn] = None
        return True

    def add_busy(self, conn: Closable) -> None:
        """A connection that takes over an admitted one's place (a WebSocket after its upgrade)."""
        self._open.add(conn)

    def busy(self, conn: Closable) -> None:
        self._idle.pop(conn, None)

    def idle(self, conn: Closable) -> None:
        if conn in self._open:
            self._idle.pop(conn, None)
            self._idle[conn] = None  # to the end: the most recently active

    def remove(self, conn: Closable) -> None:
        self._open.discard(conn)
        self._idle.pop(conn, None)


class CloseReport:
    """Counts the connections the limits close (metrics) and logs them at most once a minute per
    reason, so a flood of sockets cannot flood the log but is never silent."""

    def __init__(self, count: Callable[[str], None] = lambda reason: None, clock: Callable[[], float] = time.monotonic):
        self._count = count
        self._clock = clock
        self._pending: dict[str, int] = {}
        self._last_report: dict[str, float] = {}

    def __call__(self, reason: str) -> None:
        self._count(reason)
        self._pending[reason] = self._pending.get(reason, 0) + 1
        now = self._clock()
        if now - self._last_report.get(reason, -REPORT_INTERVAL_S) >= REPORT_INTERVAL_S:
            count, self._pending[reason] = self._pending[reason], 0
            self._last_report[reason] = now
            logger.warning("connections closed by a limit: %d %s (see tts_connections_closed_total)", count, reason)


def connection_cap(max_connections: int) -> int:
    """Connections this process can hold: `max_connections`, raising the soft open-file limit
    toward it where the hard limit allows, else lowered to fit (with a warning), so new requests,
    /health included, always find a file descriptor."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = max_connections + FD_RESERVE
    if soft != resource.RLIM_INFINITY and soft < wanted:
        raised = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))
            soft = raised
        except (ValueError, OSError):
            pass
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return max_connections
    cap = max(1, soft - FD_RESERVE)
    logger.warning(
        "TTS_MAX_CONNECTIONS=%d needs %d open files and the limit is %d (ulimit -n): at most %d connections",
        max_connections,
        wanted,
        soft,
        cap,
    )
    return cap


def _raw_error(status: int, kind: str, message: str) -> bytes:
    """A whole HTTP/1.1 error response in our error shape, for a connection the app never saw."""
    response = error_response(status, kind, message, {"Retry-After": str(RETRY_AFTER_S), "Connection": "close"})
    head = [f"HTTP/1.1 {status} {HTTPStatus(status).phrase}".encode()]
    head += [name + b": " + value for name, value in response.raw_headers]
    return b"\r\n".join(head) + b"\r\n\r\n" + bytes(response.body)


class _WriteDeadline:
    """Calls `expire` once writes have been paused (the client not reading) for `timeout_s`."""

    def __init__(self, loop: asyncio.AbstractEventLoop, timeout_s: float, expire: Callable[[], None]):
        self._loop, self._timeout_s, self._expire = loop, timeout_s, expire
        self._timer: asyncio.TimerHandle | None = None

    def paused(self) -> None:
        if self._timer is None:
            self._timer = self._loop.call_later(self._timeout_s, self._fire)

    def resumed(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _fire(self) -> None:
        self._timer = None
        self._expire()


class _DropsStalledWrites(asyncio.BaseProtocol):
    """Both protocols' write deadline: a connection whose writes wait `write_timeout_s` for the
    client to read is dropped (the transport calls pause/resume_writing at its water marks)."""

    table: ClassVar[ConnectionTable]
    limits: ClassVar[ConnectionLimits]
    transport: Any
    client: tuple[str, int] | None
    _writes: _WriteDeadline

    def _watch_writes(self, loop: asyncio.AbstractEventLoop) -> None:
        self._writes = _WriteDeadline(loop, self.limits.write_timeout_s, self._write_stalled)

    def pause_writing(self) -> None:
        super().pause_writing()
        self._writes.paused()

    def resume_writing(self) -> None:
        super().resume_writing()
        self._writes.resumed()

    def _write_stalled(self) -> None:
        client = f"{self.client[0]}:{self.client[1]}" if self.client else "?"
        logger.info("client %s stopped reading for %g s: connection dropped", client, self.limits.write_timeout_s)
        self.table.on_close("write_timeout")
        self.transport.abort()  # close() would wait for the buffer to drain, which it never will


class LimitedHttpProtocol(_DropsStalledWrites, HttpToolsProtocol):
    """uvicorn's httptools protocol with the limits of the module docstring (`limited_protocols`
    makes the subclass that holds a server's table and limits)."""

    table: ClassVar[ConnectionTable]
    limits: ClassVar[ConnectionLimits]

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._timer: asyncio.TimerHandle | None = None  # the head's or the body's deadline
        self._in_head = True  # reading a request line and headers (or waiting for the next)
        self._head_bytes = 0
        self._watch_writes(self.loop)
        if not self.table.admit(self):
            message = f"server busy: {self.table.max_connections} connections are open, none idle"
            transport.write(_raw_error(503, "too_many_connections", message))
            transport.close()
            return
        self._arm(self.limits.header_timeout_s, "header_timeout")

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self._writes.resumed()
        self.table.remove(self)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        while data and not self.transport.is_closing():
            if self._in_head:
                if self._timer is None:  # the first byte of a keep-alive connection's next request
                    self._arm(self.limits.header_timeout_s, "header_timeout")
                room = self.limits.max_header_bytes - self._head_bytes
                if room <= 0:  # refused before the parser sees more: its cost grows with the square
                    self._close_with(
                        431, "header_too_large", f"request headers exceed {self.limits.max_header_bytes} bytes"
                    )
                    return
                part, data = data[:room], data[room:]
                self._head_bytes += len(part)
            else:
                part, data = data, b""
                self._arm(self.limits.body_timeout_s, "body_timeout")
            super().data_received(part)
            if self.parser is None or self.transport.get_protocol() is not self:  # closed, or now a WebSocket
                return

    def on_headers_complete(self) -> None:
        self._in_head, self._head_bytes = False, 0
        self._arm(self.limits.body_timeout_s, "body_timeout")
        self.table.busy(self)
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._disarm()
        self._in_head = True
        super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self.table.idle(self)

    def handle_websocket_upgrade(self) -> None:
        self._disarm()
        self.table.remove(self)  # the WebSocket protocol takes its place (LimitedWebSocketProtocol)
        super().handle_websocket_upgrade()

    def close_idle(self) -> None:
        """Closed for a newer connection (the table is full)."""
        self._disarm()
        self.transport.close()

    # ----- deadlines -----------------------------------------------------------------------------

    def _arm(self, timeout_s: float, reason: str) -> None:
        self._disarm()
        self._timer = self.loop.call_later(timeout_s, self._expired, reason)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expired(self, reason: str) -> None:
        self._timer = None
        if reason == "body_timeout" and self.flow.read_paused:
            # the app is not reading the body yet (it is busy): not the client's pause
            self._arm(self.limits.body_timeout_s, reason)
            return
        limit = self.limits.header_timeout_s if reason == "header_timeout" else self.limits.body_timeout_s
        what = "request headers" if reason == "header_timeout" else "the request body"
        self._close_with(408, reason, f"{what} did not arrive within {limit:g} s")

    def _close_with(self, status: int, reason: str, message: str) -> None:
        """End the connection with an error (unless a response has begun): the app, if it has the
        request, sees the client leave, and nothing it sends afterwards is written."""
        cycle = self.cycle
        started = cycle is not None and cycle.response_started and not cycle.response_complete
        if cycle is not None and not cycle.response_complete:
            cycle.disconnected = True
            cycle.message_event.set()
        if not started and (reason != "header_timeout" or self._head_bytes > 0):
            self.transport.write(_raw_error(status, reason, message))  # a silent socket just closes
        self.transport.close()
        self.table.on_close(reason)


class LimitedWebSocketProtocol(_DropsStalledWrites, QuietRefusalsProtocol):
    """uvicorn's WebSocket protocol, counted in the connection table, with the write deadline (and
    a refused upgrade left for the app to log: upgrades.py)."""

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self._watch_writes(self.loop)
        self.table.add_busy(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._writes.resumed()
        self.table.remove(self)
        super().connection_lost(exc)

    def close_idle(self) -> None:  # never idle: a socket's own idle timeout closes it
        self.transport.close()


def limited_protocols(
    table: ConnectionTable, limits: ConnectionLimits
) -> tuple[type[LimitedHttpProtocol], type[LimitedWebSocketProtocol]]:
    """The (HTTP, WebSocket) protocol classes for uvicorn.Config(http=..., ws=...) of one server;
    `table.on_close` hears of every connection a limit closes."""
    shared = {"table": table, "limits": limits}
    http = type("ServerHttpProtocol", (LimitedHttpProtocol,), dict(shared))
    ws = type("ServerWebSocketProtocol", (LimitedWebSocketProtocol,), dict(shared))
    return http, ws
