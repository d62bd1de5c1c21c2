"""The one place typed errors become HTTP: a status per error class and one JSON error shape."""

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

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


def error_response(status: int, kind: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """Our one error shape: {"error": {"type": ..., "message": ...}}."""
    return JSONResponse({"error": {"type": kind, "message": message}}, status_code=status, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(TTSError)
    async def tts_error(request: Request, exc: TTSError) -> JSONResponse:
        status = status_of(exc)
        headers = {"Retry-After": str(RETRY_AFTER_S)} if isinstance(exc, RETRYABLE) else None
        if status >= 500 and status not in (503, 504):
            logger.error("request failed: %s", exc)
        return error_response(status, error_type(exc), str(exc), headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        parts = [f"{'.'.join(str(p) for p in e['loc'][1:]) or 'body'}: {e['msg']}" for e in exc.errors()]
        return error_response(422, "validation_error", "; ".join(parts))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error_response(exc.status_code, "http_error", str(exc.detail), getattr(exc, "headers", None))


def internal_error() -> JSONResponse:
    """What a client gets for an unexpected exception (RequestMetricsMiddleware sends it)."""
    return error_response(500, "internal_error", "internal server error")
