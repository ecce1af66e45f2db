"""Pages around logging in: the start page, the login form, logout, account activation (setting a
password through a one-time link), step-up confirmation, and the language switch.

The login form has one generic failure message whatever went wrong; `login.log_in` keeps the
real reason in the audit trail and has already committed it when it raises.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Form, Request, Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from orchestrator import accounts
from orchestrator.api.deps import NowDep, SessionDep, SettingsDep, request_source
from orchestrator.errors import AuthFailed, TooManyRequests
from orchestrator.login import log_in
from orchestrator.models import ActivationLink
from orchestrator.sessions import end_session, step_up
from orchestrator.web.browser import (
    FormPrincipal,
    PagePrincipal,
    PresessionForm,
    clear_session_cookie,
    safe_next,
    set_session_cookie,
)
from orchestrator.web.i18n import LANG_COOKIE, LANGUAGES, translator
from orchestrator.web.portal import PortalRoute
from orchestrator.web.rendering import redirect, render, request_language

router = APIRouter(route_class=PortalRoute, include_in_schema=False)

HOME = "/account"
LANG_COOKIE_SECONDS = 365 * 24 * 3600
LOGIN_FAILED = "Login failed. Check your username, password and code, then try again."
TOO_MANY = "Too many attempts. Wait a moment before you try again."
USER_AGENT_LENGTH = 200

Text = Annotated[str, Form(max_length=1024)]


@router.get("/")
def start(principal: PagePrincipal) -> Response:
    return redirect(HOME if principal is not None else "/login")


@router.get("/login")
def login_form(request: Request, principal: PagePrincipal, next: str = "") -> Response:
    target = safe_next(next, HOME)
    if principal is not None:
        return redirect(target)
    _ = translator(request_language(request))
    context = {"title": _("Log in"), "next": target, "username": "", "error": ""}
    return render(request, "login.html", context)


@router.post("/login")
def login(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    now: NowDep,
    _checked: PresessionForm,
    username: Text = "",
    password: Text = "",
    code: Annotated[str, Form(max_length=16)] = "",
    next: Annotated[str, Form(max_length=2000)] = "",
) -> Response:
    target = safe_next(next, HOME)
    user_agent = request.headers.get("user-agent", "")[:USER_AGENT_LENGTH]
    try:
        _user_session, secret = log_in(
            session,
            settings,
            username,
            password,
            code.strip(),
            request_source(request, settings),
            user_agent,
            now,
        )
    except (AuthFailed, TooManyRequests) as exc:
        # The one place a failure is a page rather than an error: the form comes back, filled in
        # with the username only, with the same message for every reason.
        _ = translator(request_language(request))
        throttled = isinstance(exc, TooManyRequests)
        context = {
            "title": _("Log in"),
            "next": target,
            "username": username[:64],
            "error": _(TOO_MANY if throttled else LOGIN_FAILED),
        }
        page = render(request, "login.html", context, status_code=exc.status_code)
        if throttled and "retry_after" in exc.details:
            page.headers["Retry-After"] = str(exc.details["retry_after"])
        return page
    response = redirect(target)
    set_session_cookie(response, settings, secret)
    return response


@router.post("/logout")
def logout(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    principal: FormPrincipal,
    now: NowDep,
) -> Response:
    assert principal.session is not None  # FormPrincipal is always a browser session
    end_session(
        session,
        principal.session,
        "logout",
        actor=principal.user,
        source=request_source(request, settings),
        now=now,
    )
    response = redirect("/login?done=logged_out")
    clear_session_cookie(response, settings)
    return response


@router.get("/activate")
def activation_form(
    request: Request, session: SessionDep, now: NowDep, secret: str = ""
) -> Response:
    _ = translator(request_language(request))
    if not _link_usable(session, secret, now):
        return _dead_link(request)
    context = {"title": _("Set your password"), "secret": secret, "error": ""}
    return render(request, "activate.html", context)


@router.post("/activate")
def activate(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    now: NowDep,
    _checked: PresessionForm,
    secret: Annotated[str, Form(max_length=256)] = "",
    password: Text = "",
    password2: Text = "",
) -> Response:
    _ = translator(request_language(request))
    if not _link_usable(session, secret, now):
        return _dead_link(request)
    if password != password2:
        error = _("The two passwords differ.")
    else:
        # Password-policy failures (`Invalid`) re-render the form; the link stays usable.
        accounts.activate_account(
            session,
            settings,
            secret=secret,
            password=password,
            source=request_source(request, settings),
            now=now,
        )
        return redirect("/login?done=activated")
    context = {"title": _("Set your password"), "secret": secret, "error": error}
    return render(request, "activate.html", context, status_code=422)


def _link_usable(session: Session, secret: str, now: datetime) -> bool:
    """Whether the link is worth showing a form for (`activate_account` decides for real)."""
    if not 0 < len(secret) <= accounts.MAX_SECRET_LENGTH:
        return False
    link = session.scalars(
        select(ActivationLink).where(ActivationLink.secret_hash == accounts.hash_secret(secret))
    ).one_or_none()
    return link is not None and link.used_at is None and link.expires_at > now


def _dead_link(request: Request) -> Response:
    _ = translator(request_language(request))
    context = {
        "title": _("Set your password"),
        "message": _(
            "This activation link is invalid, used or expired. Ask the data steward for a new one."
        ),
        "tone": "error",
        "link_href": "/login",
        "link_text": _("Log in"),
    }
    return render(request, "message.html", context, status_code=404)


@router.post("/stepup")
def confirm_step_up(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    principal: FormPrincipal,
    now: NowDep,
    stepup_code: Annotated[str, Form(max_length=16)] = "",
    next: Annotated[str, Form(max_length=2000)] = "",
) -> Response:
    """Step up on its own, for forms that cannot be carried through the prompt (file uploads)."""
    assert principal.session is not None
    step_up(session, principal.session, principal.user, stepup_code.strip(), settings, now)
    target = safe_next(next, HOME)
    return redirect(target + ("&" if "?" in target else "?") + "done=confirmed")


@router.get("/language/{code}")
def choose_language(
    code: str, request: Request, settings: SettingsDep, next: str = "/"
) -> Response:
    response = redirect(safe_next(next, "/"))
    if code in LANGUAGES:
        response.set_cookie(
            LANG_COOKIE,
            code,
            max_age=LANG_COOKIE_SECONDS,
            secure=settings.cookie_secure,
            httponly=True,
            samesite="lax",
            path="/",
        )
    return response
