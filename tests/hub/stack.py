"""A real stack for hub tests: a migrated database of its own (SQLite or PostgreSQL), the real API
served by uvicorn on loopback, and a real JupyterHub with the real configurable-http-proxy
started from Kluis's own `jupyterhub_config.py`. Researchers act like browsers: a portal
session cookie, then the launch URL, then the hub's own pages."""

from __future__ import annotations

import secrets
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from project_factories import make_dataset_version, make_project, make_researcher
from pydantic import SecretStr
from sqlalchemy.orm import Session, sessionmaker

from orchestrator import sessions
from orchestrator.config import Environment, Settings
from orchestrator.db import make_engine, make_sessionmaker, session_scope, upgrade_database
from orchestrator.hub_process import HubProcess, hub_environment, start_hub
from orchestrator.models import Project, ProjectState, User, WorkspacePhase, WorkspaceStatus

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def ensure_proxy() -> str:
    """configurable-http-proxy from npm, installed once into the cache by `.ci/node-tools`."""
    out = subprocess.run(
        [str(ROOT / ".ci" / "node-tools")], check=True, capture_output=True, text=True
    )
    return out.stdout.strip().splitlines()[-1]


def stack_settings(
    data_dir: Path, database_url: str | None, api_port: int, hub_port: int, **overrides: Any
) -> Settings:
    return Settings(
        environment=Environment.TEST,
        data_dir=data_dir,
        database_url=database_url,
        cookie_secure=False,
        host="127.0.0.1",
        port=api_port,
        public_url=f"http://127.0.0.1:{api_port}",
        hub_public_url=f"http://127.0.0.1:{hub_port}",
        hub_api_url=f"http://127.0.0.1:{hub_port}/hub/api",
        hub_service_token=SecretStr(secrets.token_urlsafe(32)),
        hub_api_token=SecretStr(secrets.token_urlsafe(32)),
        hub_sync_interval_seconds=1.0,
        launch_ticket_seconds=60,
        **overrides,
    )


@dataclass
class Researcher:
    user_id: int
    username: str
    cookie: str  # the portal session's secret
    csrf: str


@dataclass
class Stack:
    settings: Settings
    factory: sessionmaker[Session]
    hub: HubProcess
    api_url: str
    codes: list[str] = field(default_factory=list)

    # --- arrange -------------------------------------------------------------------------------

    def researcher(self) -> Researcher:
        with session_scope(self.factory) as session:
            user = make_researcher(session)
            return self.login(session, user)

    def login(self, session: Session, user: User) -> Researcher:
        row, secret = sessions.open_session(session, user, "127.0.0.1", "pytest", self.settings)
        session.flush()
        return Researcher(user.id, user.username, secret, sessions.csrf_token(self.settings, row))

    def project(self, *members: Researcher, datasets: int = 1) -> str:
        with session_scope(self.factory) as session:
            users = [session.get(User, member.user_id) for member in members]
            versions = [make_dataset_version(session) for _ in range(datasets)]
            project = make_project(
                session,
                state=ProjectState.ACTIVE,
                members=[user for user in users if user is not None],
                versions=versions,
            )
            session.flush()
            self.codes.append(project.code)
            return project.code

    def mark_ready(self, code: str) -> None:
        """For hub tests without the reconciler: the workspace counts as converged."""
        with session_scope(self.factory) as session:
            project = session.query(Project).filter_by(code=code).one()
            session.add(
                WorkspaceStatus(
                    project_id=project.id,
                    phase=WorkspacePhase.READY,
                    objects=[],
                    desired_hash="",
                    last_reconciled_at=datetime.now(UTC),
                )
            )

    # --- act -----------------------------------------------------------------------------------

    def browser(self, who: Researcher) -> httpx.Client:
        """A cookie jar with the portal session (cookies are per host, not port, as in browsers)."""
        client = httpx.Client(timeout=30)
        client.cookies.set("kluis_session", who.cookie, domain="127.0.0.1")
        return client

    def launch(self, browser: httpx.Client, who: Researcher, code: str) -> httpx.Response:
        return browser.post(
            f"{self.api_url}/api/projects/{code}/launch", headers={"X-CSRF-Token": who.csrf}
        )

    def open_hub(self, browser: httpx.Client, url: str) -> httpx.Response:
        """Follow the launch URL into the hub (redirects followed within the hub only)."""
        return browser.get(url, follow_redirects=False)

    def hub_api(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        token = self.settings.hub_api_token.get_secret_value()
        return httpx.request(
            method,
            f"{self.hub.api_url}{path}",
            headers={"Authorization": f"token {token}"},
            timeout=30,
            **kwargs,
        )

    def servers(self, username: str) -> dict[str, Any]:
        response = self.hub_api("GET", f"/users/{username}")
        if response.status_code == 404:
            return {}
        response.raise_for_status()
        servers: dict[str, Any] = response.json().get("servers", {})
        return servers

    def wait_for(self, check: Any, timeout: float = 60.0, what: str = "condition") -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = check()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}; hub log: {self.hub.log_path}")
            time.sleep(0.25)


@contextmanager
def running_stack(
    backend_settings: Settings,
    data_dir: Path,
    *,
    spawner: str,
    extra_env: dict[str, str] | None = None,
    overrides: dict[str, Any] | None = None,
) -> Iterator[Stack]:
    """Migrate, serve the API, start the hub; everything stops at the end of the block. On
    PostgreSQL the hub keeps its own database there too (a schema of its own)."""
    from browser.live import bind_loopback, serve  # uvicorn on a bound socket
    from conftest import postgres_schema, postgres_url

    with ExitStack() as resources:
        extra_env = dict(extra_env or {})
        if (backend_settings.database_url or "").startswith("postgres"):
            extra_env["KLUIS_HUB_DB_URL"] = resources.enter_context(postgres_schema(postgres_url()))
        yield resources.enter_context(
            _running(
                backend_settings, data_dir, spawner, extra_env, overrides, bind_loopback, serve
            )
        )


@contextmanager
def _running(
    backend_settings: Settings,
    data_dir: Path,
    spawner: str,
    extra_env: dict[str, str],
    overrides: dict[str, Any] | None,
    bind_loopback: Any,
    serve: Any,
) -> Iterator[Stack]:
    sock = bind_loopback()
    api_port = sock.getsockname()[1]
    hub_port = free_port()
    settings = stack_settings(
        data_dir, backend_settings.database_url, api_port, hub_port, **(overrides or {})
    )
    upgrade_database(settings)
    engine = make_engine(settings)
    ensure_proxy()
    try:
        with serve(settings, sock) as api_url:
            env = hub_environment(
                settings,
                data_dir=data_dir / "hub",
                public_port=hub_port,
                hub_port=free_port(),
                proxy_api_port=free_port(),
                spawner=spawner,
                control_plane_url=api_url,
                extra={"KLUIS_HUB_CULL_TIMEOUT": "0", **(extra_env or {})},
            )
            hub = start_hub(env, data_dir / "hub")
            try:
                yield Stack(settings, make_sessionmaker(engine, write=True), hub, api_url)
            finally:
                hub.stop()
    finally:
        engine.dispose()
