"""Shared fixtures: a real database per backend (SQLite and PostgreSQL), migrated once per session,
a rolled-back transaction per test, and API clients built through the app factory.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from api_helpers import api_app
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine, create_engine
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from orchestrator.config import Environment, Settings
from orchestrator.db import make_engine, upgrade_database

BACKENDS = ["sqlite", "postgresql"]


def pytest_configure(config: pytest.Config) -> None:
    """Stop at once on a malformed PostgreSQL URL instead of erroring every PostgreSQL test."""
    url = os.environ.get("KLUIS_TEST_POSTGRES_URL")
    if not url:
        return
    try:
        parsed = make_url(url)
    except Exception:
        parsed = None
    if parsed is None or not parsed.drivername.startswith("postgresql"):
        shown = url if len(url) < 200 else url[:200] + "..."
        pytest.exit(
            f"KLUIS_TEST_POSTGRES_URL is not a PostgreSQL URL: {shown!r} "
            "(.ci/postgres must print only the URL on stdout)",
            returncode=4,
        )


def postgres_url() -> str:
    """The server to test against; skips (or fails, with KLUIS_REQUIRE_POSTGRES=1) without one."""
    url = os.environ.get("KLUIS_TEST_POSTGRES_URL")
    if url:
        return url
    if os.environ.get("KLUIS_REQUIRE_POSTGRES") == "1":
        pytest.fail(
            "KLUIS_REQUIRE_POSTGRES=1 but KLUIS_TEST_POSTGRES_URL is not set; "
            "start a server with .ci/postgres and export the URL it prints",
            pytrace=False,
        )
    pytest.skip("PostgreSQL tests need KLUIS_TEST_POSTGRES_URL (see .ci/postgres)")


@contextmanager
def postgres_schema(url: str) -> Iterator[str]:
    """A fresh schema, dropped afterwards; yields `url` with the schema as its search_path."""
    schema = f"kluis_test_{secrets.token_hex(6)}"
    admin = create_engine(url)
    try:
        with admin.begin() as connection:
            connection.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
        scoped = make_url(url).update_query_dict({"options": f"-csearch_path={schema}"})
        yield scoped.render_as_string(hide_password=False)
    finally:
        with admin.begin() as connection:
            connection.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        admin.dispose()


@contextmanager
def empty_database(backend: str, data_dir: Path) -> Iterator[Settings]:
    """Settings for a database with no tables at all, on the given backend."""
    if backend == "sqlite":
        yield Settings(environment=Environment.TEST, data_dir=data_dir)
        return
    with postgres_schema(postgres_url()) as url:
        yield Settings(environment=Environment.TEST, data_dir=data_dir, database_url=url)


@pytest.fixture(scope="session", params=BACKENDS)
def db_settings(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Settings]:
    """Settings for this session's migrated database on one backend."""
    with empty_database(request.param, tmp_path_factory.mktemp(request.param)) as settings:
        upgrade_database(settings)
        yield settings


@pytest.fixture(scope="session")
def engine(db_settings: Settings) -> Iterator[Engine]:
    engine = make_engine(db_settings)
    yield engine
    engine.dispose()


@pytest.fixture
def db_session(engine: Engine) -> Iterator[Session]:
    """A session inside an outer transaction that is rolled back: `commit()` only releases a
    savepoint, so nothing a test writes outlives it."""
    with engine.connect() as connection:
        outer = connection.begin()
        session = Session(bind=connection, join_transaction_mode="create_savepoint")
        try:
            yield session
        finally:
            session.close()
            outer.rollback()


@pytest.fixture(params=BACKENDS)
def unmigrated_settings(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Settings]:
    """A brand-new, empty database per test: for tests that migrate or break the schema."""
    with empty_database(request.param, tmp_path) as settings:
        yield settings


@pytest.fixture
def app(db_settings: Settings, db_session: Session) -> FastAPI:
    """The real app on the session database; routes share the test's rolled-back session."""
    return api_app(db_settings, db_session)


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as client:
        yield client


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No KLUIS_* variables and a fresh working directory, for tests of configuration."""
    for name in list(os.environ):
        if name.startswith("KLUIS_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def isolated_engine(unmigrated_settings: Settings) -> Iterator[tuple[Settings, Engine]]:
    """A migrated database of this test's own (a SQLite file or a PostgreSQL schema) whose
    sessions really commit: for tests of concurrent transactions, which the rolled-back
    `db_session` cannot show."""
    upgrade_database(unmigrated_settings)
    engine = make_engine(unmigrated_settings)
    yield unmigrated_settings, engine
    engine.dispose()
