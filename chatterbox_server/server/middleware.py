"""Pure-ASGI middleware: request ids, per-route metrics and the last-resort error guard, upload
limits enforced while the body streams in (a 5 GB upload is refused after the first bytes over
the limit, not after), and a 429 before the body is read when the request's admission queue is
already full."""

import json
import logging
import re
import time
import uuid
from collections.abc import Callable

from starlette.datastructures import Headers, MutableHeaders
from starlette.routing import BaseRoute
from starlette.types import ASGIApp

from chatterbox_server.server.admission import Admission
from chatterbox_server.server.context import RequestContext
from chatterbox_server.server.http_errors import RETRY_AFTER_S, error_type, routed_error
from chatterbox_server.server.routes import Body, Queue, RouteFacts, facts_for, facts_of, route_for
from chatterbox_server.server.state import ServerState

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
        if scope["type"] == "websocket":
            return await self._websocket(scope, receive, send)
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        request_id = _request_id(scope)
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

    async def _websocket(self, scope, receive, send):
        """An upgrade gets a request id too (X-Request-ID on its answer). One the app refuses, with
        an HTTP response (401, 429, 503, ...) or a close before accepting (uvicorn answers 403), is
        counted and logged in one line as an HTTP request is, its error type as the reason (uvicorn
        logs it only at debug: upgrades.py). An accepted socket is its session's to report."""
        request_id = _request_id(scope)
        started = time.perf_counter()
        context = RequestContext.of(scope)
        context.request_id, context.started_at = request_id, started
        accepted = False
        status: int | None = None  # of a refusal
        body = b""

        async def send_with_id(message):
            nonlocal accepted, status, body
            kind = message["type"]
            if kind == "websocket.accept":
                accepted = True
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
            elif kind == "websocket.http.response.start":
                status = message["status"]
                MutableHeaders(scope=message)["X-Request-ID"] = request_id
            elif kind == "websocket.http.response.body" and len(body) < MAX_REFUSAL_BODY_BYTES:
                body += message.get("body", b"")
            elif kind == "websocket.close" and not accepted and status is None:
                status = 403
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            if status is not None:
                path = getattr(scope.get("route"), "path", "unmatched")
                elapsed_s = time.perf_counter() - started
                self.metrics.request_duration.labels(route=path).observe(elapsed_s)
                self.metrics.record_outcome(path, str(status), synthesis=False)
                shown = {"method": "WEBSOCKET", "path": scope["path"]}
                log_request(shown, status, elapsed_s, context, f"reason={_error_type_of(body)}")


MAX_REFUSAL_BODY_BYTES = 4096  # an error body of ours is far smaller; its type is all the log needs


def _request_id(scope) -> str:
    """The client's X-Request-ID where it is a sane one, else a new id."""
    incoming = Headers(scope=scope).get("x-request-id", "")
    return incoming if _REQUEST_ID.match(incoming) else uuid.uuid4().hex


def _error_type_of(body: bytes) -> str:
    """The error type of an error body, in our shape or OpenAI's (where it is the `code`); "-" for none."""
    try:
        error = json.loads(body).get("error")
        kind = error.get("code") or error.get("type")
    except (ValueError, AttributeError):  # no body (a close), or not an error of ours
        return "-"
    return str(kind) if kind else "-"


QUIET_PATHS = frozenset({"/health/live", "/health/ready", "/health", "/metrics"})  # probes and scrapes: debug


def log_request(scope: dict, status: int, elapsed_s: float, context: RequestContext, detail: str = "") -> None:
    """One line per request with its timing; a synthesis adds voice, characters, audio seconds, time
    to first audio and RTF, and says "cancelled" (not 200) when the client left mid-stream; `detail`
    goes at the end (a refused upgrade's reason)."""
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
    if detail:
        line += f" {detail}"
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


class AdmissionPrecheckMiddleware:
    """Answers the app's 429 (with Retry-After, in the route's error shape) before reading a byte of
    the body when an admission queue the request would wait in (routes.py `RouteFacts.queues`) is
    already full, so an upload arriving over a full encode queue is not read whole (seconds, for
    50 MB) only to be refused after.

    Only a pre-check: the admission still decides once the body is read (`Admission.slot`). On an
    upload route that also speaks (/tts), the encode queue counts only when the declared
    Content-Length is more than a form without a clip can be (`clip_threshold_bytes`); a body of
    unknown length is left to the admission.
    """

    def __init__(
        self, app, routes: list[BaseRoute], state: Callable[[], ServerState | None], clip_threshold_bytes: int
    ):
        self.app = app
        self.routes = routes  # the API's routes, as declared
        self.state = state  # the app's ServerState once the lifespan made it (None before)
        self.clip_threshold_bytes = clip_threshold_bytes

    async def __call__(self, scope, receive, send):
        state = self.state() if scope["type"] == "http" else None
        route = route_for(self.routes, scope) if state is not None else None
        if state is None or route is None or (full := self._full_queue(state, facts_of(route), scope)) is None:
            return await self.app(scope, receive, send)
        refusal = full.refuse_full()  # the words and the count Admission.slot gives a full queue
        scope["route"] = route  # counted under its route, and shaped, as the route's own 429 would be
        headers = {"Retry-After": str(RETRY_AFTER_S)}
        await routed_error(self.routes, 429, error_type(refusal), str(refusal), headers)(scope, receive, send)

    def _full_queue(self, state: ServerState, facts: RouteFacts, scope) -> Admission | None:
        """The first full admission the request would wait in, in the order it meets them (the
        clip's encoding before the synthesis); None when each has room."""
        admissions = []
        if Queue.ENCODE in facts.queues and (not facts.clip_optional or self._carries_clip(scope)):
            admissions.append(state.encodes)
        if Queue.SYNTHESIS in facts.queues:
            admissions.append(state.admission)
        for admission in admissions:
            # a draining admission answers 503 itself; only a full queue is refused here
            if not admission.draining and admission.full:
                return admission
        return None

    def _carries_clip(self, scope) -> bool:
        """The declared body is larger than a form without a clip can be."""
        declared = Headers(scope=scope).get("content-length", "")
        return declared.isdigit() and int(declared) > self.clip_threshold_bytes
