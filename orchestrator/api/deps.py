"""FastAPI dependencies as `Annotated` aliases: what a route may ask for."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated

import anyio
from fastapi import Depends, Request
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from orchestrator.apitokens import effective_scopes, find_api_token
from orchestrator.config import Settings
from orchestrator.errors import AuthFailed
from orchestrator.login import client_address
from orchestrator.models import ApiToken, User, UserSession, utcnow
from orchestrator.policy import scopes_for_role
from orchestrator.sessions import check_csrf, find_session


async def get_settings(request: Request) -> Settings:
    # async: no I/O, so no trip through the thread pool on every request
    settings: Settings = request.app.state.settings
    return settings


def get_engine(request: Request) -> Engine:
    engine: Engine = request.app.state.engine
    return engine


async def get_session(request: Request) -> AsyncIterator[Session]:
    """One unit of work per request: committed when the route returns, rolled back if it raises.

    Scoped to the route function, so the commit happens before the response is sent. A session
    connects on first use, so it is made on the event loop; only the end (commit or rollback, and
    returning the connection) is I/O and goes through the thread pool: one trip, not two.
    """
    # Unsafe methods write: on SQLite they take the write lock at BEGIN (see db.py).
    writes = request.method not in SAFE_METHODS
    factory: sessionmaker[Session] = (
        request.app.state.write_sessionmaker if writes else request.app.state.sessionmaker
    )
    session = factory()
    try:
        yield session
    except BaseException:
        # Shielded: also when the request is cancelled (client gone), the connection goes back.
        with anyio.CancelScope(shield=True):
            await run_in_threadpool(_finish, session, False)
        raise
    await run_in_threadpool(_finish, session, True)


def _finish(session: Session, commit: bool) -> None:
    try:
        if commit:
            session.commit()
        else:
            session.rollback()
    finally:
        session.close()


SettingsDep = Annotated[Settings, Depends(get_settings)]
EngineDep = Annotated[Engine, Depends(get_engine)]
SessionDep = Annotated[Session, Depends(get_session, scope="function")]


# --- authentication ------------------------------------------------------------------------------

SESSION_COOKIE = "kluis_session"
CSRF_HEADER = "X-CSRF-Token"
CSRF_FORM_FIELD = "csrf_token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


async def get_now() -> datetime:
    """The current time; tests override this dependency to move the clock. (async: no I/O, so no
    trip through the thread pool.)"""
    return utcnow()


NowDep = Annotated[datetime, Depends(get_now)]


def session_cookie_name(settings: Settings) -> str:
    """`__Host-kluis_session`: the prefix makes browsers insist on Secure, Path=/ and no Domain,
    so no sibling host can set or shadow it. Browsers refuse that prefix without Secure, so local
    http development (`cookie_secure=False`) uses the plain name."""
    return f"__Host-{SESSION_COOKIE}" if settings.cookie_secure else SESSION_COOKIE


def request_source(request: Request, settings: Settings) -> str:
    """The client's address, honouring `X-Forwarded-For` only from trusted proxies."""
    peer = request.client.host if request.client is not None else ""
    return client_address(peer, request.headers.get("x-forwarded-for"), settings.trusted_proxies)


@dataclass(frozen=True)
class Principal:
    """Who is calling: a user with either a browser session or an API token, and the scopes the
    call carries (a session carries everything the role allows; a token, what it was given)."""

    user: User
    session: UserSession | None = None
    api_token: ApiToken | None = None
    scopes: frozenset[str] = field(default_factory=frozenset)

    def has_scope(self, scope: str) -> bool:
        return scope in self.scopes


async def submitted_csrf_token(request: Request) -> str | None:
    """The CSRF token of an unsafe request: the header, or else the portal's form field."""
    if request.method in SAFE_METHODS:
        return None
    header = request.headers.get(CSRF_HEADER)
    if header is not None:
        return header
    if request.headers.get("content-type", "").startswith(FORM_TYPES):
        value = (await request.form()).get(CSRF_FORM_FIELD)
        return value if isinstance(value, str) else None
    return None


def _authenticate(
    request: Request, session: Session, settings: Settings, now: datetime, csrf: str | None
) -> Principal | None:
    authorization = request.headers.get("authorization")
    if authorization is not None:
        scheme, _, credentials = authorization.partition(" ")
        if scheme.lower() != "bearer":
            raise AuthFailed("Unsupported authorization scheme: use Bearer with an API token.")
        token = find_api_token(session, credentials.strip(), now)
        if token is None:
            raise AuthFailed("Invalid, expired or revoked API token.")
        # Bearer tokens are not sent by browsers on their own: no CSRF check needed.
        return Principal(token.user, None, token, effective_scopes(token, token.user))
    secret = request.cookies.get(session_cookie_name(settings))
    if not secret:
        return None
    user_session = find_session(session, secret, settings, now)
    if user_session is None:
        return None
    if request.method not in SAFE_METHODS:
        check_csrf(settings, user_session, csrf)
    user = user_session.user
    return Principal(user, user_session, None, scopes_for_role(user.role))


def _has_credentials(request: Request, settings: Settings) -> bool:
    return "authorization" in request.headers or session_cookie_name(settings) in request.cookies


async def get_principal(
    request: Request, session: SessionDep, settings: SettingsDep, now: NowDep
) -> Principal:
    """Authenticate by session cookie or `Authorization: Bearer kluis_...`; 401 otherwise.

    Cookie-authenticated unsafe requests must carry the session's CSRF token (403 otherwise).
    Only the database lookup goes through the thread pool (one trip per request).
    """
    principal = None
    if _has_credentials(request, settings):
        csrf = await submitted_csrf_token(request)
        principal = await run_in_threadpool(_authenticate, request, session, settings, now, csrf)
    if principal is None:
        raise AuthFailed("Not logged in, or the session has ended.")
    return principal


async def get_optional_principal(
    request: Request, session: SessionDep, settings: SettingsDep, now: NowDep
) -> Principal | None:
    """Like `get_principal`, but `None` for an anonymous caller or an ended session. Invalid
    bearer tokens and failed CSRF checks are still refused: they are never "anonymous"."""
    if not _has_credentials(request, settings):
        return None
    csrf = await submitted_csrf_token(request)
    return await run_in_threadpool(_authenticate, request, session, settings, now, csrf)


CurrentPrincipal = Annotated[Principal, Depends(get_principal)]
OptionalPrincipal = Annotated[Principal | None, Depends(get_optional_principal)]
