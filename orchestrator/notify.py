"""E-mail notifications through an outbox: messages are rows written in the transaction of the
change they report, and delivered over SMTP after commit, retried with backoff, never lost.

Settings: the functions that write messages read them from `session.info["settings"]` (the API's
session, the scheduler's and the command line's carry them), so domain code can notify with the
session it already has: `notify_project_event(session, project, event, actor, comment=...)`.

Delivery is at-least-once: a message is claimed (attempt counted, leased) in one short
transaction, sent, then marked sent in another. A crash between sending and marking makes it due
again when the lease ends, so it may be sent twice, never zero times; each message carries a
stable `Message-ID` (`<kluis.outbox.ID@domain>`) by which a duplicate can be recognised.
"""

from __future__ import annotations

import functools
import smtplib
import ssl
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime
from enum import Enum
from pathlib import Path
from typing import Any

import jinja2
import structlog
from sqlalchemy import and_, func, insert, or_, select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from orchestrator.config import Settings
from orchestrator.db import session_scope
from orchestrator.models import (
    OutboxMessage,
    OutboxStatus,
    Project,
    Role,
    TotpToken,
    User,
    UserStatus,
    utcnow,
)

log = structlog.get_logger(__name__)

TEMPLATES_DIR = Path(__file__).resolve().parent / "templates" / "mail"
SUBJECT_PREFIX = "[Kluis]"
MAX_SUBJECT = 200
MAX_ERROR = 500
# Retry n (n = 1, 2, ...) waits BACKOFF_BASE * 2**(n-1), at most BACKOFF_CAP: 1, 2, 4, ... 60 min;
# with the default 12 attempts a message is given up (FAILED) after about 6.5 hours.
BACKOFF_BASE = timedelta(minutes=1)
BACKOFF_CAP = timedelta(hours=1)
# A claimed message is not due again for this long: longer than one send can take.
MIN_LEASE = timedelta(minutes=15)


def settings_of(session: Session) -> Settings:
    """The settings carried by the session (`session.info["settings"]`)."""
    settings = session.info.get("settings")
    if not isinstance(settings, Settings):
        raise RuntimeError(
            'notify needs session.info["settings"]: make sessions with '
            'sessionmaker(..., info={"settings": settings}) or set it on the session'
        )
    return settings


# --- writing messages -----------------------------------------------------------------------------


def _one_line(text: str, limit: int) -> str:
    return " ".join(text.split())[:limit]


def enqueue(
    session: Session,
    to_address: str,
    subject: str,
    body: str,
    dedupe_key: str | None = None,
    now: datetime | None = None,
) -> OutboxMessage | None:
    """Write a message in the session's transaction; it is sent only if that commits.

    With a `dedupe_key` that is already in the outbox (in any state) nothing is written and
    `None` is returned: concurrent writers with one key write one row (`INSERT ... ON CONFLICT DO
    NOTHING` on SQLite and PostgreSQL). An address without `@` or with line breaks is skipped.
    """
    to_address = to_address.strip()
    if "@" not in to_address or any(c in to_address for c in "\r\n,;<>"):
        log.warning("mail_skipped_bad_address", dedupe_key=dedupe_key)
        return None
    values: dict[str, Any] = {
        "to_address": to_address[:254],
        "subject": _one_line(subject, MAX_SUBJECT),
        "body": body,
        "dedupe_key": dedupe_key,
        "status": OutboxStatus.PENDING,
        "attempts": 0,
        "created_at": now or utcnow(),
        "next_attempt_at": now or utcnow(),
        "last_error": "",
    }
    if dedupe_key is None:
        message = OutboxMessage(**values)
        session.add(message)
        session.flush()
        return message
    new_id = _insert_once(session, values)
    return None if new_id is None else session.get(OutboxMessage, new_id)


def _insert_once(session: Session, values: dict[str, Any]) -> int | None:
    dialect = session.get_bind().dialect.name
    if dialect == "sqlite":
        stmt: Any = (
            sqlite_insert(OutboxMessage)
            .values(**values)
            .on_conflict_do_nothing(index_elements=[OutboxMessage.dedupe_key])
        )
    elif dialect == "postgresql":
        stmt = (
            postgresql_insert(OutboxMessage)
            .values(**values)
            .on_conflict_do_nothing(index_elements=[OutboxMessage.dedupe_key])
        )
    else:  # any other database: a savepoint that a duplicate rolls back alone
        try:
            with session.begin_nested():
                stmt = insert(OutboxMessage).values(**values).returning(OutboxMessage.id)
                return int(session.execute(stmt).scalar_one())
        except IntegrityError:
            return None
    new_id = session.execute(stmt.returning(OutboxMessage.id)).scalar_one_or_none()
    return None if new_id is None else int(new_id)


@functools.cache
def _templates() -> jinja2.Environment:
    # Plain-text mail: HTML escaping would corrupt it. Nothing here is ever rendered as HTML.
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES_DIR),
        autoescape=False,  # noqa: S701 (plain-text mail, never HTML)
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def render(template: str, **context: Any) -> str:
    return _templates().get_template(template).render(**context)


def project_url(settings: Settings, project: Project) -> str:
    """The portal page of the project."""
    return f"{settings.effective_public_url}/projects/{project.code}"


class Audience(Enum):
    STEWARDS = "data stewards"
    LEAD = "the lead"
    LEAD_AND_MEMBERS = "the lead and the members"


@dataclass(frozen=True)
class EventMail:
    subject: str
    audience: Audience


PROJECT_EVENTS: dict[str, EventMail] = {
    "submitted": EventMail("application submitted for review", Audience.STEWARDS),
    "accepted": EventMail("quote accepted, awaiting approval", Audience.STEWARDS),
    "change_requested": EventMail("change requested", Audience.STEWARDS),
    "returned": EventMail("application returned with comments", Audience.LEAD),
    "rejected": EventMail("application rejected", Audience.LEAD),
    "quoted": EventMail("quote ready for acceptance", Audience.LEAD),
    "change_approved": EventMail("change approved", Audience.LEAD),
    "change_rejected": EventMail("change rejected", Audience.LEAD),
    "approved": EventMail("project approved", Audience.LEAD_AND_MEMBERS),
    "activated": EventMail("project active", Audience.LEAD_AND_MEMBERS),
    "frozen": EventMail("project frozen", Audience.LEAD_AND_MEMBERS),
    "unfrozen": EventMail("project active again", Audience.LEAD_AND_MEMBERS),
    "expired": EventMail("project expired", Audience.LEAD_AND_MEMBERS),
    "archived": EventMail("project archived", Audience.LEAD_AND_MEMBERS),
    "deleted": EventMail("project deleted", Audience.LEAD),
}


def _people(session: Session, project: Project, audience: Audience) -> list[User]:
    if audience is Audience.STEWARDS:
        return list(
            session.scalars(
                select(User)
                .where(User.role == Role.DATA_STEWARD, User.status == UserStatus.ACTIVE)
                .order_by(User.id)
            )
        )
    people = {project.lead.id: project.lead}
    if audience is Audience.LEAD_AND_MEMBERS:
        for member in project.members:
            if member.removed_at is None:
                people.setdefault(member.user_id, member.user)
    return list(people.values())


def project_recipients(
    session: Session, project: Project, event: str, actor: User | None = None
) -> list[User]:
    """Who is told about `event`: data stewards for what they must act on; the lead (and, for
    changes of the whole project, the current members) otherwise. Never the actor themself."""
    mail = PROJECT_EVENTS.get(event)
    if mail is None:
        raise ValueError(f"unknown project event {event!r}")
    people = _people(session, project, mail.audience)
    return [p for p in people if actor is None or p.id != actor.id]


def _extra_lines(extra: dict[str, Any] | None) -> list[tuple[str, str]]:
    lines = []
    for key, value in (extra or {}).items():
        if isinstance(value, str | int | date) and not isinstance(value, bool):
            lines.append((key.replace("_", " "), _one_line(str(value), 200)))
    return lines


def notify_project_event(
    session: Session,
    project: Project,
    event: str,
    actor: User | None,
    *,
    comment: str = "",
    extra: dict[str, Any] | None = None,
) -> list[OutboxMessage]:
    """Write one e-mail per recipient of `event` (a key of `PROJECT_EVENTS`) into the outbox, in
    the caller's transaction. `comment` (a reviewer's words) and the short values of `extra`
    (e.g. `{"new_end_date": "2027-06-30"}`) are included; nothing else, and never a secret."""
    settings = settings_of(session)
    mail = PROJECT_EVENTS.get(event)
    if mail is None:
        raise ValueError(f"unknown project event {event!r}")
    messages = []
    for person in project_recipients(session, project, event, actor):
        body = render(
            f"project_{event}.txt",
            recipient=person,
            project=project,
            actor=actor.full_name if actor is not None else "Kluis (automatically)",
            comment=comment.strip(),
            extra=_extra_lines(extra),
            url=project_url(settings, project),
            settings=_public_settings(settings),
        )
        subject = f"{SUBJECT_PREFIX} Project {project.code}: {mail.subject}"
        message = enqueue(session, person.email, subject, body)
        if message is not None:
            messages.append(message)
    log.info("project_event_notified", project=project.code, event_name=event, n=len(messages))
    return messages


def _public_settings(settings: Settings) -> dict[str, Any]:
    """The few settings a mail may mention (nothing secret)."""
    return {
        "grace_days": settings.project_grace_days,
        "retention_years": settings.project_retention_years,
        "portal": settings.effective_public_url,
    }


# --- reminders (the scheduler calls these; each is sent once thanks to its dedupe key) ------------


def remind_end_date(
    session: Session, project: Project, user: User, threshold: int, days_left: int
) -> OutboxMessage | None:
    settings = settings_of(session)
    body = render(
        "reminder_end_date.txt",
        recipient=user,
        project=project,
        days_left=days_left,
        url=project_url(settings, project),
        settings=_public_settings(settings),
    )
    subject = f"{SUBJECT_PREFIX} Project {project.code} ends on {project.end_date.isoformat()}"
    key = f"end:{project.id}:{project.end_date.isoformat()}:{threshold}:{user.id}"
    return enqueue(session, user.email, subject, body, dedupe_key=key)


def remind_statement(
    session: Session, user: User, threshold: int, days_left: int
) -> OutboxMessage | None:
    settings = settings_of(session)
    assert user.statement_valid_until is not None
    body = render(
        "reminder_statement.txt",
        recipient=user,
        days_left=days_left,
        url=f"{settings.effective_public_url}/account",
    )
    subject = (
        f"{SUBJECT_PREFIX} Your confidentiality statement ends on "
        f"{user.statement_valid_until.isoformat()}"
    )
    key = f"statement:{user.id}:{user.statement_valid_until.isoformat()}:{threshold}"
    return enqueue(session, user.email, subject, body, dedupe_key=key)


def remind_token_return(session: Session, user: User, token: TotpToken) -> OutboxMessage | None:
    """Once per loan: the key names the token and when it was lent."""
    settings = settings_of(session)
    body = render(
        "reminder_token_return.txt",
        recipient=user,
        token=token,
        url=f"{settings.effective_public_url}/account",
    )
    subject = f"{SUBJECT_PREFIX} Please return your token {token.serial}"
    loaned = token.loaned_at.isoformat() if token.loaned_at is not None else "-"
    key = f"token-return:{token.id}:{loaned}"
    return enqueue(session, user.email, subject, body, dedupe_key=key)


# --- delivery -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DeliveryReport:
    sent: int = 0
    retried: int = 0  # failed this time, due again later
    failed: int = 0  # given up (status FAILED)


@dataclass(frozen=True)
class _Claimed:
    id: int
    attempts: int
    to_address: str
    subject: str
    body: str


def backoff(attempts: int) -> timedelta:
    """How long to wait after the `attempts`-th failed attempt."""
    wait: timedelta = BACKOFF_BASE * 2 ** max(attempts - 1, 0)
    return min(wait, BACKOFF_CAP)


def _lease(settings: Settings) -> timedelta:
    return max(MIN_LEASE, timedelta(seconds=10 * settings.smtp_timeout_seconds))


def _due(settings: Settings, now: datetime) -> Any:
    # A message never tried is due at once (whatever the clock said when it was written);
    # after an attempt, when its backoff or lease has passed.
    return and_(
        OutboxMessage.status == OutboxStatus.PENDING,
        OutboxMessage.attempts < settings.outbox_max_attempts,
        or_(OutboxMessage.attempts == 0, OutboxMessage.next_attempt_at <= now),
    )


def _claim(session: Session, settings: Settings, now: datetime) -> _Claimed | None:
    """Take the next due message: count the attempt and lease it, in one UPDATE that only one
    deliverer can win (PostgreSQL: the pick skips rows another deliverer has locked; SQLite: the
    write lock serialises claimers and the WHERE is checked again on the row it finds)."""
    pick = (
        select(OutboxMessage.id)
        .where(_due(settings, now))
        .order_by(OutboxMessage.next_attempt_at, OutboxMessage.id)
        .limit(1)
    )
    if session.get_bind().dialect.name == "postgresql":
        pick = pick.with_for_update(skip_locked=True)
    row = session.execute(
        update(OutboxMessage)
        .where(OutboxMessage.id == pick.scalar_subquery(), _due(settings, now))
        .values(attempts=OutboxMessage.attempts + 1, next_attempt_at=now + _lease(settings))
        .returning(
            OutboxMessage.id,
            OutboxMessage.attempts,
            OutboxMessage.to_address,
            OutboxMessage.subject,
            OutboxMessage.body,
        )
        .execution_options(synchronize_session=False)
    ).first()
    return None if row is None else _Claimed(*row)


def _give_up_stale(session: Session, settings: Settings, now: datetime) -> int:
    """Messages whose last allowed attempt was claimed but never recorded (a crash): FAILED."""
    result = session.execute(
        update(OutboxMessage)
        .where(
            OutboxMessage.status == OutboxStatus.PENDING,
            OutboxMessage.attempts >= settings.outbox_max_attempts,
            OutboxMessage.next_attempt_at <= now,
        )
        .values(status=OutboxStatus.FAILED, last_error="gave up: the last attempt was not recorded")
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0) or 0)


def _finish(
    session: Session,
    claimed: _Claimed,
    values: dict[str, Any],
) -> bool:
    """Record the outcome of our own attempt (not if another deliverer has taken it over)."""
    result = session.execute(
        update(OutboxMessage)
        .where(
            OutboxMessage.id == claimed.id,
            OutboxMessage.attempts == claimed.attempts,
            OutboxMessage.status == OutboxStatus.PENDING,
        )
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    return bool(getattr(result, "rowcount", 0))


def _domain(settings: Settings) -> str:
    domain = settings.mail_from.rpartition("@")[2].strip(" >")
    return domain or "kluis.invalid"


def build_email(settings: Settings, claimed: _Claimed, now: datetime) -> EmailMessage:
    message = EmailMessage()
    message["From"] = settings.mail_from
    message["To"] = claimed.to_address
    message["Subject"] = claimed.subject
    message["Date"] = format_datetime(now)
    # Stable across retries, so a resend after a crash can be recognised as the same message.
    message["Message-ID"] = f"<kluis.outbox.{claimed.id}@{_domain(settings)}>"
    message["Auto-Submitted"] = "auto-generated"  # RFC 3834: no auto-replies, please
    message.set_content(claimed.body)
    return message


class Mailer:
    """One SMTP connection, opened on first use and reused; dropped after any error."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._smtp: smtplib.SMTP | None = None

    def _connect(self) -> smtplib.SMTP:
        settings = self.settings
        smtp = smtplib.SMTP(
            settings.smtp_host, settings.smtp_port, timeout=settings.smtp_timeout_seconds
        )
        try:
            smtp.ehlo()
            if settings.smtp_starttls:
                smtp.starttls(context=ssl.create_default_context())
                smtp.ehlo()
            if settings.smtp_username:
                if not settings.smtp_starttls:
                    raise smtplib.SMTPException(
                        "refusing to send SMTP credentials without STARTTLS "
                        "(set KLUIS_SMTP_STARTTLS=true)"
                    )
                password = (
                    settings.smtp_password.get_secret_value() if settings.smtp_password else ""
                )
                smtp.login(settings.smtp_username, password)
        except BaseException:
            smtp.close()
            raise
        return smtp

    def send(self, message: EmailMessage) -> None:
        if self._smtp is None:
            self._smtp = self._connect()
        try:
            self._smtp.send_message(message)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self._smtp is None:
            return
        smtp, self._smtp = self._smtp, None
        try:
            smtp.quit()
        except (smtplib.SMTPException, OSError):
            smtp.close()


def _permanent(exc: Exception) -> bool:
    # Every recipient refused with a 5xx: sending again will not help.
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        return all(code >= 500 for code, _ in exc.recipients.values())
    return False


def _error_text(exc: Exception) -> str:
    return _one_line(f"{type(exc).__name__}: {exc}", MAX_ERROR)


def deliver_pending(
    session_factory: sessionmaker[Session],
    settings: Settings,
    now: datetime,
    limit: int = 100,
) -> DeliveryReport:
    """Send up to `limit` due messages, each claimed and recorded in its own short transaction.

    Safe to run in several processes at once: each message is claimed by one of them. A failure
    is retried after `backoff(attempts)`; after `outbox_max_attempts` the message is FAILED (kept
    for staff to see). `now` is the clock at the start; it advances with the time spent.
    """
    started = time.monotonic()

    def clock() -> datetime:
        return now + timedelta(seconds=time.monotonic() - started)

    sent = retried = failed = 0
    with session_scope(session_factory) as session:
        failed += _give_up_stale(session, settings, clock())
    mailer = Mailer(settings)
    try:
        for _ in range(limit):
            with session_scope(session_factory) as session:
                claimed = _claim(session, settings, clock())
            if claimed is None:
                break
            try:
                mailer.send(build_email(settings, claimed, clock()))
            except (smtplib.SMTPException, OSError) as exc:
                gave_up = _permanent(exc) or claimed.attempts >= settings.outbox_max_attempts
                values: dict[str, Any] = {"last_error": _error_text(exc)}
                if gave_up:
                    values["status"] = OutboxStatus.FAILED
                else:
                    values["next_attempt_at"] = clock() + backoff(claimed.attempts)
                with session_scope(session_factory) as session:
                    _finish(session, claimed, values)
                failed, retried = (failed + 1, retried) if gave_up else (failed, retried + 1)
                log.warning(
                    "mail_failed",
                    message_id=claimed.id,
                    attempts=claimed.attempts,
                    gave_up=gave_up,
                    error=type(exc).__name__,
                )
                continue
            with session_scope(session_factory) as session:
                _finish(session, claimed, {"status": OutboxStatus.SENT, "sent_at": clock()})
            sent += 1
            log.info("mail_sent", message_id=claimed.id, attempts=claimed.attempts)
    finally:
        mailer.close()
    return DeliveryReport(sent=sent, retried=retried, failed=failed)


def pending_count(session: Session) -> int:
    stmt = select(func.count()).where(OutboxMessage.status == OutboxStatus.PENDING)
    return session.scalar(stmt) or 0


def recent_failures(session: Session, limit: int = 20) -> Iterable[OutboxMessage]:
    return session.scalars(
        select(OutboxMessage)
        .where(OutboxMessage.status == OutboxStatus.FAILED)
        .order_by(OutboxMessage.id.desc())
        .limit(limit)
    )
