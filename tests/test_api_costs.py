"""Cost routes through the app factory: who sees a project's costs (its lead and staff; members
403, others 404), the invoice CSV (staff who read every project's costs), and tariffs (listed to
anyone logged in, added by data stewards with a step-up). Money is a string, never a float."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import partial

import api_helpers
import pytest
from admin_factories import make_user
from api_helpers import api_app, serve
from cost_factories import add_grant, add_researcher, at, make_project, make_tariff, make_version
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from orchestrator import costs
from orchestrator.api import costs as cost_routes
from orchestrator.api.deps import get_now
from orchestrator.config import Settings
from orchestrator.models import ChargeKind, Project, ProjectState, Role, User

NOW = datetime(2026, 8, 31, 12, 0, tzinfo=UTC)


@pytest.fixture
def cost_app(db_settings: Settings, db_session: Session) -> FastAPI:
    async def now() -> datetime:
        return NOW

    app = api_app(db_settings, db_session, {get_now: now})
    if not any(getattr(route, "path", "") == "/api/tariffs" for route in app.routes):
        app.include_router(cost_routes.router)  # until app.py registers it
    db_session.info["settings"] = db_settings
    return app


@pytest.fixture
def api(cost_app: FastAPI) -> Iterator[TestClient]:
    yield from serve(cost_app)


act_as = partial(api_helpers.act_as, expires_at=NOW + timedelta(days=1))


@dataclass
class World:
    project: Project
    lead: User
    member: User
    outsider: User
    staff: dict[Role, User]


@pytest.fixture
def world(db_session: Session) -> World:
    """The Q3 history of test_costs: activated 2026-07-10, lead + member B, a Health grant;
    a fee for a researcher on 2026-08-20."""
    project = make_project(
        db_session,
        start=date(2026, 7, 10),
        end=date(2027, 6, 30),
        state=ProjectState.ACTIVE,
        tariff=make_tariff(db_session),
        activated_at=at("2026-07-10 09:00"),
        lead_added_at=at("2026-06-01 08:00"),
    )
    member = add_researcher(db_session, project, at("2026-07-01 08:00"))
    add_grant(db_session, project, make_version(db_session, "Health"), at("2026-07-10 09:00"))
    costs.add_charge(db_session, project, ChargeKind.ADD_RESEARCHER, date(2026, 8, 20))
    staff = {
        role: make_user(db_session, role=role)
        for role in (Role.DATA_STEWARD, Role.OPS, Role.OUTPUT_CHECKER)
    }
    return World(project, project.lead, member, make_user(db_session), staff)


# --- a project's costs ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("who", "status"),
    [
        ("lead", 200),
        ("data_steward", 200),
        ("ops", 200),
        ("member", 403),
        ("outsider", 404),
        ("output_checker", 403),
    ],
)
def test_project_costs_visibility(
    cost_app: FastAPI, api: TestClient, db_session: Session, world: World, who: str, status: int
) -> None:
    people = {"lead": world.lead, "member": world.member, "outsider": world.outsider}
    user = people.get(who) or world.staff[Role(who)]
    act_as(cost_app, db_session, user)

    response = api.get(f"/api/projects/{world.project.code}/costs")

    assert response.status_code == status, response.text
    if status != 200:
        assert "716" not in response.text
        assert response.json()["error"]["code"] in ("forbidden", "not_found")


def test_project_costs_body_hand_computed(
    cost_app: FastAPI, api: TestClient, db_session: Session, world: World
) -> None:
    act_as(cost_app, db_session, world.lead)

    body = api.get(f"/api/projects/{world.project.code}/costs").json()

    # To 2026-08-31: base 1000.00; researchers July 44/31 x 300 = 425.81, August 62/31 x 300
    # = 600.00; Health July 22/31 x 200 = 141.94, August 200.00; the fee 150.00.
    assert body["as_of"] == "2026-08-31"
    assert body["currency"] == "EUR"
    assert [(line["kind"], line["amount"]) for line in body["invoiced"]] == [
        ("base_fee", "1000.00"),
        ("researchers", "425.81"),
        ("researchers", "600.00"),
        ("topics", "141.94"),
        ("topics", "200.00"),
        ("add_researcher", "150.00"),
    ]
    assert body["invoiced_total"] == "2517.75"
    assert body["charges"][0]["amount"] == "150.00"
    assert isinstance(body["estimate"]["total"], str)


def test_project_costs_unknown_project_is_404(
    cost_app: FastAPI, api: TestClient, db_session: Session, world: World
) -> None:
    act_as(cost_app, db_session, world.staff[Role.DATA_STEWARD])
    assert api.get("/api/projects/99999/costs").status_code == 404
    assert api.get("/api/projects/abc/costs").status_code == 422


# --- invoices -------------------------------------------------------------------------------------


def test_invoice_csv_for_staff(
    cost_app: FastAPI, api: TestClient, db_session: Session, world: World
) -> None:
    act_as(cost_app, db_session, world.staff[Role.DATA_STEWARD])

    response = api.get("/api/invoices", params={"quarter": "2026Q3"})

    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/csv")
    assert "kluis-invoices-2026Q3.csv" in response.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(response.text)))
    mine = [row for row in rows if row["project_code"] == world.project.code]
    assert [row["amount"] for row in mine] == [
        "1000.00",
        "425.81",
        "600.00",
        "600.00",  # September: 2 x 30/30 x 300
        "141.94",
        "200.00",
        "200.00",
        "150.00",
    ]


@pytest.mark.parametrize("who", ["lead", "member", "output_checker"])
def test_invoice_csv_refused_to_others(
    cost_app: FastAPI, api: TestClient, db_session: Session, world: World, who: str
) -> None:
    people = {"lead": world.lead, "member": world.member}
    act_as(cost_app, db_session, people.get(who) or world.staff[Role.OUTPUT_CHECKER])
    response = api.get("/api/invoices", params={"quarter": "2026Q3"})
    assert response.status_code == 403
    assert "1000.00" not in response.text


def test_invoice_csv_bad_quarter_is_422(
    cost_app: FastAPI, api: TestClient, db_session: Session, world: World
) -> None:
    act_as(cost_app, db_session, world.staff[Role.OPS])
    for quarter in ("2026Q5", "2026-Q1", "x" * 100):
        assert api.get("/api/invoices", params={"quarter": quarter}).status_code == 422


def test_invoice_csv_token_needs_read_scope(
    cost_app: FastAPI, api: TestClient, db_session: Session, world: World
) -> None:
    steward = world.staff[Role.DATA_STEWARD]
    act_as(cost_app, db_session, steward, token_scopes={"projects:write"})
    assert api.get("/api/invoices", params={"quarter": "2026Q3"}).status_code == 403
    act_as(cost_app, db_session, steward, token_scopes={"read"})
    assert api.get("/api/invoices", params={"quarter": "2026Q3"}).status_code == 200


# --- tariffs --------------------------------------------------------------------------------------

TARIFF = {
    "label": "2030",
    "valid_from": "2030-01-01",
    "currency": "EUR",
    "base_fee": "1500.00",
    "per_researcher_month": "150.00",
    "per_topic_month": "100.00",
    "fee_add_researcher": "250.00",
    "fee_add_dataset": "250.00",
    "fee_extension": "200.00",
}


def test_data_steward_adds_a_tariff_and_anyone_lists_it(
    cost_app: FastAPI, api: TestClient, db_session: Session, world: World
) -> None:
    act_as(cost_app, db_session, world.staff[Role.DATA_STEWARD])
    created = api.post("/api/tariffs", json=TARIFF)
    assert created.status_code == 201, created.text
    assert created.json()["per_researcher_month"] == "150.00"
    assert api.post("/api/tariffs", json=TARIFF).status_code == 409  # never edited

    act_as(cost_app, db_session, world.outsider)
    listed = api.get("/api/tariffs")
    assert listed.status_code == 200
    assert "2030" in [t["label"] for t in listed.json()]


@pytest.mark.parametrize("who", ["lead", "ops", "output_checker"])
def test_tariff_create_refused_to_others(
    cost_app: FastAPI, api: TestClient, db_session: Session, world: World, who: str
) -> None:
    user = world.lead if who == "lead" else world.staff[Role(who)]
    act_as(cost_app, db_session, user)
    assert api.post("/api/tariffs", json=TARIFF).status_code == 403


def test_tariff_create_needs_step_up(
    cost_app: FastAPI, api: TestClient, db_session: Session, world: World
) -> None:
    act_as(cost_app, db_session, world.staff[Role.DATA_STEWARD], stepped_up=False)
    assert api.post("/api/tariffs", json=TARIFF).status_code == 403


@pytest.mark.parametrize(
    "change",
    [
        {"base_fee": "-1"},
        {"base_fee": "1.001"},
        {"base_fee": 1e30},
        {"currency": "EURO"},
        {"label": ""},
        {"label": "bad label!"},
        {"extra": "field"},
    ],
)
def test_tariff_create_refuses_bad_input(
    cost_app: FastAPI, api: TestClient, db_session: Session, world: World, change: dict[str, object]
) -> None:
    act_as(cost_app, db_session, world.staff[Role.DATA_STEWARD])
    response = api.post("/api/tariffs", json={**TARIFF, **change})
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "invalid"
