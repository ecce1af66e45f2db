"""The portal's workspace page without a browser, on SQLite and PostgreSQL: who sees it, the state
messages (not allowed and why, not ready, hub unknown), the launch form that goes on to the hub
with a ticket (and its CSP allowing that), CSRF on both forms, and a stop with the hub down."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from project_factories import make_project, make_researcher, make_staff
from sqlalchemy import select
from sqlalchemy.orm import Session

from orchestrator.api.deps import session_cookie_name
from orchestrator.config import Settings
from orchestrator.hub_models import LaunchTicket
from orchestrator.models import Project, ProjectState, User, WorkspacePhase, WorkspaceStatus
from orchestrator.sessions import open_session

CSRF_FIELD = re.compile(r'name="csrf_token" value="([^"]+)"')


@pytest.fixture
def browser(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app, base_url="https://testserver", follow_redirects=False) as client:
        yield client


def sign_in(client: TestClient, session: Session, settings: Settings, user: User) -> None:
    _row, secret = open_session(session, user, "testclient", "test", settings)
    session.flush()
    client.cookies.set(session_cookie_name(settings), secret)


def active_project(session: Session, phase: WorkspacePhase = WorkspacePhase.READY) -> Project:
    member = make_researcher(session)
    project = make_project(session, state=ProjectState.ACTIVE, members=[member])
    session.add(WorkspaceStatus(project_id=project.id, phase=phase, objects=[], desired_hash=""))
    session.flush()
    return project


def member_of(project: Project) -> User:
    return next(m.user for m in project.members if m.user_id != project.lead_id)


def test_workspace_page_member_sees_open_button_and_hub_state(
    browser: TestClient, db_session: Session, db_settings: Settings
) -> None:
    project = active_project(db_session)
    sign_in(browser, db_session, db_settings, member_of(project))

    page = browser.get(f"/projects/{project.code}/workspace")

    assert page.status_code == 200
    assert 'id="open-workspace"' in page.text
    assert 'data-state="unknown"' in page.text  # no hub token configured here
    assert "form-action 'self' http://127.0.0.1:8001" in page.headers["content-security-policy"]
    project_page = browser.get(f"/projects/{project.code}")
    assert f'href="/projects/{project.code}/workspace"' in project_page.text


def test_workspace_page_explains_why_not(
    browser: TestClient, db_session: Session, db_settings: Settings
) -> None:
    project = active_project(db_session)
    project.state = ProjectState.FROZEN
    pending = active_project(db_session, WorkspacePhase.PENDING)
    db_session.flush()
    sign_in(browser, db_session, db_settings, member_of(project))

    frozen = browser.get(f"/projects/{project.code}/workspace")

    assert frozen.status_code == 200
    assert "the project is frozen" in frozen.text
    assert 'id="open-workspace"' not in frozen.text
    sign_in(browser, db_session, db_settings, member_of(pending))
    preparing = browser.get(f"/projects/{pending.code}/workspace")
    assert "the workspace is being prepared" in preparing.text
    assert 'id="open-workspace"' not in preparing.text


@pytest.mark.parametrize("who", ["outsider", "anonymous"])
def test_workspace_page_hidden_from_others(
    browser: TestClient, db_session: Session, db_settings: Settings, who: str
) -> None:
    project = active_project(db_session)
    if who == "outsider":
        sign_in(browser, db_session, db_settings, make_researcher(db_session))

    page = browser.get(f"/projects/{project.code}/workspace")

    assert page.status_code in ((404,) if who == "outsider" else (302, 303, 401))


def test_workspace_open_redirects_to_the_hub_with_a_ticket(
    browser: TestClient, db_session: Session, db_settings: Settings
) -> None:
    project = active_project(db_session)
    sign_in(browser, db_session, db_settings, member_of(project))
    token = CSRF_FIELD.search(browser.get(f"/projects/{project.code}/workspace").text)
    assert token is not None

    response = browser.post(
        f"/projects/{project.code}/workspace/open", data={"csrf_token": token.group(1)}
    )

    assert response.status_code == 303
    location = response.headers["location"]
    assert location.startswith(
        f"http://127.0.0.1:8001/hub/kluis/login?project={project.code}&auth_ticket=klt_"
    )
    assert db_session.scalars(select(LaunchTicket)).first() is not None


@pytest.mark.parametrize("action", ["open", "stop"])
def test_workspace_forms_refuse_a_missing_csrf_token(
    browser: TestClient, db_session: Session, db_settings: Settings, action: str
) -> None:
    project = active_project(db_session)
    sign_in(browser, db_session, db_settings, member_of(project))

    response = browser.post(f"/projects/{project.code}/workspace/{action}", data={})

    assert response.status_code == 403


def test_workspace_open_refused_for_staff_and_frozen(
    browser: TestClient, db_session: Session, db_settings: Settings
) -> None:
    project = active_project(db_session)
    sign_in(browser, db_session, db_settings, make_staff(db_session))
    token = CSRF_FIELD.search(browser.get(f"/projects/{project.code}/workspace").text)
    assert token is not None

    response = browser.post(
        f"/projects/{project.code}/workspace/open", data={"csrf_token": token.group(1)}
    )

    assert response.status_code == 403
    assert db_session.scalars(select(LaunchTicket)).first() is None


def test_workspace_stop_with_the_hub_down_is_503(
    browser: TestClient, db_session: Session, db_settings: Settings
) -> None:
    project = active_project(db_session)
    sign_in(browser, db_session, db_settings, member_of(project))
    token = CSRF_FIELD.search(browser.get(f"/projects/{project.code}/workspace").text)
    assert token is not None

    response = browser.post(
        f"/projects/{project.code}/workspace/stop", data={"csrf_token": token.group(1)}
    )

    assert response.status_code == 503


def test_workspace_page_after_a_stop_says_so(
    browser: TestClient, db_session: Session, db_settings: Settings
) -> None:
    project = active_project(db_session)
    sign_in(browser, db_session, db_settings, member_of(project))

    page = browser.get(f"/projects/{project.code}/workspace?stopping=1")

    assert page.status_code == 200
    assert "The workspace is stopping." in page.text


@pytest.mark.parametrize("action", ["open", "stop"])
def test_workspace_forms_hidden_from_an_outsider(
    browser: TestClient, db_session: Session, db_settings: Settings, action: str
) -> None:
    project = active_project(db_session)
    outsider = make_researcher(db_session)
    own = active_project(db_session)
    sign_in(browser, db_session, db_settings, outsider)
    own.members[0].user_id = outsider.id  # a page of their own, for a valid CSRF token
    db_session.flush()
    token = CSRF_FIELD.search(browser.get(f"/projects/{own.code}/workspace").text)
    assert token is not None

    response = browser.post(
        f"/projects/{project.code}/workspace/{action}", data={"csrf_token": token.group(1)}
    )

    assert response.status_code == 404
    assert db_session.scalars(select(LaunchTicket)).first() is None
