"""My account: who I am, my confidentiality statement, the token I have on loan, and my live
sessions, each of which I can end, or all at once ("log out everywhere").
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from orchestrator import accounts, policy
from orchestrator.api.deps import NowDep, SessionDep, SettingsDep, request_source
from orchestrator.errors import AuthFailed, NotFound
from orchestrator.models import UserSession
from orchestrator.policy import Action
from orchestrator.sessions import end_all_sessions, end_session, list_sessions
from orchestrator.web.browser import FormPrincipal, PagePrincipal, clear_session_cookie
from orchestrator.web.i18n import translator
from orchestrator.web.portal import PortalRoute
from orchestrator.web.rendering import redirect, render, request_language

router = APIRouter(route_class=PortalRoute, include_in_schema=False)


@router.get("/account")
def account_page(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    principal: PagePrincipal,
    now: NowDep,
) -> Response:
    if principal is None:
        raise AuthFailed("Please log in.")
    user = principal.user
    policy.authorize(user, Action.USER_READ, user)
    token = accounts.token_on_loan(session, user)
    _ = translator(request_language(request))
    context = {
        "title": _("My account"),
        "nav": "account",
        "institution": user.institution,
        "statement_valid": accounts.has_valid_statement(user, now.date()),
        "tokens": [token] if token is not None else [],
        "sessions": list_sessions(session, user, settings, now),
    }
    return render(request, "account.html", context, principal=principal)


@router.post("/account/sessions/{session_id}/end")
def end_one_session(
    session_id: int,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    principal: FormPrincipal,
    now: NowDep,
) -> Response:
    user = principal.user
    policy.authorize(user, Action.SESSION_MANAGE_OWN)
    target = session.get(UserSession, session_id)
    if target is None or target.user_id != user.id:
        raise NotFound("Session not found.")  # someone else's session does not exist for us
    end_session(
        session,
        target,
        "ended_by_user",
        actor=user,
        source=request_source(request, settings),
        now=now,
    )
    if principal.session is not None and target.id == principal.session.id:
        response = redirect("/login?done=logged_out")
        clear_session_cookie(response, settings)
        return response
    return redirect("/account?done=session_ended")


@router.post("/account/logout-everywhere")
def log_out_everywhere(
    request: Request, session: SessionDep, settings: SettingsDep, principal: FormPrincipal
) -> Response:
    user = principal.user
    policy.authorize(user, Action.SESSION_MANAGE_OWN)
    end_all_sessions(
        session, user, "logout_everywhere", actor=user, source=request_source(request, settings)
    )
    response = redirect("/login?done=logged_out")
    clear_session_cookie(response, settings)
    return response
