"""Realtime sessions (the realtime WebSocket, the ElevenLabs stream-input sockets, Wyoming
connections): how many are open, in all and per client, and who the client is.

A session holds a socket for as long as its client keeps it, so each is bounded twice: at most
TTS_MAX_REALTIME_SESSIONS in all, and at most TTS_MAX_REALTIME_SESSIONS_PER_CLIENT per client, so
one client reconnecting in a loop cannot take every session from the others. The client is the API
key it presented (with keys set: one tenant, wherever it connects from), else its address
(uvicorn rewrites it from X-Forwarded-For behind a trusted proxy).
"""

import hashlib
from collections.abc import Callable, Sequence
from typing import Any

from starlette.datastructures import Headers
from starlette.types import Scope
from starlette.websockets import WebSocket

from chatterbox_server.server.admission import QueueFullError
from chatterbox_server.server.auth import ApiKeys, presented_keys
from chatterbox_server.server.http_errors import RETRY_AFTER_S, RETRYABLE, error_response, error_type, status_of

# the `reason` of tts_requests_rejected_total for each limit
ALL_TAKEN = "sessions_full"
PER_CLIENT = "too_many_sessions"


class TooManySessionsError(QueueFullError):
    """This client already holds as many realtime sessions as one client may (429, `too_many_sessions`)."""


class SessionTable:
    """Open sessions, in all and per client (touched only on the event loop).

    `acquire(client)` takes a session, or raises QueueFullError when every session is taken and
    TooManySessionsError when this client holds its share (`on_refuse(reason)` hears of each);
    the Lease it returns gives the session back, once, however the session ends:

        lease = table.acquire(client)   # refused: nothing was taken
        with lease:
            await serve(...)
    """

    def __init__(self, max_sessions: int, max_per_client: int, on_refuse: Callable[[str], None] = lambda reason: None):
        self.max_sessions = max_sessions
        self.max_per_client = max_per_client
        self.on_refuse = on_refuse
        self._open: dict[str, int] = {}  # client -> sessions open (no entry at 0)
        self._total = 0

    def __len__(self) -> int:
        return self._total

    def held_by(self, client: str) -> int:
        return self._open.get(client, 0)

    def acquire(self, client: str) -> "Lease":
        held = self.held_by(client)
        if held >= self.max_per_client:
            self.on_refuse(PER_CLIENT)
            raise TooManySessionsError(
                f"this client already has {held} realtime sessions open, the most one client may: close one first"
            )
        if self._total >= self.max_sessions:
            self.on_refuse(ALL_TAKEN)
            raise QueueFullError(f"server busy: {self.max_sessions} realtime sessions are open")
        self._open[client] = held + 1
        self._total += 1
        return Lease(self, client)

    def _release(self, client: str) -> None:
        held = self._open[client]
        if held == 1:
            del self._open[client]  # a client that left leaves nothing behind
        else:
            self._open[client] = held - 1
        self._total -= 1


class Lease:
    """One session of a client: `release()`, or the end of `with lease:`, gives it back (once)."""

    def __init__(self, table: SessionTable, client: str):
        self.table = table
        self.client = client
        self.released = False

    def release(self) -> None:
        if not self.released:  # a second release must not free another session of this client
            self.released = True
            self.table._release(self.client)

    def __enter__(self) -> "Lease":
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def client_of(scope: Scope, keys: ApiKeys) -> str:
    """Who a WebSocket's session counts against: the valid API key it presented (as a digest: the
    table holds no secret), else its address."""
    if keys.enabled:
        for key in presented_keys(Headers(scope=scope)):
            if keys.accepts(key):
                return "key " + hashlib.sha256(key.encode(errors="surrogatepass")).hexdigest()[:16]
    return client_at(scope.get("client"))


def client_at(peer: Sequence[Any] | None) -> str:
    """The client at a peer address ((host, port, ...) as ASGI and asyncio give it): its host."""
    return f"address {peer[0]}" if peer else "address unknown"


async def refuse_upgrade(websocket: WebSocket, exc: Exception) -> None:
    """Answer a WebSocket upgrade with the HTTP error for `exc` (Retry-After where a retry can succeed)."""
    headers = {"Retry-After": str(RETRY_AFTER_S)} if isinstance(exc, RETRYABLE) else None
    await websocket.send_denial_response(error_response(status_of(exc), error_type(exc), str(exc), headers))
