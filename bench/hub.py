"""Issue 6's launch time: a researcher's "Open workspace" (launch ticket issued) until their server
pod is Running in the local cluster, through the real stack — the API served by uvicorn, a real
JupyterHub with configurable-http-proxy from Kluis's own config, KluisSpawner under the hub's
least-privilege service account, kube-apiserver, scheduler and kwok — as a ratio to the
reconciler's single-workspace time measured in the same run.

- baseline: a new project's workspace provisioned from scratch (`reconcile_project` and commit,
  pass after pass until it reads `ready`), median of `SAMPLES` projects after a warm-up one;
- first launch: for each of those projects, POST /api/projects/P/launch (the ticket issued: the
  clock starts when the answer arrives), the hub's ticket login, the spawn request, then the
  apiserver polled every `POLL_S` until the server pod is Running; median of `SAMPLES` after a
  warm-up launch. Each is a project's first server, so it includes the hub's first call into a
  new namespace (KubeSpawner starts a pod reflector per namespace);
- repeat launch: the same project opened again after its server was stopped, median of
  `SAMPLES` — the usual case of a researcher coming back.

Between launches the server is stopped through the hub's REST API and the pod waited gone
(kwok runs no container; whether the hub counts such a server as up depends on the network, see
docs/hub.md — stopping it either way keeps the concurrent spawn limit out of the way). The
control plane's database is a temporary SQLite file, and PostgreSQL too (a schema of its own)
when `KLUIS_BENCH_POSTGRES_URL` is set; the hub's own database is SQLite in both.
"""

from __future__ import annotations

import os
import secrets
import socket
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import uvicorn
import yaml
from kubernetes import client, config
from pydantic import SecretStr
from sqlalchemy import create_engine
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from orchestrator import names, sessions
from orchestrator.api.app import create_app
from orchestrator.api.deps import session_cookie_name
from orchestrator.config import Environment, LogLevel, Settings
from orchestrator.db import make_engine, make_sessionmaker, upgrade_database
from orchestrator.devcluster import build
from orchestrator.devcluster.cluster import LocalCluster
from orchestrator.hub_process import HubProcess, hub_environment, start_hub
from orchestrator.kube import KubeClient
from orchestrator.log import configure_logging
from orchestrator.models import (
    Dataset,
    DatasetVersion,
    Grant,
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
from orchestrator.names import namespace_name, project_selector
from orchestrator.reconciler import reconcile_project

SAMPLES = 9
POLL_S = 0.02
HUB_NAMESPACE = "kluis-bench-hub"
HUB_ACCOUNT = "hub"
ROOT = Path(__file__).resolve().parents[1]
SERVER_SELECTOR = f"{names.KIND_LABEL}=server"


def _say(what: str) -> None:
    print(f"  [hub] {what}", flush=True)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# --- the stack ---------------------------------------------------------------------------------


@dataclass
class Stack:
    settings: Settings
    factory: sessionmaker[Session]
    kube: KubeClient
    hub: HubProcess
    api_url: str
    browser: httpx.Client
    username: str
    csrf: str


def _hub_kubeconfig(cluster: LocalCluster, path: Path) -> Path:
    """The hub's own service account (the reconciler binds it in each project namespace only)
    and a kubeconfig with a token for it."""
    api = config.new_client_from_config(config_file=str(cluster.kubeconfig))
    core = client.CoreV1Api(api)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=HUB_NAMESPACE)))
    core.create_namespaced_service_account(
        HUB_NAMESPACE, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name=HUB_ACCOUNT))
    )
    request = client.AuthenticationV1TokenRequest(
        spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=3600)
    )
    answer: Any = core.create_namespaced_service_account_token(HUB_ACCOUNT, HUB_NAMESPACE, request)
    admin = yaml.safe_load(cluster.kubeconfig.read_text())
    cluster_entry = admin["clusters"][0]
    kubeconfig = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [cluster_entry],
        "users": [{"name": "hub", "user": {"token": answer.status.token}}],
        "contexts": [{"name": "hub", "context": {"cluster": cluster_entry["name"], "user": "hub"}}],
        "current-context": "hub",
    }
    path.write_text(yaml.safe_dump(kubeconfig))
    path.chmod(0o600)
    return path


@contextmanager
def _database_url(url: str | None) -> Iterator[str | None]:
    """None (SQLite in the data folder) or a fresh PostgreSQL schema, dropped afterwards."""
    if url is None:
        yield None
        return
    schema = f"kluis_bench_hub_{secrets.token_hex(4)}"
    admin = create_engine(url)
    with admin.begin() as connection:
        connection.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    try:
        scoped = make_url(url).update_query_dict({"options": f"-csearch_path={schema}"})
        yield scoped.render_as_string(hide_password=False)
    finally:
        with admin.begin() as connection:
            connection.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        admin.dispose()


@contextmanager
def _serve(settings: Settings) -> Iterator[str]:
    """The real app under uvicorn on a loopback socket of its own, in a thread."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", settings.port))
    sock.listen(128)
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), log_level="warning", access_log=False)
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the API did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{settings.port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()


@contextmanager
def _stack(
    tmp: Path, cluster: LocalCluster, hub_kubeconfig: Path, url: str | None
) -> Iterator[Stack]:
    api_port, hub_port = _free_port(), _free_port()
    with _database_url(url) as database_url:
        settings = Settings(
            environment=Environment.DEVELOPMENT,
            data_dir=tmp / "data",
            database_url=database_url,
            cookie_secure=False,
            host="127.0.0.1",
            port=api_port,
            public_url=f"http://127.0.0.1:{api_port}",
            hub_public_url=f"http://127.0.0.1:{hub_port}",
            hub_api_url=f"http://127.0.0.1:{hub_port}/hub/api",
            hub_service_token=SecretStr(secrets.token_urlsafe(32)),
            hub_api_token=SecretStr(secrets.token_urlsafe(32)),
            log_level=LogLevel.WARNING,
            hub_namespace=HUB_NAMESPACE,
            hub_service_account=HUB_ACCOUNT,
        )
        configure_logging(settings)  # warnings only: the API logs every request at info
        upgrade_database(settings)
        engine = make_engine(settings)
        kube = KubeClient.from_kubeconfig(cluster.kubeconfig, settings.field_manager)
        try:
            factory = make_sessionmaker(engine, write=True)
            username, secret, csrf = _researcher(factory, settings)
            with _serve(settings) as api_url:
                env = hub_environment(
                    settings,
                    data_dir=tmp / "hub",
                    public_port=hub_port,
                    hub_port=_free_port(),
                    proxy_api_port=_free_port(),
                    spawner="kubernetes",
                    control_plane_url=api_url,
                    extra={
                        "KUBECONFIG": str(hub_kubeconfig),
                        "KLUIS_HUB_CULL_TIMEOUT": "0",
                        "KLUIS_HUB_HTTP_TIMEOUT": "300",
                    },
                )
                hub = start_hub(env, tmp / "hub")
                browser = httpx.Client(timeout=60)
                browser.cookies.set(session_cookie_name(settings), secret, domain="127.0.0.1")
                try:
                    yield Stack(settings, factory, kube, hub, api_url, browser, username, csrf)
                finally:
                    browser.close()
                    hub.stop()
        finally:
            kube.close()
            engine.dispose()


# --- the database --------------------------------------------------------------------------------


def _researcher(factory: sessionmaker[Session], settings: Settings) -> tuple[str, str, str]:
    """A researcher in good standing with a portal session: (username, secret, CSRF token)."""
    now = datetime.now(UTC)
    tag = secrets.token_hex(3)
    with factory() as session:
        institution = Institution(
            name=f"Bench institute {tag}",
            country="NL",
            authorised_from=now.date() - timedelta(days=1),
            authorised_until=now.date() + timedelta(days=365),
            allowed_networks=[],
        )
        session.add(institution)
        session.flush()
        user = User(
            username=f"bench-{tag}",
            email=f"bench-{tag}@bench.kluis.invalid",
            full_name="Bench Researcher",
            role=Role.RESEARCHER,
            status=UserStatus.ACTIVE,
            institution_id=institution.id,
            statement_signed_at=now,
            statement_valid_until=now.date() + timedelta(days=365),
        )
        session.add(user)
        session.flush()
        row, secret = sessions.open_session(session, user, "127.0.0.1", "bench", settings)
        session.flush()
        csrf = sessions.csrf_token(settings, row)
        session.commit()
        return user.username, secret, csrf


def _project(stack: Stack) -> str:
    """An active project led by the researcher, with one granted dataset version."""
    now = datetime.now(UTC)
    today = now.date()
    with stack.factory() as session:
        user = session.query(User).filter_by(username=stack.username).one()
        while True:
            code = str(10_000 + secrets.randbelow(90_000))
            if session.query(Project).filter_by(code=code).first() is None:
                break
        dataset = Dataset(code=f"BH{code}", title="Bench data", topic=f"bench-{code}")
        session.add(dataset)
        session.flush()
        version = DatasetVersion(
            dataset_id=dataset.id,
            label="2024V1",
            location=f"{dataset.code}/2024V1",
            available_from=today - timedelta(days=30),
            files=[],
            size_bytes=0,
        )
        session.add(version)
        project = Project(
            code=code,
            title="Bench project",
            purpose="Benchmark",
            institution_id=user.institution_id,
            lead_id=user.id,
            start_date=today,
            end_date=today + timedelta(days=364),
            compute_size="small",
            state=ProjectState.ACTIVE,
            state_changed_at=now,
            approved_at=now,
            activated_at=now,
        )
        session.add(project)
        session.flush()
        session.add_all(
            [
                ProjectMember(
                    project_id=project.id, user_id=user.id, role=MemberRole.LEAD, added_at=now
                ),
                RequestedDataset(project_id=project.id, dataset_version_id=version.id),
                Grant(project_id=project.id, dataset_version_id=version.id, granted_at=now),
            ]
        )
        session.commit()
        return code


# --- what is measured ----------------------------------------------------------------------------


def _provision(stack: Stack, code: str) -> float:
    """Seconds from the first reconcile pass until the workspace reads `ready`."""
    began = time.perf_counter()
    deadline = time.monotonic() + 120
    while True:
        with stack.factory() as session, session.begin():
            project = session.query(Project).filter_by(code=code).one()
            result = reconcile_project(
                session, stack.kube, project, stack.settings, datetime.now(UTC)
            )
        if result.phase.value == "ready":
            return time.perf_counter() - began
        if time.monotonic() > deadline:
            raise RuntimeError(f"workspace {code} not ready: {result}")
        time.sleep(POLL_S)


def _server_pods(stack: Stack, code: str) -> list[dict[str, Any]]:
    return [
        pod
        for pod in stack.kube.list_owned("Pod", SERVER_SELECTOR, namespace_name(code))
        if not pod["metadata"].get("deletionTimestamp")
    ]


def _running_at(stack: Stack, code: str) -> tuple[float, float]:
    """The moments the apiserver first shows the project's server pod, and shows it Running
    (polled)."""
    deadline = time.monotonic() + 120
    seen: float | None = None
    while True:
        pods = _server_pods(stack, code)
        if pods and seen is None:
            seen = time.perf_counter()
        if pods and pods[0]["status"].get("phase") == "Running":
            assert seen is not None
            return seen, time.perf_counter()
        if time.monotonic() > deadline:
            raise RuntimeError(f"no Running server pod in {code}; see {stack.hub.log_path}")
        time.sleep(POLL_S)


def _launch(stack: Stack, code: str, watcher: ThreadPoolExecutor) -> dict[str, float]:
    """One launch as a browser makes it; seconds from the ticket issued to the pod Running (the
    apiserver polled from another thread from that moment on, so the hub's spawn page, which
    may wait up to a second, does not delay the observation), with the steps on the way."""
    claims = stack.kube.list_owned(
        "PersistentVolumeClaim", project_selector(code), namespace_name(code)
    )
    unbound = sum(1 for claim in claims if claim.get("status", {}).get("phase") != "Bound")
    answer = stack.browser.post(
        f"{stack.api_url}/api/projects/{code}/launch", headers={"X-CSRF-Token": stack.csrf}
    )
    issued = time.perf_counter()
    if answer.status_code != 201:
        raise RuntimeError(f"launch refused: {answer.status_code} {answer.text}")
    running = watcher.submit(_running_at, stack, code)
    login = stack.browser.get(answer.json()["url"], follow_redirects=False)
    logged_in = time.perf_counter()
    if login.status_code != 302:
        raise RuntimeError(f"hub login: {login.status_code} {login.text[:300]}")
    spawn_path = urlsplit(login.headers["location"]).path
    spawn = stack.browser.get(f"{stack.hub.public_url}{spawn_path}", follow_redirects=False)
    if spawn.status_code not in (200, 302):
        raise RuntimeError(f"spawn: {spawn.status_code} {spawn.text[:300]}")
    created, ran = running.result()
    return {
        "total": ran - issued,
        "hub_login": logged_in - issued,
        "after_login": ran - logged_in,
        "to_created": created - logged_in,
        "created_to_running": ran - created,
        "unbound_claims": unbound,
    }


def _stop(stack: Stack, code: str) -> None:
    token = stack.settings.hub_api_token.get_secret_value()
    httpx.delete(
        f"{stack.hub.api_url}/users/{stack.username}/servers/{code}",
        headers={"Authorization": f"token {token}"},
        timeout=60,
    )
    deadline = time.monotonic() + 120
    while _server_pods(stack, code) or _hub_has(stack, code):
        if time.monotonic() > deadline:
            raise RuntimeError(f"server {code} did not stop")
        time.sleep(0.1)


def _hub_has(stack: Stack, code: str) -> bool:
    token = stack.settings.hub_api_token.get_secret_value()
    answer = httpx.get(
        f"{stack.hub.api_url}/users/{stack.username}",
        headers={"Authorization": f"token {token}"},
        timeout=30,
    )
    if answer.status_code == 404:
        return False
    answer.raise_for_status()
    return code in (answer.json().get("servers") or {})


def _median(values: list[float]) -> float:
    return round(statistics.median(values), 3)


def _measure(stack: Stack) -> dict[str, Any]:
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="bench-watch") as watcher:
        return _measure_with(stack, watcher)


def _measure_with(stack: Stack, watcher: ThreadPoolExecutor) -> dict[str, Any]:
    _say("warm-up")
    warm = _project(stack)
    _provision(stack, warm)
    _launch(stack, warm, watcher)
    _stop(stack, warm)

    _say(f"reconcile and first launch, {SAMPLES} projects")
    reconcile: list[float] = []
    first: list[dict[str, float]] = []
    for _ in range(SAMPLES):
        code = _project(stack)
        reconcile.append(_provision(stack, code))
        first.append(_launch(stack, code, watcher))
        _stop(stack, code)
    _say(f"repeat launch, {SAMPLES} times")
    repeat: list[dict[str, float]] = []
    for _ in range(SAMPLES):
        repeat.append(_launch(stack, warm, watcher))
        _stop(stack, warm)

    base = statistics.median(reconcile)
    first_total = [s["total"] for s in first]
    repeat_total = [s["total"] for s in repeat]
    return {
        f"reconcile one new workspace to ready s (median of {SAMPLES})": _median(reconcile),
        f"first launch: ticket issued -> pod Running s (median of {SAMPLES})": _median(first_total),
        "first launch: of which hub ticket login s (median)": _median(
            [s["hub_login"] for s in first]
        ),
        "first launch: of which hub login -> pod Running s (median)": _median(
            [s["after_login"] for s in first]
        ),
        "first launch: of which hub login -> pod created s (median)": _median(
            [s["to_created"] for s in first]
        ),
        "first launch: of which pod created -> Running s (median)": _median(
            [s["created_to_running"] for s in first]
        ),
        "first launch: launches with claims not yet Bound at the ticket": sum(
            1 for s in first if s["unbound_claims"]
        ),
        "first launch / reconcile (ratio of medians)": round(
            statistics.median(first_total) / base, 2
        ),
        f"repeat launch: ticket issued -> pod Running s (median of {SAMPLES})": _median(
            repeat_total
        ),
        "repeat launch / reconcile (ratio of medians)": round(
            statistics.median(repeat_total) / base, 2
        ),
        "samples s": {
            "reconcile": [round(v, 3) for v in reconcile],
            "first launch": [round(v, 3) for v in first_total],
            "repeat launch": [round(v, 3) for v in repeat_total],
            "first launch, hub login -> pod created": [round(s["to_created"], 3) for s in first],
            "first launch, claims not Bound at the ticket": [s["unbound_claims"] for s in first],
            "first launch, pod created -> Running": [
                round(s["created_to_running"], 3) for s in first
            ],
        },
    }


def _cleanup(stack: Stack) -> None:
    """The projects' namespaces and volumes, so the next backend starts on an empty cluster."""
    with stack.factory() as session:
        codes = [code for (code,) in session.query(Project.code).all()]
    for code in codes:
        stack.kube.delete("Namespace", None, namespace_name(code))
        for volume in stack.kube.list_owned("PersistentVolume", project_selector(code)):
            stack.kube.delete("PersistentVolume", None, volume["metadata"]["name"])


def run() -> dict[str, Any]:
    build.ensure_built()
    subprocess.run([str(ROOT / ".ci" / "node-tools")], check=True, capture_output=True)
    metrics: dict[str, Any] = {"cores": os.cpu_count(), "poll interval s": POLL_S}
    postgres = os.environ.get("KLUIS_BENCH_POSTGRES_URL")
    with tempfile.TemporaryDirectory(prefix="kluis-bench-hub-") as tmp_text:
        tmp = Path(tmp_text)
        cluster = LocalCluster(tmp / "cluster", tie_to_parent=True)
        cluster.up()
        try:
            hub_kubeconfig = _hub_kubeconfig(cluster, tmp / "hub-kubeconfig")
            backends: list[tuple[str, str | None]] = [("SQLite", None)]
            if postgres:
                backends.append(("PostgreSQL", postgres))
            else:
                metrics["PostgreSQL"] = "skipped: set KLUIS_BENCH_POSTGRES_URL"
            for label, url in backends:
                _say(label)
                with _stack(tmp / label, cluster, hub_kubeconfig, url) as stack:
                    try:
                        metrics.update({f"[{label}] {k}": v for k, v in _measure(stack).items()})
                    finally:
                        _cleanup(stack)
        finally:
            cluster.down()
    return {"metrics": metrics}
