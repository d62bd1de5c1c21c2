"""The OpenAPI document, made to tell the truth: FastAPI documents request validation failures in
its own `{"detail": [...]}` shape, but our handler answers them in our error shape (OpenAI's on the
routes that declare it, routes.py `ErrorShape.OPENAI`)."""

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from chatterbox_server.server.protocol import ERROR_DESCRIPTIONS, ErrorResponse, OpenAIErrorResponse

_FASTAPI_VALIDATION_SCHEMAS = ("HTTPValidationError", "ValidationError")
_BEARER = "bearer"
_ERROR_REF = {"$ref": f"#/components/schemas/{ErrorResponse.__name__}"}
_OPENAI_ERROR_REF = {"$ref": f"#/components/schemas/{OpenAIErrorResponse.__name__}"}


def install_openapi(
    app: FastAPI, open_paths: frozenset[str] | None = None, openai_paths: frozenset[str] = frozenset()
) -> None:
    """Replace app.openapi with a cached builder that documents 422s in the route's error shape
    (OpenAI's on `openai_paths`, ours elsewhere) and, when API keys are on (`open_paths` given),
    the bearer scheme and 401 on every keyed route."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            for path, operations in schema.get("paths", {}).items():
                error_ref = _OPENAI_ERROR_REF if path in openai_paths else _ERROR_REF
                for operation in operations.values():
                    responses = operation.setdefault("responses", {})
                    invalid = responses.get("422")
                    if invalid is not None:
                        invalid["description"] = ERROR_DESCRIPTIONS[422]
                        invalid["content"] = {"application/json": {"schema": error_ref}}
                    if open_paths is not None and path not in open_paths:
                        operation["security"] = [{_BEARER: []}]
                        responses["401"] = {
                            "description": ERROR_DESCRIPTIONS[401],
                            "content": {"application/json": {"schema": error_ref}},
                        }
            if open_paths is not None:
                schema.setdefault("components", {}).setdefault("securitySchemes", {})[_BEARER] = {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "one of TTS_API_KEYS (OpenAI clients send their api_key this way)",
                }
            schemas = schema.get("components", {}).get("schemas", {})
            for name in _FASTAPI_VALIDATION_SCHEMAS:
                schemas.pop(name, None)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
