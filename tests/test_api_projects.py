"""Project API: the route x role x own/foreign-object matrix (a researcher of project A never
learns anything of project B), list narrowing, field-level escalation, 409 messages, optimistic
locking, step-up and API-token scopes, costs only for those who may see them, and hostile input
(a 4xx in the error shape, never a 500).

The caller is injected with `dependency_overrides[get_principal]` (as in test_api_admin.py); a
caller's session is a real `UserSession` row, stepped up unless a test says otherwise.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from api_helpers import act_as, api_app, serve
from fastapi import FastAPI
from fastapi.testclient import TestClient
from project_factories import (
    make_dataset_version,
    make_project,
    make_researcher,
    make_staff,
    make_tariff,
    today,
)
from sqlalchemy.orm import Session

from orchestrator import requests
from orchestrator.config import Settings
from orchestrator.models import (
    ChangeRequest,
    Project,
    ProjectState,
    RequestKind,
    Role,
    User,
)

S = ProjectState
LEAD, MEMBER, OUTSIDER = "lead", "member", "outsider"
STEWARD, CHECKER, OPS = "data_steward", "output_checker", "ops"
CALLERS = [LEAD, MEMBER, OUTSIDER, STEWARD, CHECKER, OPS]
RESEARCHERS = {LEAD, MEMBER, OUTSIDER}


@dataclass
class World:
    """Project A (lead, member) and project B (another lead), both in one state, each with a
    pending change request; an outsider researcher in no project; one account per staff role."""

    callers: dict[str, User]
    own: Project
    foreign: Project
    request_of: dict[int, ChangeRequest]


def make_world(session: Session, settings: Settings, state: ProjectState) -> World:
    make_tariff(session)
    lead, member = make_researcher(session), make_researcher(session)
    own = make_project(session, state=state, lead=lead, members=[member])
    foreign = make_project(session, state=state, members=[make_researcher(session)])
    callers = {
        LEAD: lead,
        MEMBER: member,
        OUTSIDER: make_researcher(session),
        STEWARD: make_staff(session, Role.DATA_STEWARD),
        CHECKER: make_staff(session, Role.OUTPUT_CHECKER),
        OPS: make_staff(session, Role.OPS),
    }
    request_of = {}
    for project in (own, foreign):
        request = ChangeRequest(
            project_id=project.id,
            kind=RequestKind.ADD_MEMBER,
            payload={"user_id": make_researcher(session).id},
            reason="Help with the analysis.",
            requested_by_id=project.lead_id,
        )
        session.add(request)
        session.flush()
        request_of[project.id] = request
    return World(callers, own, foreign, request_of)


@pytest.fixture
def project_app(db_settings: Settings, db_session: Session) -> FastAPI:
    db_session.info["settings"] = db_settings
    return api_app(db_settings, db_session)


@pytest.fixture
def api(project_app: FastAPI) -> Iterator[TestClient]:
    yield from serve(project_app)


# --- the matrix -----------------------------------------------------------------------------------

Body = Callable[[World, Project], dict[str, Any]]


@dataclass(frozen=True)
class Route:
    name: str
    method: str
    path: Callable[[World, Project], str]
    state: ProjectState
    ok: dict[str, int]  # the answer on one's own project per caller; missing: 403
    body: Body | None = None


def _step(name: str, state: ProjectState, ok: dict[str, int], comment: str = "") -> Route:
    """A route for one step of the state machine, taken from `state`."""
    return Route(
        name,
        "POST",
        lambda w, p: f"/api/projects/{p.code}/transitions/{name.split('_')[0]}",
        state,
        ok,
        lambda w, p: {"version": p.version, "comment": comment},
    )


def _request_path(verb: str) -> Callable[[World, Project], str]:
    return lambda w, p: f"/api/requests/{w.request_of[p.id].id}/{verb}"


def _decision(comment: str = "") -> Body:
    return lambda w, p: {"version": w.request_of[p.id].version, "comment": comment}


READ_OK = {LEAD: 200, MEMBER: 200, STEWARD: 200, CHECKER: 200, OPS: 200}
ROUTES = [
    Route("get", "GET", lambda w, p: f"/api/projects/{p.code}", S.ACTIVE, READ_OK),
    Route("history", "GET", lambda w, p: f"/api/projects/{p.code}/history", S.ACTIVE, READ_OK),
    Route("members", "GET", lambda w, p: f"/api/projects/{p.code}/members", S.ACTIVE, READ_OK),
    Route("grants", "GET", lambda w, p: f"/api/projects/{p.code}/grants", S.ACTIVE, READ_OK),
    Route("requests", "GET", lambda w, p: f"/api/projects/{p.code}/requests", S.ACTIVE, READ_OK),
    Route(
        "request",
        "GET",
        lambda w, p: f"/api/requests/{w.request_of[p.id].id}",
        S.ACTIVE,
        READ_OK,
    ),
    Route(
        "patch",
        "PATCH",
        lambda w, p: f"/api/projects/{p.code}",
        S.DRAFT,
        {LEAD: 200, STEWARD: 200},
        lambda w, p: {"version": p.version, "title": "Renamed"},
    ),
    _step("submit", S.DRAFT, {LEAD: 200}),
    _step("quote", S.SUBMITTED, {STEWARD: 200}),
    _step("return", S.SUBMITTED, {STEWARD: 200}, "More detail."),
    _step("accept", S.QUOTED, {LEAD: 200}),
    _step("approve", S.ACCEPTED, {STEWARD: 200}),
    _step("freeze", S.ACTIVE, {STEWARD: 200}, "Why."),
    _step("expire", S.ACTIVE, {STEWARD: 200}),
    _step("delete_draft", S.DRAFT, {LEAD: 200, STEWARD: 200}),
    Route(
        "ask",
        "POST",
        lambda w, p: f"/api/projects/{p.code}/requests",
        S.ACTIVE,
        {LEAD: 201},
        lambda w, p: {
            "kind": "extension",
            "new_end_date": (p.end_date + timedelta(days=30)).isoformat(),
            "reason": "Data arrived late.",
        },
    ),
    Route(
        "approve_request", "POST", _request_path("approve"), S.ACTIVE, {STEWARD: 200}, _decision()
    ),
    Route(
        "reject_request",
        "POST",
        _request_path("reject"),
        S.ACTIVE,
        {STEWARD: 200},
        _decision("Not now."),
    ),
    Route(
        "withdraw_request", "POST", _request_path("withdraw"), S.ACTIVE, {LEAD: 200}, _decision()
    ),
]


def expected(route: Route, caller: str, which: str) -> int:
    if caller in RESEARCHERS and (which == "foreign" or caller == OUTSIDER):
        return 404  # not even its existence is told
    return route.ok.get(caller, 403)


def matrix() -> Iterator[Any]:
    for route in ROUTES:
        for caller in CALLERS:
            for which in ("own", "foreign"):
                yield pytest.param(route, caller, which, id=f"{route.name}-{caller}-{which}")


@pytest.mark.parametrize(("route", "caller", "which"), list(matrix()))
def test_api_projects_matrix(
    project_app: FastAPI,
    api: TestClient,
    db_session: Session,
    db_settings: Settings,
    route: Route,
    caller: str,
    which: str,
) -> None:
    world = make_world(db_session, db_settings, route.state)
    act_as(project_app, db_session, world.callers[caller])
    target = world.own if which == "own" else world.foreign
    kwargs: dict[str, Any] = {}
    if route.body is not None:
        kwargs["json"] = route.body(world, target)

    response = api.request(route.method, route.path(world, target), **kwargs)

    assert response.status_code == expected(route, caller, which), response.text
    if response.status_code >= 400:
        assert set(response.json()["error"]) == {"code", "message", "details"}
        assert target.code not in response.text or response.status_code != 404


@pytest.mark.parametrize("caller", CALLERS)
def test_api_projects_apply_per_role(
    project_app: FastAPI, api: TestClient, db_session: Session, db_settings: Settings, caller: str
) -> None:
    world = make_world(db_session, db_settings, S.DRAFT)
    act_as(project_app, db_session, world.callers[caller])
    body = {
        "title": "Commuting",
        "purpose": "Why.",
        "compute_size": "small",
        "start_date": (today() + timedelta(days=3)).isoformat(),
        "end_date": (today() + timedelta(days=300)).isoformat(),
        "dataset_version_ids": [make_dataset_version(db_session).id],
    }
    if caller not in RESEARCHERS:
        body["lead_id"] = world.callers[OUTSIDER].id

    response = api.post("/api/projects", json=body)

    assert response.status_code == (201 if caller in RESEARCHERS | {STEWARD} else 403)
    if response.status_code == 201:
        made = response.json()
        assert made["state"] == "draft"
        assert (
            made["lead_id"]
            == (world.callers[caller] if caller in RESEARCHERS else world.callers[OUTSIDER]).id
        )
        assert "submit" in made["actions"] or caller == STEWARD


# --- lists hold only what the caller may see ------------------------------------------------------


@pytest.mark.parametrize("caller", CALLERS)
def test_api_projects_lists_are_narrowed(
    project_app: FastAPI, api: TestClient, db_session: Session, db_settings: Settings, caller: str
) -> None:
    world = make_world(db_session, db_settings, S.ACTIVE)
    act_as(project_app, db_session, world.callers[caller])

    codes = {p["code"] for p in api.get("/api/projects", params={"limit": 200}).json()["items"]}
    request_ids = {r["id"] for r in api.get("/api/requests", params={"limit": 200}).json()["items"]}

    own_request = world.request_of[world.own.id].id
    foreign_request = world.request_of[world.foreign.id].id
    if caller == OUTSIDER:
        assert codes == set()
        assert request_ids == set()
    elif caller in RESEARCHERS:
        assert codes == {world.own.code}
        assert request_ids == {own_request}
    else:
        assert {world.own.code, world.foreign.code} <= codes
        assert {own_request, foreign_request} <= request_ids


def test_api_projects_list_filters_by_state(
    project_app: FastAPI, api: TestClient, db_session: Session, db_settings: Settings
) -> None:
    world = make_world(db_session, db_settings, S.ACTIVE)
    draft = make_project(db_session, state=S.DRAFT)
    act_as(project_app, db_session, world.callers[STEWARD])

    body = api.get("/api/projects", params={"state": "draft", "limit": 200}).json()

    assert draft.code in {p["code"] for p in body["items"]}
    assert {p["state"] for p in body["items"]} == {"draft"}


def test_api_projects_review_queue_holds_pending_requests(
    project_app: FastAPI, api: TestClient, db_session: Session, db_settings: Settings
) -> None:
    world = make_world(db_session, db_settings, S.ACTIVE)
    done = world.request_of[world.foreign.id]
    requests.withdraw_request(db_session, done, None, datetime.now(UTC), db_settings)
    act_as(project_app, db_session, world.callers[STEWARD])

    queue = api.get("/api/requests", params={"state": "pending", "limit": 200}).json()

    ids = [r["id"] for r in queue["items"]]
    assert world.request_of[world.own.id].id in ids
    assert done.id not in ids
    assert all(r["state"] == "pending" for r in queue["items"])
    assert queue["items"][0]["project_code"]


def test_api_projects_removed_member_still_sees_the_project(
    project_app: FastAPI, api: TestClient, db_session: Session, db_settings: Settings
) -> None:
    world = make_world(db_session, db_settings, S.ACTIVE)
    member = world.callers[MEMBER]
    for row in world.own.members:
        if row.user_id == member.id:
            row.removed_at = datetime.now(UTC)
    db_session.flush()
    act_as(project_app, db_session, member)

    assert api.get(f"/api/projects/{world.own.code}").status_code == 200
    members = api.get(f"/api/projects/{world.own.code}/members").json()
    assert any(m["user_id"] == member.id and m["removed_at"] for m in members)


# --- field-level escalation -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "change",
    [
        {"state": "active"},
        {"quote_total": "0.00"},
        {"tariff_id": 1},
        {"lead_id": 1},
        {"institution_id": 1},
        {"grants": [1]},
        {"approved_at": "2026-01-01T00:00:00Z"},
        {"code": "1234"},
        {"version": 1, "state": "approved"},
    ],
    ids=lambda c: ",".join(c),
)
def test_api_projects_lead_cannot_patch_protected_fields(
    project_app: FastAPI,
    api: TestClient,
    db_session: Session,
    db_settings: Settings,
    change: dict[str, Any],
) -> None:
    world = make_world(db_session, db_settings, S.DRAFT)
    project = world.own
    act_as(project_app, db_session, world.callers[LEAD])

    response = api.patch(
        f"/api/projects/{project.code}", json={"version": project.version} | change
    )

    assert response.status_code == 422
    db_session.refresh(project)
    assert project.state is S.DRAFT


@pytest.mark.parametrize("state", [S.APPROVED, S.ACTIVE, S.FROZEN, S.EXPIRED])
def test_api_projects_lead_cannot_move_dates_after_approval(
    project_app: FastAPI,
    api: TestClient,
    db_session: Session,
    db_settings: Settings,
    state: ProjectState,
) -> None:
    world = make_world(db_session, db_settings, state)
    project = world.own
    end = project.end_date
    act_as(project_app, db_session, world.callers[LEAD])

    response = api.patch(
        f"/api/projects/{project.code}",
        json={"version": project.version, "end_date": (end + timedelta(days=400)).isoformat()},
    )

    assert response.status_code == 409
    assert "only a draft" in response.json()["error"]["message"]
    assert project.end_date == end


@pytest.mark.parametrize("action", ["approve", "quote", "freeze", "activate", "archive"])
def test_api_projects_lead_cannot_take_staff_steps(
    project_app: FastAPI, api: TestClient, db_session: Session, db_settings: Settings, action: str
) -> None:
    state = {"approve": S.ACCEPTED, "quote": S.SUBMITTED, "archive": S.EXPIRED}.get(
        action, S.ACTIVE if action == "freeze" else S.APPROVED
    )
    world = make_world(db_session, db_settings, state)
    act_as(project_app, db_session, world.callers[LEAD])

    response = api.post(
        f"/api/projects/{world.own.code}/transitions/{action}",
        json={"version": world.own.version, "comment": "x"},
    )

    assert response.status_code == 403
    assert world.own.state is state


def test_api_projects_member_sees_no_costs(
    project_app: FastAPI, api: TestClient, db_session: Session, db_settings: Settings
) -> None:
    world = make_world(db_session, db_settings, S.SUBMITTED)
    act_as(project_app, db_session, world.callers[STEWARD])
    quoted = api.post(
        f"/api/projects/{world.own.code}/transitions/quote", json={"version": world.own.version}
    )
    assert quoted.status_code == 200

    act_as(project_app, db_session, world.callers[MEMBER])
    as_member = api.get(f"/api/projects/{world.own.code}").json()
    member_history = api.get(f"/api/projects/{world.own.code}/history").json()["items"]
    act_as(project_app, db_session, world.callers[LEAD])
    as_lead = api.get(f"/api/projects/{world.own.code}").json()
    lead_history = api.get(f"/api/projects/{world.own.code}/history").json()["items"]

    assert as_member["quote"] is None
    assert as_lead["quote"]["total"] == quoted.json()["quote"]["total"]
    assert as_lead["quote"]["lines"]
    [member_quoted] = [e for e in member_history if e["action"] == "project_quoted"]
    [lead_quoted] = [e for e in lead_history if e["action"] == "project_quoted"]
    assert "quote_total" not in member_quoted["details"]
    assert "quote_total" in lead_quoted["details"]


# --- conflicts ------------------------------------------------------------------------------------


def test_api_projects_step_from_wrong_state_is_409_naming_state(
    project_app: FastAPI, api: TestClient, db_session: Session, db_settings: Settings
) -> None:
    world = make_world(db_session, db_settings, S.ACTIVE)
    act_as(project_app, db_session, world.callers[STEWARD])

    response = api.post(
        f"/api/projects/{world.own.code}/transitions/quote", json={"version": world.own.version}
    )

    assert response.status_code == 409
    error = response.json()["error"]
    assert error["code"] == "conflict"
    assert error["message"] == (
        f"Project {world.own.code} is active: it cannot quote from there. "
        "Possible now: freeze, expire."
    )
    assert error["details"]["allowed_actions"] == ["freeze", "expire"]


def test_api_projects_stale_version_is_409(
    project_app: FastAPI, api: TestClient, db_session: Session, db_settings: Settings
) -> None:
    world = make_world(db_session, db_settings, S.DRAFT)
    act_as(project_app, db_session, world.callers[LEAD])
    stale = world.own.version
    assert (
        api.patch(
            f"/api/projects/{world.own.code}", json={"version": stale, "title": "First"}
        ).status_code
        == 200
    )

    second = api.patch(f"/api/projects/{world.own.code}", json={"version": stale, "title": "2"})
    step = api.post(f"/api/projects/{world.own.code}/transitions/submit", json={"version": stale})

    assert second.status_code == 409
    assert second.json()["error"]["details"]["rule"] == "optimistic_lock"
    assert step.status_code == 409
    assert world.own.title == "First"


def test_api_projects_request_stale_version_is_409(
    project_app: FastAPI, api: TestClient, db_session: Session, db_settings: Settings
) -> None:
    world = make_world(db_session, db_settings, S.ACTIVE)
    request = world.request_of[world.own.id]
    act_as(project_app, db_session, world.callers[STEWARD])

    response = api.post(
        f"/api/requests/{request.id}/approve", json={"version": request.version + 1}
    )

    assert response.status_code == 409


# --- segregation, step-up and scopes --------------------------------------------------------------


def test_api_projects_member_steward_cannot_decide(
    project_app: FastAPI, api: TestClient, db_session: Session, db_settings: Settings
) -> None:
    world = make_world(db_session, db_settings, S.ACTIVE)
    steward = world.callers[STEWARD]
    other_member = world.callers[MEMBER]
    # The member became a data steward: they still may not decide their project's requests.
    other_member.role = Role.DATA_STEWARD
    db_session.flush()
    act_as(project_app, db_session, other_member)
    request = world.request_of[world.own.id]

    refused = api.post(f"/api/requests/{request.id}/approve", json={"version": request.version})

    assert refused.status_code == 403
    assert refused.json()["error"]["details"]["rule"] == "segregation_of_duties"
    act_as(project_app, db_session, steward)
    allowed = api.post(f"/api/requests/{request.id}/approve", json={"version": request.version})
    assert allowed.status_code == 200, allowed.text


@pytest.mark.parametrize(
    ("path", "state", "body"),
    [
        ("transitions/approve", S.ACCEPTED, {}),
        ("transitions/freeze", S.ACTIVE, {"comment": "Why."}),
        ("transitions/unfreeze", S.FROZEN, {}),
        ("transitions/delete", S.REJECTED, {}),
        ("requests/approve", S.ACTIVE, {}),
    ],
    ids=["approve", "freeze", "unfreeze", "delete", "approve-request"],
)
def test_api_projects_access_changes_need_step_up(
    project_app: FastAPI,
    api: TestClient,
    db_session: Session,
    db_settings: Settings,
    path: str,
    state: ProjectState,
    body: dict[str, Any],
) -> None:
    world = make_world(db_session, db_settings, state)
    steward = world.callers[STEWARD]
    if path.startswith("requests/"):
        request = world.request_of[world.own.id]
        url = f"/api/requests/{request.id}/approve"
        body = {"version": request.version}
    else:
        url = f"/api/projects/{world.own.code}/{path}"
        body = {"version": world.own.version} | body

    act_as(project_app, db_session, steward, stepped_up=False)
    no_step_up = api.post(url, json=body)
    act_as(project_app, db_session, steward, token_scopes={"read", "projects:write"})
    token_without_admin = api.post(url, json=body)
    act_as(project_app, db_session, steward, token_scopes={"read", "projects:write", "admin"})
    token_with_admin = api.post(url, json=body)

    assert no_step_up.status_code == 403
    assert no_step_up.json()["error"]["code"] == "step_up_required"
    assert token_without_admin.status_code == 403
    assert token_with_admin.status_code == 200, token_with_admin.text


def test_api_projects_read_only_token_cannot_write(
    project_app: FastAPI, api: TestClient, db_session: Session, db_settings: Settings
) -> None:
    world = make_world(db_session, db_settings, S.DRAFT)
    act_as(project_app, db_session, world.callers[LEAD], token_scopes={"read"})

    read = api.get(f"/api/projects/{world.own.code}")
    submit = api.post(
        f"/api/projects/{world.own.code}/transitions/submit", json={"version": world.own.version}
    )
    patch = api.patch(f"/api/projects/{world.own.code}", json={"version": 1, "title": "T"})

    assert read.status_code == 200
    assert submit.status_code == 403
    assert patch.status_code == 403
    assert world.own.state is S.DRAFT


def test_api_projects_lead_token_with_projects_write_submits(
    project_app: FastAPI, api: TestClient, db_session: Session, db_settings: Settings
) -> None:
    world = make_world(db_session, db_settings, S.DRAFT)
    act_as(project_app, db_session, world.callers[LEAD], token_scopes={"read", "projects:write"})

    response = api.post(
        f"/api/projects/{world.own.code}/transitions/submit", json={"version": world.own.version}
    )

    assert response.status_code == 200
    assert response.json()["state"] == "submitted"


# --- the whole path through the API ---------------------------------------------------------------


def test_api_projects_application_to_extension(
    project_app: FastAPI, api: TestClient, db_session: Session, db_settings: Settings
) -> None:
    make_tariff(db_session)
    lead, newcomer = make_researcher(db_session), make_researcher(db_session)
    steward = make_staff(db_session)
    version = make_dataset_version(db_session)

    def as_(user: User) -> TestClient:
        act_as(project_app, db_session, user)
        return api

    made = as_(lead).post(
        "/api/projects",
        json={
            "title": "Commuting and sick leave",
            "purpose": "Does commuting time predict sick leave?",
            "compute_size": "medium",
            "start_date": today().isoformat(),
            "end_date": (today() + timedelta(days=364)).isoformat(),
            "dataset_version_ids": [version.id],
        },
    )
    assert made.status_code == 201, made.text
    code = made.json()["code"]

    def step(user: User, action: str, comment: str = "") -> dict[str, Any]:
        current = as_(user).get(f"/api/projects/{code}").json()
        answer = api.post(
            f"/api/projects/{code}/transitions/{action}",
            json={"version": current["version"], "comment": comment},
        )
        assert answer.status_code == 200, answer.text
        return dict(answer.json())

    assert step(lead, "submit")["state"] == "submitted"
    assert step(steward, "return", "Add the legal basis.")["review_comments"]
    current = as_(lead).get(f"/api/projects/{code}").json()
    assert (
        as_(lead)
        .patch(
            f"/api/projects/{code}", json={"version": current["version"], "legal_basis": "Art. 41"}
        )
        .status_code
        == 200
    )
    step(lead, "submit")
    assert step(steward, "quote")["quote"]["quoted_at"]
    step(lead, "accept")
    assert step(steward, "approve")["state"] == "active"  # the start date is today
    grants = as_(lead).get(f"/api/projects/{code}/grants").json()
    assert [g["dataset_version_id"] for g in grants] == [version.id]

    asked = as_(lead).post(
        f"/api/projects/{code}/requests", json={"kind": "add_member", "user_id": newcomer.id}
    )
    assert asked.status_code == 201, asked.text
    decided = as_(steward).post(
        f"/api/requests/{asked.json()['id']}/approve",
        json={"version": asked.json()["version"], "comment": "Welcome."},
    )
    assert decided.json()["state"] == "approved"
    members = as_(newcomer).get(f"/api/projects/{code}/members").json()
    assert newcomer.id in {m["user_id"] for m in members}
    history = as_(lead).get(f"/api/projects/{code}/history").json()["items"]
    actions = [e["action"] for e in history]
    for expected_action in (
        "project_applied",
        "project_submitted",
        "project_returned",
        "project_updated",
        "project_quoted",
        "project_accepted",
        "grant_created",
        "project_approved",
        "project_activated",
        "change_requested",
        "project_member_added",
        "change_approved",
    ):
        assert expected_action in actions


# --- hostile input --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/api/projects/12ab", None),
        ("GET", "/api/projects/123456", None),
        ("GET", "/api/projects/..%2F1234", None),
        ("POST", "/api/projects/12345/transitions/explode", {"version": 1}),
        ("POST", "/api/projects/12345/transitions/submit", {"version": 0}),
        ("POST", "/api/projects/12345/transitions/submit", {"version": 1, "x": 1}),
        ("POST", "/api/projects/12345/transitions/submit", {"version": 1, "comment": "c" * 5000}),
        ("GET", "/api/projects?state=nonsense", None),
        ("GET", "/api/projects?limit=100000", None),
        ("GET", "/api/requests?state=maybe", None),
        ("GET", "/api/requests/0", None),
        ("GET", "/api/requests/99999999999", None),
        ("POST", "/api/projects", {"title": "x" * 500}),
        ("POST", "/api/projects/12345/requests", {"kind": "crown_me"}),
        ("POST", "/api/requests/1/approve", {"version": "one"}),
    ],
)
def test_api_projects_hostile_input_is_a_4xx(
    project_app: FastAPI,
    api: TestClient,
    db_session: Session,
    db_settings: Settings,
    method: str,
    path: str,
    body: dict[str, Any] | None,
) -> None:
    act_as(project_app, db_session, make_staff(db_session))

    response = api.request(method, path, json=body)

    assert 400 <= response.status_code < 500, response.text
    assert set(response.json()["error"]) == {"code", "message", "details"}


def test_api_projects_unknown_code_and_request_are_404(
    project_app: FastAPI, api: TestClient, db_session: Session
) -> None:
    act_as(project_app, db_session, make_staff(db_session))

    assert api.get("/api/projects/99998").status_code in (404,)
    assert api.get("/api/requests/2000000000").status_code == 404
