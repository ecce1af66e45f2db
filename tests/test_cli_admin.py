"""The administration commands, run in-process against a fresh migrated database per test (SQLite
and PostgreSQL): users, tokens, institutions, audit verify/export, demo data and demo codes."""

from __future__ import annotations

import base64
import io
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pskc
import pyotp
import pytest
from sqlalchemy import select, text, update
from sqlalchemy.orm import Session
from typer.testing import CliRunner, Result

from orchestrator import totp
from orchestrator.cli import app
from orchestrator.config import Settings
from orchestrator.db import make_engine, upgrade_database
from orchestrator.models import AuditEvent, TokenState, TotpToken, User, UserStatus

runner = CliRunner()


@pytest.fixture
def cli_env(unmigrated_settings: Settings, clean_env: Path) -> dict[str, str]:
    """Environment for `kluis` pointing at a fresh, migrated database."""
    upgrade_database(unmigrated_settings)
    env = {
        "KLUIS_ENVIRONMENT": "development",
        "KLUIS_DATA_DIR": str(unmigrated_settings.data_dir),
        "KLUIS_LOG_LEVEL": "WARNING",
    }
    if unmigrated_settings.database_url:
        env["KLUIS_DATABASE_URL"] = unmigrated_settings.database_url
    return env


@pytest.fixture
def db(unmigrated_settings: Settings) -> Iterator[Session]:
    """A session on the same database, to look at what the commands wrote."""
    engine = make_engine(unmigrated_settings)
    with Session(engine) as session:
        yield session
    engine.dispose()


def kluis(env: dict[str, str], *args: str) -> Result:
    return runner.invoke(app, list(args), env=env)


def make_institution(env: dict[str, str], name: str = "CLI Institute") -> None:
    result = kluis(
        env, "institutions", "create", name, "--country", "NL",
        "--from", "2026-01-01", "--until", "2028-12-31",
    )  # fmt: skip
    assert result.exit_code == 0, result.output


def pskc_file(tmp_path: Path, *serials: str, psk: bytes | None = None) -> Path:
    container = pskc.PSKC()
    for serial in serials:
        container.add_key(
            serial=serial,
            secret=bytes(range(20)),
            algorithm="urn:ietf:params:xml:ns:keyprov:pskc:totp",
        )
    if psk is not None:
        container.encryption.setup_preshared_key(key=psk)
    out = io.BytesIO()
    container.write(out)
    path = tmp_path / "batch.pskc"
    path.write_bytes(out.getvalue())
    return path


def test_cli_admin_institutions_create_list_update(cli_env: dict[str, str], db: Session) -> None:
    make_institution(cli_env)

    updated = kluis(cli_env, "institutions", "update", "CLI Institute", "--network", "192.0.2.0/24")
    listed = kluis(cli_env, "institutions", "list")

    assert updated.exit_code == 0, updated.output
    assert "version 2" in updated.stdout
    assert "CLI Institute" in listed.stdout
    assert "networks=192.0.2.0/24" in listed.stdout


def test_cli_admin_institution_rule_violation_exits_1(cli_env: dict[str, str]) -> None:
    result = kluis(
        cli_env, "institutions", "create", "Far Away", "--country", "US",
        "--from", "2026-01-01", "--until", "2027-01-01",
    )  # fmt: skip

    assert result.exit_code == 1
    assert "GDPR-adequate" in result.stderr


def test_cli_admin_users_create_prints_link_and_is_audited_as_system(
    cli_env: dict[str, str], db: Session
) -> None:
    make_institution(cli_env)

    result = kluis(
        cli_env, "users", "create", "Carla", "--email", "c@example.org", "--name", "Carla C",
        "--institution", "CLI Institute",
    )  # fmt: skip

    assert result.exit_code == 0, result.output
    assert "/activate?secret=" in result.stdout
    user = db.scalars(select(User).where(User.username == "carla")).one()
    assert user.status is UserStatus.PENDING
    event = db.scalars(select(AuditEvent).where(AuditEvent.action == "user_created")).one()
    assert event.actor == "system"


def test_cli_admin_as_user_applies_their_rights(cli_env: dict[str, str], db: Session) -> None:
    kluis(cli_env, "demo-data")

    ops = kluis(
        cli_env, "users", "create", "opsy", "--email", "o@example.org", "--name", "O",
        "--role", "ops", "--as", "steward",
    )  # fmt: skip
    self_disable = kluis(cli_env, "users", "disable", "steward", "--reason", "x", "--as", "steward")
    researcher = kluis(
        cli_env, "users", "disable", "researcher2", "--reason", "x", "--as", "researcher1"
    )

    assert ops.exit_code == 1
    assert "ops role" in ops.stderr
    assert self_disable.exit_code == 1
    assert researcher.exit_code == 1
    assert db.scalars(select(User).where(User.username == "opsy")).first() is None


def test_cli_admin_disable_ends_sessions_and_enable(cli_env: dict[str, str], db: Session) -> None:
    kluis(cli_env, "demo-data")

    disabled = kluis(cli_env, "users", "disable", "researcher1", "--reason", "left", "--close")
    enabled = kluis(cli_env, "users", "enable", "researcher1")
    listed = kluis(cli_env, "users", "list", "--role", "researcher")

    assert disabled.exit_code == 0, disabled.output
    assert "closed" in disabled.stdout
    assert enabled.exit_code == 0, enabled.output
    assert "researcher1" in listed.stdout


def test_cli_admin_activation_link_resets_active_account(
    cli_env: dict[str, str], db: Session
) -> None:
    kluis(cli_env, "demo-data")

    result = kluis(cli_env, "users", "activation-link", "researcher2")

    assert result.exit_code == 0, result.output
    assert "reset" in result.stdout
    user = db.scalars(select(User).where(User.username == "researcher2")).one()
    assert user.password_hash is None


def test_cli_admin_tokens_import_assign_return_revoke(
    cli_env: dict[str, str], db: Session, tmp_path: Path
) -> None:
    kluis(cli_env, "demo-data")
    kluis(cli_env, "tokens", "revoke", db_serial_of(db, "researcher1"))
    path = pskc_file(tmp_path, "HW-1", "HW-2", psk=bytes(16))

    imported = kluis(cli_env, "tokens", "import", str(path), "--psk-hex", "00" * 16)
    assigned = kluis(cli_env, "tokens", "assign", "HW-1", "researcher1")
    returned = kluis(cli_env, "tokens", "return", "HW-1")
    restocked = kluis(cli_env, "tokens", "restock", "HW-1")
    revoked = kluis(cli_env, "tokens", "revoke", "HW-1", "--reason", "dropped")
    listed = kluis(cli_env, "tokens", "list", "--state", "revoked")

    for result in (imported, assigned, returned, restocked, revoked, listed):
        assert result.exit_code == 0, result.output
    assert "imported 2 tokens" in imported.stdout
    assert "HW-1" in listed.stdout
    token = db.scalars(select(TotpToken).where(TotpToken.serial == "HW-1")).one()
    assert token.state is TokenState.REVOKED


def test_cli_admin_tokens_import_refusals(
    cli_env: dict[str, str], db: Session, tmp_path: Path
) -> None:
    path = pskc_file(tmp_path, "E-1", psk=bytes(16))

    no_key = kluis(cli_env, "tokens", "import", str(path))
    wrong = kluis(cli_env, "tokens", "import", str(path), "--psk-hex", "ff" * 16)
    once = kluis(cli_env, "tokens", "import", str(path), "--psk-hex", "00" * 16)
    twice = kluis(cli_env, "tokens", "import", str(path), "--psk-hex", "00" * 16)

    assert no_key.exit_code == 1
    assert "give the pre-shared key" in no_key.stderr
    assert wrong.exit_code == 1
    assert "cannot be decrypted" in wrong.stderr
    assert once.exit_code == 0, once.output
    assert twice.exit_code == 1
    assert "duplicate: E-1" in twice.stderr


def test_cli_admin_illegal_token_move_exits_1(cli_env: dict[str, str], tmp_path: Path) -> None:
    kluis(cli_env, "tokens", "import", str(pskc_file(tmp_path, "S-1")))

    result = kluis(cli_env, "tokens", "return", "S-1")

    assert result.exit_code == 1
    assert "in stock" in result.stderr


def db_serial_of(db: Session, username: str) -> str:
    user = db.scalars(select(User).where(User.username == username)).one()
    serial = db.scalars(select(TotpToken.serial).where(TotpToken.user_id == user.id)).one()
    db.rollback()  # end the read transaction: later reads must see what the commands write
    return serial


def test_cli_admin_audit_verify_ok_then_names_tampered_row(
    cli_env: dict[str, str], db: Session, unmigrated_settings: Settings
) -> None:
    kluis(cli_env, "demo-data")
    intact = kluis(cli_env, "audit", "verify")
    engine = make_engine(unmigrated_settings)
    with engine.begin() as connection:  # an attacker with database access, outside Kluis
        if engine.dialect.name == "postgresql":
            connection.execute(
                text("ALTER TABLE audit_event DISABLE TRIGGER audit_event_append_only")
            )
        else:
            connection.execute(text("DROP TRIGGER audit_event_no_update"))
        connection.execute(update(AuditEvent).where(AuditEvent.seq == 4).values(actor="mallory"))
    engine.dispose()

    broken = kluis(cli_env, "audit", "verify")

    assert intact.exit_code == 0, intact.output
    assert "intact" in intact.stdout
    assert broken.exit_code == 1
    assert "broken at row 4" in broken.stderr


def test_cli_admin_audit_export_json_lines(
    cli_env: dict[str, str], tmp_path: Path, db: Session
) -> None:
    kluis(cli_env, "demo-data")
    target = tmp_path / "audit.jsonl"

    to_file = kluis(cli_env, "audit", "export", "--output", str(target))
    to_stdout = kluis(cli_env, "audit", "export", "--since", "2000-01-01")
    future = kluis(cli_env, "audit", "export", "--since", "2999-01-01T00:00:00+00:00")
    bad = kluis(cli_env, "audit", "export", "--since", "yesterday")

    events = [json.loads(line) for line in target.read_text().splitlines()]
    assert to_file.exit_code == 0, to_file.output
    assert len(events) == db.scalars(select(AuditEvent.seq)).all().__len__()
    assert {"seq", "hash", "prev_hash", "action"} <= set(events[0])
    assert [json.loads(line)["seq"] for line in to_stdout.stdout.splitlines()] == [
        e["seq"] for e in events
    ]
    assert future.stdout == ""
    assert bad.exit_code == 2


def test_cli_admin_demo_data_idempotent_and_code_works(
    cli_env: dict[str, str], db: Session
) -> None:
    first = kluis(cli_env, "demo-data")
    rows_after_first = len(db.scalars(select(AuditEvent.seq)).all())
    db.rollback()  # a new read transaction after the second run (SQLite reads a snapshot)
    second = kluis(cli_env, "demo-data")
    code = kluis(cli_env, "demo-code", "researcher1")

    assert first.exit_code == 0, first.output
    assert "researcher1" in first.stdout
    assert "kluis demo-code" in first.stdout
    assert second.exit_code == 0, second.output
    assert len(db.scalars(select(AuditEvent.seq)).all()) == rows_after_first
    users = db.scalars(select(User)).all()
    assert len(users) == 3
    assert all(u.status is UserStatus.ACTIVE and u.statement_valid_until for u in users)
    assert code.exit_code == 0, code.output
    printed = code.stdout.strip()
    assert len(printed) == 6
    assert printed.isdigit()


@pytest.mark.parametrize("environment", ["production", "test"])
def test_cli_admin_demo_commands_refused_outside_development(
    cli_env: dict[str, str], environment: str
) -> None:
    env = {
        **cli_env,
        "KLUIS_ENVIRONMENT": environment,
        "KLUIS_SECRET_KEY": "x" * 40,
        "KLUIS_ALLOW_SQLITE_IN_PRODUCTION": "true",
        "KLUIS_STORAGE_BACKEND": "nfs",
    }

    data = kluis(env, "demo-data")
    code = kluis(env, "demo-code", "steward")

    assert data.exit_code == 2
    assert code.exit_code == 2
    assert "only with KLUIS_ENVIRONMENT=development" in code.stderr


def test_cli_admin_demo_code_matches_seed(
    cli_env: dict[str, str], db: Session, unmigrated_settings: Settings
) -> None:
    kluis(cli_env, "demo-data")
    token = db.scalars(
        select(TotpToken).join(User, TotpToken.user_id == User.id).where(User.username == "steward")
    ).one()

    printed = kluis(cli_env, "demo-code", "steward").stdout.strip()

    seed = totp.decrypt_seed(unmigrated_settings, token.seed_encrypted)
    generator = pyotp.TOTP(base64.b32encode(seed).decode("ascii"))
    assert printed in {generator.now(), generator.at(time.time() - 30)}
