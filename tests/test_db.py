"""Database: SQLite pragmas, migrations up and down on both backends, readiness, UTC timestamps."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import inspect, select
from sqlalchemy.exc import IntegrityError, StatementError
from sqlalchemy.orm import Session

from orchestrator.config import Environment, Settings
from orchestrator.db import (
    check_database,
    downgrade_database,
    make_engine,
    make_sessionmaker,
    script_heads,
    session_scope,
    upgrade_database,
)
from orchestrator.models import InstanceInfo


def test_make_engine_sqlite_creates_file_in_wal_mode(tmp_path: Path) -> None:
    settings = Settings(environment=Environment.TEST, data_dir=tmp_path / "nested" / "data")
    engine = make_engine(settings)

    with engine.connect() as connection:
        journal = connection.exec_driver_sql("PRAGMA journal_mode").scalar()
        foreign_keys = connection.exec_driver_sql("PRAGMA foreign_keys").scalar()
        busy_timeout = connection.exec_driver_sql("PRAGMA busy_timeout").scalar()
    engine.dispose()

    assert (tmp_path / "nested" / "data" / "kluis.db").is_file()
    assert journal == "wal"
    assert foreign_keys == 1
    assert busy_timeout == 5000


def test_check_database_ready_after_migrations(db_settings: Settings) -> None:
    engine = make_engine(db_settings)

    status = check_database(engine)
    engine.dispose()

    assert status.ready, status.reason
    assert status.reason == "ok"


def test_check_database_empty_schema_not_ready(unmigrated_settings: Settings) -> None:
    engine = make_engine(unmigrated_settings)

    status = check_database(engine)
    engine.dispose()

    assert not status.ready
    assert status.reason == f"schema at empty, expected {', '.join(sorted(script_heads()))}"


def test_check_database_unreachable_not_ready(tmp_path: Path) -> None:
    url = "postgresql+psycopg://kluis:pw@127.0.0.1:1/none?connect_timeout=2"
    engine = make_engine(
        Settings(environment=Environment.TEST, data_dir=tmp_path, database_url=url)
    )

    status = check_database(engine)

    assert not status.ready
    assert status.reason == "database unreachable"


def test_migrations_downgrade_to_base_and_upgrade_again(unmigrated_settings: Settings) -> None:
    engine = make_engine(unmigrated_settings)
    try:
        upgrade_database(unmigrated_settings)
        assert check_database(engine).ready
        assert "instance_info" in inspect(engine).get_table_names()

        downgrade_database(unmigrated_settings, "base")
        assert not check_database(engine).ready
        assert "instance_info" not in inspect(engine).get_table_names()

        upgrade_database(unmigrated_settings)
        assert check_database(engine).ready
    finally:
        engine.dispose()


def test_migrations_upgrade_is_idempotent(unmigrated_settings: Settings) -> None:
    upgrade_database(unmigrated_settings)
    upgrade_database(unmigrated_settings)

    engine = make_engine(unmigrated_settings)
    assert check_database(engine).ready
    engine.dispose()


def test_instance_info_written_by_first_migration(db_session: Session) -> None:
    info = db_session.scalars(select(InstanceInfo)).one()

    assert info.id == 1
    assert len(info.install_id) == 36
    assert info.note == "created by 0001"
    assert info.created_at.tzinfo is UTC
    assert info.created_at < datetime.now(UTC)


def test_utc_datetime_returns_aware_utc(db_session: Session) -> None:
    info = db_session.get_one(InstanceInfo, 1)
    amsterdam = timezone(timedelta(hours=2))
    info.created_at = datetime(2025, 6, 1, 14, 30, tzinfo=amsterdam)
    db_session.commit()
    db_session.expire_all()

    stored = db_session.get_one(InstanceInfo, 1).created_at

    assert stored == datetime(2025, 6, 1, 12, 30, tzinfo=UTC)
    assert stored.tzinfo is UTC


def test_utc_datetime_refuses_naive(db_session: Session) -> None:
    info = db_session.get_one(InstanceInfo, 1)
    info.created_at = datetime(2025, 6, 1, 12, 30)

    with pytest.raises(StatementError, match="naive datetime"):
        db_session.flush()


def test_instance_info_singleton_enforced(db_session: Session) -> None:
    db_session.add(InstanceInfo(id=2, install_id="another", note=""))

    with pytest.raises(IntegrityError):
        db_session.flush()


def test_session_scope_commits_or_rolls_back(unmigrated_settings: Settings) -> None:
    upgrade_database(unmigrated_settings)
    engine = make_engine(unmigrated_settings)
    factory = make_sessionmaker(engine)

    with session_scope(factory) as session:
        session.get_one(InstanceInfo, 1).note = "kept"

    def write_then_fail() -> None:
        with session_scope(factory) as session:
            session.get_one(InstanceInfo, 1).note = "lost"
            raise RuntimeError("abort")

    with pytest.raises(RuntimeError):
        write_then_fail()

    with session_scope(factory) as session:
        assert session.get_one(InstanceInfo, 1).note == "kept"
    engine.dispose()
