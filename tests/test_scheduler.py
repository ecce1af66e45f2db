"""The expiry schedule on a database whose transactions really commit: boundaries (the end date
is active all day, the next instant is expired; grace and retention the same way), idempotence
(a second run changes nothing and sends nothing), reminders sent once, one failing project not
blocking the others, and two schedulers at once moving each project once."""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

import pytest
from admin_factories import make_user
from cost_factories import add_member, add_researcher, at, make_project, make_tariff
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session, sessionmaker

from orchestrator import projects, scheduler
from orchestrator.config import Settings
from orchestrator.db import make_sessionmaker, session_scope
from orchestrator.models import (
    AuditEvent,
    DeletionRecord,
    OutboxMessage,
    Project,
    ProjectState,
    TokenKind,
    TokenState,
    TotpToken,
    User,
    UserStatus,
)

S = ProjectState
TICK = timedelta(microseconds=1)


@dataclass
class Db:
    settings: Settings
    factory: sessionmaker[Session]

    def run(self, now: datetime) -> scheduler.ScheduleReport:
        return scheduler.run_schedule(self.factory, self.settings, now)

    def project(self, project_id: int) -> Project:
        with session_scope(self.factory) as session:
            return session.get_one(Project, project_id)

    def count(self, stmt: Any) -> int:
        with session_scope(self.factory) as session:
            return int(session.scalar(stmt) or 0)

    def outbox(self) -> list[OutboxMessage]:
        with session_scope(self.factory) as session:
            return list(session.scalars(select(OutboxMessage).order_by(OutboxMessage.id)))


@pytest.fixture
def db(isolated_engine: tuple[Settings, Engine]) -> Db:
    settings, engine = isolated_engine
    settings = settings.model_copy(
        update={"public_url": "https://kluis.example.org", "reminder_days": [30, 14, 7]}
    )
    factory = make_sessionmaker(engine, write=True)
    factory.configure(info={"settings": settings})
    return Db(settings, factory)


def seed(db: Db, **kwargs: Any) -> int:
    """A project (see cost_factories.make_project) committed; its id."""
    with session_scope(db.factory) as session:
        kwargs.setdefault("tariff", make_tariff(session))
        project = make_project(session, **kwargs)
        return project.id


def active_until(db: Db, end: date, **kwargs: Any) -> int:
    return seed(
        db,
        start=end - timedelta(days=200),
        end=end,
        state=S.ACTIVE,
        activated_at=at(f"{end - timedelta(days=200)} 00:00"),
        **kwargs,
    )


def events(db: Db, action: str, project_id: int) -> int:
    return db.count(
        select(func.count())
        .select_from(AuditEvent)
        .where(AuditEvent.action == action, AuditEvent.object_id == str(project_id))
    )


# --- boundaries -----------------------------------------------------------------------------------


def test_activation_on_the_start_date(db: Db) -> None:
    pid = seed(db, start=date(2026, 7, 1), end=date(2027, 6, 30), state=S.APPROVED)

    before = db.run(at("2026-06-30 23:59:59.999999"))
    on_the_day = db.run(at("2026-07-01 00:00"))

    assert before.activated == []
    assert on_the_day.activated == [db.project(pid).code]
    assert db.project(pid).state is S.ACTIVE
    assert db.project(pid).activated_at == at("2026-07-01 00:00")


def test_end_date_is_active_all_day_and_expired_the_next_instant(db: Db) -> None:
    pid = active_until(db, date(2026, 6, 30))
    midnight = at("2026-07-01 00:00")

    last_instant = db.run(midnight - TICK)
    assert last_instant.expired == []
    assert db.project(pid).state is S.ACTIVE

    next_instant = db.run(midnight)
    project = db.project(pid)
    assert next_instant.expired == [project.code]
    assert (project.state, project.expired_at) == (S.EXPIRED, midnight)
    assert events(db, "project_expired", pid) == 1
    expired_mail = [m for m in db.outbox() if "project expired" in m.subject]
    assert len(expired_mail) == 1
    assert project.code in expired_mail[0].body


def test_frozen_projects_expire_too(db: Db) -> None:
    pid = seed(
        db,
        start=date(2026, 1, 1),
        end=date(2026, 6, 30),
        state=S.FROZEN,
        activated_at=at("2026-01-01 00:00"),
    )
    assert db.run(at("2026-07-01 00:00")).expired == [db.project(pid).code]


def test_archived_the_day_after_the_grace_period(db: Db) -> None:
    # grace 30 days: an extension may revive it up to end date + 30 = 2026-07-30.
    pid = seed(
        db,
        start=date(2026, 1, 1),
        end=date(2026, 6, 30),
        state=S.EXPIRED,
        activated_at=at("2026-01-01 00:00"),
        expired_at=at("2026-07-01 00:00"),
    )
    assert db.settings.project_grace_days == 30

    assert db.run(at("2026-07-31 00:00") - TICK).archived == []
    assert db.run(at("2026-07-31 00:00")).archived == [db.project(pid).code]
    assert db.project(pid).state is S.ARCHIVED


def test_deleted_the_day_after_the_retention_period(db: Db) -> None:
    # retention 5 years from the archiving day 2026-08-01: kept up to 2031-08-01.
    pid = seed(
        db,
        start=date(2026, 1, 1),
        end=date(2026, 6, 30),
        state=S.ARCHIVED,
        activated_at=at("2026-01-01 00:00"),
        expired_at=at("2026-07-01 00:00"),
        archived_at=at("2026-08-01 10:00"),
    )

    assert db.run(at("2031-08-02 00:00") - TICK).deleted == []
    report = db.run(at("2031-08-02 00:00"))

    project = db.project(pid)
    assert report.deleted == [project.code]
    assert project.state is S.DELETED
    assert db.count(select(func.count()).select_from(DeletionRecord).where(
        DeletionRecord.project_id == pid
    )) == 1  # fmt: skip


def test_a_long_overdue_approved_project_is_activated_then_expired_in_one_run(db: Db) -> None:
    pid = seed(db, start=date(2026, 1, 1), end=date(2026, 3, 31), state=S.APPROVED)
    report = db.run(at("2026-05-01 12:00"))
    code = db.project(pid).code
    assert (report.activated, report.expired) == ([code], [code])


# --- idempotence ----------------------------------------------------------------------------------


def test_running_twice_changes_nothing_and_sends_nothing_more(db: Db) -> None:
    active_until(db, date(2026, 6, 30))
    seed(db, start=date(2026, 7, 1), end=date(2027, 6, 30), state=S.APPROVED)
    active_until(db, date(2026, 7, 31))  # 30 days left on 2026-07-01: a reminder
    now = at("2026-07-01 00:00:05")

    first = db.run(now)
    audit_rows = db.count(select(func.count()).select_from(AuditEvent))
    mails = len(db.outbox())
    second = db.run(now)

    assert (len(first.activated), len(first.expired), first.reminders) == (1, 1, 1)
    assert second.summary() == scheduler.ScheduleReport().summary()
    assert db.count(select(func.count()).select_from(AuditEvent)) == audit_rows
    assert len(db.outbox()) == mails


# --- reminders ------------------------------------------------------------------------------------


def test_end_date_reminders_once_per_threshold_for_lead_and_members(db: Db) -> None:
    with session_scope(db.factory) as session:
        project = make_project(
            session,
            start=date(2026, 1, 1),
            end=date(2026, 6, 30),
            state=S.ACTIVE,
            tariff=make_tariff(session),
            activated_at=at("2026-01-01 00:00"),
        )
        add_researcher(session, project, at("2026-01-01 00:00"))
        add_researcher(session, project, at("2026-01-01 00:00"), at("2026-02-01 00:00"))  # gone
        pid = project.id

    sent = [
        db.run(at(f"{day} 08:00")).reminders
        for day in ("2026-05-30", "2026-05-31", "2026-05-31", "2026-06-01", "2026-06-16")
    ]

    # 31 days left: none; 30: lead + member; again: none; 29: still the 30-day one, sent;
    # 14 days left: the 14-day reminder.
    assert sent == [0, 2, 0, 0, 2]
    subjects = Counter(m.subject for m in db.outbox())
    assert subjects == {f"[Kluis] Project {db.project(pid).code} ends on 2026-06-30": 4}


def test_a_missed_day_still_sends_the_tightest_reminder_once(db: Db) -> None:
    active_until(db, date(2026, 6, 30))
    assert db.run(at("2026-06-20 08:00")).reminders == 1  # 10 days left: the 14-day one
    assert db.run(at("2026-06-21 08:00")).reminders == 0
    assert db.run(at("2026-06-23 08:00")).reminders == 1  # 7 days left


def test_an_extension_rearms_the_reminders(db: Db) -> None:
    pid = active_until(db, date(2026, 6, 30))
    assert db.run(at("2026-06-23 08:00")).reminders == 1
    with session_scope(db.factory) as session:
        session.get_one(Project, pid).end_date = date(2026, 7, 1)
    assert db.run(at("2026-06-24 08:00")).reminders == 1  # new end date, 7 days left


def test_statement_renewal_reminders(db: Db) -> None:
    today = date(2026, 5, 4)
    with session_scope(db.factory) as session:
        soon = make_user(session)
        soon.statement_valid_until = today + timedelta(days=14)
        later = make_user(session)
        later.statement_valid_until = today + timedelta(days=31)
        closed = make_user(session, status=UserStatus.CLOSED)
        closed.statement_valid_until = today + timedelta(days=7)
        soon_id = soon.id

    first = db.run(at(f"{today} 08:00"))
    again = db.run(at(f"{today} 09:00"))

    assert (first.reminders, again.reminders) == (1, 0)
    [mail] = db.outbox()
    assert "confidentiality statement" in mail.subject
    with session_scope(db.factory) as session:
        assert mail.to_address == session.get_one(User, soon_id).email


def _lend(session: Session, user: User, serial: str) -> None:
    session.add(
        TotpToken(
            serial=serial,
            kind=TokenKind.HARDWARE,
            seed_encrypted="x",
            state=TokenState.ON_LOAN,
            user_id=user.id,
            loaned_at=at("2025-01-01 00:00"),
        )
    )


def test_token_return_reminders(db: Db) -> None:
    with session_scope(db.factory) as session:
        tariff = make_tariff(session)
        ended = make_project(
            session,
            start=date(2025, 1, 1),
            end=date(2025, 12, 31),
            state=S.EXPIRED,
            tariff=tariff,
            activated_at=at("2025-01-01 00:00"),
            expired_at=at("2026-01-01 00:00"),
        )
        running = make_project(
            session,
            start=date(2025, 1, 1),
            end=date(2026, 12, 31),
            state=S.ACTIVE,
            tariff=tariff,
            activated_at=at("2025-01-01 00:00"),
        )
        both = add_researcher(session, ended, at("2025-01-01 00:00"))
        add_member(session, running, both, at("2025-01-01 00:00"))  # still in a live one
        closed = make_user(session, status=UserStatus.CLOSED)
        never = make_user(session)  # never in a project: keeps the token
        _lend(session, ended.lead, "T-ENDED")
        _lend(session, running.lead, "T-RUNNING")
        _lend(session, both, "T-BOTH")
        _lend(session, closed, "T-CLOSED")
        _lend(session, never, "T-NEVER")

    first = db.run(at("2026-05-04 08:00"))
    again = db.run(at("2026-05-05 08:00"))

    assert (first.reminders, again.reminders) == (2, 0)
    assert sorted(m.subject for m in db.outbox() if "token" in m.subject) == [
        "[Kluis] Please return your token T-CLOSED",
        "[Kluis] Please return your token T-ENDED",
    ]


# --- failures and concurrency ---------------------------------------------------------------------


def test_one_failing_project_does_not_block_the_others(
    db: Db, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = [active_until(db, date(2026, 6, 30)) for _ in range(3)]
    broken = db.project(ids[1]).code
    real = projects.expire_project

    def expire(session: Session, project: Project, *args: Any, **kwargs: Any) -> Project:
        if project.code == broken:
            raise RuntimeError("disk on fire")
        return real(session, project, *args, **kwargs)

    monkeypatch.setattr(projects, "expire_project", expire)

    report = db.run(at("2026-07-01 00:00"))

    assert sorted(report.expired) == sorted(db.project(i).code for i in (ids[0], ids[2]))
    assert report.errors == [f"expire {broken}: RuntimeError"]
    assert db.project(ids[1]).state is S.ACTIVE  # rolled back alone; the next run tries again
    monkeypatch.setattr(projects, "expire_project", real)
    assert db.run(at("2026-07-01 00:01")).expired == [broken]


def test_two_schedulers_at_once_move_each_project_once(db: Db) -> None:
    ids = [active_until(db, date(2026, 6, 30)) for _ in range(8)]
    start = threading.Barrier(2)
    reports: list[scheduler.ScheduleReport] = []

    def run() -> None:
        start.wait()
        reports.append(db.run(at("2026-07-01 00:00")))

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    assert sorted(reports[0].expired + reports[1].expired) == sorted(
        db.project(i).code for i in ids
    )
    assert reports[0].errors == reports[1].errors == []
    for pid in ids:
        assert db.project(pid).state is S.EXPIRED
        assert events(db, "project_expired", pid) == 1
    assert len([m for m in db.outbox() if "project expired" in m.subject]) == len(ids)
