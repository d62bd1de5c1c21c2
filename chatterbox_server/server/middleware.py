"""Pure-ASGI middleware: request ids, per-route metrics and the last-resort error guard, and
upload limits enforced while the body streams in (a 5 GB upload is refused after the first bytes
over the limit, not after)."""

import logging
import re
import time
import uuid
from collections.abc import Callable

from starlette.datastructures import Headers, MutableHeaders
from starlette.routing import BaseRoute
from starlette.types import ASGIApp

from chatterbox_server.server.context import RequestContext
from chatterbox_server.server.routes import Body, facts_for, facts_of

logger = logging.getLogger(__name__)

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class RequestMetricsMiddleware:
    """Gives every request an id (X-Request-ID in and out); counts and times it by route and status.

    It is also the last resort for an unexpected exception: the client gets our 500 (or, once a
    stream has started, a properly ended body) and the exception stops here. Letting it reach the
    server would make uvicorn close the connection, resetting the client's next keep-alive request.
    """

    def __init__(self, app, metrics, internal_error: Callable[[], ASGIApp] | None = None):
        self.app = app
        self.metrics = metrics
        self.internal_error = internal_error

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        incoming = Headers(scope=scope).get("x-request-id", "")
        request_id = incoming if _REQUEST_ID.match(incoming) else uuid.uuid4().hex
        status = 500
        started = time.perf_counter()
        context = RequestContext.of(scope)
        context.request_id, context.started_at = request_id, started

        started_response = finished_body = False

        async def send_with_id(message):
            nonlocal status, started_response, finished_body
            if message["type"] == "http.response.start":
                status, started_response = message["status"], True
                MutableHeaders(scope=message)["X-Request-ID"] = request_id
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                finished_body = True
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            logger.exception("unexpected error in %s %s (request %s)", scope["method"], scope["path"], request_id)
            if not started_response and self.internal_error is not None:
                await self.internal_error()(scope, receive, send_with_id)
            elif started_response and not finished_body:
                context.stream_incomplete = True
                await send_with_id({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            route = scope.get("route")
            path = getattr(route, "path", "unmatched")
            elapsed_s = time.perf_counter() - started
            self.metrics.request_duration.labels(route=path).observe(elapsed_s)
            outcome = "incomplete" if context.stream_incomplete else str(status)
            self.metrics.record_outcome(path, outcome, synthesis=facts_of(route).synthesis)
            log_request(scope, status, elapsed_s, context)


QUIET_PATHS = frozenset({"/health/live", "/health/ready", "/health", "/metrics"})  # probes and scrapes: debug


def log_request(scope: dict, status: int, elapsed_s: float, context: RequestContext) -> None:
    """One line per request with its timing; a synthesis adds voice, characters, audio seconds, time
    to first audio and RTF, and says "cancelled" (not 200) when the client left mid-stream."""
    speech = context.speech
    shown = str(status)
    if speech is not None and speech.outcome in ("cancelled", "timeout"):
        shown = f"{status} {speech.outcome}"
    elif context.stream_incomplete:
        shown = f"{status} incomplete"
    line = f"{context.request_id} {scope['method']} {scope['path']} {shown} {elapsed_s:.3f}s"
    if speech is not None:
        line += f" voice={speech.voice} chars={speech.chars}"
        if speech.audio_s is not None:
            first, rtf = speech.first_audio_s, speech.rtf
            line += f" audio={speech.audio_s:.2f}s"
            line += f" ttfa={first:.3f}s" if first is not None else " ttfa=-"
            line += f" rtf={rtf:.3f}" if rtf is not None else " rtf=-"
    level = logging.DEBUG if scope["path"] in QUIET_PATHS and status < 400 else logging.INFO
    logger.log(level, "%s", line)


class BodyLimitMiddleware:
    """Refuses request bodies over the limit of the route's declared Body kind (routes.py) with
    the app's own 413 response.

    A declared Content-Length over the limit is refused before reading; a chunked body is
    counted as it arrives, and once over, the app sees a disconnect and its reply is replaced.
    """

    def __init__(self, app, routes: list[BaseRoute], limits: dict[Body, tuple[int, Callable[[], ASGIApp]]]):
        self.app = app
        self.routes = routes  # the API's routes, as declared
        self.limits = limits  # Body kind → (bytes at most, () -> the 413 in the app's error shape)

    async def __call__(self, scope, receive, send):
        limit = self.limits.get(facts_for(self.routes, scope).body) if scope["type"] == "http" else None
        if limit is None:
            return await self.app(scope, receive, send)
        max_body_bytes, respond = limit
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > max_body_bytes:
            return await respond()(scope, receive, send)

        received = 0
        over_limit = False
        replaced = False

        async def counting_receive():
            nonlocal received, over_limit
            if over_limit:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > max_body_bytes:
                    over_limit = True
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message):
            nonlocal replaced
            if over_limit:
                if not replaced:
                    replaced = True
                    await respond()(scope, receive, send)
                return
            await send(message)

        await self.app(scope, counting_receive, guarded_send)
        if over_limit and not replaced:
            await respond()(scope, receive, send)
