"""How the HTTP API reports errors: OpenAI-style error bodies (``error_response``) for every failure, the
FastAPI exception handlers that turn validation and routing errors into them (400, never FastAPI's 422),
and the OpenAPI side of the same contract: the error responses each route documents, the bearer key on
``/v1``, and ``RouterAPI``, the FastAPI app class that serves that corrected schema."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from serve_app.api import ApiError, ErrorResponse

# The paths that take a bearer key: the guard enforces it, the schema documents it.
PROTECTED_PREFIX = "/v1/"


def _error_doc(description: str) -> dict[str, Any]:
    return {"model": ErrorResponse, "description": description}


SERVER_ERROR: dict[int | str, dict[str, Any]] = {500: _error_doc("unexpected server error (no details leaked)")}
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: _error_doc("invalid request (OpenAI-style error body naming the field)"),
    401: _error_doc("missing or wrong API key"),
    404: _error_doc("unknown model or router"),
    413: _error_doc("request body too large"),
    429: _error_doc("the API key's spend budget or request rate is used up; retry after the Retry-After header"),
    **SERVER_ERROR,
    503: _error_doc("models unavailable; retry after the Retry-After header"),
}
# Generation endpoints answer JSON, or Server-Sent Events when the request says ``stream: true``.
STREAMING_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "the completion (JSON), or SSE chunks when stream is true",
          "content": {"text/event-stream": {"schema": {"type": "string"}}}},
    **ERROR_RESPONSES,
}


def error_response(error: ApiError) -> JSONResponse:
    return JSONResponse(status_code=error.status, content=error.body(), headers=dict(error.headers))


async def handle_api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return error_response(exc)


async def handle_validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = []
    param = None
    for err in exc.errors():
        location = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
        param = param or location or None
        problems.append(f"{location or 'body'}: {err.get('msg')}")
    return error_response(ApiError(400, "invalid request: " + "; ".join(problems), param=param))


async def handle_http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = "not_found" if exc.status_code == 404 else None
    return error_response(ApiError(exc.status_code, str(exc.detail), code=code, headers=dict(exc.headers or {})))


def install_error_handlers(target: FastAPI) -> None:
    """OpenAI-style bodies for every error FastAPI/Starlette would otherwise answer in their own shape.

    Module-level handlers: Serve pickles the app into each replica, and these then pickle by reference.
    """
    target.add_exception_handler(ApiError, handle_api_error)
    target.add_exception_handler(RequestValidationError, handle_validation_error)
    target.add_exception_handler(StarletteHTTPException, handle_http_error)


def openapi_schema(target: FastAPI) -> dict[str, Any]:
    """FastAPI's schema, corrected: validation errors are 400s here (never 422), and /v1 takes a bearer key."""
    if target.openapi_schema is None:
        schema = get_openapi(title=target.title, version=target.version, description=target.description,
                             routes=target.routes)
        for path, item in schema.get("paths", {}).items():
            for operation in item.values():
                operation.get("responses", {}).pop("422", None)
                if path.startswith(PROTECTED_PREFIX):
                    operation["security"] = [{"bearer": []}]
        components = schema.setdefault("components", {})
        for unused in ("HTTPValidationError", "ValidationError"):
            components.get("schemas", {}).pop(unused, None)
        components["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
        target.openapi_schema = schema
    return target.openapi_schema


class RouterAPI(FastAPI):
    """FastAPI with the corrected schema (a subclass, so it survives Serve pickling the app)."""

    def openapi(self) -> dict[str, Any]:
        return openapi_schema(self)
