"""Mounting the portal into the app (`install_portal`): its pages, its static files, and error
pages in HTML with the same status code for browser routes, while the API keeps its JSON shape.

Which requests are "browser routes": the portal's own paths, and any other path a browser asks
for as a page (`Accept: text/html`) outside `/api/`. An expired or missing session on a portal
page sends the browser to the login form and back.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine
from http import HTTPStatus
from typing import Any
from urllib.parse import quote

import structlog
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException
from starlette.staticfiles import StaticFiles

from orchestrator.api.handlers import handle_http_error, handle_kluis_error, handle_validation_error
from orchestrator.config import Settings
from orchestrator.errors import KluisError
from orchestrator.sessions import StepUpFailed, StepUpRequired
from orchestrator.web.browser import PresessionTokenInvalid
from orchestrator.web.i18n import translator
from orchestrator.web.rendering import (
    STATIC_DIR,
    STATIC_PREFIX,
    make_portal,
    redirect,
    render,
    request_language,
)
from orchestrator.web.staff import section, step_up_prompt

log = structlog.get_logger(__name__)

PORTAL_PREFIXES = (
    "/login",
    "/logout",
    "/activate",
    "/account",
    "/admin",
    "/language",
    "/stepup",
    "/projects",
    "/catalogue",
    "/review",
)
API_PREFIXES = ("/api/", "/healthz", "/readyz", "/version")

Handler = Callable[[Request, Exception], Awaitable[Response]]

# Status → (title, default message) shown on the error page; message ids are in `i18n.DUTCH`.
_PAGES: dict[int, tuple[str, str]] = {
    400: ("Bad request", "Some fields are missing or invalid."),
    403: ("Not allowed", "You may not do this."),
    404: ("Not found", "This page does not exist."),
    405: ("Bad request", "This page does not exist."),
    409: ("Conflict", "Someone else changed this at the same time. Reload the page and try again."),
    422: ("Invalid input", "Some fields are missing or invalid."),
    429: ("Too many requests", "Please wait a moment and try again."),
    500: (
        "Something went wrong",
        "An unexpected error occurred. It has been logged; quote reference %(ref)s.",
    ),
    503: (
        "Service unavailable",
        "The service is temporarily unavailable. Please try again later.",
    ),
}


def install_portal(app: FastAPI, settings: Settings) -> None:
    """Add the portal to an app built by `create_app`; call it after the API's error handlers."""
    # Imported here: the page modules import this one (for `PortalRoute`).
    from orchestrator.web import (
        pages_account,
        pages_admin,
        pages_airlock,
        pages_auth,
        pages_catalogue,
        pages_projects,
        pages_review,
        pages_tokens,
        pages_workspace,
    )

    app.state.portal = make_portal(settings)
    app.mount(STATIC_PREFIX, StaticFiles(directory=STATIC_DIR), name="static")
    pages = (pages_auth, pages_account, pages_admin, pages_tokens)
    for module in (
        *pages,
        pages_airlock,
        pages_catalogue,
        pages_projects,
        pages_review,
        pages_workspace,
    ):
        app.include_router(module.router)
    app.add_exception_handler(KluisError, _browser_or(handle_kluis_error))
    app.add_exception_handler(RequestValidationError, _browser_or(handle_validation_error))
    app.add_exception_handler(HTTPException, _browser_or(handle_http_error))


def is_browser_request(request: Request) -> bool:
    path = request.url.path
    if path == "/" or any(path == p or path.startswith(p + "/") for p in PORTAL_PREFIXES):
        return True
    if path.startswith(API_PREFIXES) or path.startswith(STATIC_PREFIX + "/"):
        return False
    return "text/html" in request.headers.get("accept", "")


def _browser_or(api_handler: Handler) -> Handler:
    async def handle(request: Request, exc: Exception) -> Response:
        if not is_browser_request(request):
            return await api_handler(request, exc)
        if isinstance(exc, StepUpRequired | StepUpFailed):
            return await step_up_prompt(request, exc)
        return error_page(request, exc)

    return handle


def error_page(request: Request, exc: Exception) -> Response:
    """The friendly page for an error on a browser route (or the login form for 401)."""
    if isinstance(exc, KluisError):
        status, detail = exc.status_code, exc.message
    elif isinstance(exc, HTTPException):
        status, detail = exc.status_code, ""
    elif isinstance(exc, RequestValidationError):
        status, detail = 422, ""  # never echo what was submitted: it may be a password
    else:
        status, detail = 500, ""
    if status == 401:
        return redirect(login_url(request))
    _ = translator(request_language(request))
    title, default = _PAGES.get(status, (HTTPStatus(status).phrase, ""))
    reference = structlog.contextvars.get_contextvars().get("request_id", "")
    message = _(detail) if detail else _(default, ref=reference) if "%(" in default else _(default)
    # After a failed form: back to its page. After a failed page: to the start.
    back = section(request) if request.method == "POST" else "/"
    if isinstance(exc, PresessionTokenInvalid):
        back = request.url.path
    context = {
        "title": _(title),
        "message": message,
        "tone": "error",
        "link_href": back,
        "link_text": _("Go to the start page") if back == "/" else _("Back"),
    }
    return render(request, "message.html", context, status_code=status)


def login_url(request: Request) -> str:
    """`/login`, coming back to this page afterwards when it was a plain GET."""
    if request.method != "GET" or request.url.path in ("/", "/login"):
        return "/login"
    here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return "/login?next=" + quote(here, safe="")


class PortalRoute(APIRoute):
    """Routes whose unexpected errors become the portal's 500 page instead of the API's JSON.

    Expected failures (`KluisError`, HTTP and validation errors) pass through to the handlers.
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def guarded(request: Request) -> Response:
            try:
                return await handler(request)
            except (KluisError, HTTPException, RequestValidationError):
                raise
            except Exception as exc:
                log.exception("portal_error", method=request.method, path=request.url.path)
                return error_page(request, exc)

        return guarded
