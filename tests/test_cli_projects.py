"""`kluis projects ...`, run in-process against a fresh migrated database per test (SQLite and
PostgreSQL): list, show, every step from submit to delete, the request queue and decisions,
`--as` (that person's rights, their name in the audit trail) and `--json`."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from project_factories import (
    make_dataset_version,
    make_project,
    make_researcher,
    make_staff,
    make_tariff,
    utcnow,
)
from sqlalchemy import select
from sqlalchemy.orm import Session
from typer.testing import CliRunner, Result

from orchestrator.cli import app
from orchestrator.config import Settings
from orchestrator.db import make_engine, upgrade_database
from orchestrator.models import (
    AuditEvent,
    ChangeRequest,
    DeletionRecord,
    Project,
    ProjectState,
    RequestKind,
    RequestState,
    User,
)

S = ProjectState
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
    """A session on the same database: to set the scene (committed) and to look at the result."""
    engine = make_engine(unmigrated_settings)
    with Session(engine, expire_on_commit=False) as session:
        yield session
    engine.dispose()


def kluis(env: dict[str, str], *args: str) -> Result:
    return runner.invoke(app, list(args), env=env)


def ok(env: dict[str, str], *args: str) -> Result:
    result = kluis(env, *args)
    assert result.exit_code == 0, result.output
    return result


def refused(env: dict[str, str], *args: str) -> str:
    result = kluis(env, *args)
    assert result.exit_code == 1, result.output
    return result.output


def state_of(db: Session, code: str) -> ProjectState:
    db.expire_all()
    return db.scalars(select(Project.state).where(Project.code == code)).one()


def last_event(db: Session, action: str) -> AuditEvent:
    db.expire_all()
    return db.scalars(
        select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.seq.desc())
    ).first() or pytest.fail(f"no {action} event")


@pytest.fixture
def scene(db: Session) -> dict[str, str]:
    """A draft, an active project with a member, a steward and an outsider; usernames and codes."""
    make_tariff(db)
    lead, member, outsider = (make_researcher(db) for _ in range(3))
    draft = make_project(db, state=S.DRAFT, lead=lead, members=[member])
    active = make_project(db, state=S.ACTIVE, members=[member])
    steward = make_staff(db)
    db.commit()
    return {
        "lead": lead.username,
        "member": member.username,
        "outsider": outsider.username,
        "steward": steward.username,
        "draft": draft.code,
        "active": active.code,
    }


# --- reading --------------------------------------------------------------------------------------


def test_cli_projects_list_and_show(cli_env: dict[str, str], scene: dict[str, str]) -> None:
    text = ok(cli_env, "projects", "list").output
    listed = json.loads(ok(cli_env, "projects", "list", "--json").output)
    drafts = json.loads(ok(cli_env, "projects", "list", "--state", "draft", "--json").output)
    shown = json.loads(ok(cli_env, "projects", "show", scene["draft"], "--json").output)

    assert scene["draft"] in text
    assert scene["active"] in text
    assert "2 of 2 projects" in text
    assert {p["code"] for p in listed} == {scene["draft"], scene["active"]}
    assert [p["code"] for p in drafts] == [scene["draft"]]
    assert shown["state"] == "draft"
    assert shown["lead"] == scene["lead"]
    assert shown["members"] == sorted([scene["lead"], scene["member"]])
    assert shown["actions"] == ["submit", "delete"]
    assert "next steps: submit, delete" in ok(cli_env, "projects", "show", scene["draft"]).output


def test_cli_projects_as_a_researcher_sees_own_projects_only(
    cli_env: dict[str, str], scene: dict[str, str]
) -> None:
    lead_list = json.loads(ok(cli_env, "projects", "list", "--as", scene["lead"], "--json").output)
    outsider_list = ok(cli_env, "projects", "list", "--as", scene["outsider"]).output
    as_member = json.loads(
        ok(cli_env, "projects", "show", scene["draft"], "--as", scene["member"], "--json").output
    )

    assert [p["code"] for p in lead_list] == [scene["draft"]]
    assert "0 of 0 projects" in outsider_list
    assert "no project" in refused(
        cli_env, "projects", "show", scene["active"], "--as", scene["outsider"]
    )
    assert "quote_total" not in as_member  # costs are for the lead and staff
    assert "no project" in refused(cli_env, "projects", "show", "99999")
    assert "no user" in refused(cli_env, "projects", "list", "--as", "nobody-here")


# --- applying -----------------------------------------------------------------------------------


def test_cli_projects_apply_as_the_lead_then_by_staff(
    cli_env: dict[str, str], scene: dict[str, str], db: Session
) -> None:
    version = make_dataset_version(db, code="DS_CLIAPPLY")
    db.commit()
    start = utcnow().date() + timedelta(days=10)
    end = start + timedelta(days=365)
    common = ["--purpose", "Linking income and health.", "--size", "small"]
    common += ["--start", start.isoformat(), "--end", end.isoformat()]

    own = json.loads(
        ok(
            cli_env,
            "projects",
            "apply",
            "--title",
            "Own application",
            *common,
            "--dataset",
            "DS_CLIAPPLY:2024V1",
            "--member",
            scene["member"],
            "--as",
            scene["lead"],
            "--json",
        ).output
    )
    for_lead = ok(
        cli_env,
        "projects",
        "apply",
        "--title",
        "On behalf",
        *common,
        "--lead",
        scene["lead"],
        "--code",
        "4321",
    ).output
    no_lead = refused(cli_env, "projects", "apply", "--title", "Nobody", *common)
    bad_dataset = refused(
        cli_env,
        "projects",
        "apply",
        "--title",
        "X",
        *common,
        "--lead",
        scene["lead"],
        "--dataset",
        "DS_CLIAPPLY",
    )
    bad_size = refused(
        cli_env,
        "projects",
        "apply",
        "--title",
        "X",
        "--purpose",
        "p",
        "--size",
        "huge",
        "--start",
        start.isoformat(),
        "--end",
        end.isoformat(),
        "--lead",
        scene["lead"],
    )

    assert own["state"] == "draft"
    assert own["lead"] == scene["lead"]
    assert own["members"] == sorted([scene["lead"], scene["member"]])
    project = db.scalars(select(Project).where(Project.code == own["code"])).one()
    assert [r.dataset_version_id for r in project.requested_datasets] == [version.id]
    assert "project 4321: draft" in for_lead
    assert last_event(db, "project_applied").actor == "system"
    assert "--lead" in no_lead
    assert "CODE:LABEL" in bad_dataset
    assert "huge" in bad_size or "size" in bad_size
    assert state_of(db, "4321") is S.DRAFT


# --- the steps ------------------------------------------------------------------------------------


def test_cli_projects_whole_path(
    cli_env: dict[str, str], scene: dict[str, str], db: Session
) -> None:
    code, lead, steward = scene["draft"], scene["lead"], scene["steward"]

    ok(cli_env, "projects", "submit", code, "--as", lead)
    ok(cli_env, "projects", "quote", code, "--as", steward)
    quoted = json.loads(ok(cli_env, "projects", "show", code, "--as", lead, "--json").output)
    ok(cli_env, "projects", "accept", code, "--as", lead)
    approved = ok(cli_env, "projects", "approve", code, "--as", steward).output
    ok(cli_env, "projects", "freeze", code, "-m", "Audit finding.", "--as", steward)
    ok(cli_env, "projects", "unfreeze", code, "--as", steward)
    ok(cli_env, "projects", "expire", code)
    ok(cli_env, "projects", "archive", code)
    kept = refused(cli_env, "projects", "delete", code, "--as", steward)
    deleted = json.loads(ok(cli_env, "projects", "delete", code, "--json").output)

    assert quoted["quote_total"] is not None
    assert f"project {code}: accepted -> active" in approved
    assert "kept until" in kept
    assert deleted["state"] == "deleted"
    assert last_event(db, "project_submitted").actor == lead
    assert last_event(db, "project_approved").actor == steward
    assert last_event(db, "project_expired").actor == "system"
    record = db.scalars(select(DeletionRecord).where(DeletionRecord.project_code == code)).one()
    assert record.deleted_by == "system"


def test_cli_projects_refusals_name_the_reason(
    cli_env: dict[str, str], scene: dict[str, str], db: Session
) -> None:
    code = scene["draft"]

    wrong_state = refused(cli_env, "projects", "approve", code)
    not_theirs = refused(cli_env, "projects", "submit", code, "--as", scene["member"])
    no_comment = refused(cli_env, "projects", "freeze", scene["active"], "--as", scene["steward"])

    assert f"Project {code} is draft: it cannot approve from there" in wrong_state
    assert "Possible now: submit, delete" in wrong_state
    assert "Only the lead" in not_theirs
    assert "comment" in no_comment
    assert state_of(db, code) is S.DRAFT
    assert state_of(db, scene["active"]) is S.ACTIVE


# --- requests -------------------------------------------------------------------------------------


def make_request(db: Session, code: str, user_id: int) -> int:
    project = db.scalars(select(Project).where(Project.code == code)).one()
    request = ChangeRequest(
        project_id=project.id,
        kind=RequestKind.ADD_MEMBER,
        payload={"user_id": user_id},
        reason="Help.",
        requested_by_id=project.lead_id,
        requested_at=utcnow() - timedelta(hours=1),
    )
    db.add(request)
    db.commit()
    return request.id


def test_cli_projects_request_queue_and_decisions(
    cli_env: dict[str, str], scene: dict[str, str], db: Session
) -> None:
    newcomer = make_researcher(db)
    db.commit()
    first = make_request(db, scene["active"], newcomer.id)
    second = make_request(db, scene["active"], make_researcher(db).id)

    queue = json.loads(ok(cli_env, "projects", "requests", "--state", "pending", "--json").output)
    text = ok(cli_env, "projects", "requests", "--project", scene["active"]).output
    no_comment = refused(cli_env, "projects", "decide", str(second), "reject")
    ok(cli_env, "projects", "decide", str(first), "approve", "--as", scene["steward"])
    ok(cli_env, "projects", "decide", str(second), "reject", "-m", "Not needed.")

    assert [r["id"] for r in queue] == [first, second]
    assert "add_member" in text
    assert "comment" in no_comment
    db.expire_all()
    assert db.get(ChangeRequest, first).state is RequestState.APPROVED  # type: ignore[union-attr]
    assert db.get(ChangeRequest, second).state is RequestState.REJECTED  # type: ignore[union-attr]
    shown = json.loads(ok(cli_env, "projects", "show", scene["active"], "--json").output)
    assert newcomer.username in shown["members"]
    assert last_event(db, "change_approved").actor == scene["steward"]


def test_cli_projects_member_steward_cannot_decide(
    cli_env: dict[str, str], scene: dict[str, str], db: Session
) -> None:
    request_id = make_request(db, scene["active"], make_researcher(db).id)
    member = db.scalars(select(User).where(User.username == scene["member"])).one()
    member.role = make_staff(db).role  # the member is a data steward now
    db.commit()

    out = refused(
        cli_env, "projects", "decide", str(request_id), "approve", "--as", member.username
    )

    assert "another data steward" in out
    assert "no request" in refused(
        cli_env, "projects", "decide", str(request_id), "approve", "--as", scene["outsider"]
    )


def test_cli_projects_lead_withdraws(
    cli_env: dict[str, str], scene: dict[str, str], db: Session
) -> None:
    active = db.scalars(select(Project).where(Project.code == scene["active"])).one()
    request_id = make_request(db, scene["active"], make_researcher(db).id)

    result = json.loads(
        ok(
            cli_env, "projects", "decide", str(request_id), "withdraw",
            "--as", active.lead.username, "--json",
        ).output
    )  # fmt: skip

    assert result["state"] == "withdrawn"
