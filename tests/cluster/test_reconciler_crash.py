"""A crash right after every single mutating call of provisioning and of teardown: the call took
effect on the server, the process died before recording anything. A restarted reconciler (a
fresh client and session) converges to exactly the desired objects — nothing missing, no
orphans — or to `torn_down` with nothing labelled left."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
from project_factories import utcnow
from sqlalchemy import Engine

from cluster.reconciler_support import Projects, live_keys
from orchestrator.config import Settings
from orchestrator.db import make_sessionmaker
from orchestrator.devcluster.cluster import LocalCluster
from orchestrator.kube import KubeClient
from orchestrator.models import ProjectState, WorkspacePhase

pytestmark = [pytest.mark.cluster, pytest.mark.slow]


class Crash(Exception):
    """The process died: raised after the server accepted the call."""


class CrashingKube(KubeClient):
    """A client whose `crash_at`-th mutating call succeeds on the server, then crashes."""

    crash_at = 0
    mutations = 0
    crashed = False

    def _mutated(self, what: str) -> None:
        with self._lock:  # applies of one wave run in parallel
            self.mutations += 1
            if self.mutations == self.crash_at:
                self.crashed = True
                raise Crash(f"crash after mutation {self.mutations}: {what}")

    def _alive(self) -> None:
        if self.crashed:  # a dead process sends nothing more (calls already in flight land)
            raise Crash("the process is gone")

    def apply(self, obj: Any) -> dict[str, Any]:
        self._alive()
        result = super().apply(obj)
        self._mutated(f"apply {obj['kind']}/{obj['metadata']['name']}")
        return result

    def delete(self, kind: str, namespace: str | None, name: str) -> None:
        self._alive()
        super().delete(kind, namespace, name)
        self._mutated(f"delete {kind}/{name}")


@pytest.fixture
def env(
    cluster: LocalCluster, isolated_engine: tuple[Settings, Engine]
) -> Iterator[tuple[Projects, LocalCluster]]:
    settings, engine = isolated_engine
    projects = Projects(settings, make_sessionmaker(engine, write=True))
    yield projects, cluster
    admin = KubeClient.from_kubeconfig(cluster.kubeconfig, settings.field_manager)
    projects.clean_up(admin)
    admin.close()


def _crashing(cluster: LocalCluster, settings: Settings, crash_at: int) -> CrashingKube:
    kube = CrashingKube.from_kubeconfig(cluster.kubeconfig, settings.field_manager)
    assert isinstance(kube, CrashingKube)
    kube.crash_at = crash_at
    return kube


def test_crash_after_every_provisioning_call_converges_to_exactly_the_workspace(
    env: tuple[Projects, LocalCluster],
) -> None:
    projects, cluster = env
    settings = projects.settings
    probe = projects.project()
    steps = len(projects.desired_keys(probe))  # one server-side apply per object
    ids = [probe] + [projects.project() for _ in range(steps - 1)]
    now = utcnow()

    for crash_at, project_id in enumerate(ids, start=1):
        crashing = _crashing(cluster, settings, crash_at)
        with pytest.raises(Crash):
            projects.reconcile(project_id, crashing, now)
        # Calls of the same wave already in flight when it died may have landed too.
        assert crashing.mutations >= crash_at
        crashing.close()

        restarted = KubeClient.from_kubeconfig(cluster.kubeconfig, settings.field_manager)
        result = projects.reconcile(project_id, restarted, now + timedelta(seconds=1))

        code = projects.code(project_id)
        assert result.phase is WorkspacePhase.READY, (crash_at, result.reason)
        assert live_keys(restarted, code) == projects.desired_keys(project_id), crash_at
        assert projects.status(project_id).phase is WorkspacePhase.READY
        restarted.close()


def _teardown_steps(projects: Projects, project_id: int) -> int:
    # One namespace DELETE, then one DELETE per project volume (the claims go with the namespace).
    volumes = [k for k in projects.desired_keys(project_id) if k[0] == "PersistentVolume"]
    return 1 + len(volumes)


def test_crash_after_every_teardown_call_converges_to_torn_down(
    env: tuple[Projects, LocalCluster],
) -> None:
    projects, cluster = env
    settings = projects.settings
    probe = projects.project()
    steps = _teardown_steps(projects, probe)
    ids = [probe] + [projects.project() for _ in range(steps - 1)]
    admin = KubeClient.from_kubeconfig(cluster.kubeconfig, settings.field_manager)
    start = utcnow()
    for project_id in ids:
        assert projects.reconcile(project_id, admin, start).phase is WorkspacePhase.READY
        projects.set_state(project_id, ProjectState.EXPIRED)

    clock = [start]

    def tick() -> datetime:
        clock[0] += timedelta(seconds=3)
        return clock[0]

    # Each project's reconciler crashes after its N-th DELETE; passes repeat (all projects in
    # turn, so their namespaces terminate side by side) until every one has crashed.
    deadline = time.monotonic() + 150
    crashing = {p: _crashing(cluster, settings, n) for n, p in enumerate(ids, start=1)}
    while crashing:
        assert time.monotonic() < deadline, sorted(crashing)
        now = tick()
        for project_id, kube in list(crashing.items()):
            try:
                result = projects.reconcile(project_id, kube, now)
            except Crash:
                kube.close()
                del crashing[project_id]
            else:
                assert result.phase is not WorkspacePhase.TORN_DOWN, kube.crash_at
        time.sleep(0.3)

    # A restart converges every project to torn_down, with nothing of theirs left.
    restarted = KubeClient.from_kubeconfig(cluster.kubeconfig, settings.field_manager)
    pending = set(ids)
    while pending:
        assert time.monotonic() < deadline, pending
        now = tick()
        for project_id in sorted(pending):
            if projects.reconcile(project_id, restarted, now).phase is WorkspacePhase.TORN_DOWN:
                pending.discard(project_id)
        time.sleep(0.3)
    for project_id in ids:
        assert live_keys(restarted, projects.code(project_id), terminating=True) == set()
        assert projects.status(project_id).objects == []
    restarted.close()
    admin.close()
