"""API tokens for automation and service-to-service calls: `kluis_<prefix>_<secret>`, scoped,
expiring, revocable, shown once and stored as the SHA-256 of the secret, found by the prefix.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import string
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta

from sqlalchemy import bindparam, or_, select, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from orchestrator import audit
from orchestrator.config import Settings
from orchestrator.errors import Conflict, Invalid
from orchestrator.models import ApiToken, User, UserStatus, utcnow
from orchestrator.policy import ALL_SCOPES, scopes_for_role

TOKEN_PREFIX = "kluis_"  # noqa: S105 (a marker, not a secret)
PREFIX_LENGTH = 8
PREFIX_ALPHABET = string.ascii_lowercase + string.digits
SECRET_BYTES = 32
MAX_NAME_LENGTH = 100
# Marking use is a write; once a minute is precise enough and spares the database.
LAST_USED_RESOLUTION = timedelta(minutes=1)
_PLAINTEXT = re.compile(r"kluis_([a-z0-9]{8})_([A-Za-z0-9_-]{20,64})")
# Compared against when the prefix is unknown, so both paths do the same work.
_NO_SECRET_HASH = hashlib.sha256(b"no such token").hexdigest()


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def allowed_scopes(user: User) -> frozenset[str]:
    return scopes_for_role(user.role)


def effective_scopes(token: ApiToken, user: User) -> frozenset[str]:
    """What a token may do now: its scopes, narrowed to what the owner's current role allows
    (a demoted user's old tokens lose what the new role lacks)."""
    return frozenset(token.scopes) & allowed_scopes(user)


def _check_scopes(user: User, scopes: Iterable[str]) -> list[str]:
    wanted = sorted(set(scopes))
    if not wanted:
        raise Invalid("Choose at least one scope.")
    unknown = [scope for scope in wanted if scope not in ALL_SCOPES]
    if unknown:
        raise Invalid(
            f"Unknown scope(s) {', '.join(unknown)}; known: {', '.join(sorted(ALL_SCOPES))}."
        )
    beyond = [scope for scope in wanted if scope not in allowed_scopes(user)]
    if beyond:
        raise Invalid(f"Your role ({user.role}) may not grant the scope(s) {', '.join(beyond)}.")
    return wanted


def create_api_token(
    session: Session,
    user: User,
    name: str,
    scopes: Sequence[str],
    expires_in_days: int,
    settings: Settings,
    *,
    now: datetime | None = None,
    source: str = "",
) -> tuple[ApiToken, str]:
    """A new token for `user` and its plaintext, which is never available again."""
    now = now or utcnow()
    name = name.strip()
    if not name or len(name) > MAX_NAME_LENGTH:
        raise Invalid(f"The token name must have 1 to {MAX_NAME_LENGTH} characters.")
    if not 1 <= expires_in_days <= settings.api_token_max_days:
        raise Invalid(f"A token expires after 1 to {settings.api_token_max_days} days.")
    if user.status is not UserStatus.ACTIVE:
        raise Invalid("Only active accounts can have API tokens.")
    granted = _check_scopes(user, scopes)
    prefix = _new_prefix(session)
    secret = secrets.token_urlsafe(SECRET_BYTES)
    token = ApiToken(
        prefix=prefix,
        secret_hash=_hash(secret),
        user_id=user.id,
        name=name,
        scopes=granted,
        created_at=now,
        expires_at=now + timedelta(days=expires_in_days),
    )
    session.add(token)
    session.flush()
    audit.record(
        session,
        "api_token_created",
        actor=user,
        object_type="api_token",
        object_id=token.id,
        source=source,
        details={"prefix": prefix, "name": name, "scopes": granted, "expires_at": token.expires_at},
    )
    return token, f"{TOKEN_PREFIX}{prefix}_{secret}"


def _new_prefix(session: Session, attempts: int = 5) -> str:
    for _ in range(attempts):
        prefix = "".join(secrets.choice(PREFIX_ALPHABET) for _ in range(PREFIX_LENGTH))
        if session.scalar(select(ApiToken.id).where(ApiToken.prefix == prefix)) is None:
            return prefix
    raise Conflict("Could not find a free token prefix; try again.")  # 36**8 makes this absurd


# Built once: this runs on every token-authenticated request.
_FIND_TOKEN = (
    select(ApiToken, User)
    .join(User, ApiToken.user_id == User.id)
    .where(ApiToken.prefix == bindparam("prefix"))
)


def find_api_token(session: Session, plaintext: str, now: datetime) -> ApiToken | None:
    """The live token this plaintext belongs to, of an active user; else `None`.

    The secret's hash is compared in constant time (also when the prefix is unknown). Marks the
    token used, writing at most once a minute.
    """
    match = _PLAINTEXT.fullmatch(plaintext)
    if match is None:
        return None
    prefix, secret = match.groups()
    row = session.execute(_FIND_TOKEN, {"prefix": prefix}).first()
    stored = row[0].secret_hash if row is not None else _NO_SECRET_HASH
    if not hmac.compare_digest(_hash(secret), stored) or row is None:
        return None
    token, user = row
    set_committed_value(token, "user", user)  # loaded already: no second query
    if token.revoked_at is not None or now >= token.expires_at:
        return None
    if user.status is not UserStatus.ACTIVE:
        return None
    if token.last_used_at is None or now - token.last_used_at >= LAST_USED_RESOLUTION:
        _mark_used(session, token, now)
    return token


def _mark_used(session: Session, token: ApiToken, now: datetime) -> None:
    # A conditional UPDATE, so concurrent requests with one token write once; on SQLite a request
    # that read before another committed cannot write, and the mark is left to that other one.
    try:
        session.execute(
            update(ApiToken)
            .where(
                ApiToken.id == token.id,
                or_(
                    ApiToken.last_used_at.is_(None),
                    ApiToken.last_used_at <= now - LAST_USED_RESOLUTION,
                ),
            )
            .values(last_used_at=now)
            .execution_options(synchronize_session=False)
        )
    except OperationalError:
        if session.get_bind().dialect.name != "sqlite":
            raise
        return
    set_committed_value(token, "last_used_at", now)


def list_api_tokens(session: Session, user: User) -> list[ApiToken]:
    """The user's tokens, newest first, revoked and expired ones included (with their dates)."""
    return list(
        session.scalars(
            select(ApiToken)
            .where(ApiToken.user_id == user.id)
            .order_by(ApiToken.created_at.desc(), ApiToken.id.desc())
        )
    )


def revoke_api_token(
    session: Session,
    token: ApiToken,
    *,
    actor: User | None = None,
    source: str = "",
    now: datetime | None = None,
) -> None:
    """Revoke at once (idempotent: a revoked token keeps its first revocation date)."""
    if token.revoked_at is not None:
        return
    token.revoked_at = now or utcnow()
    audit.record(
        session,
        "api_token_revoked",
        actor=actor,
        object_type="api_token",
        object_id=token.id,
        source=source,
        details={"prefix": token.prefix, "owner_id": token.user_id},
    )
