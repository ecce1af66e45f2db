"""Accounts: creation by staff, activation by a one-time link, profile, role and status changes,
password resets and confidentiality statements. Every change is audited in the caller's
transaction; field-level privilege rules come from `policy`.

Functions take `actor: User | None`; `None` is the system (the `kluis` command line).
"""

from __future__ import annotations

import hashlib
import re
import secrets
import unicodedata
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.engine import CursorResult
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from orchestrator import audit, db, passwords, policy, sessions
from orchestrator.config import Settings
from orchestrator.errors import Conflict, Forbidden, Invalid, NotFound
from orchestrator.institutions import add_years, get_institution, is_authorised
from orchestrator.models import (
    STAFF_ROLES,
    ActivationLink,
    Role,
    TokenKind,
    TokenState,
    TotpToken,
    User,
    UserStatus,
    utcnow,
)

USERNAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9._-]{2,63}")
USERNAME_RULE = (
    "A username has 3 to 64 characters: letters a-z, digits, '.', '_' or '-', "
    "starting with a letter or a digit."
)
EMAIL_PATTERN = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
MAX_INPUT_LENGTH = 256  # before normalising: NFKC may expand, so cap what we normalise
MAX_EMAIL_LENGTH = 254
MAX_FULL_NAME_LENGTH = 200
MAX_REASON_LENGTH = 500
MAX_SECRET_LENGTH = 128
STATEMENT_MAX_YEARS = 1
# A statement may be dated a little ahead of this server's clock, not more.
CLOCK_SKEW = timedelta(minutes=5)
ACTIVATION_PATH = "/activate"


# --- normalisation --------------------------------------------------------------------------------


def normalise_username(raw: str) -> str:
    """NFKC, case-folded, trimmed; `Invalid` unless it matches the username rule.

    Full-width and other compatibility forms fold to ASCII (full-width "john" is "john" and
    collides with it); look-alikes from other scripts (Cyrillic "a", U+0430) do not fold and are
    refused.
    """
    if len(raw) > MAX_INPUT_LENGTH:
        raise Invalid(USERNAME_RULE, {"field": "username", "rule": "username_format"})
    name = unicodedata.normalize("NFKC", raw).casefold().strip()
    if not USERNAME_PATTERN.fullmatch(name):
        raise Invalid(USERNAME_RULE, {"field": "username", "rule": "username_format"})
    return name


def clean_email(raw: str) -> str:
    email = unicodedata.normalize("NFC", raw[: MAX_EMAIL_LENGTH + 1]).strip()
    if len(email) > MAX_EMAIL_LENGTH or not EMAIL_PATTERN.fullmatch(email) or _has_control(email):
        raise Invalid("The e-mail address is not valid.", {"field": "email"})
    local, _, domain = email.rpartition("@")
    return f"{local}@{domain.lower()}"


def clean_full_name(raw: str) -> str:
    name = unicodedata.normalize("NFC", raw[: MAX_FULL_NAME_LENGTH + 1]).strip()
    if not name or len(name) > MAX_FULL_NAME_LENGTH or _has_control(name):
        raise Invalid(
            f"The full name must have 1 to {MAX_FULL_NAME_LENGTH} characters, "
            "without control characters.",
            {"field": "full_name"},
        )
    return name


def clean_reason(raw: str | None, *, required: bool) -> str:
    reason = (raw or "").strip()
    if required and not reason:
        raise Invalid("Give a reason for this change.", {"field": "reason"})
    if len(reason) > MAX_REASON_LENGTH or _has_control(reason.replace("\n", " ")):
        raise Invalid(
            f"The reason must have at most {MAX_REASON_LENGTH} characters, "
            "without control characters.",
            {"field": "reason"},
        )
    return reason


def _has_control(text: str) -> bool:
    return any(unicodedata.category(char).startswith("C") for char in text)


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


# --- reading --------------------------------------------------------------------------------------


def get_user(session: Session, user_id: int) -> User:
    user = session.get(User, user_id)
    if user is None:
        raise NotFound("User not found.")
    return user


def find_user_by_username(session: Session, raw: str) -> User | None:
    try:
        username = normalise_username(raw)
    except Invalid:
        return None
    return session.scalars(select(User).where(User.username == username)).one_or_none()


def list_users(
    session: Session,
    viewer: User | None,
    *,
    query: str | None = None,
    role: Role | None = None,
    status: UserStatus | None = None,
    institution_id: int | None = None,
    limit: int = 50,
    offset: int = 0,
) -> tuple[list[User], int]:
    """One page of the accounts the viewer may see (all for the system), by username.

    `query` matches a part of the username, full name or e-mail address, case-insensitively.
    """
    stmt = select(User)
    if viewer is not None:
        stmt = policy.visible_users(stmt, viewer)
    query = _printable(query or "")[:MAX_INPUT_LENGTH].strip().lower()
    if query:
        pattern = "%" + _escape_like(query) + "%"
        stmt = stmt.where(
            or_(
                func.lower(User.username).like(pattern, escape="\\"),
                func.lower(User.full_name).like(pattern, escape="\\"),
                func.lower(User.email).like(pattern, escape="\\"),
            )
        )
    if role is not None:
        stmt = stmt.where(User.role == role)
    if status is not None:
        stmt = stmt.where(User.status == status)
    if institution_id is not None:
        stmt = stmt.where(User.institution_id == institution_id)
    total = session.scalar(select(func.count()).select_from(stmt.subquery())) or 0
    items = session.scalars(stmt.order_by(User.username).limit(limit).offset(offset)).all()
    return list(items), total


def _printable(text: str) -> str:
    """`text` without control characters (PostgreSQL refuses NUL in text parameters)."""
    return "".join(char for char in text if not unicodedata.category(char).startswith("C"))


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def token_on_loan(session: Session, user: User) -> TotpToken | None:
    """The user's token on loan, if any (there is at most one)."""
    return session.scalars(
        select(TotpToken).where(TotpToken.user_id == user.id, TotpToken.state == TokenState.ON_LOAN)
    ).first()


# --- creation and activation ----------------------------------------------------------------------


def create_account(
    session: Session,
    settings: Settings,
    *,
    username: str,
    email: str,
    full_name: str,
    role: Role,
    institution_id: int | None = None,
    actor: User | None = None,
    source: str = "",
    now: datetime | None = None,
) -> tuple[User, str]:
    """Add a PENDING account and return it with the secret of its activation link (shown once).

    Researchers belong to an institution whose authorisation covers today; staff belong to none.
    """
    now = now or utcnow()
    policy.authorize_role_grant(actor, None, role)
    name = normalise_username(username)
    email = clean_email(email)
    full_name = clean_full_name(full_name)
    _check_institution_for_role(session, role, institution_id, now.date())
    if find_user_by_username(session, name) is not None:
        raise Conflict(f"The username {name!r} is taken.", {"field": "username"})
    user = User(
        username=name,
        email=email,
        full_name=full_name,
        role=role,
        status=UserStatus.PENDING,
        institution_id=institution_id,
        status_changed_at=now,
    )
    session.add(user)
    try:
        with session.begin_nested():
            session.flush()
    except IntegrityError:
        raise Conflict(f"The username {name!r} is taken.", {"field": "username"}) from None
    audit.record(
        session,
        "user_created",
        actor=actor,
        object_type="user",
        object_id=user.id,
        source=source,
        details={"username": name, "role": role.value, "institution_id": institution_id},
    )
    secret = issue_activation_link(session, settings, user, actor=actor, source=source, now=now)
    return user, secret


def _check_institution_for_role(
    session: Session, role: Role, institution_id: int | None, today: date
) -> None:
    if role in STAFF_ROLES:
        if institution_id is not None:
            raise Invalid(
                "Staff accounts belong to no institution.",
                {"field": "institution_id", "rule": "staff_without_institution"},
            )
        return
    if institution_id is None:
        raise Invalid(
            "A researcher must belong to an institution.",
            {"field": "institution_id", "rule": "researcher_institution"},
        )
    try:
        institution = get_institution(session, institution_id)
    except NotFound:
        raise Invalid(
            f"There is no institution {institution_id}.", {"field": "institution_id"}
        ) from None
    if not is_authorised(institution, today):
        raise Invalid(
            f"The authorisation of {institution.name} runs from "
            f"{institution.authorised_from.isoformat()} to "
            f"{institution.authorised_until.isoformat()} and does not cover today: "
            "it cannot get new researchers.",
            {"field": "institution_id", "rule": "institution_authorised"},
        )


def activation_url(settings: Settings, secret: str) -> str:
    """The link to give the account holder. The secret is in the query, not the path: paths are
    logged by the request middleware, queries are not."""
    return f"{settings.effective_public_url}{ACTIVATION_PATH}?secret={secret}"


def issue_activation_link(
    session: Session,
    settings: Settings,
    user: User,
    *,
    actor: User | None = None,
    source: str = "",
    now: datetime | None = None,
) -> str:
    """A new one-time link for `user` (earlier unused links expire now); returns its secret.

    Only the SHA-256 of the secret is stored, so the secret is shown once and never again.
    """
    now = now or utcnow()
    if user.status not in (UserStatus.PENDING, UserStatus.ACTIVE):
        raise Conflict(
            f"The account is {user.status.value}: reactivate it before issuing an activation link."
        )
    session.execute(
        update(ActivationLink)
        .where(
            ActivationLink.user_id == user.id,
            ActivationLink.used_at.is_(None),
            ActivationLink.expires_at > now,
        )
        .values(expires_at=now)
    )
    secret = secrets.token_urlsafe(32)
    expires_at = now + timedelta(hours=settings.activation_link_hours)
    session.add(
        ActivationLink(secret_hash=hash_secret(secret), user_id=user.id, expires_at=expires_at)
    )
    session.flush()
    audit.record(
        session,
        "activation_link_issued",
        actor=actor,
        object_type="user",
        object_id=user.id,
        source=source,
        details={"expires_at": expires_at.isoformat()},
    )
    return secret


def activate_account(
    session: Session,
    settings: Settings,
    *,
    secret: str,
    password: str,
    source: str = "",
    now: datetime | None = None,
) -> User:
    """Set the password through a one-time link; a PENDING account becomes ACTIVE.

    Unknown link → `NotFound`; used or expired link → `Conflict`; a password that fails the
    policy → `Invalid` (and the link stays usable). Concurrent uses: exactly one succeeds.
    """
    now = now or utcnow()
    link = None
    if 0 < len(secret) <= MAX_SECRET_LENGTH:
        link = session.scalars(
            select(ActivationLink).where(ActivationLink.secret_hash == hash_secret(secret))
        ).one_or_none()
    if link is None:
        raise NotFound("This activation link is not valid. Ask the data steward for a new one.")
    if link.used_at is not None:
        raise Conflict("This activation link was used already. Ask the data steward for a new one.")
    if link.expires_at <= now:
        raise Conflict("This activation link has expired. Ask the data steward for a new one.")
    user = get_user(session, link.user_id)
    if user.status not in (UserStatus.PENDING, UserStatus.ACTIVE):
        raise Forbidden(f"This account is {user.status.value}.")
    passwords.check_password_policy(password, user.username)
    consumed = session.execute(
        update(ActivationLink)
        .where(
            ActivationLink.id == link.id,
            ActivationLink.used_at.is_(None),
            ActivationLink.expires_at > now,
        )
        .values(used_at=now)
        .execution_options(synchronize_session=False)
    )
    assert isinstance(consumed, CursorResult)
    if consumed.rowcount != 1:
        raise Conflict("This activation link was used already. Ask the data steward for a new one.")
    session.refresh(link)
    first = user.status is UserStatus.PENDING
    user.password_hash = passwords.hash_password(password)
    if first:
        user.status = UserStatus.ACTIVE
        user.status_changed_at = now
    ended = sessions.end_all_sessions(session, user, "password_changed", actor=user, source=source)
    session.flush()
    audit.record(
        session,
        "account_activated" if first else "password_set",
        actor=user,
        object_type="user",
        object_id=user.id,
        source=source,
        details={"sessions_ended": ended},
    )
    return user


# --- changes by staff -----------------------------------------------------------------------------


def check_version(user: User, version: int | None) -> None:
    """`Conflict` when the caller read another version than the current one (optimistic lock)."""
    db.check_version("The account", version, user.version)


def update_profile(
    session: Session,
    user: User,
    *,
    actor: User | None = None,
    source: str = "",
    full_name: str | None = None,
    email: str | None = None,
    institution_id: int | None = None,
    version: int | None = None,
    now: datetime | None = None,
) -> dict[str, list[Any]]:
    """Change name, e-mail or (for researchers) institution; returns the changes made."""
    now = now or utcnow()
    check_version(user, version)
    new: dict[str, Any] = {}
    if full_name is not None:
        new["full_name"] = clean_full_name(full_name)
    if email is not None:
        new["email"] = clean_email(email)
    if institution_id is not None and institution_id != user.institution_id:
        _check_institution_for_role(session, user.role, institution_id, now.date())
        new["institution_id"] = institution_id
    changes: dict[str, list[Any]] = {}
    for field, value in new.items():
        old = getattr(user, field)
        if value != old:
            changes[field] = [old, value]
            setattr(user, field, value)
    if changes:
        session.flush()
        audit.record(
            session,
            "user_updated",
            actor=actor,
            object_type="user",
            object_id=user.id,
            source=source,
            details={"changes": changes},
        )
    return changes


def change_role(
    session: Session,
    user: User,
    role: Role,
    *,
    actor: User | None = None,
    institution_id: int | None = None,
    source: str = "",
    version: int | None = None,
    now: datetime | None = None,
) -> bool:
    """Give `user` another role; returns whether anything changed.

    Staff have no institution (it is cleared); a new researcher needs an authorised institution
    (the given one, or the one they have). Their sessions end, so new rights start fresh.
    """
    now = now or utcnow()
    policy.authorize_role_grant(actor, user, role)
    check_version(user, version)
    if role is user.role:
        return False
    if role in STAFF_ROLES:
        if institution_id is not None:
            raise Invalid(
                "Staff accounts belong to no institution.",
                {"field": "institution_id", "rule": "staff_without_institution"},
            )
        new_institution = None
    else:
        new_institution = institution_id or user.institution_id
        _check_institution_for_role(session, role, new_institution, now.date())
    old = user.role
    user.role = role
    user.institution_id = new_institution
    ended = sessions.end_all_sessions(session, user, "role_changed", actor=actor, source=source)
    session.flush()
    audit.record(
        session,
        "user_role_changed",
        actor=actor,
        object_type="user",
        object_id=user.id,
        source=source,
        details={"from": old.value, "to": role.value, "sessions_ended": ended},
    )
    return True


def set_status(
    session: Session,
    user: User,
    status: UserStatus,
    *,
    actor: User | None = None,
    reason: str | None = None,
    source: str = "",
    version: int | None = None,
    now: datetime | None = None,
) -> int:
    """Suspend, close or reactivate an account; returns how many sessions were ended.

    Suspending or closing ends every session at once and expires unused activation links.
    Closing also revokes a *software* token on loan (nothing physical to give back); a hardware
    token stays on loan, because it is still in the person's hands: the steward records its
    return when it comes back. Reactivating (to ACTIVE) works from SUSPENDED and CLOSED.
    """
    now = now or utcnow()
    policy.authorize_status_change(actor, user)
    check_version(user, version)
    if status is UserStatus.PENDING:
        raise Invalid(
            "An account becomes pending only when it is created.",
            {"field": "status", "rule": "status_transition"},
        )
    if status is user.status:
        raise Conflict(f"The account is {status.value} already.")
    if status is UserStatus.ACTIVE and user.status is UserStatus.PENDING:
        raise Conflict("A pending account becomes active through its activation link.")
    reason = clean_reason(reason, required=status is not UserStatus.ACTIVE)
    old = user.status
    user.status = status
    user.status_changed_at = now
    ended = 0
    if status in (UserStatus.SUSPENDED, UserStatus.CLOSED):
        ended = sessions.end_all_sessions(
            session, user, f"account_{status.value}", actor=actor, source=source
        )
        session.execute(
            update(ActivationLink)
            .where(
                ActivationLink.user_id == user.id,
                ActivationLink.used_at.is_(None),
                ActivationLink.expires_at > now,
            )
            .values(expires_at=now)
        )
    session.flush()
    audit.record(
        session,
        "user_status_changed",
        actor=actor,
        object_type="user",
        object_id=user.id,
        source=source,
        details={"from": old.value, "to": status.value, "reason": reason, "sessions_ended": ended},
    )
    if status is UserStatus.CLOSED:
        _revoke_software_tokens(session, user, actor=actor, source=source, now=now)
    return ended


def _revoke_software_tokens(
    session: Session, user: User, *, actor: User | None, source: str, now: datetime
) -> None:
    software = session.scalars(
        select(TotpToken).where(
            TotpToken.user_id == user.id,
            TotpToken.state == TokenState.ON_LOAN,
            TotpToken.kind == TokenKind.SOFTWARE,
        )
    ).all()
    for token in software:
        token.state = TokenState.REVOKED
        token.revoked_at = now
        session.flush()
        audit.record(
            session,
            "token_revoked",
            actor=actor,
            object_type="token",
            object_id=token.id,
            source=source,
            details={"serial": token.serial, "user_id": user.id, "reason": "account closed"},
        )


def reset_password(
    session: Session,
    settings: Settings,
    user: User,
    *,
    actor: User | None = None,
    source: str = "",
    now: datetime | None = None,
) -> str:
    """Staff reset: the old password stops working, sessions end, a new link is returned."""
    now = now or utcnow()
    if actor is not None and actor.id == user.id:
        raise Forbidden("Reset your own password through another data steward.")
    if user.status not in (UserStatus.PENDING, UserStatus.ACTIVE):
        raise Conflict(f"The account is {user.status.value}: reactivate it first.")
    user.password_hash = None
    ended = sessions.end_all_sessions(session, user, "password_reset", actor=actor, source=source)
    session.flush()
    audit.record(
        session,
        "password_reset",
        actor=actor,
        object_type="user",
        object_id=user.id,
        source=source,
        details={"sessions_ended": ended},
    )
    return issue_activation_link(session, settings, user, actor=actor, source=source, now=now)


def record_statement(
    session: Session,
    user: User,
    *,
    signed_at: datetime,
    valid_until: date | None = None,
    actor: User | None = None,
    source: str = "",
    now: datetime | None = None,
) -> User:
    """Record a signed confidentiality statement, valid at most one year from signing
    (default: exactly one year)."""
    now = now or utcnow()
    if signed_at.tzinfo is None:
        raise Invalid("The signing time needs a time zone.", {"field": "signed_at"})
    if signed_at > now + CLOCK_SKEW:
        raise Invalid("A statement cannot be signed in the future.", {"field": "signed_at"})
    signed_day = signed_at.date()
    latest = add_years(signed_day, STATEMENT_MAX_YEARS)
    valid_until = valid_until or latest
    if valid_until <= signed_day:
        raise Invalid(
            "The statement must be valid after the day it is signed.",
            {"field": "valid_until", "rule": "until_after_signed"},
        )
    if valid_until > latest:
        raise Invalid(
            f"A confidentiality statement is valid for at most {STATEMENT_MAX_YEARS} year: "
            f"until {latest.isoformat()} at the latest.",
            {"field": "valid_until", "rule": "statement_max_validity"},
        )
    user.statement_signed_at = signed_at
    user.statement_valid_until = valid_until
    session.flush()
    audit.record(
        session,
        "statement_recorded",
        actor=actor,
        object_type="user",
        object_id=user.id,
        source=source,
        details={"signed_at": signed_at.isoformat(), "valid_until": valid_until.isoformat()},
    )
    return user


def has_valid_statement(user: User, today: date) -> bool:
    return user.statement_valid_until is not None and today <= user.statement_valid_until
