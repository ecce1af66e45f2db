"""The project pages without a browser: the catalogue, "my projects", the application form, the
project page and the review queues render per role; a project one may not see is a 404; every
new form refuses a missing CSRF token; steps that change access ask for a fresh code; and every
message of these pages has its Dutch text."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from factories import MadeUser, make_user
from fastapi import FastAPI
from fastapi.testclient import TestClient
from project_factories import make_dataset_version, make_project, make_tariff, today
from sqlalchemy import select
from sqlalchemy.orm import Session

from orchestrator import projects
from orchestrator.api.deps import session_cookie_name
from orchestrator.config import Settings
from orchestrator.models import (
    ChangeRequest,
    MemberRole,
    Project,
    ProjectMember,
    ProjectState,
    RequestKind,
    RequestState,
    Role,
    User,
)
from orchestrator.sessions import open_session
from orchestrator.web import i18n, pages_catalogue, pages_projects, pages_review, portal, rendering
from orchestrator.web.portal import PortalRoute

WEB = Path(portal.__file__).parent
CSRF_FIELD = re.compile(r'name="csrf_token" value="([^"]+)"')
NEW_MODULES = (pages_catalogue, pages_projects, pages_review)


@pytest.fixture
def browser_client(app: FastAPI) -> Iterator[TestClient]:
    """Over https, so the `Secure` `__Host-` cookies of the default settings travel."""
    with TestClient(app, base_url="https://testserver", follow_redirects=False) as client:
        yield client


def sign_in(
    client: TestClient,
    session: Session,
    settings: Settings,
    made: MadeUser,
    *,
    stepped_up: bool = True,
) -> None:
    row, secret = open_session(session, made.user, "testclient", "test", settings)
    if stepped_up:
        row.stepped_up_at = row.created_at
    session.flush()
    client.cookies.set(session_cookie_name(settings), secret)


def csrf(client: TestClient, path: str) -> str:
    page = client.get(path)
    assert page.status_code == 200, page.text
    token = CSRF_FIELD.search(page.text)
    assert token is not None
    return token.group(1)


def lead_with_project(
    session: Session, settings: Settings, state: ProjectState, **options: object
) -> tuple[MadeUser, Project]:
    lead = make_user(session, settings)
    project = make_project(session, state=state, lead=lead.user, **options)  # type: ignore[arg-type]
    return lead, project


# --- catalogue ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "role", [Role.RESEARCHER, Role.DATA_STEWARD, Role.OUTPUT_CHECKER, Role.OPS]
)
def test_catalogue_shows_metadata_to_every_role(
    browser_client: TestClient, db_session: Session, db_settings: Settings, role: Role
) -> None:
    version = make_dataset_version(db_session, code="GBAPERSOONTAB", label="2025V1")
    version.dataset.title = "Persons in the municipal register"
    version.files = [{"path": "secret/persons.csv", "size": 10, "sha256": "ab" * 32}]
    db_session.flush()
    sign_in(browser_client, db_session, db_settings, make_user(db_session, db_settings, role=role))

    page = browser_client.get("/catalogue", params={"q": "gbapersoon"})

    assert page.status_code == 200
    assert "GBAPERSOONTAB" in page.text
    assert "Persons in the municipal register" in page.text
    assert "2025V1" in page.text
    assert version.location not in page.text  # where the data lies is no metadata for readers
    assert "persons.csv" not in page.text
    assert 'aria-current="page">Catalogue<' in page.text


def test_catalogue_without_session_goes_to_login(browser_client: TestClient) -> None:
    response = browser_client.get("/catalogue")

    assert response.status_code == 303
    assert response.headers["location"] == "/login?next=%2Fcatalogue"


# --- my projects ----------------------------------------------------------------------------------


def test_projects_page_lists_only_visible_projects(
    browser_client: TestClient, db_session: Session, db_settings: Settings
) -> None:
    lead, mine = lead_with_project(db_session, db_settings, ProjectState.ACTIVE, title="Mine")
    member = make_user(db_session, db_settings)
    shared = make_project(db_session, state=ProjectState.QUOTED, members=[member.user])
    foreign = make_project(db_session, state=ProjectState.ACTIVE, title="Someone else's")
    sign_in(browser_client, db_session, db_settings, lead)

    page = browser_client.get("/projects")

    assert page.status_code == 200
    assert f'href="/projects/{mine.code}"' in page.text
    assert "badge-ok" in page.text  # active
    assert f"/projects/{shared.code}" not in page.text
    assert f"/projects/{foreign.code}" not in page.text
    assert 'href="/projects/new"' in page.text
    sign_in(browser_client, db_session, db_settings, member)
    assert f"/projects/{shared.code}" in browser_client.get("/projects").text


def test_projects_page_for_staff_lists_all_without_apply_link(
    browser_client: TestClient, db_session: Session, db_settings: Settings
) -> None:
    project = make_project(db_session, state=ProjectState.SUBMITTED)
    sign_in(
        browser_client,
        db_session,
        db_settings,
        make_user(db_session, db_settings, role=Role.DATA_STEWARD),
    )

    page = browser_client.get("/projects")

    assert f"/projects/{project.code}" in page.text
    assert 'href="/projects/new"' not in page.text
    assert 'href="/review/projects"' in page.text  # the staff menu


# --- the application ------------------------------------------------------------------------------


def test_application_form_creates_a_draft_with_members_and_datasets(
    browser_client: TestClient, db_session: Session, db_settings: Settings
) -> None:
    make_tariff(db_session)
    lead = make_user(db_session, db_settings)
    colleague = make_user(db_session, db_settings, institution=lead.user.institution)
    first = make_dataset_version(db_session)
    second = make_dataset_version(db_session)
    sign_in(browser_client, db_session, db_settings, lead)
    token = csrf(browser_client, "/projects/new")

    response = browser_client.post(
        "/projects/new",
        data={
            "csrf_token": token,
            "title": "Income and health",
            "purpose": "Whether income predicts health.",
            "start_date": today().isoformat(),
            "end_date": (today() + timedelta(days=365)).isoformat(),
            "compute_size": "medium",
            "dataset_version_ids": [str(first.id), str(second.id)],
            "members": f"{colleague.username}\n",
            "legal_basis": "Statistics Act",
            "expected_publications": "A paper",
        },
    )

    assert response.status_code == 303
    code = response.headers["location"].removeprefix("/projects/").removesuffix("?done=saved")
    project = db_session.scalars(select(Project).where(Project.code == code)).one()
    assert project.state is ProjectState.DRAFT
    assert project.lead_id == lead.user.id
    assert project.institution_id == lead.user.institution_id
    assert project.compute_size == "medium"
    assert {r.dataset_version_id for r in project.requested_datasets} == {first.id, second.id}
    assert {(m.user_id, m.role) for m in project.members} == {
        (lead.user.id, MemberRole.LEAD),
        (colleague.user.id, MemberRole.RESEARCHER),
    }
    page = browser_client.get(response.headers["location"])
    assert "Saved." in page.text
    assert colleague.username in page.text
    assert "Submit for review" in page.text
    assert "EUR " in page.text  # the estimate, for the lead


def test_application_refused_keeps_what_was_typed(
    browser_client: TestClient, db_session: Session, db_settings: Settings
) -> None:
    lead = make_user(db_session, db_settings)
    sign_in(browser_client, db_session, db_settings, lead)
    token = csrf(browser_client, "/projects/new")

    response = browser_client.post(
        "/projects/new",
        data={
            "csrf_token": token,
            "title": "A title worth keeping",
            "purpose": "A purpose",
            "start_date": today().isoformat(),
            "end_date": (today() + timedelta(days=30)).isoformat(),
            "compute_size": "small",
            "members": "nobody-by-this-name",
        },
    )

    assert response.status_code == 422
    assert "There is no account" in response.text
    assert 'value="A title worth keeping"' in response.text
    assert "nobody-by-this-name" in response.text
    assert db_session.scalars(select(Project).where(Project.lead_id == lead.user.id)).all() == []


def test_application_form_is_not_for_output_checkers(
    browser_client: TestClient, db_session: Session, db_settings: Settings
) -> None:
    checker = make_user(db_session, db_settings, role=Role.OUTPUT_CHECKER)
    sign_in(browser_client, db_session, db_settings, checker)

    response = browser_client.get("/projects/new")

    assert response.status_code == 403
    assert "<h1>Not allowed</h1>" in response.text


def test_lead_edits_and_submits_the_draft(
    browser_client: TestClient, db_session: Session, db_settings: Settings
) -> None:
    make_tariff(db_session)
    lead, project = lead_with_project(db_session, db_settings, ProjectState.DRAFT)
    sign_in(browser_client, db_session, db_settings, lead)
    form = browser_client.get(f"/projects/{project.code}/edit").text
    assert 'value="Income and health"' in form
    token = CSRF_FIELD.search(form)
    assert token is not None

    edited = browser_client.post(
        f"/projects/{project.code}/edit",
        data={
            "csrf_token": token.group(1),
            "version": str(project.version),
            "title": "Income, health and housing",
            "purpose": project.purpose,
            "start_date": project.start_date.isoformat(),
            "end_date": project.end_date.isoformat(),
            "compute_size": "small",
            "dataset_version_ids": [str(r.dataset_version_id) for r in project.requested_datasets],
        },
    )
    submitted = browser_client.post(
        f"/projects/{project.code}/submit",
        data={"csrf_token": token.group(1), "version": str(project.version)},
    )

    assert edited.status_code == 303
    assert submitted.status_code == 303
    db_session.refresh(project)
    assert project.title == "Income, health and housing"
    assert project.state is ProjectState.SUBMITTED
    page = browser_client.get(f"/projects/{project.code}").text
    assert "Submitted for review" in page  # the history
    assert "Edit the application" not in page


def test_stale_draft_edit_is_a_409_page(
    browser_client: TestClient, db_session: Session, db_settings: Settings
) -> None:
    lead, project = lead_with_project(db_session, db_settings, ProjectState.DRAFT)
    sign_in(browser_client, db_session, db_settings, lead)
    token = csrf(browser_client, f"/projects/{project.code}/edit")

    response = browser_client.post(
        f"/projects/{project.code}/edit",
        data={
            "csrf_token": token,
            "version": str(project.version + 7),
            "title": "Mine",
            "purpose": "x",
            "start_date": project.start_date.isoformat(),
            "end_date": project.end_date.isoformat(),
            "compute_size": "small",
        },
    )

    assert response.status_code == 409
    assert f'href="/projects/{project.code}"' in response.text


# --- the project page -----------------------------------------------------------------------------


def test_project_page_shows_the_lead_quote_and_accept_button(
    browser_client: TestClient, db_session: Session, db_settings: Settings
) -> None:
    lead, project = lead_with_project(db_session, db_settings, ProjectState.QUOTED)
    sign_in(browser_client, db_session, db_settings, lead)

    page = browser_client.get(f"/projects/{project.code}").text

    assert f"<h1>Project {project.code}</h1>" in page
    assert "EUR 2,000.00" in page
    assert "Accept the quote" in page
    assert "Request an extension" not in page  # not approved yet


def test_lead_accepts_the_quote(
    browser_client: TestClient, db_session: Session, db_settings: Settings
) -> None:
    lead, project = lead_with_project(db_session, db_settings, ProjectState.QUOTED)
    sign_in(browser_client, db_session, db_settings, lead)
    token = csrf(browser_client, f"/projects/{project.code}")

    response = browser_client.post(
        f"/projects/{project.code}/accept-quote",
        data={"csrf_token": token, "version": str(project.version)},
    )

    assert response.status_code == 303
    db_session.refresh(project)
    assert project.state is ProjectState.ACCEPTED
    assert project.quote_accepted_at is not None


def test_member_sees_the_project_without_costs_or_lead_forms(
    browser_client: TestClient, db_session: Session, db_settings: Settings
) -> None:
    member = make_user(db_session, db_settings)
    project = make_project(db_session, state=ProjectState.ACTIVE, members=[member.user])
    sign_in(browser_client, db_session, db_settings, member)

    page = browser_client.get(f"/projects/{project.code}").text

    assert member.username in page
    assert "EUR" not in page
    assert "Request an extension" not in page
    assert "/review/projects/" not in page


def test_active_project_offers_the_lead_every_request_form(
    browser_client: TestClient, db_session: Session, db_settings: Settings
) -> None:
    member = make_user(db_session, db_settings)
    lead, project = lead_with_project(
        db_session, db_settings, ProjectState.ACTIVE, members=[member.user]
    )
    make_dataset_version(db_session, code="EXTRA_DATA")
    sign_in(browser_client, db_session, db_settings, lead)

    page = browser_client.get(f"/projects/{project.code}").text

    for action in ("extension", "add-member", "remove-member", "add-dataset"):
        assert f'action="/projects/{project.code}/requests/{action}"' in page
    assert "EXTRA_DATA" in page
    assert "granted" in page


def test_lead_requests_an_extension_and_withdraws_it(
    browser_client: TestClient, db_session: Session, db_settings: Settings
) -> None:
    lead, project = lead_with_project(db_session, db_settings, ProjectState.ACTIVE)
    sign_in(browser_client, db_session, db_settings, lead)
    token = csrf(browser_client, f"/projects/{project.code}")
    later = project.end_date + timedelta(days=90)

    asked = browser_client.post(
        f"/projects/{project.code}/requests/extension",
        data={"csrf_token": token, "new_end_date": later.isoformat(), "reason": "More waves"},
    )
    change = db_session.scalars(
        select(ChangeRequest).where(ChangeRequest.project_id == project.id)
    ).one()
    page = browser_client.get(asked.headers["location"]).text
    withdrawn = browser_client.post(
        f"/projects/{project.code}/requests/{change.id}/withdraw",
        data={"csrf_token": token, "version": str(change.version)},
    )

    assert asked.status_code == 303
    assert "Your request has been sent to the data stewards." in page
    assert f"Extension to {later.isoformat()}" in page
    assert "awaiting decision" in page
    assert withdrawn.status_code == 303
    db_session.refresh(change)
    assert change.kind is RequestKind.EXTENSION
    assert change.state is RequestState.WITHDRAWN


def test_lead_requests_a_member_by_username(
    browser_client: TestClient, db_session: Session, db_settings: Settings
) -> None:
    lead, project = lead_with_project(db_session, db_settings, ProjectState.ACTIVE)
    newcomer = make_user(db_session, db_settings)
    sign_in(browser_client, db_session, db_settings, lead)
    token = csrf(browser_client, f"/projects/{project.code}")

    response = browser_client.post(
        f"/projects/{project.code}/requests/add-member",
        data={"csrf_token": token, "username": newcomer.username.upper(), "reason": "Analyst"},
    )

    assert response.status_code == 303
    change = db_session.scalars(
        select(ChangeRequest).where(ChangeRequest.project_id == project.id)
    ).one()
    assert change.payload == {"user_id": newcomer.user.id}


@pytest.mark.parametrize(
    "path",
    ["/projects/{code}", "/projects/{code}/edit", "/projects/99999", "/projects/not-a-code"],
)
def test_foreign_project_is_a_404_page(
    browser_client: TestClient, db_session: Session, db_settings: Settings, path: str
) -> None:
    foreign = make_project(db_session, state=ProjectState.DRAFT)
    sign_in(browser_client, db_session, db_settings, make_user(db_session, db_settings))

    response = browser_client.get(path.format(code=foreign.code))

    assert response.status_code == 404
    assert response.headers["content-type"].startswith("text/html")
    assert "<h1>Not found</h1>" in response.text
    assert foreign.title not in response.text


@pytest.mark.parametrize(
    "path",
    [
        "/projects/{code}/submit",
        "/projects/{code}/accept-quote",
        "/projects/{code}/requests/extension",
        "/projects/{code}/requests/1/withdraw",
    ],
)
def test_foreign_project_forms_are_a_404(
    browser_client: TestClient, db_session: Session, db_settings: Settings, path: str
) -> None:
    foreign = make_project(db_session, state=ProjectState.ACTIVE)
    researcher = make_user(db_session, db_settings)
    make_project(db_session, state=ProjectState.DRAFT, lead=researcher.user)
    sign_in(browser_client, db_session, db_settings, researcher)
    token = csrf(browser_client, "/projects")

    response = browser_client.post(
        path.format(code=foreign.code),
        data={"csrf_token": token, "version": "1", "new_end_date": "2099-01-01", "reason": "x"},
    )

    assert response.status_code == 404
    assert "<h1>Not found</h1>" in response.text


def test_step_not_allowed_from_this_state_is_a_409_page(
    browser_client: TestClient, db_session: Session, db_settings: Settings
) -> None:
    lead, project = lead_with_project(db_session, db_settings, ProjectState.SUBMITTED)
    sign_in(browser_client, db_session, db_settings, lead)
    token = csrf(browser_client, f"/projects/{project.code}")

    response = browser_client.post(
        f"/projects/{project.code}/accept-quote",
        data={"csrf_token": token, "version": str(project.version)},
    )

    assert response.status_code == 409
    assert "it cannot accept from there" in response.text
    assert f'href="/projects/{project.code}"' in response.text


# --- review queues --------------------------------------------------------------------------------


@pytest.mark.parametrize("role", [Role.RESEARCHER, Role.OUTPUT_CHECKER, Role.OPS])
@pytest.mark.parametrize("path", ["/review/projects", "/review/requests"])
def test_review_queues_are_for_data_stewards_only(
    browser_client: TestClient, db_session: Session, db_settings: Settings, role: Role, path: str
) -> None:
    sign_in(browser_client, db_session, db_settings, make_user(db_session, db_settings, role=role))

    response = browser_client.get(path)

    assert response.status_code == 403
    assert "<h1>Not allowed</h1>" in response.text


def test_review_queue_offers_the_steps_of_each_state(
    browser_client: TestClient, db_session: Session, db_settings: Settings
) -> None:
    submitted = make_project(db_session, state=ProjectState.SUBMITTED)
    accepted = make_project(db_session, state=ProjectState.ACCEPTED)
    active = make_project(db_session, state=ProjectState.ACTIVE)
    steward = make_user(db_session, db_settings, role=Role.DATA_STEWARD)
    sign_in(browser_client, db_session, db_settings, steward)

    first = browser_client.get("/review/projects").text
    second = browser_client.get("/review/projects", params={"state": "accepted"}).text
    third = browser_client.get("/review/projects", params={"state": "active"}).text

    base = f"/review/projects/{submitted.code}"
    assert all(f"{base}/{step}" in first for step in ("return", "reject", "quote"))
    assert f"/review/projects/{accepted.code}/approve" in second
    assert f"/review/projects/{accepted.code}/" in second
    assert f"/review/projects/{active.code}/freeze" in third
    assert f"/review/projects/{active.code}/expire" in third
    assert f"/review/projects/{active.code}/approve" not in third


def test_steward_quotes_from_the_queue_and_returns_to_it(
    browser_client: TestClient, db_session: Session, db_settings: Settings
) -> None:
    make_tariff(db_session)
    project = make_project(db_session, state=ProjectState.SUBMITTED)
    steward = make_user(db_session, db_settings, role=Role.DATA_STEWARD)
    sign_in(browser_client, db_session, db_settings, steward, stepped_up=False)
    token = csrf(browser_client, "/review/projects?state=submitted")

    response = browser_client.post(
        f"/review/projects/{project.code}/quote",
        data={
            "csrf_token": token,
            "version": str(project.version),
            "next": "/review/projects?state=submitted&done=saved",
        },
    )

    assert response.status_code == 303  # quoting changes no access: no code needed
    assert response.headers["location"] == "/review/projects?state=submitted&done=saved"
    db_session.refresh(project)
    assert project.state is ProjectState.QUOTED
    assert project.quote_total is not None


def test_approval_without_recent_step_up_asks_for_a_code(
    browser_client: TestClient, db_session: Session, db_settings: Settings
) -> None:
    project = make_project(db_session, state=ProjectState.ACCEPTED)
    steward = make_user(db_session, db_settings, role=Role.DATA_STEWARD)
    sign_in(browser_client, db_session, db_settings, steward, stepped_up=False)
    token = csrf(browser_client, "/review/projects?state=accepted")
    version = str(project.version)
    form = {"csrf_token": token, "version": version, "next": "/review/projects"}

    prompt = browser_client.post(f"/review/projects/{project.code}/approve", data=form)
    confirmed = browser_client.post(
        f"/review/projects/{project.code}/approve", data={**form, "stepup_code": steward.code()}
    )

    assert prompt.status_code == 403
    assert "<h1>Confirm with your token</h1>" in prompt.text
    assert f'action="/review/projects/{project.code}/approve"' in prompt.text
    assert f'name="version" value="{version}"' in prompt.text
    assert confirmed.status_code == 303
    db_session.refresh(project)
    assert project.state is ProjectState.ACTIVE  # its start date has come: active at once
    assert project.approved_by_id == steward.user.id


def test_return_needs_comments(
    browser_client: TestClient, db_session: Session, db_settings: Settings
) -> None:
    project = make_project(db_session, state=ProjectState.SUBMITTED)
    sign_in(
        browser_client,
        db_session,
        db_settings,
        make_user(db_session, db_settings, role=Role.DATA_STEWARD),
    )
    token = csrf(browser_client, "/review/projects")

    refused = browser_client.post(
        f"/review/projects/{project.code}/return",
        data={"csrf_token": token, "version": str(project.version), "comments": " "},
    )
    returned = browser_client.post(
        f"/review/projects/{project.code}/return",
        data={"csrf_token": token, "version": str(project.version), "comments": "Add a DPIA."},
    )

    assert refused.status_code == 422
    assert returned.status_code == 303
    db_session.refresh(project)
    assert project.state is ProjectState.DRAFT
    assert project.review_comments == "Add a DPIA."


def test_unknown_review_step_is_a_404(
    browser_client: TestClient, db_session: Session, db_settings: Settings
) -> None:
    project = make_project(db_session, state=ProjectState.SUBMITTED)
    sign_in(
        browser_client,
        db_session,
        db_settings,
        make_user(db_session, db_settings, role=Role.DATA_STEWARD),
    )
    token = csrf(browser_client, "/review/projects")

    response = browser_client.post(
        f"/review/projects/{project.code}/submit",  # the lead's step, not a review step
        data={"csrf_token": token, "version": str(project.version)},
    )

    assert response.status_code == 404


def pending_extension(session: Session, project: Project, lead: User) -> ChangeRequest:
    change = ChangeRequest(
        project_id=project.id,
        kind=RequestKind.EXTENSION,
        payload={"new_end_date": (project.end_date + timedelta(days=30)).isoformat()},
        reason="More time",
        requested_by_id=lead.id,
    )
    session.add(change)
    session.flush()
    return change


def test_request_queue_approval_asks_for_a_code_and_moves_the_end_date(
    browser_client: TestClient, db_session: Session, db_settings: Settings
) -> None:
    make_tariff(db_session)
    lead, project = lead_with_project(db_session, db_settings, ProjectState.ACTIVE)
    change = pending_extension(db_session, project, lead.user)
    steward = make_user(db_session, db_settings, role=Role.DATA_STEWARD)
    sign_in(browser_client, db_session, db_settings, steward, stepped_up=False)
    queue = browser_client.get("/review/requests").text
    token = CSRF_FIELD.search(queue)
    assert token is not None
    form = {"csrf_token": token.group(1), "version": str(change.version), "comment": ""}
    new_end = change.payload["new_end_date"]

    prompt = browser_client.post(f"/review/requests/{change.id}/approve", data=form)
    approved = browser_client.post(
        f"/review/requests/{change.id}/approve", data={**form, "stepup_code": steward.code()}
    )

    assert f"Extension to {new_end}" in queue
    assert prompt.status_code == 403
    assert "<h1>Confirm with your token</h1>" in prompt.text
    assert approved.status_code == 303
    assert approved.headers["location"] == "/review/requests?done=saved"
    db_session.refresh(project)
    assert project.end_date.isoformat() == new_end


def test_request_rejection_needs_no_code_but_a_comment(
    browser_client: TestClient, db_session: Session, db_settings: Settings
) -> None:
    lead, project = lead_with_project(db_session, db_settings, ProjectState.ACTIVE)
    change = pending_extension(db_session, project, lead.user)
    sign_in(
        browser_client,
        db_session,
        db_settings,
        make_user(db_session, db_settings, role=Role.DATA_STEWARD),
        stepped_up=False,
    )
    token = csrf(browser_client, "/review/requests")
    form = {"csrf_token": token, "version": str(change.version)}

    refused = browser_client.post(f"/review/requests/{change.id}/reject", data=form)
    rejected = browser_client.post(
        f"/review/requests/{change.id}/reject", data={**form, "comment": "Not needed"}
    )

    assert refused.status_code == 422
    assert rejected.status_code == 303
    db_session.refresh(change)
    assert change.state is RequestState.REJECTED


def test_steward_in_the_project_may_not_decide_its_requests(
    browser_client: TestClient, db_session: Session, db_settings: Settings
) -> None:
    lead, project = lead_with_project(db_session, db_settings, ProjectState.ACTIVE)
    change = pending_extension(db_session, project, lead.user)
    steward = make_user(db_session, db_settings, role=Role.DATA_STEWARD)
    project.members.append(ProjectMember(user_id=steward.user.id, role=MemberRole.RESEARCHER))
    db_session.flush()
    sign_in(browser_client, db_session, db_settings, steward)
    queue = browser_client.get("/review/requests").text
    token = CSRF_FIELD.search(queue)
    assert token is not None

    response = browser_client.post(
        f"/review/requests/{change.id}/approve",
        data={"csrf_token": token.group(1), "version": str(change.version)},
    )

    assert "another data steward decides" in queue
    assert response.status_code == 403


# --- every form: CSRF; every message: Dutch -------------------------------------------------------


def test_every_new_form_refuses_a_missing_csrf_token(
    browser_client: TestClient, db_session: Session, db_settings: Settings
) -> None:
    lead, project = lead_with_project(db_session, db_settings, ProjectState.ACTIVE)
    sign_in(browser_client, db_session, db_settings, lead)
    unsafe = [
        route.path.replace("{code}", project.code)
        .replace("{action}", "approve")
        .replace("{decision}", "approve")
        .replace("{form}", "extension")
        .replace("{request_id}", "1")
        for module in NEW_MODULES
        for route in module.router.routes
        if isinstance(route, PortalRoute) and route.methods & {"POST", "PUT", "PATCH", "DELETE"}
    ]
    assert len(unsafe) >= 8

    answers = {path: browser_client.post(path, data={"version": "1"}) for path in unsafe}

    refused = {
        path: answer.status_code for path, answer in answers.items() if "CSRF token" in answer.text
    }
    assert refused == dict.fromkeys(unsafe, 403)


def _message_ids() -> set[str]:
    literal = re.compile(r"""_\(\s*(?:"((?:[^"\\]|\\.)*)"|'((?:[^'\\]|\\.)*)')""")
    ids: set[str] = set()
    sources = [*WEB.glob("templates/projects/*.html"), WEB / "templates" / "base.html"]
    sources += [Path(module.__file__ or "") for module in NEW_MODULES]
    for path in sources:
        for match in literal.finditer(path.read_text()):
            ids.add(match.group(1) or match.group(2))
    for labels in (
        pages_projects.ACTION_LABELS,
        pages_projects.MEMBER_LABELS,
        pages_projects.HISTORY_LABELS,
        pages_projects.REQUEST_KIND_LABELS,
        pages_projects.REQUEST_KIND_NOUNS,
        pages_projects.REQUEST_STATE_LABELS,
        pages_review.QUEUE_TABS,
        dict(pages_review.QUEUES),
    ):
        ids |= set(labels.values())
    ids |= {state.value for state in ProjectState}
    ids |= {item.label for item in rendering.STAFF_MENU}
    ids |= set(rendering.NOTICES.values())
    return ids


def test_project_pages_have_dutch_for_every_message() -> None:
    missing = sorted(_message_ids() - set(i18n.DUTCH))

    assert missing == []


def test_project_page_in_dutch(
    browser_client: TestClient, db_session: Session, db_settings: Settings
) -> None:
    lead, project = lead_with_project(db_session, db_settings, ProjectState.ACTIVE)
    sign_in(browser_client, db_session, db_settings, lead)

    page = browser_client.get(f"/projects/{project.code}", headers={"accept-language": "nl"}).text

    assert '<html lang="nl">' in page
    assert "Verlenging aanvragen" in page
    assert ">actief<" in page
    assert "Geschiedenis" in page


def test_compute_sizes_of_the_form_come_from_settings(
    browser_client: TestClient, db_session: Session, db_settings: Settings
) -> None:
    sign_in(browser_client, db_session, db_settings, make_user(db_session, db_settings))
    version = make_dataset_version(db_session)
    gone = make_dataset_version(db_session, available_until=today() - timedelta(days=1))

    page = browser_client.get("/projects/new").text

    for name in db_settings.compute_sizes:
        assert f'<option value="{name}"' in page
    assert f'value="{version.id}"' in page
    assert f'value="{gone.id}"' not in page  # no longer available: not offered


@pytest.mark.parametrize("state", list(ProjectState))
def test_project_page_renders_in_every_state_for_lead_and_steward(
    browser_client: TestClient, db_session: Session, db_settings: Settings, state: ProjectState
) -> None:
    lead, project = lead_with_project(db_session, db_settings, state)
    steward = make_user(db_session, db_settings, role=Role.DATA_STEWARD)
    offered = {
        action.value
        for action in projects.allowed_actions(state)
        if action.value in pages_projects.ACTION_LABELS  # its start date, today, has come
    }

    sign_in(browser_client, db_session, db_settings, lead)
    as_lead = browser_client.get(f"/projects/{project.code}")
    sign_in(browser_client, db_session, db_settings, steward)
    as_steward = browser_client.get(f"/projects/{project.code}")

    assert as_lead.status_code == 200
    assert as_steward.status_code == 200
    assert f"badge-{pages_projects.STATE_TONES.get(state, 'info')}" in as_lead.text
    assert "/review/projects/" not in as_lead.text
    shown = set(re.findall(rf"/review/projects/{project.code}/(\w+)", as_steward.text))
    assert shown == offered


def test_steward_freezes_with_a_reason_and_a_code_then_unfreezes(
    browser_client: TestClient, db_session: Session, db_settings: Settings
) -> None:
    project = make_project(db_session, state=ProjectState.ACTIVE)
    steward = make_user(db_session, db_settings, role=Role.DATA_STEWARD)
    sign_in(browser_client, db_session, db_settings, steward, stepped_up=False)
    token = csrf(browser_client, f"/projects/{project.code}")
    form = {"csrf_token": token, "version": str(project.version), "comments": "Audit finding"}

    prompt = browser_client.post(f"/review/projects/{project.code}/freeze", data=form)
    frozen = browser_client.post(
        f"/review/projects/{project.code}/freeze", data={**form, "stepup_code": steward.code()}
    )
    db_session.refresh(project)
    state_after_freeze = project.state
    unfrozen = browser_client.post(
        f"/review/projects/{project.code}/unfreeze",
        data={"csrf_token": token, "version": str(project.version)},
    )

    assert prompt.status_code == 403
    assert 'name="comments" value="Audit finding"' in prompt.text  # carried to the prompt
    assert frozen.status_code == 303
    assert frozen.headers["location"] == f"/projects/{project.code}?done=saved"
    assert state_after_freeze is ProjectState.FROZEN
    assert unfrozen.status_code == 303  # within the step-up's few minutes: no second code
    db_session.refresh(project)
    assert project.state is ProjectState.ACTIVE
