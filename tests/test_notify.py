"""The e-mail outbox: written in the change's transaction, deduplicated, chosen recipients and
plain-text bodies; delivered to a real SMTP server on loopback (aiosmtpd), retried with backoff
when the server is down, never lost, FAILED after the maximum attempts, and sent once even with
two deliverers at the same time."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from datetime import date, timedelta

import pytest
from admin_factories import make_user
from cost_factories import add_researcher, at, make_project
from mail_server import MailServer, free_port
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

from orchestrator import notify
from orchestrator.config import Settings
from orchestrator.db import make_sessionmaker, session_scope
from orchestrator.models import OutboxMessage, OutboxStatus, Project, Role, User, UserStatus

NOW = at("2026-05-04 10:00")
PUBLIC_URL = "https://kluis.example.org"


def mail_settings(settings: Settings, port: int, **changes: object) -> Settings:
    return settings.model_copy(
        update={
            "smtp_host": "127.0.0.1",
            "smtp_port": port,
            "smtp_timeout_seconds": 5.0,
            "mail_from": "kluis@example.org",
            "public_url": PUBLIC_URL,
            **changes,
        }
    )


@pytest.fixture
def mail_server() -> Iterator[MailServer]:
    server = MailServer().start()
    yield server
    server.stop()


@pytest.fixture
def outbox_db(isolated_engine: tuple[Settings, Engine]) -> tuple[Settings, sessionmaker[Session]]:
    """A database of this test's own whose sessions commit (deliverers use their own sessions)."""
    settings, engine = isolated_engine
    return settings, make_sessionmaker(engine)


@pytest.fixture
def session(db_session: Session, db_settings: Settings) -> Session:
    db_session.info["settings"] = mail_settings(db_settings, 25)
    return db_session


def person(db_session: Session, email: str, role: Role = Role.RESEARCHER) -> User:
    user = make_user(db_session, role=role)
    user.email = email
    user.full_name = email.split("@")[0].title()
    db_session.flush()
    return user


def queued(db_session: Session) -> list[OutboxMessage]:
    return list(db_session.scalars(select(OutboxMessage).order_by(OutboxMessage.id)))


# --- writing --------------------------------------------------------------------------------------


def test_enqueue_duplicate_dedupe_key_is_a_noop(session: Session) -> None:
    first = notify.enqueue(session, "a@example.org", "Hello", "Body", dedupe_key="k-1")
    second = notify.enqueue(session, "a@example.org", "Hello again", "Body", dedupe_key="k-1")

    assert first is not None
    assert second is None
    assert [m.subject for m in queued(session)] == ["Hello"]


def test_enqueue_without_key_always_writes_and_cleans_the_subject(session: Session) -> None:
    notify.enqueue(session, "a@example.org", "Two\r\nBcc: x@evil.example", "Body")
    notify.enqueue(session, "a@example.org", "Two\r\nBcc: x@evil.example", "Body")

    assert [m.subject for m in queued(session)] == ["Two Bcc: x@evil.example"] * 2


@pytest.mark.parametrize("address", ["", "no-at-sign", "a@example.org\r\nBcc: b@example.org"])
def test_enqueue_skips_bad_addresses(session: Session, address: str) -> None:
    assert notify.enqueue(session, address, "Hello", "Body") is None
    assert queued(session) == []


def test_enqueue_rolls_back_with_the_change(session: Session) -> None:
    savepoint = session.begin_nested()
    notify.enqueue(session, "a@example.org", "Hello", "Body", dedupe_key="k-2")
    savepoint.rollback()
    assert queued(session) == []


# --- project events -------------------------------------------------------------------------------


def _project(session: Session) -> tuple[Project, User, User, User]:
    lead = person(session, "lead@example.org")
    project = make_project(session, start=date(2026, 6, 1), end=date(2027, 5, 31), lead=lead)
    member = add_researcher(session, project, at("2026-05-01 09:00"))
    member.email, member.full_name = "member@example.org", "Member"
    gone = add_researcher(session, project, at("2026-05-01 09:00"), at("2026-05-02 09:00"))
    gone.email = "gone@example.org"
    session.flush()
    return project, lead, member, gone


def test_submitted_goes_to_active_data_stewards_with_code_and_link(session: Session) -> None:
    project, lead, _, _ = _project(session)
    steward = person(session, "steward@example.org", Role.DATA_STEWARD)
    suspended = person(session, "suspended@example.org", Role.DATA_STEWARD)
    suspended.status = UserStatus.SUSPENDED
    session.flush()

    messages = notify.notify_project_event(session, project, "submitted", lead)

    addresses = {m.to_address for m in messages}
    assert steward.email in addresses
    assert "suspended@example.org" not in addresses
    assert lead.email not in addresses
    mail = next(m for m in messages if m.to_address == steward.email)
    assert mail.subject == f"[Kluis] Project {project.code}: application submitted for review"
    assert f"{PUBLIC_URL}/projects/{project.code}" in mail.body
    assert "Dear Steward," in mail.body
    assert f"By:       {lead.full_name}" in mail.body


def test_activated_goes_to_lead_and_current_members_not_the_actor(session: Session) -> None:
    project, _, member, _ = _project(session)

    by_system = notify.notify_project_event(session, project, "activated", None)
    by_member = notify.notify_project_event(session, project, "frozen", member, comment="Audit")

    assert sorted(m.to_address for m in by_system) == ["lead@example.org", "member@example.org"]
    assert [m.to_address for m in by_member] == ["lead@example.org"]
    assert "Comment:\nAudit" in by_member[0].body
    assert "Kluis (automatically)" in by_system[0].body


def test_returned_goes_to_the_lead_only_with_comment_and_extra(session: Session) -> None:
    project, lead, _, _ = _project(session)
    steward = person(session, "steward2@example.org", Role.DATA_STEWARD)

    messages = notify.notify_project_event(
        session,
        project,
        "change_approved",
        steward,
        comment="Fine.",
        extra={"new_end_date": "2027-12-31", "ignored": {"nested": "dict"}},
    )

    assert [m.to_address for m in messages] == [lead.email]
    assert "New end date: 2027-12-31" in messages[0].body
    assert "nested" not in messages[0].body


def test_every_project_event_renders(session: Session) -> None:
    project, _, _, _ = _project(session)
    person(session, "steward3@example.org", Role.DATA_STEWARD)
    for event in notify.PROJECT_EVENTS:
        messages = notify.notify_project_event(session, project, event, None)
        assert messages, event
        assert all(project.code in m.body for m in messages)


def test_unknown_event_and_missing_settings_are_programming_errors(db_session: Session) -> None:
    project = make_project(db_session, start=date(2026, 6, 1), end=date(2027, 5, 31))
    with pytest.raises(RuntimeError, match=r'session.info\["settings"\]'):
        notify.notify_project_event(db_session, project, "submitted", None)
    db_session.info["settings"] = Settings()
    with pytest.raises(ValueError, match="unknown project event"):
        notify.notify_project_event(db_session, project, "exploded", None)


# --- delivery -------------------------------------------------------------------------------------


def _write(factory: sessionmaker[Session], count: int, prefix: str = "m") -> None:
    with session_scope(factory) as session:
        for i in range(count):
            notify.enqueue(
                session,
                f"{prefix}{i}@example.org",
                f"Project 1234{i % 10}: hello {i}",
                f"Body {i}\nhttps://kluis.example.org/projects/1234{i % 10}\n",
            )


def _rows(factory: sessionmaker[Session]) -> list[OutboxMessage]:
    with session_scope(factory) as session:
        return list(session.scalars(select(OutboxMessage).order_by(OutboxMessage.id)))


def test_deliver_sends_to_the_real_smtp_server(
    outbox_db: tuple[Settings, sessionmaker[Session]], mail_server: MailServer
) -> None:
    base, factory = outbox_db
    settings = mail_settings(base, mail_server.port)
    factory.configure(info={"settings": settings})
    with session_scope(factory) as session:
        lead = person(session, "lead@example.org")
        project = make_project(session, start=date(2026, 6, 1), end=date(2027, 5, 31), lead=lead)
        notify.notify_project_event(session, project, "quoted", None)
        code = project.code

    report = notify.deliver_pending(factory, settings, NOW)

    assert report == notify.DeliveryReport(sent=1)
    [received] = mail_server.inbox.messages
    assert received.rcpt_tos == ["lead@example.org"]
    assert received.mail_from == "kluis@example.org"
    assert received.subject == f"[Kluis] Project {code}: quote ready for acceptance"
    assert f"{PUBLIC_URL}/projects/{code}" in received.body
    assert received.message["Message-ID"].startswith("<kluis.outbox.")
    assert received.message["Auto-Submitted"] == "auto-generated"
    [row] = _rows(factory)
    assert (row.status, row.attempts) == (OutboxStatus.SENT, 1)
    assert row.sent_at is not None
    assert timedelta(0) <= row.sent_at - NOW < timedelta(seconds=5)  # `now` + time spent
    assert notify.deliver_pending(factory, settings, NOW) == notify.DeliveryReport()  # nothing new


def test_smtp_down_retries_with_backoff_then_delivers_never_lost(
    outbox_db: tuple[Settings, sessionmaker[Session]],
) -> None:
    base, factory = outbox_db
    port = free_port()  # nothing listens here yet
    settings = mail_settings(base, port, outbox_max_attempts=5)
    _write(factory, 1)

    first = notify.deliver_pending(factory, settings, NOW)
    assert first == notify.DeliveryReport(retried=1)
    [row] = _rows(factory)
    assert row.status is OutboxStatus.PENDING
    assert row.attempts == 1
    assert row.next_attempt_at - NOW >= timedelta(minutes=1)
    assert row.next_attempt_at - NOW < timedelta(minutes=1, seconds=30)
    assert "ConnectionRefusedError" in row.last_error

    # Not due before its backoff has passed.
    assert notify.deliver_pending(factory, settings, NOW + timedelta(seconds=30)).retried == 0
    second = notify.deliver_pending(factory, settings, NOW + timedelta(minutes=2))
    assert second.retried == 1
    [row] = _rows(factory)
    assert row.attempts == 2
    assert row.next_attempt_at - (NOW + timedelta(minutes=2)) >= timedelta(minutes=2)  # doubled

    server = MailServer()
    server.port = port
    server.controller.port = port
    server.start()
    try:
        third = notify.deliver_pending(factory, settings, NOW + timedelta(minutes=10))
    finally:
        server.stop()
    assert third == notify.DeliveryReport(sent=1)
    assert len(server.inbox.messages) == 1
    assert _rows(factory)[0].status is OutboxStatus.SENT


def test_smtp_down_fails_after_max_attempts(
    outbox_db: tuple[Settings, sessionmaker[Session]],
) -> None:
    base, factory = outbox_db
    settings = mail_settings(base, free_port(), outbox_max_attempts=3)
    _write(factory, 1)

    reports = [
        notify.deliver_pending(factory, settings, NOW + timedelta(hours=hour)) for hour in range(5)
    ]

    assert [(r.retried, r.failed) for r in reports] == [(1, 0), (1, 0), (0, 1), (0, 0), (0, 0)]
    [row] = _rows(factory)
    assert (row.status, row.attempts) == (OutboxStatus.FAILED, 3)


def test_backoff_is_exponential_and_capped() -> None:
    assert [notify.backoff(n).total_seconds() / 60 for n in range(1, 9)] == [
        1,
        2,
        4,
        8,
        16,
        32,
        60,
        60,
    ]


def test_credentials_without_starttls_are_refused_and_retried(
    outbox_db: tuple[Settings, sessionmaker[Session]], mail_server: MailServer
) -> None:
    base, factory = outbox_db
    settings = mail_settings(base, mail_server.port, smtp_username="kluis")
    _write(factory, 1)

    report = notify.deliver_pending(factory, settings, NOW)

    assert report.retried == 1
    assert mail_server.inbox.messages == []
    assert "without STARTTLS" in _rows(factory)[0].last_error


def test_crash_between_send_and_mark_resends_after_the_lease(
    outbox_db: tuple[Settings, sessionmaker[Session]], mail_server: MailServer
) -> None:
    base, factory = outbox_db
    settings = mail_settings(base, mail_server.port)
    _write(factory, 1)
    with session_scope(factory) as session:  # a deliverer claims it, then dies
        claimed = notify._claim(session, settings, NOW)
    assert claimed is not None

    during = notify.deliver_pending(factory, settings, NOW + timedelta(minutes=5))
    after = notify.deliver_pending(factory, settings, NOW + timedelta(minutes=16))

    assert during == notify.DeliveryReport()  # leased: nobody else takes it meanwhile
    assert after == notify.DeliveryReport(sent=1)  # at least once: never lost
    assert _rows(factory)[0].attempts == 2


def test_two_concurrent_deliverers_send_each_message_once(
    outbox_db: tuple[Settings, sessionmaker[Session]], mail_server: MailServer
) -> None:
    base, factory = outbox_db
    settings = mail_settings(base, mail_server.port)
    _write(factory, 40)
    start = threading.Barrier(2)
    reports: list[notify.DeliveryReport] = []

    def deliverer() -> None:
        start.wait()
        reports.append(notify.deliver_pending(factory, settings, NOW, limit=100))

    threads = [threading.Thread(target=deliverer) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    ids = Counter(m.message["Message-ID"] for m in mail_server.inbox.messages)
    assert len(ids) == 40
    assert set(ids.values()) == {1}
    assert sum(r.sent for r in reports) == 40
    assert {row.status for row in _rows(factory)} == {OutboxStatus.SENT}


@pytest.mark.parametrize("event", sorted(notify.PROJECT_EVENTS))
def test_each_project_event_arrives_over_smtp(
    outbox_db: tuple[Settings, sessionmaker[Session]], mail_server: MailServer, event: str
) -> None:
    base, factory = outbox_db
    settings = mail_settings(base, mail_server.port)
    factory.configure(info={"settings": settings})
    with session_scope(factory) as session:
        lead = person(session, "lead@example.org")
        person(session, "steward@example.org", Role.DATA_STEWARD)
        project = make_project(session, start=date(2026, 6, 1), end=date(2027, 5, 31), lead=lead)
        member = add_researcher(session, project, at("2026-06-01 00:00"))
        member.email = "member@example.org"
        written = notify.notify_project_event(session, project, event, None)
        code, expected = project.code, sorted(m.to_address for m in written)

    report = notify.deliver_pending(factory, settings, NOW)

    received = mail_server.inbox.messages
    assert expected, f"{event} must notify someone"
    assert report.sent == len(expected)
    assert sorted(to for m in received for to in m.rcpt_tos) == expected
    for message in received:
        assert message.subject.startswith(f"[Kluis] Project {code}: ")
        assert f"{PUBLIC_URL}/projects/{code}" in message.body
