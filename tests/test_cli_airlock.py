"""`kluis airlock sweep | scanner | verify` against a real database, a real clamd and real files."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from airlock_helpers import clamd_socket  # noqa: F401
from project_factories import make_project, make_researcher
from sqlalchemy import select
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from orchestrator import airlock, airlock_egress
from orchestrator.airlock_models import Upload, UploadState
from orchestrator.cli import app
from orchestrator.config import Settings
from orchestrator.db import make_engine, upgrade_database
from orchestrator.models import ProjectState

runner = CliRunner()


@pytest.fixture
def cli_env(unmigrated_settings: Settings, clean_env: Path) -> dict[str, str]:
    upgrade_database(unmigrated_settings)
    env = {
        "KLUIS_ENVIRONMENT": "development",
        "KLUIS_DATA_DIR": str(unmigrated_settings.data_dir),
        "KLUIS_LOG_LEVEL": "WARNING",
        "KLUIS_CLAMD_SOCKET": str(clean_env / "no-clamd.sock"),
    }
    if unmigrated_settings.database_url:
        env["KLUIS_DATABASE_URL"] = unmigrated_settings.database_url
    return env


@pytest.fixture
def db(unmigrated_settings: Settings) -> Iterator[Session]:
    engine = make_engine(unmigrated_settings)
    with Session(engine, expire_on_commit=False) as session:
        yield session
    engine.dispose()


def test_cli_airlock_sweep_purges_after_retention(cli_env, db, unmigrated_settings):
    settings = unmigrated_settings.model_copy(update={"clamd_socket": Path("/nonexistent")})
    db.info["settings"] = settings
    member = make_researcher(db)
    project = make_project(db, state=ProjectState.ACTIVE, members=[member])
    received = airlock.receive_file(settings, io.BytesIO(b"a,b\n1,2\n"))
    upload = airlock.register_upload(
        db,
        settings,
        member,
        project,
        received,
        "a.csv",
        "basis",
        datetime.now(UTC) - timedelta(days=40),
    )
    assert upload.state is UploadState.BLOCKED  # no scanner: fail-closed
    db.commit()
    quarantined = airlock.quarantine_dir(settings) / upload.quarantine_name
    assert quarantined.exists()

    result = runner.invoke(app, ["airlock", "sweep"], env=cli_env)

    assert result.exit_code == 0, result.output
    assert "purged 1 uploads" in result.output
    assert not quarantined.exists()
    db.expire_all()
    assert db.scalar(select(Upload.state).where(Upload.id == upload.id)) is UploadState.PURGED


def test_cli_airlock_scanner_reports_clamd(cli_env, clamd_socket):  # noqa: F811
    assert runner.invoke(app, ["airlock", "scanner"], env=cli_env).exit_code == 1
    env = {**cli_env, "KLUIS_CLAMD_SOCKET": str(clamd_socket)}
    result = runner.invoke(app, ["airlock", "scanner"], env=env)
    assert result.exit_code == 0, result.output


def test_cli_airlock_verify_manifest(cli_env, unmigrated_settings, tmp_path):
    document = airlock_egress.sign_manifest(
        unmigrated_settings,
        {
            "request": 7,
            "project": "12345",
            "files": [{"path": "t.csv", "sha256": "ab" * 32}],
            "policy_version": "acro-defaults-1",
        },
    )
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps(document))
    result = runner.invoke(app, ["airlock", "verify", str(path)], env=cli_env)
    assert result.exit_code == 0, result.output
    assert "valid: request 7 of project 12345, 1 files" in result.output

    document["manifest"]["files"][0]["sha256"] = "00" * 32
    path.write_text(json.dumps(document))
    result = runner.invoke(app, ["airlock", "verify", str(path)], env=cli_env)
    assert result.exit_code == 1
    assert "INVALID" in result.output
    path.write_text("{not json")
    assert runner.invoke(app, ["airlock", "verify", str(path)], env=cli_env).exit_code == 2
