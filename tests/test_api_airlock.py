"""Airlock API: every route x caller (member, lead, outsider, output checker, data steward, ops,
anonymous) with the expected status; uploads streamed as the raw body through the real app into a
real clamd; API-token scopes; no API route downloads a released file (the portal only); hostile
input is a 4xx in the error shape."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
from airlock_helpers import EICAR, airlock_settings, clamd_socket  # noqa: F401
from api_helpers import act_as, api_app, serve
from fastapi import FastAPI
from fastapi.testclient import TestClient
from project_factories import make_project, make_researcher, make_staff
from sqlalchemy import select
from sqlalchemy.orm import Session

from orchestrator import airlock, airlock_egress
from orchestrator.airlock_egress import FileSpec
from orchestrator.airlock_models import OutputKind, OutputRequest, ReviewDecision, Upload
from orchestrator.config import Settings
from orchestrator.models import AuditEvent, ProjectState, Role, User

CSV = b"region,count\nNorth,120\nSouth,85\n"
NOW = datetime.now(UTC)
MEMBER, LEAD, OUTSIDER, CHECKER, STEWARD, OPS, ANON = (
    "member",
    "lead",
    "outsider",
    "checker",
    "steward",
    "ops",
    "anonymous",
)
CALLERS = [MEMBER, LEAD, OUTSIDER, CHECKER, STEWARD, OPS, ANON]


@dataclass
class World:
    settings: Settings
    app: FastAPI
    client: TestClient
    session: Session
    callers: dict[str, User]
    project: Any
    checkers: list[User]

    def act(self, who: str, **kwargs: Any) -> None:
        if who == ANON:
            self.app.dependency_overrides.pop(
                __import__("orchestrator.api.deps", fromlist=["x"]).get_principal, None
            )
            return
        act_as(self.app, self.session, self.callers[who], **kwargs)

    def upload(self) -> Upload:
        received = airlock.receive_file(self.settings, __import__("io").BytesIO(CSV))
        return airlock.register_upload(
            self.session,
            self.settings,
            self.callers[MEMBER],
            self.project,
            received,
            "regions.csv",
            "Own survey",
            NOW,
        )

    def draft(self) -> OutputRequest:
        return airlock_egress.create_request(
            self.session,
            self.settings,
            self.callers[MEMBER],
            self.project,
            "Counts",
            [FileSpec("table.csv", OutputKind.TABLE, "Counts by region")],
            NOW,
        )

    def checked(self) -> OutputRequest:
        request = self.draft()
        return airlock_egress.submit_request(
            self.session, self.settings, self.callers[MEMBER], request, None, NOW
        )

    def review(self, request: OutputRequest, n: int, decision=ReviewDecision.APPROVE) -> None:
        airlock_egress.review_request(
            self.session, self.checkers[n], request, decision, "Fix it", {}, None, NOW
        )

    def released(self) -> OutputRequest:
        request = self.checked()
        self.review(request, 1)
        self.review(request, 2)
        return airlock_egress.release_request(
            self.session, self.settings, self.checkers[1], request, None, NOW
        )


@pytest.fixture
def world(db_settings, db_session, tmp_path, clamd_socket) -> Iterator[World]:  # noqa: F811
    settings = airlock_settings(db_settings, tmp_path, clamd_socket)
    db_session.info["settings"] = settings
    member = make_researcher(db_session)
    project = make_project(db_session, state=ProjectState.ACTIVE, members=[member])
    export = airlock.project_area(settings, project, "export")
    export.mkdir(parents=True)
    (export / "table.csv").write_bytes(CSV)
    checkers = [make_staff(db_session, Role.OUTPUT_CHECKER) for _ in range(3)]
    callers = {
        MEMBER: member,
        LEAD: project.lead,
        OUTSIDER: make_researcher(db_session),
        CHECKER: checkers[0],
        STEWARD: make_staff(db_session, Role.DATA_STEWARD),
        OPS: make_staff(db_session, Role.OPS),
    }
    app = api_app(settings, db_session)
    for client in serve(app):
        yield World(settings, app, client, db_session, callers, project, checkers)
    airlock.remove_tree(airlock.project_area(settings, project, "import"))


def _upload_post(w: World) -> tuple[str, str, dict[str, Any]]:
    url = (
        f"/api/projects/{w.project.code}/airlock/uploads"
        "?filename=regions.csv&legal_basis=Own%20survey&lawful=true"
    )
    return "POST", url, {"content": CSV, "headers": {"content-type": "text/csv"}}


def _decision(w: World) -> tuple[str, str, dict[str, Any]]:
    upload = w.upload()
    body = {"decision": "approve", "version": upload.version}
    return "POST", f"/api/airlock/uploads/{upload.id}/decision", {"json": body}


def _output_post(w: World) -> tuple[str, str, dict[str, Any]]:
    body = {
        "title": "Counts",
        "files": [{"path": "table.csv", "kind": "table", "description": "Counts by region"}],
    }
    return "POST", f"/api/projects/{w.project.code}/airlock/outputs", {"json": body}


def _on_draft(action: str) -> Callable[[World], tuple[str, str, dict[str, Any]]]:
    def make(w: World) -> tuple[str, str, dict[str, Any]]:
        request = w.draft()
        return (
            "POST",
            f"/api/airlock/outputs/{request.id}/{action}",
            {"json": {"version": request.version}},
        )

    return make


def _resubmit(w: World) -> tuple[str, str, dict[str, Any]]:
    request = w.checked()
    w.review(request, 1, ReviewDecision.RETURN)
    return "POST", f"/api/airlock/outputs/{request.id}/resubmit", {}


def _review(w: World) -> tuple[str, str, dict[str, Any]]:
    request = w.checked()
    body = {"decision": "approve", "version": request.version}
    return "POST", f"/api/airlock/outputs/{request.id}/reviews", {"json": body}


def _release(w: World) -> tuple[str, str, dict[str, Any]]:
    request = w.checked()
    w.review(request, 1)
    w.review(request, 2)
    return (
        "POST",
        f"/api/airlock/outputs/{request.id}/release",
        {"json": {"version": request.version}},
    )


def _get(path: Callable[[World], str]) -> Callable[[World], tuple[str, str, dict[str, Any]]]:
    return lambda w: ("GET", path(w), {})


ALL_READ = {MEMBER: 200, LEAD: 200, OUTSIDER: 404, CHECKER: 200, STEWARD: 200, OPS: 200, ANON: 401}
ROUTES: dict[str, tuple[Callable[[World], tuple[str, str, dict[str, Any]]], dict[str, int]]] = {
    "upload": (
        _upload_post,
        {MEMBER: 201, LEAD: 201, OUTSIDER: 404, CHECKER: 403, STEWARD: 201, OPS: 403, ANON: 401},
    ),
    "project_uploads": (
        _get(lambda w: f"/api/projects/{w.project.code}/airlock/uploads"),
        ALL_READ,
    ),
    "upload_queue": (
        _get(lambda w: "/api/airlock/uploads"),
        {MEMBER: 403, LEAD: 403, OUTSIDER: 403, CHECKER: 200, STEWARD: 200, OPS: 200, ANON: 401},
    ),
    "upload_get": (_get(lambda w: f"/api/airlock/uploads/{w.upload().id}"), ALL_READ),
    "upload_decision": (
        _decision,
        {MEMBER: 403, LEAD: 403, OUTSIDER: 404, CHECKER: 200, STEWARD: 200, OPS: 403, ANON: 401},
    ),
    "output_create": (
        _output_post,
        {MEMBER: 201, LEAD: 201, OUTSIDER: 404, CHECKER: 403, STEWARD: 403, OPS: 403, ANON: 401},
    ),
    "project_outputs": (
        _get(lambda w: f"/api/projects/{w.project.code}/airlock/outputs"),
        ALL_READ,
    ),
    "approvals_get": (
        _get(lambda w: f"/api/projects/{w.project.code}/airlock/approvals"),
        ALL_READ,
    ),
    "approvals_set": (
        lambda w: (
            "PUT",
            f"/api/projects/{w.project.code}/airlock/approvals",
            {"json": {"approvals": 3, "version": w.project.version}},
        ),
        {MEMBER: 403, LEAD: 403, OUTSIDER: 404, CHECKER: 403, STEWARD: 200, OPS: 403, ANON: 401},
    ),
    "output_queue": (
        _get(lambda w: "/api/airlock/outputs"),
        {MEMBER: 403, LEAD: 403, OUTSIDER: 403, CHECKER: 200, STEWARD: 403, OPS: 403, ANON: 401},
    ),
    "output_get": (_get(lambda w: f"/api/airlock/outputs/{w.draft().id}"), ALL_READ),
    "output_preflight": (
        _get(lambda w: f"/api/airlock/outputs/{w.draft().id}/preflight"),
        {MEMBER: 200, LEAD: 403, OUTSIDER: 404, CHECKER: 403, STEWARD: 403, OPS: 403, ANON: 401},
    ),
    "output_submit": (
        _on_draft("submit"),
        {MEMBER: 200, LEAD: 403, OUTSIDER: 404, CHECKER: 403, STEWARD: 403, OPS: 403, ANON: 401},
    ),
    "output_withdraw": (
        _on_draft("withdraw"),
        {MEMBER: 200, LEAD: 403, OUTSIDER: 404, CHECKER: 403, STEWARD: 403, OPS: 403, ANON: 401},
    ),
    "output_resubmit": (
        _resubmit,
        {MEMBER: 201, LEAD: 403, OUTSIDER: 404, CHECKER: 403, STEWARD: 403, OPS: 403, ANON: 401},
    ),
    "output_review": (
        _review,
        {MEMBER: 403, LEAD: 403, OUTSIDER: 404, CHECKER: 200, STEWARD: 403, OPS: 403, ANON: 401},
    ),
    "output_release": (
        _release,
        {MEMBER: 403, LEAD: 403, OUTSIDER: 404, CHECKER: 200, STEWARD: 403, OPS: 403, ANON: 401},
    ),
    "output_manifest": (
        _get(lambda w: f"/api/airlock/outputs/{w.released().id}/manifest"),
        ALL_READ,
    ),
}


@pytest.mark.parametrize("caller", CALLERS)
@pytest.mark.parametrize("route", list(ROUTES))
def test_api_airlock_route_authorisation(world: World, route: str, caller: str):
    make, expected = ROUTES[route]
    method, url, kwargs = make(world)
    world.act(caller)
    response = world.client.request(method, url, **kwargs)
    assert response.status_code == expected[caller], response.text
    if response.status_code >= 400:
        assert response.json()["error"]["code"]


def test_api_airlock_every_route_is_in_the_matrix(world: World):
    operations = {
        (method.upper(), path)
        for path, item in world.app.openapi()["paths"].items()
        if "airlock" in path
        for method in item
    }
    assert len(operations) == len(ROUTES) == 18


def test_api_airlock_upload_streams_and_hashes(world: World):
    world.act(MEMBER)
    method, url, kwargs = _upload_post(world)
    response = world.client.request(method, url, **kwargs)
    body = response.json()
    assert body["state"] == "pending_review"
    assert body["sha256"] == hashlib.sha256(CSV).hexdigest()
    assert body["content_type"] in ("text/csv", "text/plain")


def test_api_airlock_eicar_upload_blocked_and_never_imported(world: World):
    world.act(MEMBER)
    url = (
        f"/api/projects/{world.project.code}/airlock/uploads"
        "?filename=notes.txt&legal_basis=Survey&lawful=true"
    )
    body = world.client.post(url, content=EICAR).json()
    assert body["state"] == "blocked"
    world.act(CHECKER)
    answer = world.client.post(
        f"/api/airlock/uploads/{body['id']}/decision",
        json={"decision": "approve", "version": body["version"]},
    )
    assert answer.status_code == 409
    assert not airlock.project_area(world.settings, world.project, "import").exists()


@pytest.mark.parametrize(
    ("query", "status"),
    [
        ("filename=..%2Fx.csv&legal_basis=a&lawful=true", 422),
        ("filename=x.csv&legal_basis=a&lawful=false", 422),
        ("filename=x.csv&lawful=true", 422),
        ("filename=a%E2%80%AEvsc.exe&legal_basis=a&lawful=true", 422),
    ],
)
def test_api_airlock_hostile_upload_parameters(world: World, query: str, status: int):
    world.act(MEMBER)
    url = f"/api/projects/{world.project.code}/airlock/uploads?{query}"
    response = world.client.post(url, content=CSV)
    assert response.status_code == status
    assert list(airlock.quarantine_dir(world.settings).iterdir()) == []


def test_api_airlock_upload_over_the_limit_is_413_and_leaves_nothing(world: World):
    small = world.settings.model_copy(update={"airlock_max_upload_bytes": 100})
    world.app.state.settings = small
    world.act(MEMBER)
    method, url, kwargs = _upload_post(world)
    kwargs["content"] = b"x" * 1000
    assert world.client.request(method, url, **kwargs).status_code == 413

    def chunks() -> Iterator[bytes]:  # no Content-Length: the stream itself is counted
        for _ in range(10):
            yield b"y" * 100

    assert world.client.post(url, content=chunks()).status_code == 413
    assert list(airlock.quarantine_dir(small).iterdir()) == []


def test_api_airlock_form_upload_refused(world: World):
    world.act(MEMBER)
    _method, url, _ = _upload_post(world)
    response = world.client.post(url, files={"file": ("a.csv", CSV)})
    assert response.status_code == 422


def test_api_airlock_token_scopes(world: World):
    world.act(MEMBER, token_scopes={"read"})
    method, url, kwargs = _upload_post(world)
    assert world.client.request(method, url, **kwargs).status_code == 403
    world.act(MEMBER, token_scopes={"read", "projects:write"})
    assert world.client.request(method, url, **kwargs).status_code == 201
    upload = world.upload()
    world.act(CHECKER, token_scopes={"read"})
    decision = {"decision": "reject", "comment": "no", "version": upload.version}
    assert (
        world.client.post(f"/api/airlock/uploads/{upload.id}/decision", json=decision).status_code
        == 403
    )
    world.act(CHECKER, token_scopes={"read", "airlock:review"})
    assert (
        world.client.post(f"/api/airlock/uploads/{upload.id}/decision", json=decision).status_code
        == 200
    )


def test_api_airlock_steward_sets_approvals_audited_and_bad_values_refused(world: World):
    url = f"/api/projects/{world.project.code}/airlock/approvals"
    world.act(STEWARD)
    version = world.client.get(url).json()["version"]
    for body in ({"approvals": 0, "version": version}, {"approvals": 6, "version": version}, {}):
        answer = world.client.put(url, json=body)
        assert answer.status_code == 422
        assert answer.json()["error"]["code"]
    stale = world.client.put(url, json={"approvals": 1, "version": version + 7})
    assert stale.status_code == 409
    answer = world.client.put(url, json={"approvals": 1, "version": version})
    assert answer.json()["approvals"] == 1
    assert world.project.airlock_approvals == 1
    events = world.session.scalars(
        select(AuditEvent).where(AuditEvent.action == "airlock_approvals_changed")
    ).all()
    assert len(events) == 1
    world.act(STEWARD, token_scopes={"read"})
    refused = world.client.put(url, json={"approvals": 2, "version": answer.json()["version"]})
    assert refused.status_code == 403


@pytest.mark.parametrize("caller", CALLERS)
def test_api_airlock_has_no_download_route(world: World, caller: str):
    """Released files leave through the portal only: no API route serves them, not even to a
    member with a stepped-up session, nor with an API token."""
    request = world.released()
    world.act(caller)
    for url in (
        f"/api/airlock/files/{request.files[0].id}/download",
        f"/api/airlock/files/{request.files[0].id}",
        f"/api/airlock/outputs/{request.id}/files/{request.files[0].id}",
    ):
        answer = world.client.get(url)
        assert answer.status_code in (401, 404, 405), (url, answer.status_code)
        assert answer.content != CSV
    assert not [p for p in world.app.openapi()["paths"] if "download" in p]
    audited = world.session.scalars(
        select(AuditEvent).where(AuditEvent.action == "airlock_output_downloaded")
    ).all()
    assert audited == []


def test_api_airlock_cross_project_objects_are_404(world: World):
    other_member = make_researcher(world.session)
    other = make_project(world.session, state=ProjectState.ACTIVE, members=[other_member])
    upload, request = world.upload(), world.checked()
    world.callers[OUTSIDER] = other_member
    world.act(OUTSIDER)
    for url in (
        f"/api/airlock/uploads/{upload.id}",
        f"/api/airlock/outputs/{request.id}",
        f"/api/projects/{world.project.code}/airlock/outputs",
    ):
        assert world.client.get(url).status_code == 404
    body = {
        "title": "x",
        "files": [
            {
                "path": "../../" + world.project.code + "/export/table.csv",
                "kind": "table",
                "description": "x",
            }
        ],
    }
    answer = world.client.post(f"/api/projects/{other.code}/airlock/outputs", json=body)
    assert answer.status_code == 422


def test_api_airlock_bad_bodies_are_4xx(world: World):
    world.act(MEMBER)
    url = f"/api/projects/{world.project.code}/airlock/outputs"
    for body in (
        {},
        {"title": "x", "files": []},
        {"title": "x", "files": [{"path": "t.csv", "kind": "bomb", "description": "d"}]},
        {"title": "x" * 300, "files": [{"path": "t.csv", "kind": "table", "description": "d"}]},
    ):
        answer = world.client.post(url, json=body)
        assert answer.status_code == 422
        assert answer.json()["error"]["code"]
