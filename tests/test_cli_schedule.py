"""`kluis schedule|mail|invoices|tariffs`, in-process against a fresh migrated database per test
(SQLite and PostgreSQL), with a real SMTP server on loopback for `kluis mail deliver`."""

from __future__ import annotations

import csv
import io
import threading
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from cost_factories import at, make_project, make_tariff
from mail_server import MailServer
from sqlalchemy import select
from sqlalchemy.orm import Session
from typer.testing import CliRunner, Result

from orchestrator import scheduler
from orchestrator.cli import app
from orchestrator.config import Settings
from orchestrator.db import make_engine, make_sessionmaker, upgrade_database
from orchestrator.models import OutboxMessage, OutboxStatus, Project, ProjectState, Tariff

runner = CliRunner()


@pytest.fixture
def cli_env(unmigrated_settings: Settings, clean_env: Path) -> dict[str, str]:
    upgrade_database(unmigrated_settings)
    env = {
        "KLUIS_ENVIRONMENT": "development",
        "KLUIS_DATA_DIR": str(unmigrated_settings.data_dir),
        "KLUIS_LOG_LEVEL": "WARNING",
        "KLUIS_PUBLIC_URL": "https://kluis.example.org",
    }
    if unmigrated_settings.database_url:
        env["KLUIS_DATABASE_URL"] = unmigrated_settings.database_url
    return env


@pytest.fixture
def db(unmigrated_settings: Settings) -> Iterator[Session]:
    engine = make_engine(unmigrated_settings)
    with Session(engine) as session:
        yield session
    engine.dispose()


def kluis(env: dict[str, str], *args: str) -> Result:
    return runner.invoke(app, list(args), env=env)


def _active_project(db: Session, end: date) -> Project:
    project = make_project(
        db,
        start=date(2026, 1, 1),
        end=end,
        state=ProjectState.ACTIVE,
        tariff=make_tariff(db),
        activated_at=at("2026-01-01 00:00"),
    )
    project.lead.email = "lead@example.org"
    db.commit()
    return project


def test_schedule_run_once_at_a_given_time(cli_env: dict[str, str], db: Session) -> None:
    project = _active_project(db, date(2026, 6, 30))

    before = kluis(cli_env, "schedule", "run-once", "--now", "2026-06-30T23:59:59Z")
    after = kluis(cli_env, "schedule", "run-once", "--now", "2026-07-01T00:00:00+00:00")

    assert before.exit_code == 0, before.output
    assert "expired: 0" in before.output
    assert after.exit_code == 0, after.output
    assert f"expired: 1 ({project.code})" in after.output
    db.rollback()
    assert db.get_one(Project, project.id).state is ProjectState.EXPIRED


def test_schedule_run_once_refuses_a_bad_time(cli_env: dict[str, str]) -> None:
    result = kluis(cli_env, "schedule", "run-once", "--now", "tomorrow")
    assert result.exit_code == 2
    assert "ISO 8601" in result.output


def test_mail_deliver_sends_to_the_smtp_server(cli_env: dict[str, str], db: Session) -> None:
    project = _active_project(db, date(2026, 6, 30))
    server = MailServer().start()
    env = {**cli_env, "KLUIS_SMTP_HOST": "127.0.0.1", "KLUIS_SMTP_PORT": str(server.port)}
    try:
        assert kluis(env, "schedule", "run-once", "--now", "2026-07-01T00:00Z").exit_code == 0
        result = kluis(env, "mail", "deliver")
    finally:
        server.stop()

    assert result.exit_code == 0, result.output
    assert "sent 1, to retry 0, failed 0; 0 pending" in result.output
    [received] = server.inbox.messages
    assert received.rcpt_tos == ["lead@example.org"]
    assert f"https://kluis.example.org/projects/{project.code}" in received.body
    db.rollback()
    assert db.scalars(select(OutboxMessage.status)).all() == [OutboxStatus.SENT]


def test_schedule_loop_runs_until_stopped(
    unmigrated_settings: Settings, cli_env: dict[str, str], db: Session
) -> None:
    _active_project(db, datetime.now(UTC).date() - timedelta(days=2))  # over, still in grace
    settings = unmigrated_settings.model_copy(update={"smtp_port": 9})  # nothing listens
    engine = make_engine(settings)
    factory = make_sessionmaker(engine, write=True)
    factory.configure(info={"settings": settings})
    stop = threading.Event()
    runs: list[int] = []

    def loop() -> None:
        runs.append(scheduler.run_forever(factory, settings, 0.05, stop))

    thread = threading.Thread(target=loop)
    thread.start()
    try:
        for _ in range(100):
            db.rollback()  # a fresh snapshot
            if db.scalars(select(Project.state)).one() is ProjectState.EXPIRED:
                break
            stop.wait(0.05)
    finally:
        stop.set()
        thread.join(timeout=30)
        engine.dispose()
    db.rollback()
    assert runs[0] >= 1
    assert db.scalars(select(Project.state)).one() is ProjectState.EXPIRED
    # The mail could not be sent (nothing listens on port 9): it waits for its retry.
    messages = db.scalars(select(OutboxMessage)).all()
    assert messages
    assert {(m.status, m.attempts) for m in messages} == {(OutboxStatus.PENDING, 1)}


def test_tariffs_create_and_list(cli_env: dict[str, str], db: Session) -> None:
    created = kluis(
        cli_env, "tariffs", "create", "2031", "--valid-from", "2031-01-01",
        "--base-fee", "1500", "--per-researcher-month", "150.00", "--per-topic-month", "100",
        "--fee-add-researcher", "250", "--fee-add-dataset", "250", "--fee-extension", "200",
    )  # fmt: skip
    again = kluis(
        cli_env, "tariffs", "create", "2031", "--valid-from", "2032-01-01",
        "--base-fee", "1", "--per-researcher-month", "1", "--per-topic-month", "1",
        "--fee-add-researcher", "1", "--fee-add-dataset", "1", "--fee-extension", "1",
    )  # fmt: skip
    listed = kluis(cli_env, "tariffs", "list")

    assert created.exit_code == 0, created.output
    assert again.exit_code == 1
    assert "never changed" in again.output
    assert "2031" in listed.output
    assert "researcher/month=150.00" in listed.output
    assert db.scalars(select(Tariff.label)).all() == ["2031"]


def test_invoices_export_to_a_file_and_stdout(
    cli_env: dict[str, str], db: Session, tmp_path: Path
) -> None:
    project = _active_project(db, date(2026, 12, 31))
    out = tmp_path / "q1.csv"

    to_file = kluis(cli_env, "invoices", "export", "--quarter", "2026Q1", "--output", str(out))
    to_stdout = kluis(cli_env, "invoices", "export", "--quarter", "2026Q1")
    bad = kluis(cli_env, "invoices", "export", "--quarter", "2026Q9")

    assert to_file.exit_code == 0, to_file.output
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    # The lead alone, all of Q1: base 1000.00 + 3 x 300.00.
    assert [(r["project_code"], r["line_kind"], r["amount"]) for r in rows] == [
        (project.code, "base_fee", "1000.00"),
        (project.code, "researchers", "300.00"),
        (project.code, "researchers", "300.00"),
        (project.code, "researchers", "300.00"),
    ]
    assert "total 1900.00" in to_file.output
    assert to_stdout.stdout.startswith("project_code,institution,line_kind")
    assert bad.exit_code == 1
    assert "2026Q4" in bad.output


def test_demo_data_seeds_the_demo_tariff(cli_env: dict[str, str], db: Session) -> None:
    assert kluis(cli_env, "demo-data").exit_code == 0
    assert kluis(cli_env, "demo-data").exit_code == 0
    assert db.scalars(select(Tariff.label)).all() == ["DEMO"]
