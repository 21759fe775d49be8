"""One error envelope for every failure, in the Mistral API's shape.

``{"object": "error", "message": ..., "type": ..., "param": ..., "code": ...}``; validation
errors (422) also keep FastAPI's ``detail`` list, which the mistralai SDK parses.
"""

from __future__ import annotations

import json
import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger("fimgate.api")


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
        detail: list[dict[str, object]] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.type = status, message, type
        self.code, self.param, self.headers = code, param, headers
        self.detail = detail  # a 422's per-field errors (FastAPI's shape)


def error_body(
    message: str, type: str, code: str | None = None, param: str | None = None
) -> dict[str, object]:
    return {"object": "error", "message": message, "type": type, "param": param, "code": code}


def json_error(
    body: dict[str, object], error: ApiError, headers: dict[str, str] | None = None
) -> JSONResponse:
    """``body`` (a wire's error shape) with ``error``'s status and headers, and ``headers``."""
    return JSONResponse(
        body, status_code=error.status, headers={**(error.headers or {}), **(headers or {})}
    )


def error_response(error: ApiError, headers: dict[str, str] | None = None) -> JSONResponse:
    body = error_body(error.message, error.type, error.code, error.param)
    if error.detail is not None:
        body["detail"] = error.detail
    return json_error(body, error, headers)


def _describe(err: dict) -> str:
    where = ".".join(str(part) for part in err.get("loc", ()) if part != "body") or "body"
    if err.get("type") == "extra_forbidden":
        return f"unknown field '{where}'"
    return f"{where}: {err.get('msg')}"


def describe_validation(errors: list[dict]) -> str:
    return "invalid request: " + "; ".join(_describe(e) for e in errors)


def _serializable(value: object) -> bool:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        return False
    return True


def validation_detail(errors: list[dict]) -> list[dict[str, object]]:
    """FastAPI's ``detail`` list, which the mistralai SDK parses, made safe to send: ``ctx``
    may hold exception objects, and ``input`` raw bytes (a body FastAPI did not read as JSON)."""
    return [
        {k: v for k, v in e.items() if k != "ctx" and (k != "input" or _serializable(v))}
        for e in errors
    ]


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = list(exc.errors())
        error = ApiError(
            422, describe_validation(errors), code="validation_error",
            detail=validation_detail(errors),
        )  # fmt: skip
        return error_response(error)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = str(exc.detail)
        if exc.status_code == 404:
            message = f"no such endpoint: {request.method} {request.url.path}"
        elif exc.status_code == 405:
            message = f"method {request.method} is not allowed on {request.url.path}"
        body = error_body(message, "invalid_request_error", code=str(exc.status_code))
        return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        body = error_body("internal server error", "internal_error")
        return JSONResponse(body, status_code=500)


def unavailable(message: str) -> ApiError:
    """The store or the rate limiter could not check a request in time: it is refused, and
    a retry a few seconds on may find them back (or another replica)."""
    return ApiError(503, message, type="service_unavailable", headers={"Retry-After": "5"})
