"""The OpenAPI document, made to tell the truth: FastAPI documents request validation failures in
its own `{"detail": [...]}` shape, but our handler answers them in our one error shape."""

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from chatterbox_server.server.protocol import ERROR_DESCRIPTIONS, ErrorResponse

_FASTAPI_VALIDATION_SCHEMAS = ("HTTPValidationError", "ValidationError")
_ERROR_REF = {"$ref": f"#/components/schemas/{ErrorResponse.__name__}"}


def install_openapi(app: FastAPI) -> None:
    """Replace app.openapi with a cached builder that documents 422s in our error shape."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            for operations in schema.get("paths", {}).values():
                for operation in operations.values():
                    invalid = operation.get("responses", {}).get("422")
                    if invalid is not None:
                        invalid["description"] = ERROR_DESCRIPTIONS[422]
                        invalid["content"] = {"application/json": {"schema": _ERROR_REF}}
            schemas = schema.get("components", {}).get("schemas", {})
            for name in _FASTAPI_VALIDATION_SCHEMAS:
                schemas.pop(name, None)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
