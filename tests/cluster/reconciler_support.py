"""Shared scaffolding for reconciler tests on the real control plane: a database of the test's
own with projects in it, a client per identity, and what the cluster holds for a project."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client
from project_factories import make_dataset_version, make_project, make_researcher
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from orchestrator.config import Settings
from orchestrator.db import session_scope
from orchestrator.kube import RESOURCES, KubeClient, object_key
from orchestrator.manifests import make_workspace
from orchestrator.models import Project, ProjectState, WorkspacePhase, WorkspaceStatus
from orchestrator.names import namespace_name, project_selector
from orchestrator.reconciler import ReconcileResult, reconcile_project
from orchestrator.workspace import desired_workspace

Key = tuple[str, str, str]


@dataclass
class Projects:
    """Projects in a migrated database of the test's own, reconciled with a given client."""

    settings: Settings
    factory: sessionmaker[Session]
    codes: list[str] = field(default_factory=list)

    def project(
        self,
        state: ProjectState = ProjectState.ACTIVE,
        datasets: int = 1,
        end_date: date | None = None,
    ) -> int:
        with session_scope(self.factory) as session:
            versions = [make_dataset_version(session) for _ in range(datasets)]
            member = make_researcher(session)
            project = make_project(
                session, state=state, members=[member], versions=versions, end_date=end_date
            )
            session.flush()
            self.codes.append(project.code)
            return project.id

    def reconcile(self, project_id: int, kube: KubeClient, now: datetime) -> ReconcileResult:
        with session_scope(self.factory) as session:
            project = session.get(Project, project_id)
            assert project is not None
            return reconcile_project(session, kube, project, self.settings, now)

    def desired_keys(self, project_id: int) -> set[Key]:
        with self.factory() as session:
            project = session.get(Project, project_id)
            assert project is not None
            spec = desired_workspace(session, project, self.settings)
            return {object_key(obj) for obj in make_workspace(spec)}

    def code(self, project_id: int) -> str:
        with self.factory() as session:
            project = session.get(Project, project_id)
            assert project is not None
            return project.code

    def state(self, project_id: int) -> ProjectState:
        with self.factory() as session:
            project = session.get(Project, project_id)
            assert project is not None
            return project.state

    def set_state(self, project_id: int, state: ProjectState) -> None:
        with session_scope(self.factory) as session:
            project = session.get(Project, project_id)
            assert project is not None
            project.state = state

    def status(self, project_id: int) -> WorkspaceStatus:
        with self.factory() as session:
            row = session.scalars(
                select(WorkspaceStatus).where(WorkspaceStatus.project_id == project_id)
            ).one()
            session.expunge(row)
            return row

    def clean_up(self, kube: KubeClient) -> None:
        for code in self.codes:
            kube.delete("Namespace", None, namespace_name(code))
            for volume in kube.list_owned("PersistentVolume", project_selector(code)):
                kube.delete("PersistentVolume", None, volume["metadata"]["name"])


def live_keys(kube: KubeClient, code: str, *, terminating: bool = False) -> set[Key]:
    """Every object labelled as the project's, one LIST per kind (objects being deleted are left
    out unless `terminating`)."""
    found: set[Key] = set()
    for kind, resource in RESOURCES.items():
        scope = namespace_name(code) if resource.namespaced else None
        for item in kube.list_owned(kind, project_selector(code), scope):
            if terminating or not item["metadata"].get("deletionTimestamp"):
                found.add(object_key(item))
    return found


def settle(step: Callable[[], ReconcileResult], until: WorkspacePhase, timeout: float = 60) -> None:
    """Run `step` (a reconcile at a later instant each time) until it reports `until`."""
    deadline = time.monotonic() + timeout
    result = step()
    while result.phase is not until:
        assert time.monotonic() < deadline, result
        time.sleep(0.3)
        result = step()


def token_kubeconfig(admin_kubeconfig: Path, token: str, path: Path) -> Path:
    """A kubeconfig for the admin's cluster (server and CA) that authenticates with `token`."""
    admin = yaml.safe_load(admin_kubeconfig.read_text())
    cluster = admin["clusters"][0]
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [cluster],
        "users": [{"name": "sa", "user": {"token": token}}],
        "contexts": [{"name": "sa", "context": {"cluster": cluster["name"], "user": "sa"}}],
        "current-context": "sa",
    }
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


def service_account_token(api: client.ApiClient, name: str, namespace: str) -> str:
    """Create the service account (if missing) and mint a short-lived token for it."""
    core = client.CoreV1Api(api)
    try:
        core.create_namespaced_service_account(
            namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name=name))
        )
    except client.ApiException as exc:
        if exc.status != 409:
            raise
    request = client.AuthenticationV1TokenRequest(
        spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=3600)
    )
    response: Any = core.create_namespaced_service_account_token(name, namespace, request)
    token: str = response.status.token
    return token
