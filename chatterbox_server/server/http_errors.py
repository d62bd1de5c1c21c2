"""The one place typed errors become HTTP: a status per error class, and the JSON shape each
route declares for its errors (routes.py `ErrorShape`): ours, `{"error": {"type", "message"}}`, or on
the OpenAI-compatible routes OpenAI's, `{"error": {"message", "type", "param", "code"}}` (`code` is
our type, `type` OpenAI's class of error), so OpenAI's clients read them unchanged.

The exception handlers read the shape from the matched route; middleware that answers before
routing (API keys, body limits) sends a `routed_error`, which looks up the route it is for.
"""

import logging
from collections.abc import Iterable, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from chatterbox_server.errors import (
    GenerationCancelledError,
    InvalidAudioError,
    InvalidInputError,
    MissingVoiceError,
    ModelLoadError,
    SynthesisTimeoutError,
    TextTooLongError,
    TTSError,
    UnsupportedOptionError,
    UploadTooLargeError,
    VoiceNotFoundError,
    VoiceStoreUnavailableError,
)
from chatterbox_server.server.admission import QueueFullError, QueueTimeoutError, ShuttingDownError
from chatterbox_server.server.routes import ErrorShape, facts_for, facts_of

logger = logging.getLogger(__name__)

RETRY_AFTER_S = 1

# The one mapping from typed errors to HTTP statuses (most specific class first).
ERROR_STATUS: list[tuple[type[Exception], int]] = [
    (TextTooLongError, 413),
    (UploadTooLargeError, 413),
    (MissingVoiceError, 400),
    (UnsupportedOptionError, 400),
    (InvalidAudioError, 422),
    (InvalidInputError, 422),
    (VoiceNotFoundError, 404),
    (QueueFullError, 429),
    (QueueTimeoutError, 503),
    (ShuttingDownError, 503),
    (SynthesisTimeoutError, 504),
    (GenerationCancelledError, 499),
    (ModelLoadError, 503),
    (VoiceStoreUnavailableError, 503),
]
RETRYABLE = (QueueFullError, QueueTimeoutError, ShuttingDownError, VoiceStoreUnavailableError)


def status_of(exc: Exception) -> int:
    return next((code for cls, code in ERROR_STATUS if isinstance(exc, cls)), 500)


def error_type(exc: Exception) -> str:
    """InvalidAudioError → 'invalid_audio'."""
    name = type(exc).__name__.removesuffix("Error")
    return "".join("_" + c.lower() if c.isupper() else c for c in name).lstrip("_")


# OpenAI's `param` for errors whose class says which field of an OpenAI speech request they are
# about (an error raised with `param=` names its field itself; most specific class first)
OPENAI_PARAMS: list[tuple[type[Exception], str | None]] = [
    (VoiceNotFoundError, "voice"),
    (MissingVoiceError, "voice"),
    (TextTooLongError, "input"),
    (UnsupportedOptionError, None),  # a model or format: its raiser names it
    (InvalidInputError, "input"),  # the OpenAI route's options are fixed: what the engine refuses is the text
]


def openai_param(exc: Exception) -> str | None:
    explicit = getattr(exc, "param", None)
    if explicit is not None:
        return str(explicit)
    return next((param for cls, param in OPENAI_PARAMS if isinstance(exc, cls)), None)


def openai_error_type(status: int) -> str:
    """OpenAI's class of error: invalid_request_error for a 4xx, server_error for a 5xx."""
    return "server_error" if status >= 500 else "invalid_request_error"


def error_body(status: int, kind: str, message: str, shape: ErrorShape, param: str | None = None) -> dict[str, Any]:
    if shape is ErrorShape.OPENAI:
        return {"error": {"message": message, "type": openai_error_type(status), "param": param, "code": kind}}
    return {"error": {"type": kind, "message": message}}


def error_response(
    status: int,
    kind: str,
    message: str,
    headers: dict[str, str] | None = None,
    *,
    shape: ErrorShape = ErrorShape.OURS,
    param: str | None = None,
) -> JSONResponse:
    """An error in `shape`: ours, {"error": {"type": ..., "message": ...}}, unless told otherwise
    (`param`, the field at fault, shows only in OpenAI's shape)."""
    return JSONResponse(error_body(status, kind, message, shape, param), status_code=status, headers=headers)


def error_shape(scope: Scope, routes: Iterable[BaseRoute] = ()) -> ErrorShape:
    """The error shape of the route a request is for: the matched one's, or, before routing, the
    one among `routes` it will match (ours for a path no route has)."""
    route = scope.get("route")
    return (facts_of(route) if route is not None else facts_for(routes, scope)).errors


def routed_error(
    routes: Sequence[BaseRoute], status: int, kind: str, message: str, headers: dict[str, str] | None = None
) -> ASGIApp:
    """An error for middleware that answers before routing (API keys, body limits): an ASGI app
    that sends it in the error shape of the route the request is for."""

    async def send_error(scope: Scope, receive: Receive, send: Send) -> None:
        response = error_response(status, kind, message, headers, shape=error_shape(scope, routes))
        await response(scope, receive, send)

    return send_error


def _field(errors: Sequence[Any]) -> str | None:
    """The top-level field of the first validation error (`voice` for body.voice.id); None for the body itself."""
    loc: Sequence[Any] = errors[0].get("loc", ()) if errors else ()
    return loc[1] if len(loc) > 1 and isinstance(loc[1], str) else None


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(TTSError)
    async def tts_error(request: Request, exc: TTSError) -> JSONResponse:
        status = status_of(exc)
        headers = {"Retry-After": str(RETRY_AFTER_S)} if isinstance(exc, RETRYABLE) else None
        if status >= 500 and status not in (503, 504):
            logger.error("request failed: %s", exc)
        shape = error_shape(request.scope)
        return error_response(status, error_type(exc), str(exc), headers, shape=shape, param=openai_param(exc))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        parts = [f"{'.'.join(str(p) for p in e['loc'][1:]) or 'body'}: {e['msg']}" for e in errors]
        shape = error_shape(request.scope)
        return error_response(422, "validation_error", "; ".join(parts), shape=shape, param=_field(errors))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        headers = getattr(exc, "headers", None)
        return error_response(exc.status_code, "http_error", str(exc.detail), headers, shape=error_shape(request.scope))


def internal_error() -> ASGIApp:
    """What a client gets for an unexpected exception (RequestMetricsMiddleware sends it, after
    routing: in the matched route's shape)."""
    return routed_error((), 500, "internal_error", "internal server error")
