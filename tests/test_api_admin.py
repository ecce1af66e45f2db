"""Administration API: the route x role x own/foreign-object matrix, field-level escalation,
step-up, API-token scopes, activation, and hostile input (always a 4xx in the error shape,
never a 500).

The caller is injected with `dependency_overrides[get_principal]`, so these tests do not depend
on logging in; a caller's "session" is a real `UserSession` row (stepped up unless a test says).
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pskc
import pytest
from admin_factories import make_institution, make_token, make_user, make_user_session
from api_helpers import act_as, api_app, serve
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from orchestrator import accounts
from orchestrator.config import Settings
from orchestrator.models import (
    Institution,
    Role,
    TokenState,
    TotpToken,
    User,
    UserSession,
    UserStatus,
)

RES, CHK, STW, OPS = Role.RESEARCHER, Role.OUTPUT_CHECKER, Role.DATA_STEWARD, Role.OPS
SELF_SERVICE = (RES, CHK)


@dataclass
class World:
    """Two institutions; one account per role (the researcher in institution A) plus a foreign
    researcher in institution B; everyone has a hardware token on loan; one token in stock."""

    own_institution: Institution
    foreign_institution: Institution
    callers: dict[Role, User]
    foreign: User
    token_of: dict[int, TotpToken]
    stock: TotpToken


@pytest.fixture
def world(db_session: Session) -> World:
    a, b = make_institution(db_session), make_institution(db_session)
    callers = {role: make_user(db_session, role=role) for role in (STW, OPS, CHK)}
    callers[RES] = make_user(db_session, institution=a)
    foreign = make_user(db_session, institution=b)
    token_of = {
        u.id: make_token(db_session, state=TokenState.ON_LOAN, user=u)
        for u in [*callers.values(), foreign]
    }
    return World(a, b, callers, foreign, token_of, make_token(db_session))


@pytest.fixture
def admin_app(db_settings: Settings, db_session: Session) -> FastAPI:
    return api_app(db_settings.model_copy(update={"software_tokens_enabled": True}), db_session)


@pytest.fixture
def api(admin_app: FastAPI) -> Iterator[TestClient]:
    yield from serve(admin_app)


def pskc_bytes(*serials: str) -> bytes:
    container = pskc.PSKC()
    for serial in serials:
        container.add_key(
            serial=serial,
            secret=bytes(range(20)),
            algorithm="urn:ietf:params:xml:ns:keyprov:pskc:totp",
        )
    out = io.BytesIO()
    container.write(out)
    return out.getvalue()


# --- the matrix -----------------------------------------------------------------------------------

Target = Any  # User | TotpToken | Institution


@dataclass(frozen=True)
class Route:
    name: str
    method: str
    path: Callable[[World, Target], str]
    kind: str  # "user", "token", "institution" (object routes) or "collection"
    body: Callable[[World, Target], dict[str, Any]] | None = None
    read: bool = False  # every role may do it to what it can see
    roles: frozenset[Role] = frozenset({STW})  # roles allowed on collection routes
    steward: Callable[[str], int] = lambda target: 200  # steward's answer for own/foreign
    files: bool = False


def _inst_body(w: World, t: Target) -> dict[str, Any]:
    return {
        "name": "New Institute",
        "country": "NL",
        "authorised_from": "2026-01-01",
        "authorised_until": "2027-01-01",
    }


def _user_body(w: World, t: Target) -> dict[str, Any]:
    return {
        "username": "new.person",
        "email": "n@example.org",
        "full_name": "N P",
        "role": "researcher",
        "institution_id": w.own_institution.id,
    }


def _self_refused(target: str) -> int:
    return 403 if target == "own" else 200


ROUTES = [
    Route("list_institutions", "GET", lambda w, t: "/api/institutions", "collection", read=True),
    Route(
        "create_institution",
        "POST",
        lambda w, t: "/api/institutions",
        "collection",
        body=_inst_body,
        steward=lambda t: 201,
    ),
    Route(
        "get_institution", "GET", lambda w, t: f"/api/institutions/{t.id}", "institution", read=True
    ),
    Route(
        "update_institution",
        "PATCH",
        lambda w, t: f"/api/institutions/{t.id}",
        "institution",
        body=lambda w, t: {"version": t.version, "name": "Renamed"},
    ),
    Route("list_users", "GET", lambda w, t: "/api/users", "collection", read=True),
    Route(
        "create_user",
        "POST",
        lambda w, t: "/api/users",
        "collection",
        body=_user_body,
        steward=lambda t: 201,
    ),
    Route("get_user", "GET", lambda w, t: f"/api/users/{t.id}", "user", read=True),
    Route(
        "update_user_profile",
        "PATCH",
        lambda w, t: f"/api/users/{t.id}",
        "user",
        body=lambda w, t: {"full_name": "Changed Name"},
    ),
    Route(
        "update_user_status",
        "PATCH",
        lambda w, t: f"/api/users/{t.id}",
        "user",
        body=lambda w, t: {"status": "suspended", "reason": "audit finding"},
        steward=_self_refused,
    ),
    Route(
        "update_user_role",
        "PATCH",
        lambda w, t: f"/api/users/{t.id}",
        "user",
        body=lambda w, t: {"role": "output_checker"},
        steward=_self_refused,
    ),
    Route(
        "issue_activation_link",
        "POST",
        lambda w, t: f"/api/users/{t.id}/activation-link",
        "user",
        steward=lambda t: 403 if t == "own" else 201,
    ),
    Route(
        "record_statement",
        "POST",
        lambda w, t: f"/api/users/{t.id}/statement",
        "user",
        body=lambda w, t: {"signed_at": datetime.now(UTC).isoformat()},
    ),
    Route("list_tokens", "GET", lambda w, t: "/api/tokens", "collection", read=True),
    Route("get_token", "GET", lambda w, t: f"/api/tokens/{t.id}", "token", read=True),
    Route(
        "assign_token",
        "POST",
        lambda w, t: f"/api/tokens/{t.id}/assign",
        "token",
        body=lambda w, t: {"user_id": w.foreign.id},
        steward=lambda t: 409,  # the token is on loan already
    ),
    Route("return_token", "POST", lambda w, t: f"/api/tokens/{t.id}/return", "token"),
    Route("report_lost", "POST", lambda w, t: f"/api/tokens/{t.id}/lost", "token"),
    Route(
        "revoke_token",
        "POST",
        lambda w, t: f"/api/tokens/{t.id}/revoke",
        "token",
        body=lambda w, t: {"reason": "broken"},
    ),
    Route(
        "restock_token",
        "POST",
        lambda w, t: f"/api/tokens/{t.id}/restock",
        "token",
        steward=lambda t: 409,  # on loan, not returned
    ),
    Route(
        "enrol_software_token",
        "POST",
        lambda w, t: "/api/tokens/enrol",
        "user",
        body=lambda w, t: {"user_id": t.id},
        steward=lambda t: 409,  # the user has a token on loan already
    ),
    Route(
        "import_pskc",
        "POST",
        lambda w, t: "/api/tokens/import",
        "collection",
        steward=lambda t: 201,
        files=True,
    ),
    Route(
        "list_audit", "GET", lambda w, t: "/api/audit", "collection", roles=frozenset({STW, OPS})
    ),
    Route(
        "verify_audit",
        "GET",
        lambda w, t: "/api/audit/verify",
        "collection",
        roles=frozenset({STW, OPS}),
    ),
    Route(
        "export_audit",
        "GET",
        lambda w, t: "/api/audit/export",
        "collection",
        roles=frozenset({STW, OPS}),
    ),
]


def target_of(world: World, kind: str, role: Role, which: str) -> Target:
    caller = world.callers[role]
    if kind == "user":
        return caller if which == "own" else world.foreign
    if kind == "token":
        owner = caller if which == "own" else world.foreign
        return world.token_of[owner.id]
    if kind == "institution":
        return world.own_institution if which == "own" else world.foreign_institution
    return None


def expected(route: Route, role: Role, which: str) -> int:
    if route.kind == "collection":
        if route.read or role in route.roles:
            return route.steward(which) if role is STW else 200
        return 403
    if which == "foreign" and role in SELF_SERVICE:
        return 404  # another person's object: not even its existence is told
    if route.read:
        return 200
    if role is not STW:
        return 403
    return route.steward(which)


def matrix() -> Iterator[Any]:
    for route in ROUTES:
        for role in Role:
            targets = ["none"] if route.kind == "collection" else ["own", "foreign"]
            for which in targets:
                if route.kind == "institution" and which == "own" and role is not RES:
                    continue  # staff belong to no institution
                yield pytest.param(route, role, which, id=f"{route.name}-{role.value}-{which}")


@pytest.mark.parametrize(("route", "role", "which"), list(matrix()))
def test_api_admin_matrix(
    admin_app: FastAPI,
    api: TestClient,
    db_session: Session,
    world: World,
    route: Route,
    role: Role,
    which: str,
) -> None:
    caller = world.callers[role]
    act_as(admin_app, db_session, caller)
    target = target_of(world, route.kind, role, which)
    kwargs: dict[str, Any] = {}
    if route.body is not None:
        kwargs["json"] = route.body(world, target)
    if route.files:
        kwargs["files"] = {"file": ("batch.pskc", pskc_bytes("MATRIX-1"), "application/xml")}

    response = api.request(route.method, route.path(world, target), **kwargs)

    assert response.status_code == expected(route, role, which), response.text
    if response.status_code >= 400:
        assert set(response.json()["error"]) == {"code", "message", "details"}


@pytest.mark.parametrize("role", [RES, CHK])
def test_api_admin_self_service_lists_hold_only_own_objects(
    admin_app: FastAPI, api: TestClient, db_session: Session, world: World, role: Role
) -> None:
    caller = world.callers[role]
    act_as(admin_app, db_session, caller)

    users = api.get("/api/users").json()
    tokens = api.get("/api/tokens").json()
    institutions = api.get("/api/institutions").json()

    assert [u["id"] for u in users["items"]] == [caller.id]
    assert users["total"] == 1
    assert [t["id"] for t in tokens["items"]] == [world.token_of[caller.id].id]
    expected_institutions = [world.own_institution.id] if role is RES else []
    assert [i["id"] for i in institutions["items"]] == expected_institutions


def test_api_admin_researcher_search_never_finds_others(
    admin_app: FastAPI, api: TestClient, db_session: Session, world: World
) -> None:
    act_as(admin_app, db_session, world.callers[RES])

    response = api.get("/api/users", params={"q": world.foreign.username})

    assert response.json()["items"] == []


def test_api_admin_token_read_hides_seed(
    admin_app: FastAPI, api: TestClient, db_session: Session, world: World
) -> None:
    act_as(admin_app, db_session, world.callers[STW])

    body = api.get(f"/api/tokens/{world.stock.id}").json()

    assert "seed_encrypted" not in body
    assert "last_used_step" not in body


# --- field-level escalation and segregation -------------------------------------------------------


@pytest.mark.parametrize(
    "change",
    [
        {"role": "data_steward"},
        {"status": "active"},
        {"status": "closed", "reason": "x"},
        {"institution_id": 1},
        {"full_name": "Me Myself"},
    ],
    ids=["role", "status-active", "status-closed", "institution", "full_name"],
)
def test_api_admin_researcher_cannot_patch_own_account(
    admin_app: FastAPI, api: TestClient, db_session: Session, world: World, change: dict[str, Any]
) -> None:
    me = world.callers[RES]
    act_as(admin_app, db_session, me)
    before = (me.role, me.status, me.institution_id, me.full_name)

    response = api.patch(f"/api/users/{me.id}", json=change)

    assert response.status_code == 403
    assert (me.role, me.status, me.institution_id, me.full_name) == before


@pytest.mark.parametrize("field", ["password_hash", "username", "version_id", "id"])
def test_api_admin_unknown_user_fields_refused(
    admin_app: FastAPI, api: TestClient, db_session: Session, world: World, field: str
) -> None:
    act_as(admin_app, db_session, world.callers[STW])

    response = api.patch(f"/api/users/{world.foreign.id}", json={field: "x"})

    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid"


@pytest.mark.parametrize(
    "change", [{"role": "researcher", "institution_id": 1}, {"status": "suspended", "reason": "x"}]
)
def test_api_admin_steward_cannot_change_own_role_or_status(
    admin_app: FastAPI, api: TestClient, db_session: Session, world: World, change: dict[str, Any]
) -> None:
    steward = world.callers[STW]
    act_as(admin_app, db_session, steward)

    response = api.patch(f"/api/users/{steward.id}", json=change)

    assert response.status_code == 403
    assert "own" in response.json()["error"]["message"]
    assert (steward.role, steward.status) == (STW, UserStatus.ACTIVE)


def test_api_admin_steward_cannot_make_ops(
    admin_app: FastAPI, api: TestClient, db_session: Session, world: World
) -> None:
    act_as(admin_app, db_session, world.callers[STW])

    promote = api.patch(f"/api/users/{world.foreign.id}", json={"role": "ops"})
    create = api.post(
        "/api/users", json={**_user_body(world, None), "role": "ops", "institution_id": None}
    )
    suspend_ops = api.patch(
        f"/api/users/{world.callers[OPS].id}", json={"status": "suspended", "reason": "x"}
    )

    assert [promote.status_code, create.status_code, suspend_ops.status_code] == [403, 403, 403]
    assert world.foreign.role is RES


def test_api_admin_role_change_needs_step_up(
    admin_app: FastAPI, api: TestClient, db_session: Session, world: World
) -> None:
    act_as(admin_app, db_session, world.callers[STW], stepped_up=False)

    response = api.patch(f"/api/users/{world.foreign.id}", json={"role": "output_checker"})

    assert response.status_code == 403
    assert response.json()["error"]["code"] == "step_up_required"
    assert world.foreign.role is RES


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/api/tokens/{stock}/assign", {"user_id": "{user}"}),
        ("POST", "/api/tokens/{token}/revoke", {}),
        ("PATCH", "/api/users/{user}", {"status": "suspended", "reason": "x"}),
        ("POST", "/api/users/{user}/activation-link", None),
        ("POST", "/api/tokens/enrol", {"user_id": "{user}"}),
    ],
)
def test_api_admin_sensitive_changes_need_step_up(
    admin_app: FastAPI,
    api: TestClient,
    db_session: Session,
    world: World,
    method: str,
    path: str,
    body: dict[str, Any] | None,
) -> None:
    act_as(admin_app, db_session, world.callers[STW], stepped_up=False)
    names = {
        "stock": world.stock.id,
        "token": world.token_of[world.foreign.id].id,
        "user": world.foreign.id,
    }
    json = {
        key: int(value.format(**names)) if str(value).startswith("{") else value
        for key, value in (body or {}).items()
    }

    response = api.request(method, path.format(**names), json=json if body is not None else None)

    assert response.status_code == 403
    assert response.json()["error"]["code"] == "step_up_required"


def test_api_admin_pskc_import_needs_step_up(
    admin_app: FastAPI, api: TestClient, db_session: Session, world: World
) -> None:
    act_as(admin_app, db_session, world.callers[STW], stepped_up=False)

    response = api.post(
        "/api/tokens/import", files={"file": ("a.pskc", pskc_bytes("SU-1"), "application/xml")}
    )

    assert response.status_code == 403
    assert response.json()["error"]["code"] == "step_up_required"


def test_api_admin_api_token_with_admin_scope_needs_no_step_up(
    admin_app: FastAPI, api: TestClient, db_session: Session, world: World
) -> None:
    act_as(admin_app, db_session, world.callers[STW], token_scopes={"read", "admin"})

    response = api.post(f"/api/tokens/{world.token_of[world.foreign.id].id}/revoke", json={})

    assert response.status_code == 200
    assert response.json()["state"] == "revoked"


def test_api_admin_api_token_with_read_scope_cannot_change(
    admin_app: FastAPI, api: TestClient, db_session: Session, world: World
) -> None:
    act_as(admin_app, db_session, world.callers[STW], token_scopes={"read"})

    read = api.get("/api/users")
    write = api.patch(f"/api/users/{world.foreign.id}", json={"full_name": "Y"})

    assert read.status_code == 200
    assert write.status_code == 403
    assert "'admin' scope" in write.json()["error"]["message"]


def test_api_admin_status_change_ends_sessions_at_once(
    admin_app: FastAPI, api: TestClient, db_session: Session, world: World
) -> None:
    victim_session = make_user_session(db_session, world.foreign)
    act_as(admin_app, db_session, world.callers[STW])

    response = api.patch(
        f"/api/users/{world.foreign.id}", json={"status": "suspended", "reason": "investigation"}
    )

    assert response.status_code == 200
    assert response.json()["status"] == "suspended"
    db_session.refresh(victim_session)
    assert victim_session.ended_at is not None


def test_api_admin_revoking_token_ends_sessions(
    admin_app: FastAPI, api: TestClient, db_session: Session, world: World
) -> None:
    victim_session = make_user_session(db_session, world.foreign)
    act_as(admin_app, db_session, world.callers[STW])

    response = api.post(f"/api/tokens/{world.token_of[world.foreign.id].id}/revoke", json={})

    assert response.status_code == 200
    db_session.refresh(victim_session)
    assert victim_session.end_reason == "token_revoked"


def test_api_admin_institution_stale_version_409(
    admin_app: FastAPI, api: TestClient, db_session: Session, world: World
) -> None:
    act_as(admin_app, db_session, world.callers[STW])
    path = f"/api/institutions/{world.foreign_institution.id}"

    first = api.patch(path, json={"version": 1, "name": "First"})
    second = api.patch(path, json={"version": 1, "name": "Second"})

    assert first.status_code == 200
    assert first.json()["version"] == 2
    assert second.status_code == 409
    assert "changed by someone else" in second.json()["error"]["message"]


def test_api_admin_create_user_returns_link_once(
    admin_app: FastAPI, api: TestClient, db_session: Session, world: World
) -> None:
    act_as(admin_app, db_session, world.callers[STW])

    created = api.post("/api/users", json=_user_body(world, None))
    user_id = created.json()["user"]["id"]
    fetched = api.get(f"/api/users/{user_id}")

    assert created.status_code == 201
    assert "?secret=" in created.json()["activation"]["activation_url"]
    assert created.json()["user"]["status"] == "pending"
    assert "secret" not in fetched.text


def test_api_admin_assign_stock_token(
    admin_app: FastAPI, api: TestClient, db_session: Session, world: World
) -> None:
    newcomer = make_user(db_session, status=UserStatus.PENDING)
    act_as(admin_app, db_session, world.callers[STW])

    response = api.post(f"/api/tokens/{world.stock.id}/assign", json={"user_id": newcomer.id})

    assert response.status_code == 200
    assert response.json()["state"] == "on_loan"
    assert response.json()["user_id"] == newcomer.id


def test_api_admin_enrol_software_token(
    admin_app: FastAPI, api: TestClient, db_session: Session, world: World
) -> None:
    newcomer = make_user(db_session)
    act_as(admin_app, db_session, world.callers[STW])

    response = api.post("/api/tokens/enrol", json={"user_id": newcomer.id})

    assert response.status_code == 201
    body = response.json()
    assert body["provisioning_uri"].startswith("otpauth://totp/")
    assert body["qr_svg"].startswith("<svg")
    assert body["token"]["kind"] == "software"


def test_api_admin_enrol_refused_when_software_tokens_off(
    app: FastAPI, client: TestClient, db_session: Session, world: World
) -> None:
    newcomer = make_user(db_session)
    act_as(app, db_session, world.callers[STW])

    response = client.post("/api/tokens/enrol", json={"user_id": newcomer.id})

    assert response.status_code == 403
    assert "KLUIS_SOFTWARE_TOKENS_ENABLED" in response.json()["error"]["message"]


# --- activation (no login) ------------------------------------------------------------------------


def test_api_admin_activation_flow(
    api: TestClient, db_session: Session, db_settings: Settings
) -> None:
    institution = make_institution(db_session)
    _, secret = accounts.create_account(
        db_session,
        db_settings,
        username="activ8",
        email="a@example.org",
        full_name="A",
        role=RES,
        institution_id=institution.id,
    )

    weak = api.post("/api/activate", json={"secret": secret, "password": "short"})
    ok = api.post("/api/activate", json={"secret": secret, "password": "a long enough passphrase"})
    again = api.post(
        "/api/activate", json={"secret": secret, "password": "a long enough passphrase"}
    )
    unknown = api.post(
        "/api/activate", json={"secret": "nope", "password": "a long enough passphrase"}
    )

    assert weak.status_code == 422
    assert ok.status_code == 200
    assert ok.json()["status"] == "active"
    assert again.status_code == 409
    assert unknown.status_code == 404
    assert "long enough" not in again.text


# --- hostile input --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        (
            "POST",
            "/api/institutions",
            {
                "name": "x" * 100_000,
                "country": "NL",
                "authorised_from": "2026-01-01",
                "authorised_until": "2027-01-01",
            },
        ),
        (
            "POST",
            "/api/institutions",
            {
                "name": "X",
                "country": "NL",
                "authorised_from": "2026-01-01",
                "authorised_until": "2027-01-01",
                "allowed_networks": ["10.0.0.0/8"] * 51,
            },
        ),
        (
            "POST",
            "/api/institutions",
            {
                "name": "X",
                "country": "NL",
                "authorised_from": "2026-01-01",
                "authorised_until": "2027-01-01",
                "allowed_networks": ["not-a-cidr"],
            },
        ),
        (
            "POST",
            "/api/institutions",
            {
                "name": "X\x00Y",
                "country": "NL",
                "authorised_from": "2026-01-01",
                "authorised_until": "2027-01-01",
            },
        ),
        (
            "POST",
            "/api/institutions",
            {
                "name": "X",
                "country": "NL",
                "authorised_from": "9999-12-31",
                "authorised_until": "9999-12-31",
            },
        ),
        (
            "POST",
            "/api/institutions",
            {
                "name": "X",
                "country": "NL",
                "authorised_from": "0001-01-01",
                "authorised_until": "9999-12-31",
            },
        ),
        (
            "POST",
            "/api/institutions",
            {
                "name": "X",
                "country": "\x00\x00",
                "authorised_from": "2026-01-01",
                "authorised_until": "2027-01-01",
            },
        ),
        (
            "POST",
            "/api/users",
            {
                "username": "a" * 257,
                "email": "e@example.org",
                "full_name": "F",
                "role": "researcher",
            },
        ),
        (
            "POST",
            "/api/users",
            {
                "username": "r\u0430ul",
                "email": "e@example.org",
                "full_name": "F",
                "role": "researcher",
                "institution_id": 1,
            },
        ),
        (
            "POST",
            "/api/users",
            {"username": "new\x00user", "email": "e@example.org", "full_name": "F", "role": "ops"},
        ),
        (
            "POST",
            "/api/users",
            {
                "username": "newuser",
                "email": "e\x00@example.org",
                "full_name": "F",
                "role": "output_checker",
            },
        ),
        (
            "POST",
            "/api/users",
            {"username": "newuser", "email": "e@example.org", "full_name": "F", "role": "king"},
        ),
        (
            "POST",
            "/api/users",
            {
                "username": "newuser",
                "email": "e@example.org",
                "full_name": "F",
                "role": "researcher",
                "institution_id": 99_999_999_999,
            },
        ),
        ("GET", "/api/users/99999999999999999999", None),
        ("GET", "/api/users/-1", None),
        ("GET", "/api/tokens/abc", None),
        ("GET", "/api/users?limit=100000", None),
        ("GET", "/api/users?q=" + "%00" * 50, None),
        ("GET", "/api/audit?action=%00bad", None),
        ("GET", "/api/audit/export?since=2026-01-01T00:00:00", None),
        ("PATCH", "/api/users/1", {"reason": "x" * 10_000}),
        ("PATCH", "/api/institutions/1", {"version": 99_999_999_999}),
        ("POST", "/api/tokens/1/assign", {"user_id": "x"}),
        ("POST", "/api/users/1/statement", {"signed_at": "2026-01-01T00:00:00"}),
        (
            "POST",
            "/api/users/1/statement",
            {"signed_at": "2026-01-01T00:00:00Z", "valid_until": "9999-12-31"},
        ),
    ],
)
def test_api_admin_hostile_input_gets_4xx(
    admin_app: FastAPI,
    api: TestClient,
    db_session: Session,
    world: World,
    method: str,
    path: str,
    body: dict[str, Any] | None,
) -> None:
    act_as(admin_app, db_session, world.callers[STW])

    response = api.request(method, path, json=body)

    assert 400 <= response.status_code < 500 or response.status_code == 200, response.text
    if response.status_code >= 400:
        assert set(response.json()["error"]) == {"code", "message", "details"}
        assert len(response.text) < 5000


def test_api_admin_huge_upload_413(
    admin_app: FastAPI, api: TestClient, db_session: Session, world: World
) -> None:
    act_as(admin_app, db_session, world.callers[STW])
    big = b"<a>" + b" " * (6 * 1024 * 1024) + b"</a>"

    response = api.post("/api/tokens/import", files={"file": ("big.pskc", big, "application/xml")})

    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"


@pytest.mark.parametrize(
    "data",
    [
        b'<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x SYSTEM "file:///etc/passwd">]><a>&x;</a>',
        b"\xff\xfe\x00garbage",
    ],
    ids=["xxe", "garbage"],
)
def test_api_admin_hostile_pskc_upload_422(
    admin_app: FastAPI, api: TestClient, db_session: Session, world: World, data: bytes
) -> None:
    act_as(admin_app, db_session, world.callers[STW])
    before = len(db_session.scalars(select(TotpToken)).all())

    response = api.post(
        "/api/tokens/import", files={"file": ("evil.pskc", data, "application/xml")}
    )

    assert response.status_code == 422
    assert "root:" not in response.text
    assert len(db_session.scalars(select(TotpToken)).all()) == before


def test_api_admin_encrypted_pskc_upload_with_psk(
    admin_app: FastAPI, api: TestClient, db_session: Session, world: World
) -> None:
    act_as(admin_app, db_session, world.callers[STW])
    container = pskc.PSKC()
    container.add_key(
        serial="UP-ENC-1",
        secret=bytes(range(20)),
        algorithm="urn:ietf:params:xml:ns:keyprov:pskc:totp",
    )
    container.encryption.setup_preshared_key(key=bytes(range(16)))
    out = io.BytesIO()
    container.write(out)

    response = api.post(
        "/api/tokens/import",
        files={"file": ("enc.pskc", out.getvalue(), "application/xml")},
        data={"psk_hex": bytes(range(16)).hex()},
    )

    assert response.status_code == 201, response.text
    assert response.json() == {"imported": 1, "serials": ["UP-ENC-1"]}


def test_api_admin_user_sessions_untouched_by_reads(
    admin_app: FastAPI, api: TestClient, db_session: Session, world: World
) -> None:
    act_as(admin_app, db_session, world.callers[OPS])

    api.get(f"/api/users/{world.foreign.id}")

    open_rows = db_session.scalars(
        select(UserSession).where(UserSession.user_id == world.foreign.id)
    ).all()
    assert open_rows == []
