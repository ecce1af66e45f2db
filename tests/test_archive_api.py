"""A project's archive and deletion certificate through the API, the portal and the command line:
staff who read the audit trail (data stewards, ops) see them; output checkers and the project's
own researchers get 403, everyone else 404; a certificate edited after issue shows as not intact.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from api_helpers import act_as, api_app, serve
from fastapi import FastAPI
from fastapi.testclient import TestClient
from project_factories import make_project, make_researcher, make_staff
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from orchestrator import archive
from orchestrator.api.deps import session_cookie_name
from orchestrator.cli import app as kluis_app
from orchestrator.config import Settings
from orchestrator.db import make_engine, upgrade_database
from orchestrator.models import (
    DeletionCertificate,
    Project,
    ProjectArchive,
    ProjectState,
    Role,
    User,
)
from orchestrator.sessions import open_session

ISSUED = datetime(2031, 5, 1, 3, 0, tzinfo=UTC)
LEAD, MEMBER, OUTSIDER = "lead", "member", "outsider"
STEWARD, CHECKER, OPS = "data_steward", "output_checker", "ops"
OK = {STEWARD: 200, OPS: 200, CHECKER: 403, LEAD: 403, MEMBER: 403, OUTSIDER: 404}


@dataclass
class World:
    callers: dict[str, User]
    deleted: Project
    archived: Project
    certificate: DeletionCertificate


def add_archive(session: Session, project: Project, removed: bool) -> ProjectArchive:
    row = ProjectArchive(
        project_id=project.id,
        project_code=project.code,
        path=f"/archive/{project.code}.tar",
        manifest_path=f"/archive/{project.code}.manifest.json",
        sha256="a" * 64,
        manifest_sha256="b" * 64,
        size_bytes=20480,
        content_bytes=1234,
        file_count=3,
        source_path=f"/projects/{project.code}",
        created_at=ISSUED.replace(year=2026),
        removed_at=ISSUED if removed else None,
    )
    session.add(row)
    return row


def add_certificate(session: Session, project: Project) -> DeletionCertificate:
    row = DeletionCertificate(
        project_id=project.id,
        project_code=project.code,
        issued_at=ISSUED,
        issued_by="reconciler host:1",
        policy={"retention_years": 5, "retention_until": "2031-04-30"},
        removed={
            "archive": {"sha256": "a" * 64, "file_count": 3, "size_bytes": 20480},
            "paths": [{"path": f"/archive/{project.code}.tar", "kind": "archive"}],
        },
        sha256="",
    )
    row.sha256 = archive.certificate_digest(archive.certificate_body(row))
    session.add(row)
    return row


@pytest.fixture
def world(db_session: Session) -> World:
    lead, member = make_researcher(db_session), make_researcher(db_session)
    deleted = make_project(db_session, state=ProjectState.DELETED, lead=lead, members=[member])
    archived = make_project(db_session, state=ProjectState.ARCHIVED, lead=lead, members=[member])
    db_session.flush()
    add_archive(db_session, deleted, removed=True)
    add_archive(db_session, archived, removed=False)
    certificate = add_certificate(db_session, deleted)
    db_session.flush()
    callers = {
        LEAD: lead,
        MEMBER: member,
        OUTSIDER: make_researcher(db_session),
        STEWARD: make_staff(db_session, Role.DATA_STEWARD),
        CHECKER: make_staff(db_session, Role.OUTPUT_CHECKER),
        OPS: make_staff(db_session, Role.OPS),
    }
    return World(callers, deleted, archived, certificate)


@pytest.fixture
def app(db_settings: Settings, db_session: Session) -> FastAPI:
    db_session.info["settings"] = db_settings
    return api_app(db_settings, db_session)


@pytest.fixture
def api(app: FastAPI) -> Iterator[TestClient]:
    yield from serve(app)


@pytest.mark.parametrize("caller", sorted(OK))
def test_certificate_route_answers_by_role(
    caller: str, world: World, app: FastAPI, api: TestClient, db_session: Session
) -> None:
    act_as(app, db_session, world.callers[caller])

    response = api.get(f"/api/projects/{world.deleted.code}/deletion-certificate")

    assert response.status_code == OK[caller], response.text
    if response.status_code == 200:
        body = response.json()
        assert body["sha256"] == world.certificate.sha256
        assert body["intact"] is True
        assert body["removed"]["archive"]["file_count"] == 3
        assert body["policy"]["retention_years"] == 5


@pytest.mark.parametrize("caller", sorted(OK))
def test_archive_route_answers_by_role(
    caller: str, world: World, app: FastAPI, api: TestClient, db_session: Session
) -> None:
    act_as(app, db_session, world.callers[caller])

    response = api.get(f"/api/projects/{world.archived.code}/archive")

    assert response.status_code == OK[caller], response.text
    if response.status_code == 200:
        body = response.json()
        assert body["sha256"] == "a" * 64
        assert body["file_count"] == 3
        assert body["removed_at"] is None


def test_no_certificate_yet_is_404_with_a_message(
    world: World, app: FastAPI, api: TestClient, db_session: Session
) -> None:
    act_as(app, db_session, world.callers[STEWARD])

    response = api.get(f"/api/projects/{world.archived.code}/deletion-certificate")

    assert response.status_code == 404
    assert "no deletion certificate" in response.json()["error"]["message"]


def test_read_only_api_token_of_ops_reads_the_certificate(
    world: World, app: FastAPI, api: TestClient, db_session: Session
) -> None:
    act_as(app, db_session, world.callers[OPS], token_scopes={"read"})

    response = api.get(f"/api/projects/{world.deleted.code}/deletion-certificate")

    assert response.status_code == 200


def test_anonymous_caller_is_refused(world: World, api: TestClient) -> None:
    response = api.get(f"/api/projects/{world.deleted.code}/deletion-certificate")

    assert response.status_code == 401


@pytest.mark.parametrize("code", ["abc", "1", "123456", "12%2F34"])
def test_malformed_code_is_a_4xx(
    code: str, world: World, app: FastAPI, api: TestClient, db_session: Session
) -> None:
    act_as(app, db_session, world.callers[STEWARD])

    response = api.get(f"/api/projects/{code}/deletion-certificate")

    assert 400 <= response.status_code < 500


def test_edited_certificate_is_not_intact(
    world: World, app: FastAPI, api: TestClient, db_session: Session
) -> None:
    world.certificate.removed = {**world.certificate.removed, "paths": []}  # someone hides a path
    db_session.flush()
    act_as(app, db_session, world.callers[STEWARD])

    response = api.get(f"/api/projects/{world.deleted.code}/deletion-certificate")

    assert response.json()["intact"] is False


# --- the command line ---------------------------------------------------------------------------


@pytest.fixture
def cli(unmigrated_settings: Settings, clean_env: Path) -> Iterator[tuple[dict[str, str], World]]:
    """`kluis` pointing at a fresh migrated database holding the scene (committed)."""
    upgrade_database(unmigrated_settings)
    env = {
        "KLUIS_ENVIRONMENT": "development",
        "KLUIS_DATA_DIR": str(unmigrated_settings.data_dir),
        "KLUIS_LOG_LEVEL": "WARNING",
    }
    if unmigrated_settings.database_url:
        env["KLUIS_DATABASE_URL"] = unmigrated_settings.database_url
    engine = make_engine(unmigrated_settings)
    with Session(engine, expire_on_commit=False) as session:
        lead = make_researcher(session)
        deleted = make_project(session, state=ProjectState.DELETED, lead=lead)
        archived = make_project(session, state=ProjectState.ARCHIVED, lead=lead)
        session.flush()
        certificate = add_certificate(session, deleted)
        callers = {LEAD: lead, OPS: make_staff(session, Role.OPS)}
        session.commit()
        yield env, World(callers, deleted, archived, certificate)
    engine.dispose()


def test_cli_certificate_prints_it_as_json_and_text(cli: tuple[dict[str, str], World]) -> None:
    env, world = cli
    code = world.deleted.code

    as_json = CliRunner().invoke(kluis_app, ["projects", "certificate", code, "--json"], env=env)
    as_text = CliRunner().invoke(kluis_app, ["projects", "certificate", code], env=env)
    as_ops = CliRunner().invoke(
        kluis_app, ["projects", "certificate", code, "--as", world.callers[OPS].username], env=env
    )

    assert as_json.exit_code == 0, as_json.output
    data = json.loads(as_json.output)
    assert data["sha256"] == world.certificate.sha256
    assert data["intact"] is True
    assert as_text.exit_code == 0
    assert f"/archive/{code}.tar (archive)" in as_text.output
    assert "intact" in as_text.output
    assert as_ops.exit_code == 0


def test_cli_certificate_refuses_researchers_and_missing_ones(
    cli: tuple[dict[str, str], World],
) -> None:
    env, world = cli
    lead = world.callers[LEAD].username

    as_lead = CliRunner().invoke(
        kluis_app, ["projects", "certificate", world.deleted.code, "--as", lead], env=env
    )
    missing = CliRunner().invoke(
        kluis_app, ["projects", "certificate", world.archived.code], env=env
    )

    assert as_lead.exit_code == 1
    assert "error:" in as_lead.output
    assert missing.exit_code == 1
    assert "no deletion certificate" in missing.output


# --- the portal ---------------------------------------------------------------------------------


def page_as(app: FastAPI, session: Session, settings: Settings, user: User, path: str) -> str:
    with TestClient(app, base_url="https://testserver", follow_redirects=False) as browser:
        _row, secret = open_session(session, user, "testclient", "test", settings)
        session.flush()
        browser.cookies.set(session_cookie_name(settings), secret)
        response = browser.get(path)
    assert response.status_code == 200, response.text
    return response.text


def test_project_page_shows_archive_and_certificate_to_stewards_only(
    world: World, app: FastAPI, db_session: Session, db_settings: Settings
) -> None:
    path = f"/projects/{world.deleted.code}"

    steward = page_as(app, db_session, db_settings, world.callers[STEWARD], path)
    lead = page_as(app, db_session, db_settings, world.callers[LEAD], path)

    assert "Deletion certificate" in steward
    assert world.certificate.sha256 in steward
    assert f"/archive/{world.deleted.code}.tar" in steward
    assert "intact" in steward
    assert "Deletion certificate" not in lead
    assert world.certificate.sha256 not in lead
