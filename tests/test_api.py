"""HTTP API: probes, the one error shape, request ids, security headers, the session dependency."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import BaseModel
from sqlalchemy.orm import Session

from orchestrator import __version__
from orchestrator.api.app import create_app
from orchestrator.api.deps import SessionDep
from orchestrator.config import Environment, Settings
from orchestrator.db import upgrade_database
from orchestrator.errors import Conflict
from orchestrator.models import InstanceInfo


@pytest.fixture
def bare_app(tmp_path: Path) -> FastAPI:
    """An app whose tests never touch the database."""
    return create_app(Settings(environment=Environment.TEST, data_dir=tmp_path))


@pytest.fixture
def bare_client(bare_app: FastAPI) -> Iterator[TestClient]:
    with TestClient(bare_app) as client:
        yield client


class Login(BaseModel):
    username: str
    password: str
    age: int


def test_healthz_ok(bare_client: TestClient) -> None:
    response = bare_client.get("/healthz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_version_reports_package_version(bare_client: TestClient) -> None:
    assert bare_client.get("/version").json() == {"name": "kluis", "version": __version__}


def test_openapi_served_under_api(bare_client: TestClient) -> None:
    assert bare_client.get("/api/openapi.json").json()["info"]["title"] == "Kluis"


def test_readyz_ok_when_migrated(client: TestClient) -> None:
    response = client.get("/readyz")

    assert response.status_code == 200
    assert response.json() == {"status": "ready", "database": "ok"}


def test_readyz_503_when_not_migrated(unmigrated_settings: Settings) -> None:
    with TestClient(create_app(unmigrated_settings)) as client:
        response = client.get("/readyz")

    assert response.status_code == 503
    error = response.json()["error"]
    assert error["code"] == "unavailable"
    assert error["details"]["database"].startswith("schema at empty")


def test_readyz_503_when_database_unreachable(tmp_path: Path) -> None:
    url = "postgresql+psycopg://kluis:pw@127.0.0.1:1/none?connect_timeout=2"
    settings = Settings(environment=Environment.TEST, data_dir=tmp_path, database_url=url)

    with TestClient(create_app(settings)) as client:
        response = client.get("/readyz")

    assert response.status_code == 503
    assert response.json()["error"]["details"] == {"database": "database unreachable"}
    assert "pw" not in response.text


def test_error_shape_for_kluis_error(bare_app: FastAPI, bare_client: TestClient) -> None:
    @bare_app.get("/clash")
    def clash() -> None:
        raise Conflict("Project code already taken.", {"code": "P1"})

    response = bare_client.get("/clash")

    assert response.status_code == 409
    assert response.json() == {
        "error": {
            "code": "conflict",
            "message": "Project code already taken.",
            "details": {"code": "P1"},
        }
    }


def test_error_shape_for_validation_error(bare_app: FastAPI, bare_client: TestClient) -> None:
    @bare_app.post("/api/echo-login")
    def login(body: Login) -> None:
        raise AssertionError("not reached")

    response = bare_client.post("/api/echo-login", json={"username": "ann", "password": "hunter2"})

    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "invalid"
    assert error["details"]["fields"] == [{"location": "body.age", "message": "Field required"}]
    assert "body.age: Field required" in error["message"]
    assert "hunter2" not in response.text


def test_error_shape_for_unknown_path(bare_client: TestClient) -> None:
    response = bare_client.get("/no/such/thing")

    assert response.status_code == 404
    assert response.json() == {
        "error": {"code": "not_found", "message": "Not Found", "details": {}}
    }


def test_error_shape_for_wrong_method(bare_client: TestClient) -> None:
    response = bare_client.delete("/healthz")

    assert response.status_code == 405
    assert response.json()["error"]["code"] == "method_not_allowed"
    assert response.headers["allow"] == "GET"


def test_error_shape_for_unhandled_exception(bare_app: FastAPI, bare_client: TestClient) -> None:
    @bare_app.get("/boom")
    def boom() -> None:
        raise RuntimeError("internal detail: /etc/kluis/secret")

    response = bare_client.get("/boom")

    assert response.status_code == 500
    body = response.json()
    assert body["error"]["code"] == "internal_error"
    assert body["error"]["details"] == {"request_id": response.headers["x-request-id"]}
    assert "Traceback" not in response.text
    assert "internal detail" not in response.text
    assert response.headers["x-content-type-options"] == "nosniff"


def test_request_id_echoed(bare_client: TestClient) -> None:
    response = bare_client.get("/healthz", headers={"X-Request-ID": "abc-123.4_5"})

    assert response.headers["x-request-id"] == "abc-123.4_5"


def test_request_id_generated_when_absent(bare_client: TestClient) -> None:
    first = bare_client.get("/healthz").headers["x-request-id"]
    second = bare_client.get("/healthz").headers["x-request-id"]

    assert len(first) == 32
    assert first != second


@pytest.mark.parametrize(
    "hostile", ["<script>alert(1)</script>", "a" * 129, "id with spaces", "-leading-dash", ""]
)
def test_request_id_hostile_replaced(bare_client: TestClient, hostile: str) -> None:
    response = bare_client.get("/healthz", headers={"X-Request-ID": hostile})

    echoed = response.headers["x-request-id"]
    assert echoed != hostile
    assert len(echoed) == 32
    assert echoed.isalnum()


def test_security_headers_present(bare_client: TestClient) -> None:
    for response in (bare_client.get("/healthz"), bare_client.get("/missing")):
        headers = response.headers
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["x-frame-options"] == "DENY"
        assert headers["referrer-policy"] == "no-referrer"
        assert headers["content-security-policy"].startswith("default-src 'none'")
        assert "frame-ancestors 'none'" in headers["content-security-policy"]
        assert headers["cache-control"] == "no-store"


def test_docs_page_has_its_own_policy(bare_client: TestClient) -> None:
    response = bare_client.get("/api/docs")

    assert response.status_code == 200
    assert "script-src" in response.headers["content-security-policy"]


def test_docs_page_absent_in_production(tmp_path: Path) -> None:
    settings = Settings(
        environment=Environment.PRODUCTION,
        data_dir=tmp_path,
        secret_key="k" * 32,
        allow_sqlite_in_production=True,
        public_url="https://kluis.example",
        storage_backend="nfs",
    )

    with TestClient(create_app(settings)) as client:
        docs = client.get("/api/docs")
        health = client.get("/healthz")

    assert docs.status_code == 404
    assert health.headers["strict-transport-security"].startswith("max-age=")


def test_session_dependency_shares_test_transaction(
    app: FastAPI, client: TestClient, db_session: Session
) -> None:
    @app.post("/note")
    def write_note(session: SessionDep) -> None:
        session.get_one(InstanceInfo, 1).note = "written by a route"

    response = client.post("/note")

    assert response.status_code == 200
    assert db_session.get_one(InstanceInfo, 1).note == "written by a route"


def test_session_dependency_commits_or_rolls_back(unmigrated_settings: Settings) -> None:
    upgrade_database(unmigrated_settings)
    app = create_app(unmigrated_settings)

    @app.post("/note/{text}")
    def write_note(text: str, session: SessionDep) -> dict[str, str]:
        session.get_one(InstanceInfo, 1).note = text
        if text == "refused":
            raise Conflict("refused")
        return {"note": text}

    @app.get("/note")
    def read_note(session: SessionDep) -> dict[str, str]:
        return {"note": session.get_one(InstanceInfo, 1).note}

    with TestClient(app) as client:
        assert client.post("/note/kept").status_code == 200
        assert client.post("/note/refused").status_code == 409
        assert client.get("/note").json() == {"note": "kept"}
