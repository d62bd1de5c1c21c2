"""WebSocket upgrades the app refuses (an HTTP answer instead of the handshake: 401 without a key,
429 with the sessions taken, 503 while draining), logged once by the app rather than three times by
uvicorn.

uvicorn's websockets-sansio protocol takes such a denial response for a handshake the app never
completed: once the app returns it logs `ERROR: ASGI callable returned without completing
handshake.`, after its own INFO status line and websockets' INFO `connection rejected (401
Unauthorized)`, none with a request id, so an anonymous client could fill the log at ERROR. This
protocol marks the handshake complete once the denial is sent (the client has its answer) and
moves those INFO lines to DEBUG; RequestMetricsMiddleware logs the refusal in one line with the
request id, path, status and reason, and counts it.
"""

import logging
from collections.abc import Callable
from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

REFUSALS = ("websocket.http.response.start", "websocket.close")  # the app's answers instead of an accept


class _QuietWhenRefused(logging.LoggerAdapter[logging.Logger]):
    """A connection's logger whose INFO lines go to DEBUG once the upgrade has been refused."""

    def __init__(self, logger: logging.Logger, refused: Callable[[], bool]):
        super().__init__(logger, {})
        self._refused = refused

    @property
    def level(self) -> int:  # uvicorn reads its logger's level to decide on its trace lines
        return self.logger.level

    def log(self, level: int, msg: object, *args: Any, **kwargs: Any) -> None:
        if level == logging.INFO and self._refused():
            level = logging.DEBUG
        super().log(level, msg, *args, **kwargs)


class QuietRefusalsProtocol(WebSocketsSansIOProtocol):
    """uvicorn's WebSocket protocol, logging nothing of its own above DEBUG about a refused upgrade."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.refused = False  # the app answered the upgrade with an HTTP response (or a close) instead
        quiet = _QuietWhenRefused(self.logger, lambda: self.refused)
        self.logger = quiet  # type: ignore[assignment]  # the adapter logs as the logger it wraps
        self.conn.logger = quiet  # websockets' "connection rejected" line

    async def send(self, message: Any) -> None:
        if not self.handshake_complete and message["type"] in REFUSALS:
            self.refused = True
        await super().send(message)
        if self.refused and message["type"] == "websocket.http.response.body" and not message.get("more_body"):
            self.handshake_complete = True  # answered in full: not "returned without completing handshake"
