"""The reconciler against the real local control plane and a real database (both backends):
provisioning, zero calls when nothing changed, drift repair, pruning, teardown, backoff."""

from __future__ import annotations

import os
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, cast

import pytest
import yaml
from kubernetes import client
from project_factories import make_dataset_version, make_project, make_researcher, utcnow
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from orchestrator.cli import app
from orchestrator.config import Settings
from orchestrator.db import make_sessionmaker, session_scope
from orchestrator.devcluster.cluster import LocalCluster
from orchestrator.kube import KubeClient, object_key
from orchestrator.manifests import make_workspace
from orchestrator.models import (
    AuditEvent,
    Grant,
    Project,
    ProjectState,
    WorkspacePhase,
    WorkspaceStatus,
)
from orchestrator.names import namespace_name, project_selector
from orchestrator.reconciler import ReconcileResult, reconcile_all, reconcile_project
from orchestrator.workspace import desired_workspace

pytestmark = pytest.mark.cluster

MUTATING = ("PATCH", "POST", "PUT", "DELETE")
PSA_ENFORCE = "pod-security.kubernetes.io/enforce"
HOLD = "kluis.io/test-hold"  # a finalizer nobody removes, to hold a namespace in Terminating


@dataclass
class World:
    """A migrated database of the test's own, a client on the cluster, and the projects made."""

    settings: Settings
    factory: sessionmaker[Session]
    kube: KubeClient
    codes: list[str] = field(default_factory=list)

    def project(self, state: ProjectState = ProjectState.ACTIVE, datasets: int = 1) -> int:
        with session_scope(self.factory) as session:
            versions = [make_dataset_version(session) for _ in range(datasets)]
            member = make_researcher(session)
            project = make_project(session, state=state, members=[member], versions=versions)
            session.flush()
            self.codes.append(project.code)
            return project.id

    def reconcile(
        self, project_id: int, now: datetime, kube: KubeClient | None = None
    ) -> ReconcileResult:
        with session_scope(self.factory) as session:
            project = session.get(Project, project_id)
            assert project is not None
            return reconcile_project(session, kube or self.kube, project, self.settings, now)

    def desired(self, project_id: int) -> list[dict[str, Any]]:
        with self.factory() as session:
            project = session.get(Project, project_id)
            assert project is not None
            return make_workspace(desired_workspace(session, project, self.settings))

    def status(self, project_id: int) -> WorkspaceStatus:
        with self.factory() as session:
            row = session.scalars(
                select(WorkspaceStatus).where(WorkspaceStatus.project_id == project_id)
            ).one()
            session.expunge(row)
            return row

    def audit(self, action: str, code: str) -> list[AuditEvent]:
        with self.factory() as session:
            return list(
                session.scalars(
                    select(AuditEvent).where(
                        AuditEvent.action == action, AuditEvent.object_id == code
                    )
                )
            )

    def set_state(self, project_id: int, state: ProjectState) -> None:
        with session_scope(self.factory) as session:
            project = session.get(Project, project_id)
            assert project is not None
            project.state = state

    def code(self, project_id: int) -> str:
        with self.factory() as session:
            project = session.get(Project, project_id)
            assert project is not None
            return project.code


class WriteLockProbe:
    """The client, but before each API call another connection takes and releases the SQLite
    write lock (waiting at most a second): `blocked` counts calls made while a writer could not."""

    def __init__(self, kube: KubeClient, sqlite_path: str | None) -> None:
        self.kube = kube
        self.sqlite_path = sqlite_path
        self.calls = 0
        self.blocked = 0
        self.lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.kube, name)
        if name not in ("apply", "delete", "get", "list_owned"):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            blocked = 0
            if self.sqlite_path is not None:
                connection = sqlite3.connect(self.sqlite_path, timeout=1.0, isolation_level=None)
                try:
                    connection.execute("BEGIN IMMEDIATE")
                    connection.execute("ROLLBACK")
                except sqlite3.OperationalError:
                    blocked = 1
                finally:
                    connection.close()
            with self.lock:
                self.calls += 1
                self.blocked += blocked
            return attr(*args, **kwargs)

        return call


@pytest.fixture
def world(
    cluster: LocalCluster, isolated_engine: tuple[Settings, Engine], tmp_path: Path
) -> Iterator[World]:
    settings, engine = isolated_engine
    kube = KubeClient.from_kubeconfig(cluster.kubeconfig, settings.field_manager)
    world = World(settings, make_sessionmaker(engine, write=True), kube)
    yield world
    for code in world.codes:  # leave nothing behind for the next test
        kube.delete("Namespace", None, namespace_name(code))
        for volume in kube.list_owned("PersistentVolume", project_selector(code)):
            kube.delete("PersistentVolume", None, volume["metadata"]["name"])
    kube.close()


def mutating(kube: KubeClient) -> int:
    return sum(kube.calls[verb] for verb in MUTATING)


def wait_until(check: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for the cluster")
        time.sleep(0.2)


def test_reconcile_new_project_creates_every_object_then_calls_nothing(world: World) -> None:
    project_id = world.project()
    desired = world.desired(project_id)
    now = utcnow()

    world.kube.calls.clear()
    first = world.reconcile(project_id, now)
    provision_calls = sum(world.kube.calls.values())

    assert first.phase is WorkspacePhase.READY
    assert world.kube.calls["PATCH"] == len(desired)
    assert provision_calls <= len(desired) + 2  # PERFORMANCE.md: objects + 2
    for obj in desired:
        kind, namespace, name = object_key(obj)
        assert world.kube.get(kind, namespace or None, name) is not None, (kind, name)
    status = world.status(project_id)
    assert status.phase is WorkspacePhase.READY
    assert len(status.objects) == len(desired)

    world.kube.calls.clear()
    second = world.reconcile(project_id, now + timedelta(seconds=1))

    assert second.phase is WorkspacePhase.READY
    assert sum(world.kube.calls.values()) == 0  # unchanged and no resync due: no call at all

    world.kube.calls.clear()
    resync = world.reconcile(
        project_id, now + timedelta(seconds=world.settings.reconcile_interval_seconds + 1)
    )

    assert resync.phase is WorkspacePhase.READY
    assert mutating(world.kube) == 0  # P2: reads only
    assert world.audit("workspace_drift_repaired", world.code(project_id)) == []


def test_resync_restores_deleted_network_policy_and_relaxed_pod_security(
    world: World, cluster: LocalCluster
) -> None:
    project_id = world.project()
    now = utcnow()
    world.reconcile(project_id, now)
    code = world.code(project_id)
    policies = world.kube.list_owned("NetworkPolicy", project_selector(code), namespace_name(code))
    victim = policies[0]["metadata"]["name"]
    world.kube.delete("NetworkPolicy", namespace_name(code), victim)
    someone = KubeClient.from_kubeconfig(cluster.kubeconfig, "kubectl-edit")
    someone.apply(
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": namespace_name(code), "labels": {PSA_ENFORCE: "privileged"}},
        }
    )
    someone.close()

    world.kube.calls.clear()
    result = world.reconcile(
        project_id, now + timedelta(seconds=world.settings.reconcile_interval_seconds + 1)
    )

    assert result.phase is WorkspacePhase.READY
    assert world.kube.get("NetworkPolicy", namespace_name(code), victim) is not None
    live = world.kube.get("Namespace", None, namespace_name(code))
    assert live is not None
    assert live["metadata"]["labels"][PSA_ENFORCE] == "restricted"
    assert world.kube.calls["PATCH"] == 2
    [event] = world.audit("workspace_drift_repaired", code)
    assert sorted(event.details["repaired"]) == sorted(
        [f"Namespace/{namespace_name(code)}", f"NetworkPolicy/{namespace_name(code)}/{victim}"]
    )


def test_revoked_grant_prunes_its_volume_and_claim(world: World) -> None:
    project_id = world.project(datasets=2)
    now = utcnow()
    world.reconcile(project_id, now)
    before = {object_key(obj) for obj in world.desired(project_id)}
    with session_scope(world.factory) as session:
        grant = session.scalars(
            select(Grant).where(Grant.project_id == project_id).order_by(Grant.id)
        ).first()
        assert grant is not None
        grant.revoked_at = now
    gone = before - {object_key(obj) for obj in world.desired(project_id)}
    assert {kind for kind, _, _ in gone} == {"PersistentVolume", "PersistentVolumeClaim"}

    world.kube.calls.clear()
    result = world.reconcile(project_id, now + timedelta(seconds=1))

    assert result.phase is WorkspacePhase.READY
    assert world.kube.calls["DELETE"] == 2
    for kind, namespace, name in gone:
        wait_until(lambda k=kind, ns=namespace, n=name: world.kube.get(k, ns or None, n) is None)
    assert len(world.status(project_id).objects) == len(before) - 2


def test_expiry_tears_down_and_reports_torn_down_only_after_404(world: World) -> None:
    project_id = world.project()
    code = world.code(project_id)
    now = utcnow()
    world.reconcile(project_id, now)
    world.set_state(project_id, ProjectState.EXPIRED)

    first = world.reconcile(project_id, now + timedelta(seconds=1))

    assert first.phase in (WorkspacePhase.PROGRESSING, WorkspacePhase.BLOCKED)
    assert "terminating" in first.reason
    tick = now + timedelta(seconds=1)
    result = first
    deadline = time.monotonic() + 60
    while result.phase is not WorkspacePhase.TORN_DOWN:
        assert time.monotonic() < deadline, result
        time.sleep(0.5)
        tick += timedelta(seconds=3)
        result = world.reconcile(project_id, tick)
        if result.phase is WorkspacePhase.TORN_DOWN:
            # Never claimed while it exists: the namespace and the project's volumes are gone.
            assert world.kube.get("Namespace", None, namespace_name(code)) is None
            assert world.kube.list_owned("PersistentVolume", project_selector(code)) == []
    assert len(world.audit("workspace_torn_down", code)) == 1

    world.kube.calls.clear()
    world.reconcile(project_id, tick + timedelta(days=1))

    assert sum(world.kube.calls.values()) == 0  # torn down stays torn down: no calls


def test_unreachable_api_server_backs_off_and_recovers(world: World, cluster: LocalCluster) -> None:
    project_id = world.project()
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    config = yaml.safe_load(cluster.kubeconfig.read_text())
    for entry in config["clusters"]:
        entry["cluster"]["server"] = f"https://127.0.0.1:{closed}"
    broken_path = Path(world.settings.data_dir) / "broken.kubeconfig"
    broken_path.parent.mkdir(parents=True, exist_ok=True)
    broken_path.write_text(yaml.safe_dump(config))
    broken = KubeClient.from_kubeconfig(broken_path, world.settings.field_manager)
    now = utcnow()

    first = world.reconcile(project_id, now, kube=broken)

    status = world.status(project_id)
    assert first.phase is not WorkspacePhase.READY
    assert status.phase is not WorkspacePhase.READY
    assert status.attempts == 1
    assert status.next_attempt_at == now + timedelta(seconds=1)
    assert "retrying" in status.reason

    broken.calls.clear()
    world.reconcile(project_id, now + timedelta(milliseconds=500), kube=broken)
    assert sum(broken.calls.values()) == 0  # still backing off: no call

    world.reconcile(project_id, now + timedelta(seconds=1), kube=broken)
    status = world.status(project_id)
    assert status.attempts == 2
    assert status.next_attempt_at == now + timedelta(seconds=3)
    broken.close()

    recovered = world.reconcile(project_id, now + timedelta(seconds=3))

    assert recovered.phase is WorkspacePhase.READY
    assert world.status(project_id).attempts == 0


def test_reconcile_all_converges_every_due_project(world: World) -> None:
    active = [world.project(), world.project()]
    draft = world.project(state=ProjectState.SUBMITTED)
    now = utcnow()

    summary = reconcile_all(world.factory, world.kube, world.settings, now)

    assert summary.errors == {}
    assert {summary.phases[world.code(p)] for p in active} == {WorkspacePhase.READY}
    assert world.code(draft) not in summary.phases
    world.kube.calls.clear()

    again = reconcile_all(world.factory, world.kube, world.settings, now + timedelta(seconds=5))

    assert {again.phases[world.code(p)] for p in active} == {WorkspacePhase.READY}
    assert sum(world.kube.calls.values()) == 0


def test_concurrent_pass_holds_no_write_lock_across_api_calls(world: World) -> None:
    # Regression: each project's pass held a write transaction (BEGIN IMMEDIATE on SQLite)
    # across its Kubernetes calls, so the pool's threads queued on the lock and failed after the
    # busy timeout with "database is locked", which escaped and aborted the whole pass.
    assert world.settings.reconcile_concurrency == 4
    active = [world.project() for _ in range(8)]
    url = world.factory.kw["bind"].url
    probe = WriteLockProbe(world.kube, url.database if url.get_backend_name() == "sqlite" else None)

    summary = reconcile_all(world.factory, cast(KubeClient, probe), world.settings, utcnow())

    assert summary.errors == {}
    assert probe.calls > 0
    assert probe.blocked == 0  # a writer got the lock during every Kubernetes call
    assert {summary.phases[world.code(p)] for p in active} == {WorkspacePhase.READY}
    assert {world.status(p).phase for p in active} == {WorkspacePhase.READY}


def test_stuck_namespace_is_blocked_with_the_reason_and_never_claimed_gone(
    world: World, kube: client.ApiClient
) -> None:
    project_id = world.project()
    code = world.code(project_id)
    namespace = namespace_name(code)
    now = utcnow()
    world.reconcile(project_id, now)
    core = client.CoreV1Api(kube)
    core.create_namespaced_config_map(
        namespace,
        client.V1ConfigMap(metadata=client.V1ObjectMeta(name="held", finalizers=[HOLD])),
    )
    world.set_state(project_id, ProjectState.EXPIRED)
    world.reconcile(project_id, now + timedelta(seconds=1))

    def finalizers_reported() -> bool:
        live = world.kube.get("Namespace", None, namespace) or {}
        conditions = live.get("status", {}).get("conditions") or []
        return any(
            c["type"] == "NamespaceFinalizersRemaining" and c["status"] == "True"
            for c in conditions
        )

    wait_until(finalizers_reported)
    stuck = world.reconcile(project_id, utcnow() + timedelta(minutes=5))

    assert stuck.phase is WorkspacePhase.BLOCKED
    assert HOLD in stuck.reason
    assert world.kube.get("Namespace", None, namespace) is not None

    core.patch_namespaced_config_map("held", namespace, {"metadata": {"finalizers": None}})
    deadline = time.monotonic() + 60
    tick = utcnow() + timedelta(minutes=10)
    result = stuck
    while result.phase is not WorkspacePhase.TORN_DOWN:
        assert time.monotonic() < deadline, result
        time.sleep(0.5)
        tick += timedelta(minutes=5)
        result = world.reconcile(project_id, tick)
    assert world.kube.get("Namespace", None, namespace) is None


def test_unknown_compute_size_is_blocked_without_calling_the_cluster(world: World) -> None:
    project_id = world.project()
    with session_scope(world.factory) as session:
        project = session.get(Project, project_id)
        assert project is not None
        project.compute_size = "enormous"
    now = utcnow()

    world.kube.calls.clear()
    first = world.reconcile(project_id, now)
    again = world.reconcile(project_id, now + timedelta(seconds=5))

    assert first.phase is WorkspacePhase.BLOCKED
    assert "compute size" in first.reason
    assert again.phase is WorkspacePhase.BLOCKED
    assert sum(world.kube.calls.values()) == 0


def test_kluis_reconcile_once_provisions_active_projects(
    world: World, cluster: LocalCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    project_id = world.project()
    code = world.code(project_id)
    for name in [n for n in os.environ if n.startswith("KLUIS_")]:
        monkeypatch.delenv(name)
    env = {
        "KLUIS_ENVIRONMENT": "test",
        "KLUIS_DATA_DIR": str(world.settings.data_dir),
        "KLUIS_KUBECONFIG": str(cluster.kubeconfig),
        "KLUIS_LOG_LEVEL": "WARNING",
    }
    if world.settings.database_url:
        env["KLUIS_DATABASE_URL"] = world.settings.database_url

    result = CliRunner().invoke(app, ["reconcile", "--once"], env=env)

    assert result.exit_code == 0, result.output
    assert "ready: 1" in result.output
    assert world.kube.get("Namespace", None, namespace_name(code)) is not None
    assert world.status(project_id).phase is WorkspacePhase.READY
