"""The audit trail: every administrative change writes its row, the chain verifies, and editing or
deleting any row (possible only after switching the append-only trigger off, inside this test's
rolled-back transaction) is named by `verify_chain`."""

from __future__ import annotations

import io
import itertools
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pskc
import pytest
from admin_factories import make_user
from sqlalchemy import delete, select, text, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from orchestrator import accounts, audit, institutions, tokens
from orchestrator.config import Environment, Settings
from orchestrator.models import AuditEvent, Role, UserStatus


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(environment=Environment.TEST, data_dir=tmp_path, software_tokens_enabled=True)


def switch_off_append_only(session: Session) -> None:
    """Only for tampering tests: the DDL is undone when the test's transaction rolls back."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("ALTER TABLE audit_event DISABLE TRIGGER audit_event_append_only"))
    else:
        session.execute(text("DROP TRIGGER audit_event_no_update"))
        session.execute(text("DROP TRIGGER audit_event_no_delete"))


def some_history(session: Session, settings: Settings) -> None:
    """A realistic run of administration: institution, account, statement, tokens, status."""
    steward = make_user(session, role=Role.DATA_STEWARD)
    today = datetime.now(UTC).date()
    institution = institutions.create_institution(
        session,
        settings,
        name="Audit Institute",
        country="NL",
        authorised_from=today,
        authorised_until=today + timedelta(days=365),
        actor=steward,
    )
    institutions.update_institution(
        session, settings, institution, version=1, allowed_networks=["192.0.2.0/24"], actor=steward
    )
    user, secret = accounts.create_account(
        session,
        settings,
        username="audited",
        email="a@example.org",
        full_name="A",
        role=Role.RESEARCHER,
        institution_id=institution.id,
        actor=steward,
    )
    accounts.activate_account(session, settings, secret=secret, password="a long passphrase here")
    accounts.record_statement(session, user, signed_at=datetime.now(UTC), actor=steward)
    container = pskc.PSKC()
    container.add_key(
        serial="AUD-1", secret=bytes(20), algorithm="urn:ietf:params:xml:ns:keyprov:pskc:totp"
    )
    out = io.BytesIO()
    container.write(out)
    (token,) = tokens.import_pskc(session, settings, out.getvalue(), source="a.pskc", actor=steward)
    tokens.assign_token(session, token, user, actor=steward)
    tokens.return_token(session, token, actor=steward)
    tokens.restock_token(session, token, actor=steward)
    tokens.assign_token(session, token, user, actor=steward)
    tokens.report_lost(session, token, actor=steward)
    tokens.enrol_software_token(session, settings, user, actor=steward)
    accounts.change_role(session, user, Role.OUTPUT_CHECKER, actor=steward)
    accounts.set_status(session, user, UserStatus.SUSPENDED, actor=steward, reason="test")
    accounts.set_status(session, user, UserStatus.ACTIVE, actor=steward)
    accounts.reset_password(session, settings, user, actor=steward)


def test_audit_every_change_writes_its_row(db_session: Session, settings: Settings) -> None:
    some_history(db_session, settings)

    recorded = set(db_session.scalars(select(AuditEvent.action)))

    assert {
        "institution_created",
        "institution_updated",
        "user_created",
        "activation_link_issued",
        "account_activated",
        "statement_recorded",
        "token_imported",
        "token_assigned",
        "token_returned",
        "token_restocked",
        "token_lost",
        "token_enrolled",
        "user_role_changed",
        "user_status_changed",
        "password_reset",
        "sessions_ended_all",
    } <= recorded


def test_audit_rows_never_hold_secrets(db_session: Session, settings: Settings) -> None:
    some_history(db_session, settings)

    dump = json.dumps([row.details for row in db_session.scalars(select(AuditEvent))])

    assert "a long passphrase here" not in dump
    assert "seed" not in dump.lower()
    assert "secret" not in dump.lower()


def test_audit_chain_verifies(db_session: Session, settings: Settings) -> None:
    some_history(db_session, settings)

    report = audit.verify_chain(db_session)

    assert report.ok, report
    assert report.checked == len(db_session.scalars(select(AuditEvent.seq)).all())


@pytest.mark.parametrize("verb", ["UPDATE", "DELETE"])
def test_audit_trigger_refuses_update_and_delete(
    db_session: Session, settings: Settings, verb: str
) -> None:
    some_history(db_session, settings)
    statement = (
        update(AuditEvent).where(AuditEvent.seq == 2).values(actor="mallory")
        if verb == "UPDATE"
        else delete(AuditEvent).where(AuditEvent.seq == 2)
    )

    with pytest.raises(DBAPIError, match="append-only"), db_session.begin_nested():
        db_session.execute(statement)

    assert audit.verify_chain(db_session).ok


def test_audit_edited_details_name_the_row(db_session: Session, settings: Settings) -> None:
    some_history(db_session, settings)
    switch_off_append_only(db_session)
    target = db_session.scalars(
        select(AuditEvent.seq).where(AuditEvent.action == "user_status_changed").limit(1)
    ).one()

    db_session.execute(
        update(AuditEvent).where(AuditEvent.seq == target).values(details={"reason": "nothing"})
    )
    db_session.expire_all()
    report = audit.verify_chain(db_session)

    assert not report.ok
    assert report.first_broken_seq == target
    assert "content" in report.reason


def test_audit_rehashed_row_breaks_the_next_link(db_session: Session, settings: Settings) -> None:
    some_history(db_session, settings)
    switch_off_append_only(db_session)
    row = db_session.get(AuditEvent, 3)
    assert row is not None
    forged = audit.compute_hash(row.prev_hash, {**audit._content(row), "actor": "mallory"})

    db_session.execute(
        update(AuditEvent).where(AuditEvent.seq == 3).values(actor="mallory", hash=forged)
    )
    db_session.expire_all()
    report = audit.verify_chain(db_session)

    assert report.first_broken_seq == 4
    assert "link" in report.reason


def test_audit_deleted_row_is_named(db_session: Session, settings: Settings) -> None:
    some_history(db_session, settings)
    switch_off_append_only(db_session)

    db_session.execute(delete(AuditEvent).where(AuditEvent.seq == 5))
    db_session.expire_all()
    report = audit.verify_chain(db_session)

    assert not report.ok
    assert report.first_broken_seq == 5
    assert "missing" in report.reason


def test_audit_deleted_last_row_is_noticed(db_session: Session, settings: Settings) -> None:
    some_history(db_session, settings)
    switch_off_append_only(db_session)
    last = db_session.scalars(select(AuditEvent.seq).order_by(AuditEvent.seq.desc())).first()

    db_session.execute(delete(AuditEvent).where(AuditEvent.seq == last))
    db_session.expire_all()
    report = audit.verify_chain(db_session)

    assert not report.ok
    assert report.first_broken_seq == last


def test_audit_export_writes_valid_json_lines(db_session: Session, settings: Settings) -> None:
    some_history(db_session, settings)
    out = io.StringIO()

    count = audit.export_jsonl(db_session, out)

    lines = out.getvalue().splitlines()
    assert count == len(lines) > 10
    events = [json.loads(line) for line in lines]
    assert [e["seq"] for e in events] == list(range(1, count + 1))
    assert all(e["prev_hash"] == p["hash"] for p, e in itertools.pairwise(events))
    assert {"seq", "at", "actor", "action", "details", "hash", "prev_hash"} <= set(events[0])


def test_audit_export_since_filters(db_session: Session, settings: Settings) -> None:
    some_history(db_session, settings)
    out = io.StringIO()

    count = audit.export_jsonl(db_session, out, since=datetime.now(UTC) + timedelta(hours=1))

    assert count == 0
    assert out.getvalue() == ""
