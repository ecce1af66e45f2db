"""The end of a project's life against the real control plane and a real database (both
backends): frozen and expired projects run no workspace server, an archived project's storage
becomes one verified archive, a deleted project's archive goes and a deletion certificate stays,
and an API server outage in the middle of teardown never yields a false `torn_down`."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from project_factories import utcnow
from sqlalchemy import Engine, select

from cluster.reconciler_support import Projects, live_keys
from cluster.test_manifests_admitted import quota_ready, workspace_pod
from orchestrator import archive
from orchestrator.config import Settings
from orchestrator.db import make_sessionmaker, session_scope
from orchestrator.devcluster.cluster import LocalCluster, Ports
from orchestrator.kube import KubeClient
from orchestrator.models import (
    AuditEvent,
    DeletionCertificate,
    Project,
    ProjectArchive,
    ProjectState,
    WorkspacePhase,
)
from orchestrator.names import namespace_name, project_selector
from orchestrator.reconciler import ReconcileResult, due_project_ids, reconcile_all

pytestmark = pytest.mark.cluster

MUTATING = ("PATCH", "POST", "PUT", "DELETE")


class Env:
    def __init__(self, projects: Projects, kube: KubeClient, api: client.ApiClient) -> None:
        self.projects = projects
        self.kube = kube
        self.core = client.CoreV1Api(api)
        self.clock = utcnow()

    def tick(self, seconds: float = 3.0) -> datetime:
        self.clock += timedelta(seconds=seconds)
        return self.clock

    def reconcile(self, project_id: int, kube: KubeClient | None = None) -> ReconcileResult:
        return self.projects.reconcile(project_id, kube or self.kube, self.tick())

    def settle(self, project_id: int, until: WorkspacePhase, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        result = self.reconcile(project_id)
        while result.phase is not until:
            assert time.monotonic() < deadline, result
            time.sleep(0.3)
            result = self.reconcile(project_id)

    def move(self, project_id: int, state: ProjectState) -> None:
        """The state change as `projects.transition` stamps it."""
        with session_scope(self.projects.factory) as session:
            project = session.get(Project, project_id)
            assert project is not None
            project.state = state
            project.state_changed_at = utcnow()
            if state is ProjectState.ARCHIVED:
                project.archived_at = utcnow()
            if state is ProjectState.DELETED:
                project.deleted_at = utcnow()

    def folder(self, project_id: int) -> Path:
        settings = self.projects.settings
        return settings.effective_project_storage_root / self.projects.code(project_id)

    def audits(self, action: str, project_id: int) -> list[AuditEvent]:
        code = self.projects.code(project_id)
        with self.projects.factory() as session:
            return list(
                session.scalars(
                    select(AuditEvent).where(
                        AuditEvent.action == action, AuditEvent.object_id == code
                    )
                )
            )

    def rows(self, model: Any, project_id: int) -> list[Any]:
        with self.projects.factory() as session:
            found = list(session.scalars(select(model).where(model.project_id == project_id)))
            for row in found:
                session.expunge(row)
            return found

    def server_pod(self, project_id: int, name: str = "server") -> None:
        namespace = namespace_name(self.projects.code(project_id))
        wait_until(lambda: quota_ready(self.core, namespace))
        self.core.create_namespaced_pod(namespace, workspace_pod(name))

    def pods(self, project_id: int) -> list[str]:
        namespace = namespace_name(self.projects.code(project_id))
        items = self.core.list_namespaced_pod(namespace).items
        return [str(p.metadata.name) for p in items if p.metadata]


def wait_until(check: Any, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out waiting for the cluster"
        time.sleep(0.2)


def mutating(kube: KubeClient) -> int:
    return sum(kube.calls[verb] for verb in MUTATING)


@pytest.fixture
def env(
    cluster: LocalCluster, kube: client.ApiClient, isolated_engine: tuple[Settings, Engine]
) -> Iterator[Env]:
    settings, engine = isolated_engine
    projects = Projects(settings, make_sessionmaker(engine, write=True))
    reconciler = KubeClient.from_kubeconfig(cluster.kubeconfig, settings.field_manager)
    yield Env(projects, reconciler, kube)
    cluster.start_apiserver()  # in case a test stopped it and failed
    projects.clean_up(reconciler)
    reconciler.close()


def fill(folder: Path) -> dict[str, bytes]:
    files = {
        "workspace/model.R": b"lm(y ~ x)\n",
        "export/table.csv": b"n\n12\n",
        "workspace/blob.bin": bytes(range(256)) * 4096,
    }
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return files


# --- frozen and expired: no servers --------------------------------------------------------------


def test_freeze_stops_server_pods_and_the_quota_refuses_new_ones(env: Env) -> None:
    project_id = env.projects.project()
    assert env.reconcile(project_id).phase is WorkspacePhase.READY
    env.server_pod(project_id)
    assert env.pods(project_id) == ["server"]

    env.move(project_id, ProjectState.FROZEN)
    frozen = env.reconcile(project_id)

    assert frozen.phase is WorkspacePhase.READY
    wait_until(lambda: env.pods(project_id) == [])
    [stopped] = env.audits("workspace_servers_stopped", project_id)
    assert stopped.details == {"pods": ["server"], "why": "frozen"}
    namespace = namespace_name(env.projects.code(project_id))

    def pods_quota_zero() -> bool:
        quotas = env.core.list_namespaced_resource_quota(namespace).items
        return all(q.status and (q.status.hard or {}).get("pods") == "0" for q in quotas)

    wait_until(pods_quota_zero)
    with pytest.raises(ApiException) as refused:
        env.core.create_namespaced_pod(namespace, workspace_pod("server-again"))
    assert refused.value.status == 403
    assert "exceeded quota" in str(refused.value.body)

    # Once the servers are gone, a frozen workspace is ready without a reason, and stays so.
    env.kube.calls.clear()
    settled = env.reconcile(project_id)
    assert settled.phase is WorkspacePhase.READY
    assert env.projects.status(project_id).reason == ""
    assert env.kube.calls["DELETE"] == 0


def test_expiry_stops_server_pods_before_deleting_the_namespace(env: Env) -> None:
    project_id = env.projects.project()
    env.reconcile(project_id)
    env.server_pod(project_id)

    env.move(project_id, ProjectState.EXPIRED)
    first = env.reconcile(project_id)

    assert first.phase is WorkspacePhase.PROGRESSING
    [stopped] = env.audits("workspace_servers_stopped", project_id)
    assert stopped.details == {"pods": ["server"], "why": "expired"}
    env.settle(project_id, WorkspacePhase.TORN_DOWN)


# --- archive and deletion ----------------------------------------------------------------------


def test_archive_then_delete_leaves_a_verified_archive_then_a_certificate(env: Env) -> None:
    settings = env.projects.settings
    project_id = env.projects.project()
    code = env.projects.code(project_id)
    env.reconcile(project_id)
    files = fill(env.folder(project_id))
    env.move(project_id, ProjectState.EXPIRED)
    env.settle(project_id, WorkspacePhase.TORN_DOWN)
    assert env.folder(project_id).is_dir()  # expiry keeps the data
    assert env.rows(ProjectArchive, project_id) == []

    env.move(project_id, ProjectState.ARCHIVED)
    with env.projects.factory() as session:
        assert project_id in due_project_ids(session)  # a full pass finds it, not only wake-ups
    archived = env.reconcile(project_id)

    assert archived.phase is WorkspacePhase.TORN_DOWN
    [row] = env.rows(ProjectArchive, project_id)
    tar_path, manifest_path = archive.archive_paths(settings.effective_archive_root, code)
    assert row.path == str(tar_path)
    assert row.file_count == len(files)
    assert row.content_bytes == sum(len(data) for data in files.values())
    verified = archive.verify_archive(tar_path, manifest_path)
    assert (verified.sha256, verified.size_bytes) == (row.sha256, row.size_bytes)
    assert not env.folder(project_id).exists()
    [created] = env.audits("project_archive_created", project_id)
    assert created.details["sha256"] == row.sha256
    with env.projects.factory() as session:
        assert project_id not in due_project_ids(session)

    env.kube.calls.clear()
    again = env.reconcile(project_id)
    assert again.phase is WorkspacePhase.TORN_DOWN
    assert sum(env.kube.calls.values()) == 0  # done is done: no call, nothing repacked
    assert len(env.rows(ProjectArchive, project_id)) == 1

    env.move(project_id, ProjectState.DELETED)
    deleted = env.reconcile(project_id)

    assert deleted.phase is WorkspacePhase.TORN_DOWN
    assert not tar_path.exists()
    assert not manifest_path.exists()
    [row] = env.rows(ProjectArchive, project_id)
    assert row.removed_at is not None
    [certificate] = env.rows(DeletionCertificate, project_id)
    assert certificate.project_code == code
    assert certificate.issued_by.startswith("reconciler ")
    assert certificate.policy["retention_years"] == settings.project_retention_years
    assert certificate.removed["archive"]["sha256"] == row.sha256
    assert certificate.removed["archive"]["file_count"] == len(files)
    assert {p["path"] for p in certificate.removed["paths"]} == {str(tar_path), str(manifest_path)}
    body = {
        "project_code": certificate.project_code,
        "project_id": certificate.project_id,
        "issued_at": certificate.issued_at.isoformat(),
        "issued_by": certificate.issued_by,
        "policy": certificate.policy,
        "removed": certificate.removed,
    }
    assert archive.certificate_digest(body) == certificate.sha256
    [issued] = env.audits("project_deletion_certificate_issued", project_id)
    assert issued.details["sha256"] == certificate.sha256
    assert issued.details["archive_sha256"] == row.sha256

    env.kube.calls.clear()
    env.reconcile(project_id)
    assert sum(env.kube.calls.values()) == 0
    assert len(env.rows(DeletionCertificate, project_id)) == 1


def test_archive_area_failure_retries_and_keeps_the_live_folder(env: Env) -> None:
    settings = env.projects.settings
    project_id = env.projects.project()
    env.reconcile(project_id)
    fill(env.folder(project_id))
    env.move(project_id, ProjectState.EXPIRED)
    env.settle(project_id, WorkspacePhase.TORN_DOWN)
    area = settings.effective_archive_root
    area.parent.mkdir(parents=True, exist_ok=True)
    area.write_text("a file where the archive folder should be")  # like an unmounted volume

    env.move(project_id, ProjectState.ARCHIVED)
    failed = env.reconcile(project_id)

    status = env.projects.status(project_id)
    assert status.attempts == 1
    assert "retrying" in failed.reason
    assert env.rows(ProjectArchive, project_id) == []
    assert env.folder(project_id).is_dir()

    area.unlink()
    env.tick(5)
    recovered = env.reconcile(project_id)

    assert recovered.phase is WorkspacePhase.TORN_DOWN
    assert env.projects.status(project_id).attempts == 0
    assert len(env.rows(ProjectArchive, project_id)) == 1
    assert not env.folder(project_id).exists()


# --- an API server outage in the middle of teardown ---------------------------------------------


def test_apiserver_outage_mid_teardown_stays_honest_and_converges(
    env: Env, cluster: LocalCluster
) -> None:
    project_id = env.projects.project()
    code = env.projects.code(project_id)
    env.reconcile(project_id)
    fill(env.folder(project_id))
    env.move(project_id, ProjectState.ARCHIVED)  # teardown, then the archive
    started = env.reconcile(project_id)  # the namespace DELETE is sent
    assert started.phase is WorkspacePhase.PROGRESSING

    cluster.stop_apiserver()
    try:
        phases = []
        for _ in range(3):
            result = env.reconcile(project_id)
            env.tick(600)  # past any backoff
            phases.append(result.phase)
            status = env.projects.status(project_id)
            assert status.phase is not WorkspacePhase.TORN_DOWN
            assert "retrying" in status.reason
        assert env.projects.status(project_id).attempts == 3
        assert set(phases) == {WorkspacePhase.PROGRESSING}
        assert env.rows(ProjectArchive, project_id) == []  # not archived while it may run
        assert env.folder(project_id).is_dir()
    finally:
        cluster.start_apiserver()

    env.settle(project_id, WorkspacePhase.TORN_DOWN)

    assert env.kube.get("Namespace", None, namespace_name(code)) is None
    assert env.kube.list_owned("PersistentVolume", project_selector(code)) == []
    assert live_keys(env.kube, code, terminating=True) == set()
    assert env.projects.status(project_id).attempts == 0
    assert len(env.rows(ProjectArchive, project_id)) == 1
    assert not env.folder(project_id).exists()
    assert len(env.audits("workspace_torn_down", project_id)) == 1


# --- a crash between the file work and the database commit -------------------------------------


def test_crash_after_the_file_work_converges_to_one_record_each(env: Env) -> None:
    settings = env.projects.settings
    project_id = env.projects.project(state=ProjectState.ARCHIVED)
    code = env.projects.code(project_id)
    (env.folder(project_id) / "workspace").mkdir(parents=True)
    files = fill_workspace(env.folder(project_id))
    storage, area = settings.effective_project_storage_root, settings.effective_archive_root
    # A pass packed, verified and removed the folder, then died before its commit.
    crashed = archive.settle_archived(storage, area, code, utcnow())

    recovered = env.reconcile(project_id)

    assert recovered.phase is WorkspacePhase.TORN_DOWN
    [row] = env.rows(ProjectArchive, project_id)
    assert (row.sha256, row.file_count) == (crashed.sha256, len(files))
    assert len(env.audits("project_archive_created", project_id)) == 1

    env.move(project_id, ProjectState.DELETED)
    # A pass removed the archive, then died before the certificate was stored.
    archive.remove_project_data(storage, area, code)

    deleted = env.reconcile(project_id)

    assert deleted.phase is WorkspacePhase.TORN_DOWN
    [certificate] = env.rows(DeletionCertificate, project_id)
    assert certificate.removed["archive"]["sha256"] == crashed.sha256
    assert {p["path"] for p in certificate.removed["paths"]} == {
        crashed.path,
        crashed.manifest_path,
    }
    assert len(env.audits("project_deletion_certificate_issued", project_id)) == 1


def fill_workspace(folder: Path) -> dict[str, bytes]:
    for area in ("export",):
        (folder / area).mkdir(parents=True, exist_ok=True)
    return fill(folder)


def test_reconcile_all_archives_and_certifies_through_its_short_transactions(env: Env) -> None:
    settings = env.projects.settings
    project_id = env.projects.project(state=ProjectState.ARCHIVED)
    (env.folder(project_id) / "workspace").mkdir(parents=True)
    fill_workspace(env.folder(project_id))

    first = reconcile_all(env.projects.factory, env.kube, settings, env.tick())

    code = env.projects.code(project_id)
    assert first.errors == {}
    assert first.phases[code] is WorkspacePhase.TORN_DOWN
    assert len(env.rows(ProjectArchive, project_id)) == 1
    assert not env.folder(project_id).exists()

    env.move(project_id, ProjectState.DELETED)
    second = reconcile_all(env.projects.factory, env.kube, settings, env.tick())

    assert second.errors == {}
    assert len(env.rows(DeletionCertificate, project_id)) == 1
    env.kube.calls.clear()
    third = reconcile_all(env.projects.factory, env.kube, settings, env.tick())
    assert code not in third.phases  # done: not even due any more
    assert sum(env.kube.calls.values()) == 0


def test_local_cluster_extra_apiserver_flags_come_last(tmp_path: Path) -> None:
    flags = ("--max-requests-inflight=0", "--enable-priority-and-fairness=false")
    local = LocalCluster(tmp_path / "c", apiserver_flags=flags)

    args = local._apiserver_args(tmp_path, Ports())

    assert tuple(args[-2:]) == flags  # after the defaults: a repeated flag's last value wins
    assert args[0].endswith("kube-apiserver")
