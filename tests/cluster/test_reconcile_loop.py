"""The reconciler loop against the real control plane and a real database: a change in the
database reaches the cluster within seconds (no waiting for the full pass), an unchanged project
costs nothing, and /metrics, /healthz and /readyz answer."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from project_factories import make_dataset_version, make_project, make_researcher, utcnow
from sqlalchemy import Engine, select

from orchestrator.config import Settings
from orchestrator.db import make_sessionmaker, session_scope
from orchestrator.devcluster.cluster import LocalCluster
from orchestrator.kube import KubeClient
from orchestrator.models import Grant, ProjectState, WorkspacePhase, WorkspaceStatus
from orchestrator.names import namespace_name, project_selector
from orchestrator.reconcile_commands import running_reconciler
from orchestrator.reconcile_loop import ReconcileLoop

pytestmark = pytest.mark.cluster

MUTATING = ("PATCH", "POST", "PUT", "DELETE")


@pytest.fixture
def loop_settings(
    cluster: LocalCluster, isolated_engine: tuple[Settings, Engine], namespace: str
) -> Settings:
    settings, _ = isolated_engine
    return settings.model_copy(
        update={
            "kubeconfig": cluster.kubeconfig,
            "reconcile_poll_seconds": 0.2,
            "leader_election_namespace": namespace,
            "leader_election_lease_seconds": 2,
            "leader_election_renew_seconds": 0.5,
            "reconcile_metrics_port": 0,
        }
    )


@pytest.fixture
def checker(cluster: LocalCluster) -> Iterator[KubeClient]:
    client = KubeClient.from_kubeconfig(cluster.kubeconfig, "kluis-test")
    yield client
    client.close()


def wait_for(check: Any, timeout: float = 15.0) -> float:
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout:
            raise AssertionError("timed out")
        time.sleep(0.1)
    return time.monotonic() - started


def fetch(port: int | None, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def sample(metrics: str, name: str) -> float:
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith(name) and not line.startswith("#")
    )


def mutating(kube: KubeClient) -> int:
    return sum(kube.calls[verb] for verb in MUTATING)


def test_reconcile_loop_change_reaches_the_cluster_within_seconds(
    loop_settings: Settings, isolated_engine: tuple[Settings, Engine], checker: KubeClient
) -> None:
    factory = make_sessionmaker(isolated_engine[1], write=True)
    # A full pass only every hour: whatever happens below comes from the wake-ups.
    with running_reconciler(loop_settings, 3600.0, quiet=True) as loop:
        wait_for(lambda: loop.leading and loop.passes >= 1, timeout=10)
        with session_scope(factory) as session:
            versions = [make_dataset_version(session) for _ in range(2)]
            project = make_project(
                session,
                state=ProjectState.ACTIVE,
                members=[make_researcher(session)],
                versions=versions,
            )
            session.flush()
            code, project_id = project.code, project.id
        try:
            namespace = namespace_name(code)
            seconds = wait_for(lambda: checker.get("Namespace", None, namespace) is not None)
            assert seconds < 5
            base = loop_settings.effective_project_storage_root / code
            assert (base / "workspace").is_dir()
            assert (base / "import").is_dir()

            def volumes() -> int:
                return len(checker.list_owned("PersistentVolume", project_selector(code)))

            def ready() -> bool:
                with factory() as session:
                    status = session.scalars(
                        select(WorkspaceStatus).where(WorkspaceStatus.project_id == project_id)
                    ).one_or_none()
                    return status is not None and status.phase is WorkspacePhase.READY

            wait_for(ready)
            before = volumes()
            with session_scope(factory) as session:
                grant = session.scalars(select(Grant).where(Grant.project_id == project_id)).first()
                assert grant is not None
                grant.revoked_at = utcnow()
            assert wait_for(lambda: volumes() == before - 1) < 5

            calls = mutating(loop.kube)
            time.sleep(1.5)  # several polls of an unchanged database
            assert mutating(loop.kube) == calls
            _assert_endpoints(loop)
        finally:
            checker.delete("Namespace", None, namespace_name(code))
            for volume in checker.list_owned("PersistentVolume", project_selector(code)):
                checker.delete("PersistentVolume", None, volume["metadata"]["name"])
    assert not loop.leading or loop.elector is None  # the Lease was given up on the way out


def _assert_endpoints(loop: ReconcileLoop) -> None:
    status, metrics = fetch(loop.metrics_port, "/metrics")
    assert status == 200
    assert sample(metrics, 'kluis_kube_api_calls_total{verb="PATCH"}') > 0
    assert sample(metrics, "kluis_reconcile_duration_seconds_count") >= 2
    assert sample(metrics, 'kluis_reconciles_total{phase="ready"}') >= 2
    assert sample(metrics, "kluis_reconciler_leader") == 1
    assert "kluis_reconcile_queue_depth" in metrics
    assert fetch(loop.metrics_port, "/healthz") == (200, "ok\n")
    assert fetch(loop.metrics_port, "/readyz") == (200, "leader\n")
    assert fetch(loop.metrics_port, "/nothing")[0] == 404


def test_reconcile_loop_standby_does_not_reconcile_and_is_ready(
    loop_settings: Settings, tmp_path: Path
) -> None:
    first = loop_settings.model_copy(update={"leader_election_identity": "replica-a"})
    second = loop_settings.model_copy(update={"leader_election_identity": "replica-b"})
    with running_reconciler(first, 3600.0, quiet=True) as leader:
        wait_for(lambda: leader.leading, timeout=10)
        with running_reconciler(second, 3600.0, quiet=True) as standby:
            wait_for(lambda: standby.elector is not None and standby.elector.api_ok_at is not None)
            time.sleep(1.0)
            assert not standby.leading
            assert standby.passes == 0
            assert fetch(standby.metrics_port, "/readyz") == (200, "standby\n")
            _status, metrics = fetch(standby.metrics_port, "/metrics")
            assert sample(metrics, "kluis_reconciler_leader") == 0
        # the leader kept leading throughout
        assert leader.leading
