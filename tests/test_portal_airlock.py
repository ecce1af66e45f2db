"""The airlock in the portal (no JavaScript): upload → review → import/, output request → preflight
→ submit → two reviews → release → step-up download by any current member; role checks on every
page and form; Dutch."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from airlock_helpers import airlock_settings, clamd_socket  # noqa: F401
from api_helpers import api_app
from factories import MadeUser, make_user
from fastapi.testclient import TestClient
from project_factories import make_project
from sqlalchemy import select
from sqlalchemy.orm import Session

from orchestrator import airlock, airlock_egress
from orchestrator.airlock_egress import FileSpec
from orchestrator.airlock_models import (
    OutputKind,
    OutputRequest,
    OutputState,
    ReviewDecision,
    Upload,
    UploadState,
)
from orchestrator.api.deps import session_cookie_name
from orchestrator.config import Settings
from orchestrator.models import (
    AuditEvent,
    MemberRole,
    OutboxMessage,
    ProjectMember,
    ProjectState,
    Role,
)
from orchestrator.sessions import open_session

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
CSV = b"region,count\nNorth,120\nSouth,85\n"
NOW = datetime.now(UTC)


class Portal:
    def __init__(self, client: TestClient, session: Session, settings: Settings) -> None:
        self.client, self.session, self.settings = client, session, settings

    def sign_in(self, made: MadeUser, stepped_up: bool = True) -> None:
        row, secret = open_session(self.session, made.user, "testclient", "test", self.settings)
        row.stepped_up_at = row.created_at if stepped_up else None
        self.session.flush()
        self.client.cookies.clear()
        self.client.cookies.set(session_cookie_name(self.settings), secret)

    def token(self, path: str) -> str:
        page = self.client.get(path)
        assert page.status_code == 200, page.text
        match = CSRF.search(page.text)
        assert match is not None
        return match.group(1)


@pytest.fixture
def portal(db_settings, db_session, tmp_path, clamd_socket) -> Iterator[Portal]:  # noqa: F811
    settings = airlock_settings(db_settings, tmp_path, clamd_socket)
    db_session.info["settings"] = settings
    app = api_app(settings, db_session)
    with TestClient(app, base_url="https://testserver", follow_redirects=False) as client:
        yield Portal(client, db_session, settings)


@pytest.fixture
def people(portal: Portal) -> dict:
    s, st = portal.session, portal.settings
    member = make_user(s, st)
    project = make_project(s, state=ProjectState.ACTIVE, members=[member.user])
    export = airlock.project_area(st, project, "export")
    export.mkdir(parents=True)
    (export / "table.csv").write_bytes(CSV)
    yield {
        "member": member,
        "outsider": make_user(s, st),
        "checkers": [make_user(s, st, role=Role.OUTPUT_CHECKER) for _ in range(2)],
        "steward": make_user(s, st, role=Role.DATA_STEWARD),
        "project": project,
    }
    airlock.remove_tree(airlock.project_area(st, project, "import"))


def upload(portal: Portal, code: str) -> None:
    token = portal.token(f"/projects/{code}/airlock")
    answer = portal.client.post(
        f"/projects/{code}/airlock/uploads",
        data={"csrf_token": token, "legal_basis": "Own survey", "lawful": "yes"},
        files={"file": ("regions.csv", CSV, "text/csv")},
    )
    assert answer.status_code == 303, answer.text


def test_portal_airlock_upload_then_approval_lands_in_import(portal, people):
    code = people["project"].code
    portal.sign_in(people["member"])
    upload(portal, code)
    page = portal.client.get(f"/projects/{code}/airlock")
    assert "regions.csv" in page.text
    assert "pending_review" in page.text

    portal.sign_in(people["checkers"][0])
    queue = portal.client.get("/review/airlock/uploads")
    row = portal.session.scalars(select(Upload)).one()
    assert f"approve-upload-{row.id}" in queue.text
    token = CSRF.search(queue.text).group(1)
    answer = portal.client.post(
        f"/review/airlock/uploads/{row.id}/approve",
        data={"csrf_token": token, "version": row.version},
    )
    assert answer.status_code == 303
    assert row.state is UploadState.APPROVED
    placed = airlock.project_area(portal.settings, people["project"], "import") / row.import_path
    assert placed.read_bytes() == CSV


def test_portal_airlock_output_flow_with_step_up_download(portal, people):
    code = people["project"].code
    portal.sign_in(people["member"])
    token = portal.token(f"/projects/{code}/airlock")
    answer = portal.client.post(
        f"/projects/{code}/airlock/outputs",
        data={
            "csrf_token": token,
            "title": "Counts",
            "file-0": "table.csv",
            "kind-0": "table",
            "description-0": "Counts by region",
            "controls-0": "rounded",
        },
    )
    assert answer.status_code == 303, answer.text
    page_url = answer.headers["location"]
    draft = portal.client.get(page_url)
    assert "Preflight" in draft.text
    request = portal.session.scalars(select(OutputRequest)).one()
    move = f"/projects/{code}/airlock/outputs/{request.id}"
    assert (
        portal.client.post(
            f"{move}/submit", data={"csrf_token": token, "version": request.version}
        ).status_code
        == 303
    )
    assert request.state is OutputState.CHECKED
    for checker in people["checkers"]:
        portal.sign_in(checker)
        token = portal.token(page_url)
        answer = portal.client.post(
            f"{move}/review",
            data={
                "csrf_token": token,
                "version": request.version,
                "decision": "approve",
                f"note-{request.files[0].id}": "fine",
            },
        )
        assert answer.status_code == 303, answer.text
    assert request.state is OutputState.APPROVED
    answer = portal.client.post(
        f"{move}/release", data={"csrf_token": portal.token(page_url), "version": request.version}
    )
    assert answer.status_code == 303
    assert request.state is OutputState.RELEASED

    download = f"/projects/{code}/airlock/files/{request.files[0].id}/download"
    portal.sign_in(people["member"], stepped_up=False)
    token = portal.token(page_url)
    prompt = portal.client.post(download, data={"csrf_token": token})
    assert prompt.status_code == 403
    assert 'name="stepup_code"' in prompt.text
    portal.sign_in(people["member"])
    token = portal.token(page_url)
    answer = portal.client.post(download, data={"csrf_token": token})
    assert answer.status_code == 200
    assert answer.content == CSV
    manifest = portal.client.get(f"{move}/manifest.json")
    assert manifest.json()["manifest"]["files"][0]["path"] == "table.csv"


def test_portal_airlock_pages_refuse_the_wrong_people(portal, people):
    code = people["project"].code
    portal.sign_in(people["outsider"])
    assert portal.client.get(f"/projects/{code}/airlock").status_code == 404
    assert portal.client.get("/review/airlock/uploads").status_code == 403
    assert portal.client.get("/review/airlock/outputs").status_code == 403
    portal.sign_in(people["steward"])
    assert portal.client.get("/review/airlock/outputs").status_code == 403
    page = portal.client.get(f"/projects/{code}/airlock")
    assert page.status_code == 200
    assert "Ask for output" not in page.text
    portal.sign_in(people["checkers"][0])
    page = portal.client.get(f"/projects/{code}/airlock")
    assert 'id="upload-button"' not in page.text
    token = CSRF.search(page.text).group(1)
    answer = portal.client.post(
        f"/projects/{code}/airlock/uploads",
        data={"csrf_token": token, "legal_basis": "x", "lawful": "yes"},
        files={"file": ("a.csv", CSV, "text/csv")},
    )
    assert answer.status_code == 403
    portal.client.cookies.clear()
    assert portal.client.get(f"/projects/{code}/airlock").status_code == 303  # to the login


def test_portal_airlock_upload_without_csrf_or_over_the_limit(portal, people):
    code = people["project"].code
    portal.sign_in(people["member"])
    answer = portal.client.post(
        f"/projects/{code}/airlock/uploads",
        data={"legal_basis": "x", "lawful": "yes"},
        files={"file": ("a.csv", CSV, "text/csv")},
    )
    assert answer.status_code == 403
    portal.client.app.state.settings = portal.settings.model_copy(
        update={"airlock_max_upload_bytes": 10}
    )
    token = portal.token(f"/projects/{code}/airlock")
    answer = portal.client.post(
        f"/projects/{code}/airlock/uploads",
        data={"csrf_token": token, "legal_basis": "x", "lawful": "yes"},
        files={"file": ("a.csv", b"x" * 200_000, "text/csv")},
    )
    assert answer.status_code == 413
    assert portal.session.scalars(select(Upload)).all() == []


def test_portal_airlock_speaks_dutch(portal, people):
    portal.sign_in(people["member"])
    page = portal.client.get(
        f"/projects/{people['project'].code}/airlock", headers={"accept-language": "nl"}
    )
    assert "Sluis van project" in page.text
    assert "Een bestand binnenbrengen" in page.text


def _released(portal: Portal, people: dict) -> OutputRequest:
    s, st = portal.session, portal.settings
    spec = FileSpec("table.csv", OutputKind.TABLE, "Counts by region")
    member, project = people["member"].user, people["project"]
    request = airlock_egress.create_request(s, st, member, project, "Counts", [spec], NOW)
    airlock_egress.submit_request(s, st, member, request, None, NOW)
    for checker in people["checkers"]:
        airlock_egress.review_request(
            s, checker.user, request, ReviewDecision.APPROVE, "", {}, None, NOW
        )
    airlock_egress.release_request(
        s, st, make_user(s, st, role=Role.OUTPUT_CHECKER).user, request, None, NOW
    )
    return request


@pytest.mark.parametrize(
    ("caller", "status"),
    [
        ("member", 200),
        ("lead", 200),
        ("outsider", 404),
        ("checker", 403),
        ("steward", 403),
        ("ops", 403),
        ("former", 403),
        ("anonymous", 303),  # no session: to the login page
    ],
)
def test_portal_airlock_download_authorisation(portal, people, caller: str, status: int):
    """Released files go to the project's current members only, each download audited."""
    request = _released(portal, people)
    s, st = portal.session, portal.settings
    project = people["project"]
    former = make_user(s, st)
    project.members.append(
        ProjectMember(user_id=former.user.id, role=MemberRole.RESEARCHER, added_at=NOW)
    )
    s.flush()
    page_url = f"/projects/{project.code}/airlock/outputs/{request.id}"
    project.members[-1].removed_at = NOW
    s.flush()
    token = ""
    who = {
        "member": people["member"],
        "lead": MadeUser(project.lead, "", None),
        "outsider": people["outsider"],
        "checker": people["checkers"][0],
        "steward": people["steward"],
        "ops": make_user(s, st, role=Role.OPS),
        "former": former,
    }
    if caller in who:
        portal.sign_in(who[caller])
        if caller == "outsider":  # cannot see the project: a token from their account page
            token = portal.token("/account")
        else:
            token = portal.token(page_url)
            page = portal.client.get(page_url)
            assert ('id="download-' in page.text) is (status == 200)
    else:
        portal.client.cookies.clear()
    answer = portal.client.post(
        f"/projects/{project.code}/airlock/files/{request.files[0].id}/download",
        data={"csrf_token": token},
    )
    assert answer.status_code == status, answer.text
    downloads = s.scalars(
        select(AuditEvent).where(AuditEvent.action == "airlock_output_downloaded")
    ).all()
    if status == 200:
        assert answer.content == CSV
        assert [d.actor_id for d in downloads] == [who[caller].user.id]
    else:
        assert answer.content != CSV
        assert downloads == []


def test_portal_airlock_release_tells_every_current_member(portal, people):
    request = _released(portal, people)
    subjects = portal.session.scalars(select(OutboxMessage)).all()
    released = {m.to_address for m in subjects if f"request {request.id} released" in m.subject}
    assert released == {people["member"].user.email, people["project"].lead.email}


def test_portal_airlock_steward_sets_approvals_shown_to_reviewers(portal, people):
    project = people["project"]
    url = f"/projects/{project.code}/airlock/approvals"
    for who in (people["member"], people["checkers"][0]):  # not data stewards
        portal.sign_in(who)
        page = portal.client.get(f"/projects/{project.code}/airlock")
        assert 'id="set-approvals"' not in page.text
        token = CSRF.search(page.text).group(1)
        answer = portal.client.post(
            url, data={"csrf_token": token, "approvals": 1, "version": project.version}
        )
        assert answer.status_code == 403
    portal.sign_in(people["outsider"])
    answer = portal.client.post(
        url, data={"csrf_token": portal.token("/account"), "approvals": 1, "version": 1}
    )
    assert answer.status_code == 404
    portal.sign_in(people["steward"])
    token = portal.token(f"/projects/{project.code}/airlock")
    bad = portal.client.post(url, data={"csrf_token": token, "approvals": 9, "version": 1})
    assert bad.status_code == 422
    answer = portal.client.post(
        url, data={"csrf_token": token, "approvals": 1, "version": project.version}
    )
    assert answer.status_code == 303, answer.text
    assert project.airlock_approvals == 1
    s, st, member = portal.session, portal.settings, people["member"].user
    spec = FileSpec("table.csv", OutputKind.TABLE, "Counts by region")
    request = airlock_egress.create_request(s, st, member, project, "Counts", [spec], NOW)
    airlock_egress.submit_request(s, st, member, request, None, NOW)
    portal.sign_in(people["checkers"][0])
    page = portal.client.get(f"/projects/{project.code}/airlock/outputs/{request.id}")
    assert 'id="approvals">0 / 1<' in page.text
    airlock_egress.review_request(
        s, people["checkers"][0].user, request, ReviewDecision.APPROVE, "", {}, None, NOW
    )
    assert request.state is OutputState.APPROVED  # one approval suffices now


def test_portal_airlock_queues_in_the_staff_menu_by_role(portal, people):
    expected = {
        "member": (False, False),
        "outsider": (False, False),
        "steward": (True, False),
    }
    for name, (uploads, outputs) in expected.items():
        portal.sign_in(people[name])
        page = portal.client.get("/account").text
        assert ('href="/review/airlock/uploads"' in page) is uploads, name
        assert ('href="/review/airlock/outputs"' in page) is outputs, name
    portal.sign_in(people["checkers"][0])
    page = portal.client.get("/review/airlock/outputs").text
    assert 'href="/review/airlock/uploads"' in page
    assert 'href="/review/airlock/outputs" aria-current="page"' in page


def test_portal_airlock_output_queue_oldest_first_lanes_and_target(portal, people):
    s, st, member = portal.session, portal.settings, people["member"].user
    project = people["project"]
    spec = FileSpec("table.csv", OutputKind.TABLE, "Counts by region")
    made = []
    for title, light, days_ago in (("Recent", False, 0), ("Old", False, 14), ("Small", True, 1)):
        request = airlock_egress.create_request(
            s, st, member, project, title, [spec], NOW, light=light
        )
        airlock_egress.submit_request(s, st, member, request, None, NOW)
        request.submitted_at = NOW - timedelta(days=days_ago)
        made.append(request)
    s.flush()
    recent, old, small = made
    portal.sign_in(people["checkers"][0])
    page = portal.client.get("/review/airlock/outputs").text
    light_at, regular_at = page.index("LIGHT lane"), page.index("Regular lane")
    assert light_at < page.index(f'id="queue-output-{small.id}"') < regular_at
    assert regular_at < page.index(f'id="queue-output-{old.id}"')
    assert page.index(f'id="queue-output-{old.id}"') < page.index(f'id="queue-output-{recent.id}"')
    old_line = page[page.index(f'id="waited-{old.id}"') :].split("</span>")[0]
    assert "of 3 working days" in old_line
    assert "overdue" in old_line
    assert "0 of 2 approvals" in old_line
    recent_line = page[page.index(f'id="waited-{recent.id}"') :].split("</span>")[0]
    assert "0 of 3 working days" in recent_line
    assert "overdue" not in recent_line
