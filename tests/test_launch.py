"""Launch tickets, the hub's endpoints and the spawn spec, on SQLite and PostgreSQL: who may open
which workspace (and why not), single use / expiry / binding of tickets (also two redemptions at
once), the hub service token on every hub route, crafted options refused, exact mounts, and the
verdicts the hub sync acts on (grant revoked, member removed, sessions revoked, project frozen).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from admin_factories import make_user_session
from api_helpers import act_as, api_app, serve
from fastapi import FastAPI
from fastapi.testclient import TestClient
from project_factories import make_dataset_version, make_project, make_researcher, make_staff
from pydantic import SecretStr
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from orchestrator import launch, names, sessions
from orchestrator.api.deps import get_now
from orchestrator.config import Settings
from orchestrator.db import session_scope
from orchestrator.hub_models import LaunchTicket
from orchestrator.manifests import workspace_service_account_name
from orchestrator.models import (
    AuditEvent,
    Grant,
    Project,
    ProjectState,
    User,
    WorkspacePhase,
    WorkspaceStatus,
)

HUB_TOKEN = "hub-service-token-for-tests-only-0123456789"


def hub_settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"hub_service_token": SecretStr(HUB_TOKEN)})


HUB = {"Authorization": f"Bearer {HUB_TOKEN}"}


@dataclass
class World:
    project: Project
    other: Project
    member: User
    outsider: User


def ready(session: Session, project: Project, phase: WorkspacePhase = WorkspacePhase.READY) -> None:
    session.add(WorkspaceStatus(project_id=project.id, phase=phase, objects=[], desired_hash=""))
    session.flush()


def make_world(session: Session) -> World:
    member = make_researcher(session)
    versions = [make_dataset_version(session), make_dataset_version(session)]
    project = make_project(session, state=ProjectState.ACTIVE, members=[member], versions=versions)
    other = make_project(session, state=ProjectState.ACTIVE, members=[member])
    ready(session, project)
    ready(session, other)
    return World(project, other, member, make_researcher(session))


@pytest.fixture
def world(db_session: Session) -> World:
    return make_world(db_session)


@pytest.fixture
def hub_app(db_settings: Settings, db_session: Session) -> FastAPI:
    return api_app(hub_settings(db_settings), db_session)


@pytest.fixture
def api(hub_app: FastAPI) -> Iterator[TestClient]:
    yield from serve(hub_app)


def issue(app: FastAPI, api: TestClient, session: Session, user: User, code: str) -> Any:
    act_as(app, session, user)
    return api.post(f"/api/projects/{code}/launch")


def ticket_of(response: Any) -> str:
    assert response.status_code == 201, response.text
    body = response.json()
    query = parse_qs(urlsplit(body["url"]).query)
    assert query["auth_ticket"] == [body["ticket"]]
    return str(body["ticket"])


def redeem(api: TestClient, ticket: str, project: str, **extra: Any) -> Any:
    return api.post(
        "/api/hub/tickets/redeem", json={"ticket": ticket, "project": project, **extra}, headers=HUB
    )


# --- launch ---


def test_launch_member_gets_a_ticket_for_the_hub(
    hub_app: FastAPI, api: TestClient, db_session: Session, world: World
) -> None:
    response = issue(hub_app, api, db_session, world.member, world.project.code)

    ticket = ticket_of(response)
    body = response.json()
    assert body["url"].startswith("http://127.0.0.1:8001/hub/kluis/login?project=")
    stored = db_session.scalars(select(LaunchTicket)).all()
    assert [row.secret_hash for row in stored] == [launch.hash_ticket(ticket)]
    assert ticket not in str([row.__dict__ for row in stored])
    events = db_session.scalars(
        select(AuditEvent).where(AuditEvent.action == "workspace_launch_ticket_issued")
    ).all()
    assert [e.object_id for e in events] == [world.project.code]


@pytest.mark.parametrize(("caller", "status"), [("outsider", 404), ("steward", 403), ("lead", 201)])
def test_launch_authorisation_by_caller(
    hub_app: FastAPI,
    api: TestClient,
    db_session: Session,
    world: World,
    caller: str,
    status: int,
) -> None:
    user = {
        "outsider": world.outsider,
        "steward": make_staff(db_session),
        "lead": world.project.lead,
    }[caller]

    response = issue(hub_app, api, db_session, user, world.project.code)

    assert response.status_code == status, response.text


def test_launch_anonymous_is_401(api: TestClient, world: World) -> None:
    assert api.post(f"/api/projects/{world.project.code}/launch").status_code == 401


def test_launch_with_an_api_token_is_403(
    hub_app: FastAPI, api: TestClient, db_session: Session, world: World
) -> None:
    act_as(hub_app, db_session, world.member, token_scopes={"projects:read"})

    response = api.post(f"/api/projects/{world.project.code}/launch")

    assert response.status_code == 403


@pytest.mark.parametrize("state", [ProjectState.FROZEN, ProjectState.EXPIRED])
def test_launch_project_without_access_is_403_with_reason(
    hub_app: FastAPI, api: TestClient, db_session: Session, world: World, state: ProjectState
) -> None:
    world.project.state = state
    db_session.flush()

    response = issue(hub_app, api, db_session, world.member, world.project.code)

    assert response.status_code == 403
    assert response.json()["error"]["details"]["reason"] == f"the project is {state.value}"


def test_launch_removed_member_is_403(
    hub_app: FastAPI, api: TestClient, db_session: Session, world: World
) -> None:
    for member in world.project.members:
        if member.user_id == world.member.id:
            member.removed_at = datetime.now(UTC)
    db_session.flush()

    response = issue(hub_app, api, db_session, world.member, world.project.code)

    assert response.status_code == 403
    assert "not a member" in response.json()["error"]["message"]


@pytest.mark.parametrize("phase", [WorkspacePhase.PENDING, WorkspacePhase.BLOCKED])
def test_launch_workspace_not_ready_is_409(
    hub_app: FastAPI, api: TestClient, db_session: Session, phase: WorkspacePhase
) -> None:
    member = make_researcher(db_session)
    project = make_project(db_session, state=ProjectState.ACTIVE, members=[member])
    ready(db_session, project, phase)

    response = issue(hub_app, api, db_session, member, project.code)

    assert response.status_code == 409


# --- redemption ---


def test_redeem_logs_in_the_ticket_user_once(
    hub_app: FastAPI, api: TestClient, db_session: Session, world: World
) -> None:
    ticket = ticket_of(issue(hub_app, api, db_session, world.member, world.project.code))

    first = redeem(api, ticket, world.project.code)
    second = redeem(api, ticket, world.project.code)

    assert first.status_code == 200
    assert first.json() == {"username": world.member.username, "project": world.project.code}
    assert second.status_code == 403


def test_redeem_after_expiry_is_403(
    hub_app: FastAPI, api: TestClient, db_session: Session, world: World
) -> None:
    ticket = ticket_of(issue(hub_app, api, db_session, world.member, world.project.code))
    later = datetime.now(UTC) + timedelta(seconds=61)
    hub_app.dependency_overrides[get_now] = lambda: later

    assert redeem(api, ticket, world.project.code).status_code == 403


def test_redeem_for_another_project_is_403_and_uses_the_ticket(
    hub_app: FastAPI, api: TestClient, db_session: Session, world: World
) -> None:
    ticket = ticket_of(issue(hub_app, api, db_session, world.member, world.project.code))

    wrong = redeem(api, ticket, world.other.code)
    right = redeem(api, ticket, world.project.code)

    assert wrong.status_code == 403
    assert right.status_code == 403


def test_redeem_by_another_logged_in_user_is_403(
    hub_app: FastAPI, api: TestClient, db_session: Session, world: World
) -> None:
    ticket = ticket_of(issue(hub_app, api, db_session, world.member, world.project.code))

    response = redeem(api, ticket, world.project.code, username=world.outsider.username)

    assert response.status_code == 403


def test_redeem_when_access_lapsed_after_issue_is_403(
    hub_app: FastAPI, api: TestClient, db_session: Session, world: World
) -> None:
    ticket = ticket_of(issue(hub_app, api, db_session, world.member, world.project.code))
    world.project.state = ProjectState.FROZEN
    db_session.flush()

    assert redeem(api, ticket, world.project.code).status_code == 403


@pytest.mark.parametrize(
    "body",
    [
        {"ticket": "klt_" + "x" * 43, "project": "12345"},
        {"ticket": "not-a-ticket", "project": "12345"},
        {"ticket": "klt_" + "x" * 43, "project": "../x"},
        {"ticket": "klt_" + "x" * 43, "project": "12345", "admin": True},
        {"ticket": "x" * 5000, "project": "12345"},
    ],
)
def test_redeem_bad_input_is_4xx(api: TestClient, body: dict[str, Any]) -> None:
    response = api.post("/api/hub/tickets/redeem", json=body, headers=HUB)

    assert response.status_code in (403, 422)
    assert "message" in response.json()["error"]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("post", "/api/hub/tickets/redeem"),
        ("post", "/api/hub/spawn-spec"),
        ("get", "/api/hub/users/someone"),
    ],
)
@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-token"},
        {"Authorization": f"Basic {HUB_TOKEN}"},
    ],
)
def test_hub_routes_need_the_hub_token(
    api: TestClient, method: str, path: str, headers: dict[str, str]
) -> None:
    response = getattr(api, method)(
        path, headers=headers, **({"json": {}} if method == "post" else {})
    )

    assert response.status_code == 401


def test_hub_routes_refuse_a_researchers_session(
    hub_app: FastAPI, api: TestClient, db_session: Session, world: World
) -> None:
    act_as(hub_app, db_session, world.member)

    response = api.post(
        "/api/hub/spawn-spec",
        json={"username": world.member.username, "project": world.project.code},
    )

    assert response.status_code == 401


def test_hub_routes_closed_when_no_token_configured(
    db_settings: Settings, db_session: Session
) -> None:
    app = api_app(db_settings, db_session)
    with TestClient(app) as api:
        response = api.get("/api/hub/users/x", headers={"Authorization": "Bearer "})

    assert response.status_code == 401


def test_redeem_concurrent_exactly_one_wins(
    isolated_engine: tuple[Settings, Engine],
) -> None:
    settings, engine = isolated_engine
    factory = launch_factory(engine)
    with session_scope(factory) as session:
        world = make_world(session)
        issued = launch.issue_ticket(
            session, world.member, world.project, hub_settings(settings), datetime.now(UTC)
        )
        code = world.project.code
    outcomes: list[str] = []
    barrier = threading.Barrier(4)

    def attempt() -> None:
        barrier.wait()
        try:
            with session_scope(factory) as session:
                launch.redeem_ticket(session, issued.secret, code, datetime.now(UTC))
            outcomes.append("ok")
        except Exception as exc:
            outcomes.append(type(exc).__name__)

    threads = [threading.Thread(target=attempt) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert outcomes.count("ok") == 1, outcomes
    assert sorted(set(outcomes) - {"ok"}) == ["Forbidden"]


def launch_factory(engine: Engine) -> Any:
    from orchestrator.db import make_sessionmaker

    return make_sessionmaker(engine, write=True)


# --- spawn spec ---


def spawn(api: TestClient, user: User, code: str, options: dict[str, Any] | None = None) -> Any:
    body = {"username": user.username, "project": code, "options": options or {}}
    return api.post("/api/hub/spawn-spec", json=body, headers=HUB)


def test_spawn_spec_has_exactly_the_granted_mounts(
    api: TestClient, db_session: Session, world: World
) -> None:
    response = spawn(api, world.member, world.project.code)

    assert response.status_code == 200, response.text
    spec = response.json()
    assert spec["namespace"] == names.namespace_name(world.project.code)
    assert spec["server_name"] == world.project.code
    assert spec["service_account"] == workspace_service_account_name()
    assert spec["automount_service_account_token"] is False
    claims = {v["persistentVolumeClaim"]["claimName"] for v in spec["volumes"]}
    granted = {
        names.dataset_claim_name(
            g.dataset_version.dataset.code, g.dataset_version.label, g.dataset_version_id
        )
        for g in world.project.grants
    }
    assert len(granted) == 2
    assert claims == granted | {
        names.storage_claim_name("workspace"),
        names.storage_claim_name("import"),
        names.storage_claim_name("export"),
        names.home_claim_name(world.member.username),
    }
    mounts = {m["mountPath"]: m for m in spec["volume_mounts"]}
    read_only = {path for path, m in mounts.items() if m["readOnly"]}
    assert read_only == {p for p in mounts if p.startswith("/data/")} | {"/project/import"}
    assert all(
        m.get("recursiveReadOnly") == "IfPossible" for p, m in mounts.items() if p in read_only
    )
    assert {"/project/workspace", "/project/export", "/home/jovyan"} <= set(mounts)
    assert spec["labels"][names.KIND_LABEL] == "server"
    assert spec["labels"][names.PROJECT_LABEL] == world.project.code
    assert spec["container_security_context"]["allowPrivilegeEscalation"] is False
    assert spec["container_security_context"]["capabilities"] == {"drop": ["ALL"]}
    assert spec["pod_security_context"]["runAsNonRoot"] is True


@pytest.mark.parametrize(
    "options",
    [
        {"image": "evil/root:latest"},
        {"namespace": "kube-system"},
        {"volumes": [{"name": "x", "hostPath": {"path": "/"}}]},
        {"service_account": "hub"},
        {"security_context": {"privileged": True}},
        {"image": "quay.io/jupyter/scipy-notebook:2026-11-24", "profile": "x"},
    ],
)
def test_spawn_spec_refuses_crafted_options(
    api: TestClient, world: World, options: dict[str, Any]
) -> None:
    response = spawn(api, world.member, world.project.code, options)

    assert response.status_code == 422
    assert "message" in response.json()["error"]


def test_spawn_spec_allows_a_listed_image(api: TestClient, world: World) -> None:
    image = "quay.io/jupyter/scipy-notebook:2026-11-24"

    response = spawn(api, world.member, world.project.code, {"image": image})

    assert response.status_code == 200
    assert response.json()["image"] == image


def test_spawn_spec_outsider_is_403_and_unknown_is_404(api: TestClient, world: World) -> None:
    assert spawn(api, world.outsider, world.project.code).status_code == 403
    assert spawn(api, world.member, "99999").status_code in (403, 404)


def test_spawn_spec_shares_the_quota_between_members(
    db_session: Session, db_settings: Settings, world: World
) -> None:
    second = make_researcher(db_session)
    project = make_project(db_session, state=ProjectState.ACTIVE, members=[second])
    spec = launch.desired_workspace(db_session, project, db_settings)

    resources = launch.server_resources(spec)

    share = len(spec.members)
    assert share == 2  # lead and member
    assert resources["cpu_limit"] == pytest.approx(2 / share)
    assert resources["mem_limit"] == 8 * 2**30 // share


# --- verdicts of the hub sync ---


def verdict(session: Session, settings: Settings, user: User, code: str) -> launch.ServerVerdict:
    return launch.judge_server(session, user.username, code, settings, datetime.now(UTC))


def started(session: Session, settings: Settings, world: World) -> None:
    launch.spawn_spec_for(
        session, world.member.username, world.project.code, settings, {}, datetime.now(UTC)
    )
    session.flush()


def test_judge_keeps_a_server_with_current_access(
    db_session: Session, db_settings: Settings, world: World
) -> None:
    started(db_session, db_settings, world)

    assert verdict(db_session, db_settings, world.member, world.project.code).keep


def test_judge_stops_a_server_whose_grant_was_revoked(
    db_session: Session, db_settings: Settings, world: World
) -> None:
    started(db_session, db_settings, world)
    grant = db_session.scalars(select(Grant).where(Grant.project_id == world.project.id)).first()
    assert grant is not None
    grant.revoked_at = datetime.now(UTC)
    db_session.flush()

    result = verdict(db_session, db_settings, world.member, world.project.code)

    assert not result.keep
    assert "grants changed" in result.reason


def test_judge_stops_after_removal_freeze_or_revoked_sessions(
    db_session: Session, db_settings: Settings, world: World
) -> None:
    started(db_session, db_settings, world)
    other = make_world(db_session)
    started(db_session, db_settings, other)
    third = make_world(db_session)
    started(db_session, db_settings, third)

    world.project.state = ProjectState.FROZEN
    for member in other.project.members:
        if member.user_id == other.member.id:
            member.removed_at = datetime.now(UTC)
    make_user_session(db_session, third.member)
    sessions.end_all_sessions(db_session, third.member, "account_suspended")
    db_session.flush()

    assert not verdict(db_session, db_settings, world.member, world.project.code).keep
    assert not verdict(db_session, db_settings, other.member, other.project.code).keep
    assert not verdict(db_session, db_settings, third.member, third.project.code).keep
    assert not verdict(db_session, db_settings, world.member, "00000").keep


def test_hub_user_allowed_until_sessions_are_revoked(
    hub_app: FastAPI, api: TestClient, db_session: Session, world: World
) -> None:
    path = f"/api/hub/users/{world.member.username}"
    assert api.get(path, headers=HUB).json()["allowed"] is False  # never logged in to the hub
    ticket = ticket_of(issue(hub_app, api, db_session, world.member, world.project.code))
    assert redeem(api, ticket, world.project.code).status_code == 200
    assert api.get(path, headers=HUB).json()["allowed"] is True

    sessions.end_all_sessions(db_session, world.member, "logout_everywhere")
    db_session.flush()

    assert api.get(path, headers=HUB).json()["allowed"] is False


def test_tickets_count(db_session: Session, world: World, db_settings: Settings) -> None:
    before = db_session.scalar(select(func.count()).select_from(LaunchTicket))
    launch.issue_ticket(db_session, world.member, world.project, db_settings, datetime.now(UTC))
    assert db_session.scalar(select(func.count()).select_from(LaunchTicket)) == (before or 0) + 1
