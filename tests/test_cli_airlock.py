"""`kluis airlock …` against a real database (SQLite and PostgreSQL), a real clamd and real files:
sweep, scanner, verify; the staff's uploads, upload review, output requests and approvals, with
their refusals (unknown ids, wrong roles, segregation of duties, illegal steps: nothing written)."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from airlock_helpers import EICAR, clamd_socket  # noqa: F401
from project_factories import make_project, make_researcher, make_staff
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from orchestrator import airlock, airlock_egress
from orchestrator.airlock_egress import FileSpec
from orchestrator.airlock_models import (
    OutputKind,
    ReviewDecision,
    Upload,
    UploadState,
)
from orchestrator.cli import app
from orchestrator.config import Settings
from orchestrator.db import make_engine, upgrade_database
from orchestrator.models import (
    AuditEvent,
    MemberRole,
    Project,
    ProjectMember,
    ProjectState,
    Role,
)

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


# --- staff commands: uploads, outputs, approvals -------------------------------------------------

NOW = datetime.now(UTC)


def invoke(env: dict[str, str], *args: str):
    return runner.invoke(app, ["airlock", *args], env=env)


def reread(db: Session) -> None:
    """End the test's read transaction (a snapshot) and forget loaded rows: see what the
    command committed."""
    db.rollback()
    db.expire_all()


def audit_count(db: Session) -> int:
    reread(db)
    return db.scalar(select(func.count()).select_from(AuditEvent)) or 0


@pytest.fixture
def world(db, unmigrated_settings, clamd_socket):  # noqa: F811
    """A committed active project with one upload awaiting review, one blocked (EICAR), and a
    submitted output request in the light lane; staff of each role and an outsider."""
    settings = unmigrated_settings.model_copy(update={"clamd_socket": clamd_socket})
    db.info["settings"] = settings
    member = make_researcher(db)
    project = make_project(db, state=ProjectState.ACTIVE, members=[member])
    uploads = []
    for name, data in (("clean.csv", b"a,b\n1,2\n"), ("virus.txt", EICAR)):
        received = airlock.receive_file(settings, io.BytesIO(data))
        uploads.append(
            airlock.register_upload(db, settings, member, project, received, name, "Art. 6", NOW)
        )
    export = airlock.project_area(settings, project, "export")
    export.mkdir(parents=True)
    (export / "table.csv").write_bytes(b"region,count\nNorth,120\nSouth,3\n")
    request = airlock_egress.create_request(
        db,
        settings,
        member,
        project,
        "Regional counts",
        [FileSpec("table.csv", OutputKind.TABLE, "Counts by region", "rounded to 5")],
        NOW,
        light=True,
    )
    airlock_egress.submit_request(db, settings, member, request, None, NOW)
    checker = make_staff(db, Role.OUTPUT_CHECKER)
    airlock_egress.review_request(
        db, checker, request, ReviewDecision.APPROVE, "fine", {request.files[0].id: "ok"}, None, NOW
    )
    world = {
        "settings": settings,
        "project": project,
        "member": member,
        "pending": uploads[0],
        "blocked": uploads[1],
        "request": request,
        "checker": checker,
        "steward": make_staff(db, Role.DATA_STEWARD),
        "ops": make_staff(db, Role.OPS),
        "outsider": make_researcher(db),
    }
    db.commit()
    assert world["pending"].state is UploadState.PENDING_REVIEW
    assert world["blocked"].state is UploadState.BLOCKED
    return world


def test_cli_airlock_uploads_lists_and_filters(cli_env, world):
    code = world["project"].code

    everything = invoke(cli_env, "uploads")
    queue = invoke(cli_env, "uploads", "--state", "pending_review", "--project", code, "--json")
    as_steward = invoke(cli_env, "uploads", "--as", world["steward"].username)

    assert everything.exit_code == 0, everything.output
    assert "clean.csv" in everything.output
    assert "virus.txt" in everything.output
    assert "2 uploads" in everything.output
    assert queue.exit_code == 0, queue.output
    rows = json.loads(queue.output)
    assert [r["id"] for r in rows] == [world["pending"].id]
    assert rows[0]["project"] == code
    assert rows[0]["uploaded_by"] == world["member"].username
    assert as_steward.exit_code == 0
    assert "2 uploads" in as_steward.output


def test_cli_airlock_uploads_refusals(cli_env, world):
    outsider = world["outsider"].username

    every_project = invoke(cli_env, "uploads", "--as", outsider)
    other_project = invoke(cli_env, "uploads", "--project", world["project"].code, "--as", outsider)
    unknown_project = invoke(cli_env, "uploads", "--project", "99999")
    unknown_user = invoke(cli_env, "uploads", "--as", "nobody-here")
    bad_state = invoke(cli_env, "uploads", "--state", "lost")

    assert every_project.exit_code == 4
    assert "Only reviewers" in every_project.output
    assert other_project.exit_code == 3
    assert "no project" in other_project.output
    assert unknown_project.exit_code == 3
    assert unknown_user.exit_code == 3
    assert "no user 'nobody-here'" in unknown_user.output
    assert bad_state.exit_code == 2


def test_cli_airlock_upload_shows_checks(cli_env, world):
    blocked = invoke(cli_env, "upload", str(world["blocked"].id))
    pending = invoke(cli_env, "upload", str(world["pending"].id), "--json")
    as_member = invoke(
        cli_env, "upload", str(world["pending"].id), "--as", world["member"].username
    )

    assert blocked.exit_code == 0, blocked.output
    assert "(blocked)" in blocked.output
    assert "fail: malware" in blocked.output
    assert "Kluis.Test.EICAR" in blocked.output
    assert world["blocked"].sha256 in blocked.output
    data = json.loads(pending.output)
    assert data["state"] == "pending_review"
    assert data["legal_basis"] == "Art. 6"
    assert {f["check"] for f in data["findings"]} >= {"malware"}
    assert all(f["verdict"] == "pass" for f in data["findings"])
    assert as_member.exit_code == 0


def test_cli_airlock_upload_unknown_or_invisible_is_not_found(cli_env, world):
    unknown = invoke(cli_env, "upload", "999999")
    invisible = invoke(
        cli_env, "upload", str(world["pending"].id), "--as", world["outsider"].username
    )
    not_a_number = invoke(cli_env, "upload", "abc")

    assert unknown.exit_code == 3
    assert "Upload not found" in unknown.output
    assert invisible.exit_code == 3
    assert "Upload not found" in invisible.output
    assert not_a_number.exit_code == 2


def test_cli_airlock_review_upload_approve_places_it_and_audits(cli_env, db, world):
    steward = world["steward"]
    upload = world["pending"]

    result = invoke(
        cli_env, "review-upload", str(upload.id), "approve", "--as", steward.username,
        "--version", str(upload.version),
    )  # fmt: skip
    again = invoke(cli_env, "review-upload", str(upload.id), "approve", "--as", steward.username)

    assert result.exit_code == 0, result.output
    assert f"upload {upload.id} is approved: import/{upload.id}/clean.csv" in result.output
    placed = airlock.project_area(world["settings"], world["project"], "import") / str(upload.id)
    assert (placed / "clean.csv").read_bytes() == b"a,b\n1,2\n"
    reread(db)
    assert db.get(Upload, upload.id).state is UploadState.APPROVED
    event = db.scalars(
        select(AuditEvent).where(AuditEvent.action == "airlock_upload_approved")
    ).one()
    assert event.actor == steward.username
    assert event.object_id == str(upload.id)
    assert again.exit_code == 5
    assert "cannot be approved" in again.output


def test_cli_airlock_review_upload_reject_needs_a_reason(cli_env, db, world):
    checker = world["checker"].username
    upload = world["pending"]
    before = audit_count(db)

    no_reason = invoke(cli_env, "review-upload", str(upload.id), "reject", "--as", checker)
    unchanged = audit_count(db)
    rejected = invoke(
        cli_env, "review-upload", str(upload.id), "reject", "--as", checker, "--reason", "No basis"
    )

    assert no_reason.exit_code == 1
    assert "reason" in no_reason.output
    assert unchanged == before
    assert rejected.exit_code == 0, rejected.output
    assert f"upload {upload.id} is rejected" in rejected.output
    reread(db)
    row = db.get(Upload, upload.id)
    assert row.state is UploadState.REJECTED
    assert row.decision_comment == "No basis"
    assert audit_count(db) == before + 1


@pytest.mark.parametrize(
    ("who", "code", "message"),
    [
        ("member", 4, "Only data stewards and output checkers"),  # the uploader
        ("ops", 4, "Only data stewards and output checkers"),
        ("outsider", 3, "Upload not found"),
    ],
)
def test_cli_airlock_review_upload_refused_by_role(cli_env, db, world, who, code, message):
    upload = world["pending"]
    before = audit_count(db)

    result = invoke(
        cli_env, "review-upload", str(upload.id), "approve", "--as", world[who].username
    )

    assert result.exit_code == code, result.output
    assert message in result.output
    reread(db)
    assert db.get(Upload, upload.id).state is UploadState.PENDING_REVIEW
    assert audit_count(db) == before
    assert not (airlock.project_area(world["settings"], world["project"], "import")).exists()


def test_cli_airlock_review_upload_self_and_member_review_refused(cli_env, db, world):
    steward = world["steward"]
    received = airlock.receive_file(world["settings"], io.BytesIO(b"x,y\n3,4\n"))
    own = airlock.register_upload(
        db, world["settings"], steward, world["project"], received, "own.csv", "Art. 6", NOW
    )
    db.commit()

    result = invoke(cli_env, "review-upload", str(own.id), "approve", "--as", steward.username)

    assert result.exit_code == 4
    assert "Nobody reviews what they submitted themselves" in result.output
    reread(db)
    assert db.get(Upload, own.id).state is UploadState.PENDING_REVIEW


def test_cli_airlock_review_upload_by_a_former_member_refused(cli_env, db, world):
    checker = world["checker"]
    world["project"].members.append(
        ProjectMember(user_id=checker.id, role=MemberRole.RESEARCHER, added_at=NOW, removed_at=NOW)
    )
    db.commit()
    before = audit_count(db)

    result = invoke(
        cli_env, "review-upload", str(world["pending"].id), "approve", "--as", checker.username
    )

    assert result.exit_code == 4
    assert "Members of a project never review" in result.output
    assert audit_count(db) == before
    assert db.get(Upload, world["pending"].id).state is UploadState.PENDING_REVIEW


def test_cli_airlock_review_upload_illegal_steps_and_usage(cli_env, db, world):
    steward = world["steward"].username
    pending = world["pending"]

    blocked = invoke(cli_env, "review-upload", str(world["blocked"].id), "approve", "--as", steward)
    stale = invoke(
        cli_env, "review-upload", str(pending.id), "approve", "--as", steward,
        "--version", str(pending.version + 1),
    )  # fmt: skip
    no_actor = invoke(cli_env, "review-upload", str(pending.id), "approve")
    bad_decision = invoke(cli_env, "review-upload", str(pending.id), "maybe", "--as", steward)
    unknown = invoke(cli_env, "review-upload", "999999", "approve", "--as", steward)
    no_user = invoke(cli_env, "review-upload", str(pending.id), "approve", "--as", "nobody-here")

    assert blocked.exit_code == 5
    assert "blocked cannot be approved" in blocked.output
    assert stale.exit_code == 5
    assert no_actor.exit_code == 2
    assert bad_decision.exit_code == 2
    assert unknown.exit_code == 3
    assert no_user.exit_code == 3
    reread(db)
    assert db.get(Upload, pending.id).state is UploadState.PENDING_REVIEW


def test_cli_airlock_outputs_lists_and_filters(cli_env, world):
    request = world["request"]
    code = world["project"].code

    everything = invoke(cli_env, "outputs")
    light = invoke(cli_env, "outputs", "--lane", "light", "--project", code, "--json")
    normal = invoke(cli_env, "outputs", "--lane", "normal", "--json")
    in_review = invoke(cli_env, "outputs", "--state", "in_review", "--json")
    drafts = invoke(cli_env, "outputs", "--state", "draft", "--json")
    as_outsider = invoke(cli_env, "outputs", "--as", world["outsider"].username, "--json")
    hidden = invoke(cli_env, "outputs", "--project", code, "--as", world["outsider"].username)

    assert everything.exit_code == 0, everything.output
    assert "Regional counts" in everything.output
    assert "1/2" in everything.output
    assert "1 output requests" in everything.output
    assert [r["id"] for r in json.loads(light.output)] == [request.id]
    assert json.loads(normal.output) == []
    assert [r["state"] for r in json.loads(in_review.output)] == ["in_review"]
    assert json.loads(drafts.output) == []
    assert json.loads(as_outsider.output) == []
    assert hidden.exit_code == 3
    assert invoke(cli_env, "outputs", "--lane", "fast").exit_code == 2


def test_cli_airlock_output_shows_files_findings_reviews(cli_env, world):
    request = world["request"]
    frozen = request.files[0]

    text = invoke(cli_env, "output", str(request.id))
    data = json.loads(invoke(cli_env, "output", str(request.id), "--json").output)
    as_member = invoke(cli_env, "output", str(request.id), "--as", world["member"].username)

    assert text.exit_code == 0, text.output
    assert "(in_review)" in text.output
    assert "lane light" in text.output
    assert "table.csv" in text.output
    assert frozen.sha256 in text.output
    assert f"{world['checker'].username}: approve" in text.output
    assert data["files"][0]["verdict"] == frozen.verdict != ""
    assert data["files"][0]["verdict"] == "fail"  # South, 3: below the minimum cell count
    failed = [f for f in data["files"][0]["findings"] if f["verdict"] == "fail"]
    assert failed
    assert f"fail: {failed[0]['rule']}: {failed[0]['detail']}" in text.output
    assert data["reviews"][0]["file_comments"] == {str(frozen.id): "ok"}
    assert data["approvals"] == 1
    assert data["required_approvals"] == 2
    assert as_member.exit_code == 0


def test_cli_airlock_output_unknown_or_invisible_is_not_found(cli_env, world):
    request = world["request"]

    unknown = invoke(cli_env, "output", "999999")
    invisible = invoke(cli_env, "output", str(request.id), "--as", world["outsider"].username)

    assert unknown.exit_code == 3
    assert "Output request not found" in unknown.output
    assert invisible.exit_code == 3
    assert "Output request not found" in invisible.output


def test_cli_airlock_has_no_download(cli_env):
    result = invoke(cli_env, "download", "1")

    assert result.exit_code == 2


def test_cli_airlock_approvals_set_by_a_data_steward(cli_env, db, world):
    project = world["project"]
    steward = world["steward"].username

    result = invoke(cli_env, "approvals", project.code, "3", "--as", steward)
    stale = invoke(
        cli_env, "approvals", project.code, "4", "--as", steward, "--version", str(project.version)
    )

    assert result.exit_code == 0, result.output
    assert f"project {project.code}: 2 -> 3 approvals" in result.output
    reread(db)
    assert db.get(Project, project.id).airlock_approvals == 3
    event = db.scalars(
        select(AuditEvent).where(AuditEvent.action == "airlock_approvals_changed")
    ).one()
    assert event.actor == steward
    assert stale.exit_code == 5
    assert db.get(Project, project.id).airlock_approvals == 3


@pytest.mark.parametrize(
    ("who", "args", "code"),
    [
        ("checker", ["3"], 4),
        ("ops", ["3"], 4),
        ("member", ["3"], 4),
        ("outsider", ["3"], 3),
        ("steward", ["9"], 1),
        ("steward", ["0"], 1),
    ],
)
def test_cli_airlock_approvals_refused(cli_env, db, world, who, args, code):
    project = world["project"]
    before = audit_count(db)

    result = invoke(cli_env, "approvals", project.code, *args, "--as", world[who].username)

    assert result.exit_code == code, result.output
    assert result.output.startswith("error: ")
    reread(db)
    assert db.get(Project, project.id).airlock_approvals == 2
    assert audit_count(db) == before


def test_cli_airlock_approvals_needs_a_named_steward_and_a_project(cli_env, world):
    steward = world["steward"].username

    assert invoke(cli_env, "approvals", world["project"].code, "3").exit_code == 2
    assert invoke(cli_env, "approvals", "99999", "3", "--as", steward).exit_code == 3
    assert invoke(cli_env, "approvals", world["project"].code, "x", "--as", steward).exit_code == 2
