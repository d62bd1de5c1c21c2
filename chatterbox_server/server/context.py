"""What one request carries across the layers, typed: its id, arrival time, whether it presented a
valid key, and what its synthesis did (for the request's log line).

It lives in the ASGI scope's state under one key; `RequestContext.of(scope)` finds it (or makes it
for a connection the metrics middleware does not see, such as a WebSocket).
"""

import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import HTTPConnection

SCOPE_KEY = "context"


@dataclass
class SpeechSummary:
    """A synthesis, as its request's log line reports it."""

    voice: str
    chars: int
    outcome: str | None = None  # ok, cancelled, timeout; None while it runs
    audio_s: float | None = None
    first_audio_s: float | None = None
    rtf: float | None = None


@dataclass
class RequestContext:
    request_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    started_at: float = field(default_factory=time.perf_counter)
    authenticated: bool = False  # a valid API key was presented
    speech: SpeechSummary | None = None
    stream_incomplete: bool = False  # the status said 200 but the body ended early

    @classmethod
    def of(cls, scope_or_connection: dict[str, Any] | HTTPConnection) -> "RequestContext":
        scope = scope_or_connection.scope if isinstance(scope_or_connection, HTTPConnection) else scope_or_connection
        state = scope.setdefault("state", {})
        context = state.get(SCOPE_KEY)
        if not isinstance(context, RequestContext):
            context = state[SCOPE_KEY] = cls()
        return context
