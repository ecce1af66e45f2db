"""Server-side login sessions: opening (a fresh secret at every login), finding with idle and
absolute timeouts, ending one or all, CSRF tokens bound to a session, and step-up.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import datetime, timedelta
from typing import NoReturn

from sqlalchemy import bindparam, select, update
from sqlalchemy.engine import CursorResult
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from orchestrator import audit, throttle, totp
from orchestrator.config import Settings
from orchestrator.errors import Forbidden
from orchestrator.models import TokenState, TotpToken, User, UserSession, UserStatus, utcnow

SECRET_BYTES = 32
MAX_COOKIE_LENGTH = 128  # token_urlsafe(32) is 43 characters; anything much longer is not ours
# Sliding the idle timeout writes the row; once a minute is precise enough and spares the database.
LAST_SEEN_RESOLUTION = timedelta(minutes=1)
USER_AGENT_LENGTH = 200
SOURCE_LENGTH = 45
STEP_UP_FAILED = "Invalid code"


class StepUpRequired(Forbidden):
    code = "step_up_required"


class StepUpFailed(Forbidden):
    code = "step_up_failed"


class CsrfFailed(Forbidden):
    code = "csrf_failed"


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def open_session(
    session: Session,
    user: User,
    source: str,
    user_agent: str,
    settings: Settings,
    now: datetime | None = None,
) -> tuple[UserSession, str]:
    """A new session for `user` and the secret for its cookie (shown once, stored as SHA-256).

    Every call makes a new secret and row: an identifier chosen before login is never adopted.
    """
    now = now or utcnow()
    secret = secrets.token_urlsafe(SECRET_BYTES)
    user_session = UserSession(
        secret_hash=hash_secret(secret),
        user_id=user.id,
        created_at=now,
        last_seen_at=now,
        expires_at=now + timedelta(hours=settings.session_absolute_hours),
        source=source[:SOURCE_LENGTH],
        user_agent=user_agent[:USER_AGENT_LENGTH],
    )
    session.add(user_session)
    session.flush()
    return user_session, secret


def is_live(user_session: UserSession, settings: Settings, now: datetime) -> bool:
    """Not ended, not past its absolute timeout, and used within the idle timeout."""
    idle = timedelta(minutes=settings.session_idle_minutes)
    return (
        user_session.ended_at is None
        and now < user_session.expires_at
        and now < user_session.last_seen_at + idle
    )


# Built once: this runs on every authenticated request, and building the statement costs more
# than running it (measured in bench/auth.py, P6).
_FIND_SESSION = (
    select(UserSession, User)
    .join(User, UserSession.user_id == User.id)
    .where(UserSession.secret_hash == bindparam("secret_hash"))
)


def find_session(
    session: Session, cookie_secret: str, settings: Settings, now: datetime
) -> UserSession | None:
    """The live session whose cookie secret this is, of an active user; else `None`.

    A timed-out session is not written to here (a failed request rolls back anyway): it is simply
    never found again. Slides the idle timeout, writing at most once a minute.
    """
    if not cookie_secret or len(cookie_secret) > MAX_COOKIE_LENGTH:
        return None
    row = session.execute(_FIND_SESSION, {"secret_hash": hash_secret(cookie_secret)}).first()
    if row is None:
        return None
    user_session, user = row
    set_committed_value(user_session, "user", user)  # loaded already: no second query
    if user.status is not UserStatus.ACTIVE or not is_live(user_session, settings, now):
        return None
    if now - user_session.last_seen_at >= LAST_SEEN_RESOLUTION:
        slide_last_seen(session, user_session, now)
    return user_session


def slide_last_seen(session: Session, user_session: UserSession, now: datetime) -> None:
    """Record use now. A conditional UPDATE, so concurrent requests on one session write once.

    On SQLite a request that read before another one committed cannot write ("database is
    locked"); the slide is then skipped, since a concurrent request has just made it.
    """
    try:
        session.execute(
            update(UserSession)
            .where(
                UserSession.id == user_session.id,
                UserSession.last_seen_at <= now - LAST_SEEN_RESOLUTION,
            )
            .values(last_seen_at=now)
            .execution_options(synchronize_session=False)
        )
    except OperationalError:
        if session.get_bind().dialect.name != "sqlite":
            raise
        return
    set_committed_value(user_session, "last_seen_at", now)


def list_sessions(
    session: Session, user: User, settings: Settings, now: datetime
) -> list[UserSession]:
    """The user's live sessions, newest first."""
    rows = session.scalars(
        select(UserSession)
        .where(UserSession.user_id == user.id, UserSession.ended_at.is_(None))
        .order_by(UserSession.created_at.desc(), UserSession.id.desc())
    ).all()
    return [row for row in rows if is_live(row, settings, now)]


def end_session(
    session: Session,
    user_session: UserSession,
    reason: str,
    *,
    actor: User | None = None,
    source: str = "",
    now: datetime | None = None,
) -> None:
    """End one session (idempotent: an ended session keeps its first end)."""
    if user_session.ended_at is not None:
        return
    user_session.ended_at = now or utcnow()
    user_session.end_reason = reason[:40]
    audit.record(
        session,
        "session_ended",
        actor=actor,
        object_type="user_session",
        object_id=user_session.id,
        source=source,
        details={"user_id": user_session.user_id, "reason": reason},
    )


def end_all_sessions(
    session: Session, user: User, reason: str, *, actor: User | None = None, source: str = ""
) -> int:
    """End every open session of `user` at once; returns how many were open.

    For "log out everywhere", and for whoever disables an account or revokes its token: the next
    request on any of those sessions is refused. Audited in the caller's transaction.
    """
    result = session.execute(
        update(UserSession)
        .where(UserSession.user_id == user.id, UserSession.ended_at.is_(None))
        .values(ended_at=utcnow(), end_reason=reason[:40])
        .execution_options(synchronize_session="fetch")
    )
    assert isinstance(result, CursorResult)
    ended = result.rowcount
    audit.record(
        session,
        "sessions_ended_all",
        actor=actor,
        object_type="user",
        object_id=user.id,
        source=source,
        details={"reason": reason, "count": ended},
    )
    return ended


# --- CSRF ----------------------------------------------------------------------------------------


def csrf_token(settings: Settings, user_session: UserSession) -> str:
    """The CSRF token for this session: derived, never stored, worthless for any other session."""
    message = ("csrf:" + user_session.secret_hash).encode()
    return hmac.new(settings.effective_secret_key.encode(), message, hashlib.sha256).hexdigest()


def check_csrf(settings: Settings, user_session: UserSession, submitted: str | None) -> None:
    """Raise `CsrfFailed` unless `submitted` is this session's CSRF token."""
    expected = csrf_token(settings, user_session)
    if submitted is None or not hmac.compare_digest(
        expected.encode(), submitted.encode("utf-8", "surrogatepass")
    ):
        raise CsrfFailed("Missing or invalid CSRF token: reload the page and try again.")


# --- step-up -------------------------------------------------------------------------------------


def step_up(
    session: Session,
    user_session: UserSession,
    user: User,
    code: str,
    settings: Settings,
    now: datetime,
) -> datetime:
    """Verify a fresh code from the user's token (consuming its time step) and mark the session
    as stepped up; returns until when the step-up counts.

    Like `login.log_in`, the checks end with a commit and the step is consumed first thing in the
    next transaction (which the caller commits). Failures count as failed logins for throttling,
    so a stolen session cannot be used to guess codes faster than the login form allows. On
    failure the session is rolled back, the failure is committed in its own transaction and
    `StepUpFailed` (or `Throttled`) is raised.
    """
    source = user_session.source
    verdict = throttle.check_throttle(session, settings, user.username, source, now)
    if verdict.retry_after:
        _refuse(session, user, user_session, now, "throttled", verdict)
    tokens = session.scalars(
        select(TotpToken).where(TotpToken.user_id == user.id, TotpToken.state == TokenState.ON_LOAN)
    ).all()
    matches = totp.match_tokens(settings, tokens, code, now)
    if not matches:
        _refuse(session, user, user_session, now, "wrong_code" if tokens else "no_token", None)
    # As at login: end the reading transaction, then start the next one with the write.
    session.commit()
    for match in matches:
        try:
            consumed = totp.consume_step(session, match.token_id, match.step)
        except OperationalError:
            consumed = False  # SQLite only: a concurrent use of the code won
        if consumed:
            user_session.stepped_up_at = now
            audit.record(
                session,
                "step_up_succeeded",
                actor=user,
                object_type="user_session",
                object_id=user_session.id,
                source=source,
                details={"token_serial": match.serial},
            )
            return now + timedelta(minutes=settings.stepup_max_age_minutes)
    _refuse(session, user, user_session, now, "wrong_code", None)


def _refuse(
    session: Session,
    user: User,
    user_session: UserSession,
    now: datetime,
    reason: str,
    verdict: throttle.Verdict | None,
) -> NoReturn:
    username, session_id, source = user.username, user_session.id, user_session.source
    session.rollback()
    if verdict is None:
        throttle.record_attempt(session, username, source, False, now)
        session.flush()  # write first, read after (SQLite; see `login.log_in`)
    audit.record(
        session,
        "step_up_throttled" if verdict else "step_up_failed",
        actor=user,
        object_type="user_session",
        object_id=session_id,
        source=source,
        details={"reason": reason},
    )
    session.commit()
    if verdict is not None:
        raise throttle.Throttled(verdict.retry_after, verdict.scope)
    raise StepUpFailed(STEP_UP_FAILED)


def require_recent_step_up(
    user_session: UserSession | None, settings: Settings, now: datetime
) -> None:
    """Raise `StepUpRequired` unless this session stepped up within `stepup_max_age_minutes`.

    API tokens have no session and so can never perform an action that needs step-up.
    """
    max_age = timedelta(minutes=settings.stepup_max_age_minutes)
    if (
        user_session is None
        or user_session.stepped_up_at is None
        or now - user_session.stepped_up_at > max_age
    ):
        raise StepUpRequired("This action needs a fresh code from your token.")
