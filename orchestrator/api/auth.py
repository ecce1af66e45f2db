"""Authentication routes under `/api/auth`: log in and out, the caller's sessions, step-up, and
the caller's API tokens. Who may do what beyond "who is this" is `policy`'s business."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Request, Response
from sqlalchemy import select

from orchestrator import apitokens, login, sessions
from orchestrator.api.deps import (
    CurrentPrincipal,
    NowDep,
    Principal,
    SessionDep,
    SettingsDep,
    request_source,
    session_cookie_name,
)
from orchestrator.config import Settings
from orchestrator.errors import Forbidden, NotFound
from orchestrator.models import ApiToken, UserSession
from orchestrator.schemas import (
    ApiTokenCreate,
    ApiTokenCreatedRead,
    ApiTokenRead,
    LoginCreate,
    LoginRead,
    LogoutRead,
    MeRead,
    StepUpCreate,
    StepUpRead,
    UserSessionRead,
)

router = APIRouter(prefix="/api/auth", tags=["authentication"])

REFUSED: dict[int | str, dict[str, Any]] = {
    401: {"description": "Not authenticated (one generic message for every login failure)."},
    403: {"description": "Missing CSRF token, or step-up required."},
}
USER_AGENT_LENGTH = 200
# Row ids fit a 32-bit integer; larger path values are refused before reaching the database.
RowId = Annotated[int, Path(ge=1, le=2**31 - 1)]


def _me(principal: Principal) -> MeRead:
    user = principal.user
    return MeRead(
        id=user.id,
        username=user.username,
        full_name=user.full_name,
        email=user.email,
        role=user.role,
        institution_id=user.institution_id,
        statement_valid_until=user.statement_valid_until,
        auth="session" if principal.session is not None else "api_token",
        scopes=sorted(principal.scopes),
        session_id=principal.session.id if principal.session is not None else None,
        stepped_up_at=principal.session.stepped_up_at if principal.session is not None else None,
    )


def _set_cookie(response: Response, settings: Settings, secret: str) -> None:
    # No Max-Age: the cookie dies with the browser; the server enforces idle and absolute limits.
    response.set_cookie(
        session_cookie_name(settings),
        secret,
        httponly=True,
        secure=settings.cookie_secure,
        samesite="strict",
        path="/",
    )


def _clear_cookie(response: Response, settings: Settings) -> None:
    response.delete_cookie(
        session_cookie_name(settings),
        httponly=True,
        secure=settings.cookie_secure,
        samesite="strict",
        path="/",
    )


def _require_session(principal: Principal) -> UserSession:
    if principal.session is None:
        raise Forbidden("This needs a browser session; API tokens cannot do it.")
    return principal.session


@router.post(
    "/login",
    responses={
        401: REFUSED[401],
        429: {"description": "Too many failed attempts; see Retry-After."},
    },
)
def log_in(
    body: LoginCreate,
    request: Request,
    response: Response,
    session: SessionDep,
    settings: SettingsDep,
    now: NowDep,
) -> LoginRead:
    """Log in with username, password and the current code of your token.

    Sets the session cookie (a new one at every login; a cookie sent along is never adopted) and
    returns the CSRF token to send as `X-CSRF-Token` with every unsafe request.
    """
    source = request_source(request, settings)
    user_agent = request.headers.get("user-agent", "")[:USER_AGENT_LENGTH]
    user_session, secret = login.log_in(
        session, settings, body.username, body.password, body.code, source, user_agent, now
    )
    previous = request.cookies.get(session_cookie_name(settings))
    if previous:
        # The browser had a session already (perhaps another user's): it ends here.
        old = sessions.find_session(session, previous, settings, now)
        if old is not None and old.id != user_session.id:
            sessions.end_session(session, old, "replaced_by_login", source=source, now=now)
    _set_cookie(response, settings, secret)
    principal = Principal(
        user_session.user, user_session, None, apitokens.allowed_scopes(user_session.user)
    )
    return LoginRead(
        user=_me(principal),
        csrf_token=sessions.csrf_token(settings, user_session),
        expires_at=user_session.expires_at,
    )


@router.post("/logout", status_code=204, responses=REFUSED)
def log_out(
    principal: CurrentPrincipal,
    request: Request,
    response: Response,
    session: SessionDep,
    settings: SettingsDep,
    now: NowDep,
) -> None:
    """End this session and clear its cookie."""
    user_session = _require_session(principal)
    source = request_source(request, settings)
    sessions.end_session(
        session, user_session, "logout", actor=principal.user, source=source, now=now
    )
    _clear_cookie(response, settings)


@router.post("/logout-everywhere", responses=REFUSED)
def log_out_everywhere(
    principal: CurrentPrincipal,
    request: Request,
    response: Response,
    session: SessionDep,
    settings: SettingsDep,
) -> LogoutRead:
    """End every session of the caller, on every device, this one included."""
    _require_session(principal)
    source = request_source(request, settings)
    ended = sessions.end_all_sessions(
        session, principal.user, "logout_everywhere", actor=principal.user, source=source
    )
    _clear_cookie(response, settings)
    return LogoutRead(ended=ended)


@router.get("/me", responses=REFUSED)
async def me(principal: CurrentPrincipal) -> MeRead:
    """Who is calling. (async: everything it reads was loaded by authentication.)"""
    return _me(principal)


@router.get("/sessions", responses=REFUSED)
def list_sessions(
    principal: CurrentPrincipal, session: SessionDep, settings: SettingsDep, now: NowDep
) -> list[UserSessionRead]:
    """The caller's live sessions, newest first; `current` marks the one making this request."""
    current = principal.session.id if principal.session is not None else None
    return [
        UserSessionRead.model_validate(row).model_copy(update={"current": row.id == current})
        for row in sessions.list_sessions(session, principal.user, settings, now)
    ]


@router.delete("/sessions/{session_id}", status_code=204, responses={**REFUSED, 404: {}})
def end_session(
    session_id: RowId,
    principal: CurrentPrincipal,
    request: Request,
    response: Response,
    session: SessionDep,
    settings: SettingsDep,
    now: NowDep,
) -> None:
    """End one of the caller's sessions. Another user's session is reported as not found."""
    target = session.get(UserSession, session_id)
    if target is None or target.user_id != principal.user.id or target.ended_at is not None:
        raise NotFound("Session not found.")
    source = request_source(request, settings)
    sessions.end_session(
        session, target, "ended_by_user", actor=principal.user, source=source, now=now
    )
    if principal.session is not None and principal.session.id == target.id:
        _clear_cookie(response, settings)


@router.post("/step-up", responses={**REFUSED, 429: {}})
def step_up(
    body: StepUpCreate,
    principal: CurrentPrincipal,
    session: SessionDep,
    settings: SettingsDep,
    now: NowDep,
) -> StepUpRead:
    """Confirm a sensitive action with a fresh code; valid for `stepup_max_age_minutes`."""
    user_session = _require_session(principal)
    valid_until = sessions.step_up(session, user_session, principal.user, body.code, settings, now)
    return StepUpRead(stepped_up_at=now, valid_until=valid_until)


@router.post("/tokens", status_code=201, responses=REFUSED)
def create_token(
    body: ApiTokenCreate,
    principal: CurrentPrincipal,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    now: NowDep,
) -> ApiTokenCreatedRead:
    """Create an API token; the `token` in the answer is shown this once and never again.

    Needs a browser session that stepped up recently: a token cannot mint tokens, and a stolen
    session cookie alone cannot either.
    """
    user_session = _require_session(principal)
    sessions.require_recent_step_up(user_session, settings, now)
    token, plaintext = apitokens.create_api_token(
        session,
        principal.user,
        body.name,
        body.scopes,
        body.expires_in_days,
        settings,
        now=now,
        source=request_source(request, settings),
    )
    return ApiTokenCreatedRead(**ApiTokenRead.model_validate(token).model_dump(), token=plaintext)


@router.get("/tokens", responses=REFUSED)
def list_tokens(principal: CurrentPrincipal, session: SessionDep) -> list[ApiTokenRead]:
    return [
        ApiTokenRead.model_validate(row)
        for row in apitokens.list_api_tokens(session, principal.user)
    ]


@router.delete("/tokens/{token_id}", status_code=204, responses={**REFUSED, 404: {}})
def revoke_token(
    token_id: RowId,
    principal: CurrentPrincipal,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    now: NowDep,
) -> None:
    """Revoke one of the caller's API tokens (at once). Another user's is not found."""
    token = session.scalar(
        select(ApiToken).where(ApiToken.id == token_id, ApiToken.user_id == principal.user.id)
    )
    if token is None:
        raise NotFound("API token not found.")
    apitokens.revoke_api_token(
        session, token, actor=principal.user, source=request_source(request, settings), now=now
    )
