"""P5 of PERFORMANCE.md: control-plane throughput with the cluster out of the loop.

"Workspace requests" through the real API (`kluis serve`, uvicorn, one process) on loopback:

- approve: `POST /api/projects/{code}/transitions/approve` by a data steward (API token with the
  admin scope, so no step-up round trip). With its start date today the project is approved and
  activated in one request: dataset grants, audit rows, outbox mails: the request that makes the
  reconciler provision a workspace. This is the P5 figure.
- apply: `POST /api/projects` by a researcher (a new application with a dataset version; the
  quote estimate is computed).
- page: `GET /api/projects/{code}` (the project page's data) and `GET .../costs` (invoice lines
  computed from the history).

A bounded load generator: `CLIENTS` threads with one keep-alive httpx client each, a fixed number
of requests per repetition, median of 5 repetitions after a warm-up. The anchor is JupyterHub's
documented hub ceiling of 13-25 spawns/s with a mock spawner: the ratio is taken against 25, and
the goal (>= 50 requests/s) is 2 x that. Runs on the embedded SQLite and, when
`KLUIS_BENCH_POSTGRES_URL` (or `KLUIS_TEST_POSTGRES_URL`) is set, on PostgreSQL in a schema of
its own.
"""

from __future__ import annotations

import os
import secrets
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import create_engine
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from bench.auth import HOST, Server, _percentile
from orchestrator import apitokens, costs
from orchestrator.config import Environment, Settings
from orchestrator.db import make_engine, upgrade_database
from orchestrator.models import (
    Dataset,
    DatasetVersion,
    Institution,
    MemberRole,
    Project,
    ProjectMember,
    ProjectState,
    RequestedDataset,
    Role,
    User,
    UserStatus,
)

REPEATS = 5
CLIENTS = 4
REQUESTS = 200  # per repetition and scenario
WARMUP = 40
HUB_CEILING_RPS = 25  # JupyterHub's hub with a mock spawner: 13-25 spawns/s (upper end)
GOAL_RPS = 50


@dataclass
class Seeded:
    researcher_token: str
    steward_token: str
    version_id: int
    accepted: list[str]  # codes of projects waiting for approval
    active: list[str]  # codes of active projects (for the page reads)


def _seed(settings: Settings, accepted: int, active: int) -> Seeded:
    engine = make_engine(settings)
    today = datetime.now(UTC).date()
    now = datetime.now(UTC)
    with Session(engine) as session:
        session.info["settings"] = settings
        institution = Institution(
            name="Bench institute",
            country="NL",
            authorised_from=today - timedelta(days=1),
            authorised_until=today + timedelta(days=365),
            allowed_networks=[],
        )
        session.add(institution)
        session.flush()

        def person(name: str, role: Role) -> User:
            user = User(
                username=name,
                email=f"{name}@bench.kluis.invalid",
                full_name=name.title(),
                role=role,
                status=UserStatus.ACTIVE,
                institution_id=institution.id if role is Role.RESEARCHER else None,
                statement_signed_at=now,
                statement_valid_until=today + timedelta(days=365),
            )
            session.add(user)
            session.flush()
            return user

        lead = person("bench-lead", Role.RESEARCHER)
        steward = person("bench-steward", Role.DATA_STEWARD)
        dataset = Dataset(code="BENCHDATA", title="Bench data", topic="Bench")
        session.add(dataset)
        session.flush()
        version = DatasetVersion(
            dataset_id=dataset.id,
            label="2024V1",
            location="BENCHDATA/2024V1",
            available_from=today - timedelta(days=30),
        )
        session.add(version)
        tariff = costs.seed_demo_tariff(session)
        codes = iter(range(10000, 99999))

        def project(state: ProjectState) -> str:
            row = Project(
                code=str(next(codes)),
                title="Bench project",
                purpose="Throughput",
                institution_id=institution.id,
                lead_id=lead.id,
                start_date=today,
                end_date=today + timedelta(days=364),
                compute_size="small",
                state=state,
                tariff_id=tariff.id,
                quote_total=Decimal("1000.00"),
                quoted_at=now,
                quote_accepted_at=now,
                activated_at=now if state is ProjectState.ACTIVE else None,
            )
            session.add(row)
            session.flush()
            session.add(
                ProjectMember(
                    project_id=row.id, user_id=lead.id, role=MemberRole.LEAD, added_at=now
                )
            )
            session.add(RequestedDataset(project_id=row.id, dataset_version_id=version.id))
            return row.code

        waiting = [project(ProjectState.ACCEPTED) for _ in range(accepted)]
        running = [project(ProjectState.ACTIVE) for _ in range(active)]
        _, researcher_token = apitokens.create_api_token(
            session, lead, "bench", ["read", "projects:write"], 30, settings
        )
        _, steward_token = apitokens.create_api_token(
            session, steward, "bench", ["read", "projects:write", "admin"], 30, settings
        )
        session.commit()
        version_id = version.id
    engine.dispose()
    return Seeded(researcher_token, steward_token, version_id, waiting, running)


# --- the load generator ---------------------------------------------------------------------------

Request = tuple[str, str, dict[str, Any] | None]  # method, path, JSON body


def _drive(base: str, token: str, requests: list[Request]) -> tuple[float, float, float]:
    """Send `requests` with `CLIENTS` threads; (requests/s, p50 ms, p99 ms). Any non-2xx fails."""
    lock = threading.Lock()
    pending = iter(requests)
    latencies: list[float] = []
    failures: list[str] = []
    start = threading.Barrier(CLIENTS + 1)

    def worker() -> None:
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=base, headers=headers, timeout=30) as client:
            start.wait()
            while True:
                with lock:
                    item = next(pending, None)
                if item is None:
                    return
                method, path, body = item
                began = time.perf_counter()
                response = client.request(method, path, json=body)
                elapsed = (time.perf_counter() - began) * 1000
                with lock:
                    latencies.append(elapsed)
                    if response.status_code >= 300:
                        failures.append(f"{method} {path}: {response.status_code} {response.text}")

    threads = [threading.Thread(target=worker) for _ in range(CLIENTS)]
    for thread in threads:
        thread.start()
    start.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - began
    if failures:
        raise RuntimeError(f"{len(failures)} requests failed, e.g. {failures[0][:300]}")
    return (
        len(latencies) / elapsed,
        statistics.median(latencies),
        _percentile(latencies, 99),
    )


def _scenario(
    base: str, token: str, make: Callable[[int], list[Request]]
) -> dict[str, float] | str:
    """Median of `REPEATS` after a warm-up; an error message when the scenario cannot run."""
    try:
        _drive(base, token, make(WARMUP))
        runs = [_drive(base, token, make(REQUESTS)) for _ in range(REPEATS)]
    except (RuntimeError, httpx.HTTPError) as exc:
        return f"failed: {exc}"
    return {
        "rps": statistics.median(r[0] for r in runs),
        "p50": statistics.median(r[1] for r in runs),
        "p99": statistics.median(r[2] for r in runs),
    }


def _measure(base: str, seeded: Seeded) -> dict[str, dict[str, float] | str]:
    waiting = iter(seeded.accepted)
    today = datetime.now(UTC).date()
    application = {
        "title": "Bench application",
        "purpose": "Throughput of the control plane",
        "compute_size": "small",
        "start_date": (today + timedelta(days=30)).isoformat(),
        "end_date": (today + timedelta(days=394)).isoformat(),
        "dataset_version_ids": [seeded.version_id],
    }
    pages = seeded.active

    def approvals(n: int) -> list[Request]:
        return [
            ("POST", f"/api/projects/{next(waiting)}/transitions/approve", {"version": 1})
            for _ in range(n)
        ]

    def applications(n: int) -> list[Request]:
        return [("POST", "/api/projects", application)] * n

    def page_reads(n: int) -> list[Request]:
        return [("GET", f"/api/projects/{pages[i % len(pages)]}", None) for i in range(n)]

    def cost_reads(n: int) -> list[Request]:
        return [("GET", f"/api/projects/{pages[i % len(pages)]}/costs", None) for i in range(n)]

    return {
        "approve (workspace request)": _scenario(base, seeded.steward_token, approvals),
        "apply": _scenario(base, seeded.researcher_token, applications),
        "project page": _scenario(base, seeded.steward_token, page_reads),
        "project costs": _scenario(base, seeded.steward_token, cost_reads),
    }


# --- backends -------------------------------------------------------------------------------------


@contextmanager
def _postgres_schema(url: str) -> Iterator[str]:
    schema = f"kluis_bench_{secrets.token_hex(4)}"
    admin = create_engine(url)
    try:
        with admin.begin() as connection:
            connection.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
        scoped = make_url(url).update_query_dict({"options": f"-csearch_path={schema}"})
        yield scoped.render_as_string(hide_password=False)
    finally:
        with admin.begin() as connection:
            connection.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        admin.dispose()


def _backend(name: str, tmp: str, database_url: str | None) -> dict[str, Any]:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("KLUIS_")},
        "KLUIS_ENVIRONMENT": Environment.DEVELOPMENT.value,
        "KLUIS_DATA_DIR": tmp,
        "KLUIS_COOKIE_SECURE": "false",
        "KLUIS_HOST": HOST,
        "KLUIS_LOG_FORMAT": "json",
        "KLUIS_LOG_LEVEL": "WARNING",
    }
    if database_url:
        env["KLUIS_DATABASE_URL"] = database_url
    settings = Settings(
        environment=Environment.DEVELOPMENT,
        data_dir=Path(tmp),
        cookie_secure=False,
        database_url=database_url,
    )
    upgrade_database(settings)
    seeded = _seed(settings, (REPEATS * REQUESTS + WARMUP), 50)
    serve = "from orchestrator.cli import main; main()"
    server = Server([sys.executable, "-c", serve, "serve", "--no-migrate"], env, "/healthz")
    try:
        results = _measure(server.base, seeded)
    finally:
        server.stop()
    metrics: dict[str, Any] = {}
    for scenario, result in results.items():
        key = f"P5 {name}: {scenario}"
        if isinstance(result, str):
            metrics[f"{key}"] = result[:300]
            continue
        metrics[f"{key}, req/s (median of {REPEATS})"] = round(result["rps"], 1)
        metrics[f"{key}, p50 / p99 ms"] = f"{result['p50']:.1f} / {result['p99']:.1f}"
    approve = results["approve (workspace request)"]
    if not isinstance(approve, str):
        metrics[f"P5 {name}: approve / hub ceiling {HUB_CEILING_RPS}/s (goal >= 2)"] = round(
            approve["rps"] / HUB_CEILING_RPS, 2
        )
        metrics[f"P5 {name}: goal >= {GOAL_RPS} req/s met"] = approve["rps"] >= GOAL_RPS
    return metrics


def run() -> dict[str, Any]:
    metrics: dict[str, Any] = {
        "P5 load": f"{CLIENTS} clients, {REQUESTS} requests x {REPEATS} after {WARMUP} warm-up",
        "P5 server": "kluis serve: uvicorn, 1 process, loopback; API tokens (bearer)",
    }
    with tempfile.TemporaryDirectory(prefix="kluis-bench-p5-") as tmp:
        metrics.update(_backend("SQLite", tmp, None))
    postgres = os.environ.get("KLUIS_BENCH_POSTGRES_URL") or os.environ.get(
        "KLUIS_TEST_POSTGRES_URL"
    )
    if postgres:
        with (
            tempfile.TemporaryDirectory(prefix="kluis-bench-p5-") as tmp,
            _postgres_schema(postgres) as url,
        ):
            metrics.update(_backend("PostgreSQL", tmp, url))
    else:
        metrics["P5 PostgreSQL"] = "skipped: set KLUIS_BENCH_POSTGRES_URL"
    return {"metrics": metrics}
