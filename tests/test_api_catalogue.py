"""Catalogue API (`/api/datasets`): the route x role matrix (anonymous too), what researchers may
not see (storage locations, file lists), step-up and API-token scopes, scans through the API, and
hostile input (always a 4xx in the error shape, never a 500). SQLite and PostgreSQL.

The caller is injected with `dependency_overrides[get_principal]`, as in `test_api_admin.py`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from admin_factories import make_user
from api_helpers import act_as, api_app, serve
from catalogue_factories import make_dataset, make_version, with_microdata_root, write_files
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from orchestrator import catalogue
from orchestrator.config import Settings
from orchestrator.models import AuditEvent, Dataset, DatasetVersion, Role, User

RES, CHK, STW, OPS = Role.RESEARCHER, Role.OUTPUT_CHECKER, Role.DATA_STEWARD, Role.OPS
ANONYMOUS = "anonymous"
FILES = {"persons.csv": b"id,year\n1,1961\n2,1984\n", "doc/codebook.txt": b"id: person\n"}


@dataclass
class World:
    root: Path
    dataset: Dataset
    version: DatasetVersion
    callers: dict[Role, User]


@pytest.fixture
def settings(db_settings: Settings, tmp_path: Path) -> Settings:
    return with_microdata_root(db_settings, tmp_path / "microdata")


@pytest.fixture
def world(db_session: Session, settings: Settings) -> World:
    """PERSONS with version 2024V1 (scanned, two files); one active account per role."""
    assert settings.microdata_root is not None
    write_files(settings.microdata_root / "persons" / "2024V1", FILES)
    dataset = make_dataset(db_session, code="PERSONS", topic="persons", title="Persons")
    version = make_version(db_session, dataset, label="2024V1", location="persons/2024V1")
    catalogue.scan_version(settings, db_session, version)
    callers = {role: make_user(db_session, role=role) for role in Role}
    return World(settings.microdata_root, dataset, version, callers)


@pytest.fixture
def catalogue_app(settings: Settings, db_session: Session) -> FastAPI:
    return api_app(settings, db_session)


@pytest.fixture
def api(catalogue_app: FastAPI) -> Iterator[TestClient]:
    yield from serve(catalogue_app)


def assert_error_shape(response: Any) -> None:
    assert set(response.json()) == {"error"}
    assert set(response.json()["error"]) == {"code", "message", "details"}


# --- the matrix -----------------------------------------------------------------------------------

VERSION_BODY = {"label": "2025V1", "location": "persons/2025V1", "available_from": "2026-01-01"}
DATASET_BODY = {"code": "INCOME", "title": "Income", "topic": "income", "description": "Yearly."}

# name, method, path, body, answer for a data steward (None: every logged-in role may: 200)
ROUTES: list[tuple[str, str, str, dict[str, Any] | None, int | None]] = [
    ("list", "GET", "/api/datasets", None, None),
    ("get", "GET", "/api/datasets/PERSONS", None, None),
    ("get_version", "GET", "/api/datasets/PERSONS/versions/2024V1", None, None),
    ("create", "POST", "/api/datasets", DATASET_BODY, 201),
    ("update", "PATCH", "/api/datasets/PERSONS", {"version": 1, "title": "Renamed"}, 200),
    ("add_version", "POST", "/api/datasets/PERSONS/versions", VERSION_BODY, 201),
    ("scan", "POST", "/api/datasets/PERSONS/versions/2024V1/scan", None, 200),
]


def expected(steward_answer: int | None, caller: Role | str) -> int:
    if caller == ANONYMOUS:
        return 401
    if steward_answer is None:
        return 200
    return steward_answer if caller is STW else 403


@pytest.mark.parametrize(
    ("name", "method", "path", "body", "steward_answer", "caller"),
    [
        pytest.param(*route, caller, id=f"{route[0]}-{getattr(caller, 'value', caller)}")
        for route in ROUTES
        for caller in [*Role, ANONYMOUS]
    ],
)
def test_api_catalogue_matrix(
    catalogue_app: FastAPI,
    api: TestClient,
    db_session: Session,
    world: World,
    name: str,
    method: str,
    path: str,
    body: dict[str, Any] | None,
    steward_answer: int | None,
    caller: Role | str,
) -> None:
    if isinstance(caller, Role):
        act_as(catalogue_app, db_session, world.callers[caller])
    titles_before = world.dataset.title

    response = api.request(method, path, json=body)

    assert response.status_code == expected(steward_answer, caller), response.text
    if response.status_code >= 400:
        assert_error_shape(response)
        assert world.dataset.title == titles_before


# --- what each role sees --------------------------------------------------------------------------


def test_api_catalogue_researcher_sees_no_storage(
    catalogue_app: FastAPI, api: TestClient, db_session: Session, world: World
) -> None:
    act_as(catalogue_app, db_session, world.callers[RES])

    listed = api.get("/api/datasets").json()["items"][0]["versions"][0]
    detail = api.get("/api/datasets/PERSONS").json()["versions"][0]
    single = api.get("/api/datasets/PERSONS/versions/2024V1").json()

    for version in (listed, detail, single):
        assert version["location"] is None
        assert version["files"] is None
        assert version["file_count"] == len(FILES)
        assert version["size_bytes"] == sum(len(data) for data in FILES.values())
    assert "persons/2024V1" not in str(api.get("/api/datasets/PERSONS").json())


@pytest.mark.parametrize("role", [CHK, STW, OPS])
def test_api_catalogue_staff_see_files_on_detail_only(
    catalogue_app: FastAPI, api: TestClient, db_session: Session, world: World, role: Role
) -> None:
    act_as(catalogue_app, db_session, world.callers[role])

    listed = api.get("/api/datasets").json()["items"][0]["versions"][0]
    detail = api.get("/api/datasets/PERSONS").json()["versions"][0]

    assert listed["location"] == detail["location"] == "persons/2024V1"
    assert listed["files"] is None
    assert {f["path"]: f["sha256"] for f in detail["files"]} == {
        path: hashlib.sha256(data).hexdigest() for path, data in FILES.items()
    }


def test_api_catalogue_list_search_and_pages(
    catalogue_app: FastAPI, api: TestClient, db_session: Session, world: World
) -> None:
    make_dataset(db_session, code="INCOME", title="Personal income", topic="income")
    make_dataset(db_session, code="ABR", title="Business register", topic="companies")
    act_as(catalogue_app, db_session, world.callers[RES])

    by_topic = api.get("/api/datasets", params={"topic": "Income"}).json()
    by_query = api.get("/api/datasets", params={"q": "person"}).json()
    page = api.get("/api/datasets", params={"limit": 1, "offset": 1}).json()

    assert [d["code"] for d in by_topic["items"]] == ["INCOME"]
    assert [d["code"] for d in by_query["items"]] == ["INCOME", "PERSONS"]
    assert ([d["code"] for d in page["items"]], page["total"]) == (["INCOME"], 3)


def test_api_catalogue_availability_shown(
    catalogue_app: FastAPI, api: TestClient, db_session: Session, world: World
) -> None:
    future = datetime.now(UTC).date() + timedelta(days=10)
    make_version(db_session, world.dataset, label="2026V1", location="p/26", available_from=future)
    act_as(catalogue_app, db_session, world.callers[RES])

    versions = api.get("/api/datasets/PERSONS").json()["versions"]

    assert [(v["label"], v["available"]) for v in versions] == [("2024V1", True), ("2026V1", False)]


# --- changes --------------------------------------------------------------------------------------


def test_api_catalogue_create_dataset_audited_with_source(
    catalogue_app: FastAPI, api: TestClient, db_session: Session, world: World
) -> None:
    steward = world.callers[STW]
    act_as(catalogue_app, db_session, steward)

    response = api.post("/api/datasets", json={**DATASET_BODY, "code": "income"})

    assert response.status_code == 201
    assert response.json()["code"] == "INCOME"
    assert response.json()["versions"] == []
    event = db_session.scalars(
        select(AuditEvent).where(AuditEvent.action == "dataset_created")
    ).one()
    assert (event.actor, event.object_id) == (steward.username, str(response.json()["id"]))
    assert event.source == "testclient"


def test_api_catalogue_duplicate_code_409(
    catalogue_app: FastAPI, api: TestClient, db_session: Session, world: World
) -> None:
    act_as(catalogue_app, db_session, world.callers[STW])

    response = api.post("/api/datasets", json={**DATASET_BODY, "code": "persons"})

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "conflict"


def test_api_catalogue_stale_version_409(
    catalogue_app: FastAPI, api: TestClient, db_session: Session, world: World
) -> None:
    act_as(catalogue_app, db_session, world.callers[STW])
    first = api.patch("/api/datasets/PERSONS", json={"version": 1, "topic": "people"})

    second = api.patch("/api/datasets/PERSONS", json={"version": 1, "title": "Lost update"})

    assert (first.status_code, first.json()["version"], first.json()["topic"]) == (
        200,
        2,
        "people",
    )
    assert second.status_code == 409
    assert second.json()["error"]["details"]["rule"] == "optimistic_lock"
    assert world.dataset.title == "Persons"


def test_api_catalogue_add_version_returns_it(
    catalogue_app: FastAPI, api: TestClient, db_session: Session, world: World
) -> None:
    act_as(catalogue_app, db_session, world.callers[STW])

    response = api.post(
        "/api/datasets/PERSONS/versions", json={**VERSION_BODY, "available_until": "2027-12-31"}
    )

    assert response.status_code == 201
    body = response.json()
    assert (body["label"], body["location"], body["scanned_at"]) == (
        "2025V1",
        "persons/2025V1",
        None,
    )
    assert body["available_until"] == "2027-12-31"
    assert [v.label for v in world.dataset.versions] == ["2024V1", "2025V1"]


def test_api_catalogue_add_version_needs_step_up(
    catalogue_app: FastAPI, api: TestClient, db_session: Session, world: World
) -> None:
    act_as(catalogue_app, db_session, world.callers[STW], stepped_up=False)

    refused = api.post("/api/datasets/PERSONS/versions", json=VERSION_BODY)
    allowed = api.patch("/api/datasets/PERSONS", json={"version": 1, "title": "No step-up"})

    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "step_up_required"
    assert allowed.status_code == 200
    assert [v.label for v in world.dataset.versions] == ["2024V1"]


@pytest.mark.parametrize(
    ("scopes", "status"), [({"read"}, 403), ({"read", "projects:write"}, 403), ({"admin"}, 201)]
)
def test_api_catalogue_api_token_needs_admin_scope(
    catalogue_app: FastAPI,
    api: TestClient,
    db_session: Session,
    world: World,
    scopes: set[str],
    status: int,
) -> None:
    act_as(catalogue_app, db_session, world.callers[STW], token_scopes=scopes)

    response = api.post("/api/datasets/PERSONS/versions", json=VERSION_BODY)

    assert response.status_code == status, response.text


def test_api_catalogue_read_token_reads(
    catalogue_app: FastAPI, api: TestClient, db_session: Session, world: World
) -> None:
    act_as(catalogue_app, db_session, world.callers[RES], token_scopes={"read"})

    assert api.get("/api/datasets/PERSONS").status_code == 200


def test_api_catalogue_scan_records_files(
    catalogue_app: FastAPI, api: TestClient, db_session: Session, world: World
) -> None:
    write_files(world.root / "persons" / "2024V1", {"added.csv": b"new\n"})
    act_as(catalogue_app, db_session, world.callers[STW])

    response = api.post("/api/datasets/PERSONS/versions/2024V1/scan")

    assert response.status_code == 200
    files = {f["path"]: (f["size"], f["sha256"]) for f in response.json()["files"]}
    assert files["added.csv"] == (4, hashlib.sha256(b"new\n").hexdigest())
    assert len(files) == len(FILES) + 1


def test_api_catalogue_scan_missing_folder_409(
    catalogue_app: FastAPI, api: TestClient, db_session: Session, world: World
) -> None:
    make_version(db_session, world.dataset, label="2030V1", location="persons/2030V1")
    act_as(catalogue_app, db_session, world.callers[STW])

    response = api.post("/api/datasets/PERSONS/versions/2030V1/scan")

    assert response.status_code == 409
    assert_error_shape(response)
    assert response.json()["error"]["details"]["rule"] == "location_missing"


def test_api_catalogue_scan_special_file_409_lists_it(
    catalogue_app: FastAPI, api: TestClient, db_session: Session, world: World, tmp_path: Path
) -> None:
    (world.root / "persons" / "2024V1" / "escape").symlink_to(tmp_path)
    act_as(catalogue_app, db_session, world.callers[STW])

    response = api.post("/api/datasets/PERSONS/versions/2024V1/scan")

    assert response.status_code == 409
    assert response.json()["error"]["details"]["problems"] == [
        {"path": "escape", "problem": "is a symbolic link"}
    ]


def test_api_catalogue_location_symlink_out_of_root_422(
    catalogue_app: FastAPI, api: TestClient, db_session: Session, world: World, tmp_path: Path
) -> None:
    (world.root / "outward").symlink_to(tmp_path, target_is_directory=True)
    act_as(catalogue_app, db_session, world.callers[STW])

    response = api.post(
        "/api/datasets/PERSONS/versions", json={**VERSION_BODY, "location": "outward/x"}
    )

    assert response.status_code == 422
    assert response.json()["error"]["details"] == {"field": "location", "rule": "outside_root"}


@pytest.mark.parametrize(
    "path", ["/api/datasets/NOPE", "/api/datasets/PERSONS/versions/1999V1", "/api/datasets/%00"]
)
def test_api_catalogue_unknown_404(
    catalogue_app: FastAPI, api: TestClient, db_session: Session, world: World, path: str
) -> None:
    act_as(catalogue_app, db_session, world.callers[RES])

    response = api.get(path)

    assert response.status_code == 404
    assert_error_shape(response)


# --- hostile input --------------------------------------------------------------------------------

_D = {"title": "T", "topic": "t"}
_V = {"label": "V9", "location": "x/y", "available_from": "2026-01-01"}


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("POST", "/api/datasets", {**_D, "code": "X" * 100_000}, 422),
        ("POST", "/api/datasets", {**_D, "code": "AB\x00"}, 422),
        ("POST", "/api/datasets", {**_D, "code": "lower-case!"}, 422),
        ("POST", "/api/datasets", {**_D, "code": "OK", "title": "\x00"}, 422),
        ("POST", "/api/datasets", {**_D, "code": "OK", "topic": "t" * 200}, 422),
        ("POST", "/api/datasets", {**_D, "code": "OK", "description": "x" * 20_001}, 422),
        ("POST", "/api/datasets", {**_D, "code": "OK", "id": 5}, 422),
        ("POST", "/api/datasets", ["not", "an", "object"], 422),
        ("POST", "/api/datasets", {**_D, "code": 12}, 422),
        ("PATCH", "/api/datasets/PERSONS", {"version": 99_999_999_999}, 422),
        ("PATCH", "/api/datasets/PERSONS", {"version": 1, "code": "NEW"}, 422),
        ("PATCH", "/api/datasets/PERSONS", {"version": 1, "location": "/etc"}, 422),
        ("PATCH", "/api/datasets/PERSONS", {"title": "no version"}, 422),
        ("PATCH", "/api/datasets/PERSONS", {"version": 1, "topic": "\u202e"}, 422),
        ("POST", "/api/datasets/PERSONS/versions", {**_V, "label": "../.."}, 422),
        ("POST", "/api/datasets/PERSONS/versions", {**_V, "label": ".."}, 422),
        ("POST", "/api/datasets/PERSONS/versions", {**_V, "location": "/etc"}, 422),
        ("POST", "/api/datasets/PERSONS/versions", {**_V, "location": "../../etc"}, 422),
        ("POST", "/api/datasets/PERSONS/versions", {**_V, "location": "a\\b"}, 422),
        ("POST", "/api/datasets/PERSONS/versions", {**_V, "location": "a\x00b"}, 422),
        ("POST", "/api/datasets/PERSONS/versions", {**_V, "location": "x" * 1000}, 422),
        ("POST", "/api/datasets/PERSONS/versions", {**_V, "location": "persons"}, 409),
        ("POST", "/api/datasets/PERSONS/versions", {**_V, "available_from": "2026-13-45"}, 422),
        ("POST", "/api/datasets/PERSONS/versions", {**_V, "available_until": "2025-12-31"}, 422),
        ("POST", "/api/datasets/PERSONS/versions", {**_V, "label": "2024v1"}, 409),
        ("POST", "/api/datasets/PERSONS/versions/..%2F..%2Fetc/scan", None, 404),
        ("POST", "/api/datasets/PERSONS/versions/%00/scan", None, 404),
        ("GET", "/api/datasets/" + "A" * 65, None, 422),
        ("GET", "/api/datasets?limit=100000", None, 422),
        ("GET", "/api/datasets?offset=-1", None, 422),
        ("GET", "/api/datasets?q=%00%00", None, 200),
        ("GET", "/api/datasets?q=" + "x" * 101, None, 422),
        ("GET", "/api/datasets?topic=%00", None, 422),
    ],
)
def test_api_catalogue_hostile_input_gets_4xx(
    catalogue_app: FastAPI,
    api: TestClient,
    db_session: Session,
    world: World,
    method: str,
    path: str,
    body: Any,
    status: int,
) -> None:
    act_as(catalogue_app, db_session, world.callers[STW])

    response = api.request(method, path, json=body)

    assert response.status_code == status, response.text
    if status >= 400:
        assert_error_shape(response)
        assert len(response.text) < 5000
    assert [v.label for v in world.dataset.versions] == ["2024V1"]
