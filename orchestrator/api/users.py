"""Account routes: `/api/users` (staff administration, and each user's own account) and
`/api/activate` (setting a password through a one-time link: the only route without a login)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request

from orchestrator import accounts
from orchestrator.api.access import allow, require_step_up
from orchestrator.api.deps import (
    CurrentPrincipal,
    NowDep,
    SessionDep,
    SettingsDep,
    request_source,
)
from orchestrator.config import Settings
from orchestrator.models import Role, UserStatus
from orchestrator.policy import Action
from orchestrator.schemas import (
    ActivationCreate,
    ActivationLinkRead,
    StatementCreate,
    UserCreate,
    UserCreatedRead,
    UserPage,
    UserRead,
    UserUpdate,
)

router = APIRouter(tags=["users"])

UserId = Annotated[int, Path(ge=1, le=2_147_483_647)]
Limit = Annotated[int, Query(ge=1, le=200)]
Offset = Annotated[int, Query(ge=0, le=1_000_000)]
STEP_UP: dict[int | str, dict[str, Any]] = {
    403: {"description": "Forbidden, or a recent step-up is needed."}
}


def _link(settings: Settings, secret: str, now: datetime) -> ActivationLinkRead:
    return ActivationLinkRead(
        activation_url=accounts.activation_url(settings, secret),
        expires_at=now + timedelta(hours=settings.activation_link_hours),
    )


@router.get("/api/users")
def list_users(
    principal: CurrentPrincipal,
    session: SessionDep,
    q: Annotated[str | None, Query(max_length=100)] = None,
    role: Role | None = None,
    status: UserStatus | None = None,
    institution_id: Annotated[int | None, Query(ge=1, le=2_147_483_647)] = None,
    limit: Limit = 50,
    offset: Offset = 0,
) -> UserPage:
    """The accounts the caller may see (a researcher: only their own), by username."""
    allow(principal, Action.USER_READ)
    items, total = accounts.list_users(
        session,
        principal.user,
        query=q,
        role=role,
        status=status,
        institution_id=institution_id,
        limit=limit,
        offset=offset,
    )
    return UserPage(
        items=[UserRead.model_validate(u) for u in items], total=total, limit=limit, offset=offset
    )


@router.post("/api/users", status_code=201)
def create_user(
    body: UserCreate,
    principal: CurrentPrincipal,
    session: SessionDep,
    settings: SettingsDep,
    now: NowDep,
    request: Request,
) -> UserCreatedRead:
    """A pending account and its one-time activation link (shown only in this answer)."""
    allow(principal, Action.USER_CREATE)
    user, secret = accounts.create_account(
        session,
        settings,
        username=body.username,
        email=body.email,
        full_name=body.full_name,
        role=body.role,
        institution_id=body.institution_id,
        actor=principal.user,
        source=request_source(request, settings),
        now=now,
    )
    return UserCreatedRead(
        user=UserRead.model_validate(user), activation=_link(settings, secret, now)
    )


@router.get("/api/users/{user_id}")
def get_user(user_id: UserId, principal: CurrentPrincipal, session: SessionDep) -> UserRead:
    user = accounts.get_user(session, user_id)
    allow(principal, Action.USER_READ, user)
    return UserRead.model_validate(user)


@router.patch("/api/users/{user_id}", responses=STEP_UP)
def update_user(
    user_id: UserId,
    body: UserUpdate,
    principal: CurrentPrincipal,
    session: SessionDep,
    settings: SettingsDep,
    now: NowDep,
    request: Request,
) -> UserRead:
    """Change profile fields, role and/or status in one transaction.

    Role and status changes need a recent step-up; nobody changes their own role or status.
    """
    user = accounts.get_user(session, user_id)
    given = {f for f in body.model_fields_set if getattr(body, f) is not None}
    profile = given & {"full_name", "email"}
    if body.role is None and body.institution_id is not None:
        profile.add("institution_id")  # with a role change, the institution goes with the role
    if profile or not given - {"version", "reason"}:
        allow(principal, Action.USER_UPDATE, user)
    if body.role is not None:
        allow(principal, Action.USER_ROLE_CHANGE, user)
    if body.status is not None:
        allow(principal, Action.USER_DISABLE, user)
    if body.role is not None or body.status is not None:
        require_step_up(principal, settings, now)
    accounts.check_version(user, body.version)
    source = request_source(request, settings)
    if body.role is not None:
        accounts.change_role(
            session,
            user,
            body.role,
            actor=principal.user,
            institution_id=body.institution_id,
            source=source,
            now=now,
        )
    if profile:
        accounts.update_profile(
            session,
            user,
            actor=principal.user,
            source=source,
            full_name=body.full_name,
            email=body.email,
            institution_id=body.institution_id if body.role is None else None,
            now=now,
        )
    if body.status is not None:
        accounts.set_status(
            session,
            user,
            body.status,
            actor=principal.user,
            reason=body.reason,
            source=source,
            now=now,
        )
    return UserRead.model_validate(user)


@router.post("/api/users/{user_id}/activation-link", status_code=201, responses=STEP_UP)
def issue_activation_link(
    user_id: UserId,
    principal: CurrentPrincipal,
    session: SessionDep,
    settings: SettingsDep,
    now: NowDep,
    request: Request,
) -> ActivationLinkRead:
    """A new one-time link. For an active account this is a password reset: the old password
    stops working and its sessions end. Needs a recent step-up."""
    user = accounts.get_user(session, user_id)
    allow(principal, Action.USER_RESET_PASSWORD, user)
    require_step_up(principal, settings, now)
    source = request_source(request, settings)
    if user.status is UserStatus.ACTIVE:
        secret = accounts.reset_password(
            session, settings, user, actor=principal.user, source=source, now=now
        )
    else:
        secret = accounts.issue_activation_link(
            session, settings, user, actor=principal.user, source=source, now=now
        )
    return _link(settings, secret, now)


@router.post("/api/users/{user_id}/statement")
def record_statement(
    user_id: UserId,
    body: StatementCreate,
    principal: CurrentPrincipal,
    session: SessionDep,
    settings: SettingsDep,
    now: NowDep,
    request: Request,
) -> UserRead:
    """Record a signed confidentiality statement (valid at most one year)."""
    user = accounts.get_user(session, user_id)
    allow(principal, Action.USER_STATEMENT, user)
    accounts.record_statement(
        session,
        user,
        signed_at=body.signed_at,
        valid_until=body.valid_until,
        actor=principal.user,
        source=request_source(request, settings),
        now=now,
    )
    return UserRead.model_validate(user)


@router.post(
    "/api/activate",
    responses={404: {"description": "Unknown link."}, 409: {"description": "Used or expired."}},
)
def activate(
    body: ActivationCreate,
    session: SessionDep,
    settings: SettingsDep,
    now: NowDep,
    request: Request,
) -> UserRead:
    """Set the password with the secret from an activation link; the link then stops working."""
    user = accounts.activate_account(
        session,
        settings,
        secret=body.secret,
        password=body.password,
        source=request_source(request, settings),
        now=now,
    )
    return UserRead.model_validate(user)
