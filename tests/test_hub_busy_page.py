"""The workspace page when the hub's concurrent spawn limit sent the researcher back
(`?busy=1`): a clear message in English and Dutch, only to someone who may open the workspace,
on SQLite and PostgreSQL. The end-to-end path (real hub, its 429):
tests/cluster/test_hub_limits.py."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from project_factories import make_researcher
from sqlalchemy.orm import Session
from test_hub_portal import active_project, member_of, sign_in

from orchestrator.config import Settings
from orchestrator.models import ProjectState

BUSY_EN = "Too many workspaces are starting right now, so yours was not started."
BUSY_NL = "Er worden nu te veel werkomgevingen tegelijk gestart"


@pytest.fixture
def browser(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app, base_url="https://testserver", follow_redirects=False) as client:
        yield client


@pytest.mark.parametrize(("language", "text"), [("en", BUSY_EN), ("nl", BUSY_NL)])
def test_workspace_page_says_too_many_are_starting(
    browser: TestClient, db_session: Session, db_settings: Settings, language: str, text: str
) -> None:
    project = active_project(db_session)
    sign_in(browser, db_session, db_settings, member_of(project))

    page = browser.get(
        f"/projects/{project.code}/workspace?busy=1", headers={"Accept-Language": language}
    )
    plain = browser.get(
        f"/projects/{project.code}/workspace", headers={"Accept-Language": language}
    )

    assert page.status_code == 200
    assert 'id="workspace-busy"' in page.text
    assert text in page.text
    assert 'id="open-workspace"' in page.text  # try again: the button is there
    assert 'id="workspace-busy"' not in plain.text


def test_workspace_busy_message_not_shown_when_not_allowed(
    browser: TestClient, db_session: Session, db_settings: Settings
) -> None:
    project = active_project(db_session)
    project.state = ProjectState.FROZEN
    db_session.flush()
    sign_in(browser, db_session, db_settings, member_of(project))

    page = browser.get(f"/projects/{project.code}/workspace?busy=1")

    assert page.status_code == 200
    assert 'id="workspace-problem"' in page.text
    assert 'id="workspace-busy"' not in page.text


@pytest.mark.parametrize("who", ["outsider", "anonymous"])
def test_workspace_busy_page_hidden_from_others(
    browser: TestClient, db_session: Session, db_settings: Settings, who: str
) -> None:
    project = active_project(db_session)
    if who == "outsider":
        sign_in(browser, db_session, db_settings, make_researcher(db_session))

    page = browser.get(f"/projects/{project.code}/workspace?busy=1")

    assert page.status_code in ((404,) if who == "outsider" else (303, 401))
    assert BUSY_EN not in page.text
