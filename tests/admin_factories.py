"""Plain factory functions for the administration tests: rows written straight to the database,
with sensible defaults, so each test states only what matters to it."""

from __future__ import annotations

import secrets
from datetime import UTC, date, datetime, timedelta

from sqlalchemy.orm import Session

from orchestrator import sessions
from orchestrator.config import Environment, Settings
from orchestrator.models import (
    Institution,
    Role,
    TokenKind,
    TokenState,
    TotpToken,
    User,
    UserSession,
    UserStatus,
)


def make_institution(
    session: Session,
    *,
    name: str | None = None,
    country: str = "NL",
    authorised_from: date | None = None,
    authorised_until: date | None = None,
    allowed_networks: list[str] | None = None,
) -> Institution:
    today = datetime.now(UTC).date()
    institution = Institution(
        name=name or f"Institute {secrets.token_hex(4)}",
        country=country,
        authorised_from=authorised_from or today - timedelta(days=30),
        authorised_until=authorised_until or today + timedelta(days=365),
        allowed_networks=allowed_networks or [],
    )
    session.add(institution)
    session.flush()
    return institution


def make_user(
    session: Session,
    *,
    role: Role = Role.RESEARCHER,
    username: str | None = None,
    status: UserStatus = UserStatus.ACTIVE,
    institution: Institution | None = None,
) -> User:
    if role is Role.RESEARCHER and institution is None:
        institution = make_institution(session)
    user = User(
        username=username or f"{role.value.replace('_', '-')}-{secrets.token_hex(4)}",
        email="someone@example.org",
        full_name="Some One",
        role=role,
        status=status,
        institution_id=institution.id if institution is not None else None,
    )
    session.add(user)
    session.flush()
    return user


def make_token(
    session: Session,
    *,
    serial: str | None = None,
    state: TokenState = TokenState.IN_STOCK,
    kind: TokenKind = TokenKind.HARDWARE,
    user: User | None = None,
) -> TotpToken:
    token = TotpToken(
        serial=serial or f"T-{secrets.token_hex(5)}",
        kind=kind,
        seed_encrypted="not-a-real-seed",
        state=state,
        user_id=user.id if user is not None else None,
        loaned_at=datetime.now(UTC) if state is TokenState.ON_LOAN else None,
    )
    session.add(token)
    session.flush()
    return token


def make_user_session(session: Session, user: User) -> UserSession:
    """An open login session, opened the way a login opens one."""
    settings = Settings(environment=Environment.TEST)
    row, _secret = sessions.open_session(session, user, "192.0.2.10", "pytest", settings)
    return row
