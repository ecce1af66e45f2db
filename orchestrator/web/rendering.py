"""Turning a template into a response: the Jinja2 environment (autoescaped), what every page gets
(language, `_`, CSRF token, the logged-in user), and the portal's Content-Security-Policy.

The policy allows the portal's own stylesheet and images and nothing else: no script at all, no
inline style, forms only to this origin. Templates therefore never carry `style=` or `<script>`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

from fastapi import Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from orchestrator.api.deps import Principal
from orchestrator.config import Settings
from orchestrator.models import Role, User, UserStatus
from orchestrator.policy import GRANTS, Action, Reach
from orchestrator.sessions import csrf_token
from orchestrator.web.browser import (
    new_presession_nonce,
    presession_cookie_name,
    sign_presession_nonce,
)
from orchestrator.web.i18n import LANG_COOKIE, LANGUAGES, Translate, choose_language, translator

WEB_DIR = Path(__file__).resolve().parent
TEMPLATES_DIR = WEB_DIR / "templates"
STATIC_DIR = WEB_DIR / "static"
STATIC_PREFIX = "/static"

PORTAL_CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)

# `?done=<key>` after a redirect shows one of these; anything else in `done` is ignored.
NOTICES: Mapping[str, str] = {
    "logged_out": "You have been logged out.",
    "activated": "Your password is set. You can now log in with it and your token.",
    "confirmed": "Confirmed. You can make changes for the next few minutes.",
    "session_ended": "The session has been ended.",
    "saved": "Saved.",
    "imported": "%(count)s tokens imported.",
    "requested": "Your request has been sent to the data stewards.",
}


@dataclass(frozen=True)
class MenuItem:
    key: str
    href: str
    label: str
    action: Action | None
    roles: frozenset[Role] = frozenset()  # instead of an action: these roles see the item


STAFF_MENU = (
    MenuItem("institutions", "/admin/institutions", "Institutions", Action.INSTITUTION_READ),
    MenuItem("users", "/admin/users", "Accounts", Action.USER_READ),
    MenuItem("tokens", "/admin/tokens", "Tokens", Action.TOKEN_READ),
    MenuItem("review", "/review/projects", "Review", Action.PROJECT_REVIEW),
    # The airlock's review queues (issue 7): by role, as the airlock decides by role.
    MenuItem(
        "airlock-uploads",
        "/review/airlock/uploads",
        "Upload review",
        None,
        frozenset({Role.DATA_STEWARD, Role.OUTPUT_CHECKER}),
    ),
    MenuItem(
        "airlock-outputs",
        "/review/airlock/outputs",
        "Output review",
        None,
        frozenset({Role.OUTPUT_CHECKER}),
    ),
)


@dataclass(frozen=True)
class Portal:
    """What `install_portal` builds once per app and keeps in `app.state.portal`."""

    settings: Settings
    templates: Environment
    static_versions: Mapping[str, str]


def make_portal(settings: Settings) -> Portal:
    templates = Environment(
        loader=FileSystemLoader(TEMPLATES_DIR),
        autoescape=select_autoescape(("html",), default=True),
        undefined=StrictUndefined,  # a misspelt variable fails the test instead of rendering ""
        trim_blocks=True,
        lstrip_blocks=True,
    )
    templates.filters["day"] = _format_day
    templates.filters["moment"] = _format_moment
    # Cache-busting: the file's hash in its URL, so a new release never meets a stale stylesheet.
    versions = {
        path.name: hashlib.sha256(path.read_bytes()).hexdigest()[:12]
        for path in STATIC_DIR.iterdir()
        if path.is_file()
    }
    return Portal(settings=settings, templates=templates, static_versions=versions)


def get_portal(request: Request) -> Portal:
    portal: Portal = request.app.state.portal
    return portal


def request_language(request: Request) -> str:
    return choose_language(request.cookies.get(LANG_COOKIE), request.headers.get("accept-language"))


def reaches_all(user: User, action: Action) -> bool:
    """Whether the user's role has the action on every object (not just their own): who gets
    the staff pages. `policy.authorize` still decides each action on each object."""
    if user.status is not UserStatus.ACTIVE:
        return False
    return GRANTS.get(user.role, {}).get(action) is Reach.ANY


def staff_menu(user: User | None) -> list[MenuItem]:
    if user is None:
        return []
    return [
        item
        for item in STAFF_MENU
        if (reaches_all(user, item.action) if item.action is not None else user.role in item.roles)
        and user.status is UserStatus.ACTIVE
    ]


def _notice(request: Request, _: Translate) -> str:
    message = NOTICES.get(request.query_params.get("done", ""))
    if message is None:
        return ""
    if "%(count)s" not in message:
        return _(message)
    count = request.query_params.get("count", "")
    return _(message, count=int(count[:6])) if count.isdigit() else ""


def _format_day(value: date | datetime | None) -> str:
    if value is None:
        return "—"
    if isinstance(value, datetime):
        value = value.date()
    return value.isoformat()


def _format_moment(value: datetime | None) -> str:
    return "—" if value is None else value.strftime("%Y-%m-%d %H:%M UTC")


def render(
    request: Request,
    template: str,
    context: Mapping[str, Any] | None = None,
    *,
    principal: Principal | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    """Render a page for this request.

    A logged-in page gets its session's CSRF token; a page without a session gets a pre-session
    token, setting its nonce cookie on first sight (it is reused, so several tabs keep working).
    """
    portal = get_portal(request)
    settings = portal.settings
    language = request_language(request)
    new_nonce: str | None = None
    if principal is not None and principal.session is not None:
        token = csrf_token(settings, principal.session)
    else:
        nonce = request.cookies.get(presession_cookie_name(settings))
        if not nonce:
            nonce = new_nonce = new_presession_nonce()
        token = sign_presession_nonce(settings, nonce)
    _ = translator(language)
    user = principal.user if principal is not None else None
    page = portal.templates.get_template(template).render(
        {
            "lang": language,
            "languages": LANGUAGES,
            "_": _,
            "csrf": token,
            "principal": principal,
            "user": user,
            "staff_menu": staff_menu(user),
            "path": request.url.path,
            "here": _here(request),
            "static": lambda name: f"{STATIC_PREFIX}/{name}?v={portal.static_versions[name]}",
            "notice": _notice(request, _),
            "nav": "",
            **(context or {}),
        }
    )
    response = HTMLResponse(page, status_code=status_code, headers=portal_headers(language))
    if new_nonce is not None:
        response.set_cookie(
            presession_cookie_name(settings),
            new_nonce,
            httponly=True,
            secure=settings.cookie_secure,
            samesite="strict",
            path="/",
        )
    return response


def portal_headers(language: str) -> dict[str, str]:
    return {
        "Content-Security-Policy": PORTAL_CSP,
        "Content-Language": language,
        "Vary": "Cookie, Accept-Language",
    }


def _here(request: Request) -> str:
    """This page's path and query, to come back to after a language switch or a login."""
    query = request.url.query
    return request.url.path + (f"?{query}" if query else "")


def redirect(location: str) -> Response:
    """303 See Other: after a POST the browser follows with a GET (no re-submission)."""
    return RedirectResponse(location, status_code=303)
