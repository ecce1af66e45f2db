"""The expiry schedule: projects become active on their start date, expire after their end date,
are archived after the grace period and deleted after the retention period; reminders go out
before end dates, before statements lapse, and when a hardware token should come back.

Dates are UTC days. The end date is inclusive: a project ending on 2026-12-31 is active all of
that day and expires from 2027-01-01T00:00Z. It is archived from the day after
`projects.grace_until` (end date + `project_grace_days`, the last day an extension may still
revive it) and deleted from the day after `projects.retention_until` (archived day +
`project_retention_years`).

`run_schedule` is idempotent and safe to run often and in several processes at once: each
project is handled in its own transaction, re-read under a row lock (PostgreSQL; SQLite
serialises writers), and acted on only if it is still due, so a project is moved once and one
failure does not block the others. Reminders carry outbox dedupe keys, so each is sent once.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import and_, or_, select, union
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.orm.exc import StaleDataError

from orchestrator import notify, projects
from orchestrator.config import Settings
from orchestrator.db import session_scope
from orchestrator.errors import KluisError
from orchestrator.models import (
    Project,
    ProjectMember,
    ProjectState,
    TokenKind,
    TokenState,
    TotpToken,
    User,
    UserStatus,
    utcnow,
)

log = structlog.get_logger(__name__)

S = ProjectState
STATEMENT_REMINDER_DAYS = (30, 14, 7)
# A project in one of these states still needs its members' tokens.
LIVE_STATES = frozenset(
    {S.DRAFT, S.SUBMITTED, S.QUOTED, S.ACCEPTED, S.APPROVED, S.ACTIVE, S.FROZEN}
)
Step = Callable[[Session, Project, User | None, datetime, Settings], Project]


@dataclass
class ScheduleReport:
    activated: list[str] = field(default_factory=list)
    expired: list[str] = field(default_factory=list)
    archived: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    reminders: int = 0
    raced: int = 0  # due, but another scheduler got there first
    errors: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {
            "activated": len(self.activated),
            "expired": len(self.expired),
            "archived": len(self.archived),
            "deleted": len(self.deleted),
            "reminders": self.reminders,
            "raced": self.raced,
            "errors": len(self.errors),
        }


def utc_day(now: datetime) -> date:
    return now.astimezone(UTC).date()


def start_of_day(day: date) -> datetime:
    return datetime.combine(day, datetime.min.time(), tzinfo=UTC)


# --- when is a project due for its next step? (pure) ----------------------------------------------


def due_for_activation(project: Project, today: date) -> bool:
    return project.state is S.APPROVED and project.start_date <= today


def due_for_expiry(project: Project, today: date) -> bool:
    return project.state in (S.ACTIVE, S.FROZEN) and project.end_date < today


def due_for_archiving(project: Project, today: date, settings: Settings) -> bool:
    # Output requests still under review when a project is archived keep their review: the
    # airlock (a later issue) must not tie its reviews to the project's state. Hook: if archiving
    # ever has to wait for something, this is where the project is held back.
    return project.state is S.EXPIRED and projects.grace_until(project, settings) < today


def due_for_deletion(project: Project, today: date, settings: Settings) -> bool:
    return project.state is S.ARCHIVED and projects.retention_until(project, settings) < today


def reminder_threshold(days_left: int, thresholds: tuple[int, ...] | list[int]) -> int | None:
    """The tightest threshold not yet passed: with (30, 14, 7) and 10 days left, 14. A run missed
    on the day itself still sends the reminder the next day; a later start skips earlier ones."""
    if days_left < 0:
        return None
    fitting = [d for d in thresholds if d >= 0 and days_left <= d]
    return min(fitting) if fitting else None


# --- running --------------------------------------------------------------------------------------


def _step(
    factory: sessionmaker[Session],
    settings: Settings,
    now: datetime,
    project_id: int,
    due: Callable[[Project], bool],
    step: Step,
    done: list[str],
    report: ScheduleReport,
    name: str,
) -> None:
    code = str(project_id)
    try:
        with session_scope(factory) as session:
            session.info["settings"] = settings
            project = session.scalars(
                select(Project).where(Project.id == project_id).with_for_update()
            ).one_or_none()
            if project is None or not due(project):
                return  # done meanwhile by another scheduler, or changed by someone
            code = project.code
            step(session, project, None, now, settings)
    except (StaleDataError, OperationalError) as exc:
        # Another scheduler (or a person) changed the project at the same moment; the next run
        # looks again.
        report.raced += 1
        log.info("schedule_raced", step=name, project=code, error=type(exc).__name__)
        return
    except KluisError as exc:
        report.errors.append(f"{name} {code}: {exc.message}")
        log.warning("schedule_step_refused", step=name, project=code, reason=exc.message)
        return
    except Exception as exc:
        report.errors.append(f"{name} {code}: {type(exc).__name__}")
        log.exception("schedule_step_failed", step=name, project=code)
        return
    done.append(code)
    log.info("schedule_step", step=name, project=code)


def _ids(factory: sessionmaker[Session], stmt: Any) -> list[int]:
    with session_scope(factory) as session:
        return list(session.scalars(stmt))


def run_schedule(
    session_factory: sessionmaker[Session], settings: Settings, now: datetime
) -> ScheduleReport:
    """One pass: activate, expire, archive, delete what is due at `now`, then send reminders."""
    today = utc_day(now)
    report = ScheduleReport()
    passes: list[tuple[str, Any, Callable[[Project], bool], Step, list[str]]] = [
        (
            "activate",
            select(Project.id).where(Project.state == S.APPROVED, Project.start_date <= today),
            lambda p: due_for_activation(p, today),
            projects.activate_project,
            report.activated,
        ),
        (
            "expire",
            select(Project.id).where(
                Project.state.in_([S.ACTIVE, S.FROZEN]), Project.end_date < today
            ),
            lambda p: due_for_expiry(p, today),
            projects.expire_project,
            report.expired,
        ),
        (
            "archive",
            select(Project.id).where(
                Project.state == S.EXPIRED,
                Project.end_date < today - timedelta(days=settings.project_grace_days),
            ),
            lambda p: due_for_archiving(p, today, settings),
            projects.archive_project,
            report.archived,
        ),
        (
            "delete",
            # A superset (a year has at least 365 days); the exact rule is checked per project.
            select(Project.id).where(
                Project.state == S.ARCHIVED,
                or_(
                    Project.archived_at.is_(None),
                    Project.archived_at
                    < start_of_day(today - timedelta(days=365 * settings.project_retention_years)),
                ),
            ),
            lambda p: due_for_deletion(p, today, settings),
            projects.delete_project,
            report.deleted,
        ),
    ]
    for name, stmt, due, step, done in passes:
        for project_id in _ids(session_factory, stmt.order_by(Project.id)):
            _step(session_factory, settings, now, project_id, due, step, done, report, name)
    _end_date_reminders(session_factory, settings, today, report)
    _statement_reminders(session_factory, settings, today, report)
    _token_reminders(session_factory, settings, report)
    log.info("schedule_run", **report.summary())
    return report


def _guarded(report: ScheduleReport, what: str, work: Callable[[int], int], key: int) -> None:
    try:
        report.reminders += work(key)
    except (StaleDataError, OperationalError) as exc:
        report.raced += 1
        log.info("schedule_raced", step="remind", what=what, error=type(exc).__name__)
    except Exception as exc:
        report.errors.append(f"remind {what}: {type(exc).__name__}")
        log.exception("schedule_reminder_failed", what=what)


def _end_date_reminders(
    factory: sessionmaker[Session], settings: Settings, today: date, report: ScheduleReport
) -> None:
    thresholds = tuple(d for d in settings.reminder_days if d >= 0)
    if not thresholds:
        return
    stmt = select(Project.id).where(
        Project.state.in_([S.ACTIVE, S.FROZEN]),
        Project.end_date >= today,
        Project.end_date <= today + timedelta(days=max(thresholds)),
    )

    def remind(project_id: int) -> int:
        with session_scope(factory) as session:
            session.info["settings"] = settings
            project = session.get(Project, project_id)
            if project is None or project.state not in (S.ACTIVE, S.FROZEN):
                return 0
            days_left = (project.end_date - today).days
            threshold = reminder_threshold(days_left, thresholds)
            if threshold is None:
                return 0
            people = {project.lead_id: project.lead}
            for member in projects.current_members(project):
                people.setdefault(member.user_id, member.user)
            sent = 0
            for person in people.values():
                if notify.remind_end_date(session, project, person, threshold, days_left):
                    sent += 1
            return sent

    for project_id in _ids(factory, stmt.order_by(Project.id)):
        _guarded(report, f"end date of project {project_id}", remind, project_id)


def _statement_reminders(
    factory: sessionmaker[Session], settings: Settings, today: date, report: ScheduleReport
) -> None:
    stmt = select(User.id).where(
        User.status == UserStatus.ACTIVE,
        User.statement_valid_until >= today,
        User.statement_valid_until <= today + timedelta(days=max(STATEMENT_REMINDER_DAYS)),
    )

    def remind(user_id: int) -> int:
        with session_scope(factory) as session:
            session.info["settings"] = settings
            user = session.get(User, user_id)
            if user is None or user.statement_valid_until is None:
                return 0
            days_left = (user.statement_valid_until - today).days
            threshold = reminder_threshold(days_left, STATEMENT_REMINDER_DAYS)
            if threshold is None:
                return 0
            return 1 if notify.remind_statement(session, user, threshold, days_left) else 0

    for user_id in _ids(factory, stmt.order_by(User.id)):
        _guarded(report, f"statement of user {user_id}", remind, user_id)


def tokens_to_return_stmt() -> Any:
    """Hardware tokens on loan to someone whose account is closed, or who was in a project once
    and is in no live project now (applications in progress count as live)."""
    live = list(LIVE_STATES)
    in_live = union(
        select(ProjectMember.user_id)
        .join(Project, Project.id == ProjectMember.project_id)
        .where(ProjectMember.removed_at.is_(None), Project.state.in_(live)),
        select(Project.lead_id).where(Project.state.in_(live)),
    )
    ever = union(select(ProjectMember.user_id), select(Project.lead_id))
    return (
        select(TotpToken.id)
        .join(User, User.id == TotpToken.user_id)
        .where(
            TotpToken.kind == TokenKind.HARDWARE,
            TotpToken.state == TokenState.ON_LOAN,
            or_(
                User.status == UserStatus.CLOSED,
                and_(
                    User.id.in_(ever.scalar_subquery()), User.id.not_in(in_live.scalar_subquery())
                ),
            ),
        )
        .order_by(TotpToken.id)
    )


def _token_reminders(
    factory: sessionmaker[Session], settings: Settings, report: ScheduleReport
) -> None:
    def remind(token_id: int) -> int:
        with session_scope(factory) as session:
            session.info["settings"] = settings
            token = session.get(TotpToken, token_id)
            if token is None or token.user is None or token.state is not TokenState.ON_LOAN:
                return 0
            return 1 if notify.remind_token_return(session, token.user, token) else 0

    for token_id in _ids(factory, tokens_to_return_stmt()):
        _guarded(report, f"return of token {token_id}", remind, token_id)


def run_forever(
    session_factory: sessionmaker[Session],
    settings: Settings,
    interval_seconds: float,
    stop: threading.Event,
    clock: Callable[[], datetime] = utcnow,
) -> int:
    """Run the schedule and deliver the outbox every `interval_seconds` until `stop` is set.
    A failing pass is logged and the loop goes on. Returns the number of passes."""
    passes = 0
    while not stop.is_set():
        try:
            run_schedule(session_factory, settings, clock())
            report = notify.deliver_pending(session_factory, settings, clock())
            log.info(
                "mail_delivery", sent=report.sent, retried=report.retried, failed=report.failed
            )
        except Exception:
            log.exception("schedule_pass_failed")
        passes += 1
        stop.wait(interval_seconds)
    return passes
