"""One JSON error shape for every failure: `{"error": {"code", "message", "details"}}`.

Covers `KluisError`, request validation, unknown paths and methods; `middleware` uses
`error_response` for unexpected exceptions.
"""

from __future__ import annotations

from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from orchestrator.errors import KluisError, TooManyRequests


def error_response(
    status_code: int,
    code: str,
    message: str,
    details: dict[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    body = {"error": {"code": code, "message": message, "details": details or {}}}
    return JSONResponse(body, status_code=status_code, headers=dict(headers or {}))


def status_code_name(status_code: int) -> str:
    """`404` → `not_found`: the machine code for a plain HTTP failure."""
    try:
        return HTTPStatus(status_code).phrase.lower().replace(" ", "_").replace("-", "_")
    except ValueError:
        return f"http_{status_code}"


async def handle_kluis_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, KluisError)
    headers = {}
    if isinstance(exc, TooManyRequests) and "retry_after" in exc.details:
        headers["Retry-After"] = str(int(exc.details["retry_after"]))  # RFC 9110 section 10.2.3
    return error_response(exc.status_code, exc.code, exc.message, exc.details, headers)


async def handle_validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    # Never echo the rejected input: it may be a password or a token.
    fields = [
        {"location": ".".join(str(part) for part in err["loc"]), "message": err["msg"]}
        for err in exc.errors()
    ]
    summary = "; ".join(f"{f['location']}: {f['message']}" for f in fields[:3])
    return error_response(422, "invalid", f"Invalid request: {summary}", {"fields": fields})


async def handle_http_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    status = exc.status_code
    message = exc.detail if isinstance(exc.detail, str) else "Request failed."
    return error_response(status, status_code_name(status), message, headers=exc.headers)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(KluisError, handle_kluis_error)
    app.add_exception_handler(RequestValidationError, handle_validation_error)
    app.add_exception_handler(HTTPException, handle_http_error)
