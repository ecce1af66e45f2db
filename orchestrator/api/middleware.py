"""Per-request context: a validated request id bound to the logs, security headers on every
response, one access log line, and the last-resort 500 in the common error shape.
"""

from __future__ import annotations

import logging
import re
import time
import uuid

import structlog
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from orchestrator.api.handlers import error_response
from orchestrator.config import Environment, Settings

log = structlog.get_logger(__name__)

REQUEST_ID_HEADER = "X-Request-ID"
# Probes arrive every few seconds: their access lines are debug, not info.
QUIET_PATHS = frozenset({"/healthz", "/readyz"})
# Echoed into headers and logs: only a short, plain token is accepted from the client.
_REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")

# A JSON API needs nothing from a browser; pages that do (docs, portal) set their own policy.
API_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"


def security_headers(settings: Settings) -> dict[str, str]:
    headers = {
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "DENY",
        "Referrer-Policy": "no-referrer",
        "Content-Security-Policy": API_CSP,
        "Cross-Origin-Opener-Policy": "same-origin",
        "Cross-Origin-Resource-Policy": "same-origin",
        "Cache-Control": "no-store",
    }
    if settings.environment is Environment.PRODUCTION and settings.effective_public_url.startswith(
        "https://"
    ):
        headers["Strict-Transport-Security"] = "max-age=63072000; includeSubDomains"
    return headers


def accept_request_id(value: str | None) -> str:
    """The client's request id when it is well-formed, else a fresh one."""
    if value is not None and _REQUEST_ID.fullmatch(value):
        return value
    return uuid.uuid4().hex


class RequestContextMiddleware:
    """Pure ASGI middleware, so the bound contextvars are visible to the route and its logs."""

    def __init__(self, app: ASGIApp, headers: dict[str, str]) -> None:
        self.app = app
        self.headers = headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = dict(scope["headers"]).get(REQUEST_ID_HEADER.lower().encode("latin-1"))
        request_id = accept_request_id(None if incoming is None else incoming.decode("latin-1"))
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=request_id)
        started = time.perf_counter()
        status_code = 500
        response_started = False

        async def send_with_headers(message: Message) -> None:
            nonlocal status_code, response_started
            if message["type"] == "http.response.start":
                response_started = True
                status_code = message["status"]
                headers = MutableHeaders(scope=message)
                headers[REQUEST_ID_HEADER] = request_id
                for name, value in self.headers.items():
                    headers.setdefault(name, value)
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        except Exception:
            log.exception("unhandled_error", method=scope["method"], path=scope["path"])
            if response_started:
                raise
            response = error_response(
                500, "internal_error", "Internal server error.", {"request_id": request_id}
            )
            await response(scope, receive, send_with_headers)
        finally:
            level = logging.DEBUG if scope["path"] in QUIET_PATHS else logging.INFO
            log.log(
                level,
                "request_finished",
                method=scope["method"],
                path=scope["path"],
                status_code=status_code,
                duration_ms=round((time.perf_counter() - started) * 1000, 1),
            )
