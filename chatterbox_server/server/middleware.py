"""Pure-ASGI middleware: request ids and per-route metrics, and upload limits enforced while the
body streams in (so a 5 GB upload is refused after the first bytes over the limit, not after)."""

import re
import time
import uuid

from starlette.datastructures import Headers, MutableHeaders

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class RequestMetricsMiddleware:
    """Gives every request an id (X-Request-ID in and out); counts and times it by route and status."""

    def __init__(self, app, metrics, synthesis_routes=()):
        self.app = app
        self.metrics = metrics
        self.synthesis_routes = set(synthesis_routes)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        incoming = Headers(scope=scope).get("x-request-id", "")
        request_id = incoming if _REQUEST_ID.match(incoming) else uuid.uuid4().hex
        status = 500
        started = time.perf_counter()
        state = scope.setdefault("state", {})
        state["request_id"], state["started_at"] = request_id, started

        async def send_with_id(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message)["X-Request-ID"] = request_id
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", "unmatched")
            self.metrics.request_duration.labels(route=path).observe(time.perf_counter() - started)
            self.metrics.record_outcome(path, status, synthesis=path in self.synthesis_routes)


class UploadLimitMiddleware:
    """Refuses request bodies over `max_body_bytes` on `paths` with the app's own 413 response.

    A declared Content-Length over the limit is refused before reading; a chunked body is
    counted as it arrives, and once over, the app sees a disconnect and its reply is replaced.
    """

    def __init__(self, app, max_body_bytes: int, paths, respond):
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.paths = set(paths)
        self.respond = respond  # () -> Response, the 413 in the app's error shape

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] not in self.paths:
            return await self.app(scope, receive, send)
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            return await self.respond()(scope, receive, send)

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
                if received > self.max_body_bytes:
                    over_limit = True
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message):
            nonlocal replaced
            if over_limit:
                if not replaced:
                    replaced = True
                    await self.respond()(scope, receive, send)
                return
            await send(message)

        await self.app(scope, counting_receive, guarded_send)
        if over_limit and not replaced:
            await self.respond()(scope, receive, send)
