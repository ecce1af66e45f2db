"""Expiry at the boundary: a project whose end date is today keeps its workspace through the last
instant of that day; at midnight the scheduler expires it and the reconciler tears it down,
reporting `torn_down` only once the namespace answers 404."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, time, timedelta

import pytest
from project_factories import today
from sqlalchemy import Engine

from cluster.reconciler_support import Projects, live_keys, settle
from orchestrator.config import Settings
from orchestrator.db import make_sessionmaker
from orchestrator.devcluster.cluster import LocalCluster
from orchestrator.kube import KubeClient
from orchestrator.models import ProjectState, WorkspacePhase
from orchestrator.names import namespace_name
from orchestrator.reconciler import ReconcileResult
from orchestrator.scheduler import run_schedule, start_of_day

pytestmark = pytest.mark.cluster


@pytest.fixture
def env(
    cluster: LocalCluster, isolated_engine: tuple[Settings, Engine]
) -> Iterator[tuple[Projects, KubeClient]]:
    settings, engine = isolated_engine
    projects = Projects(settings, make_sessionmaker(engine, write=True))
    kube = KubeClient.from_kubeconfig(cluster.kubeconfig, settings.field_manager)
    yield projects, kube
    projects.clean_up(kube)
    kube.close()


def test_workspace_lives_through_the_end_date_and_goes_at_midnight(
    env: tuple[Projects, KubeClient],
) -> None:
    projects, kube = env
    end = today()
    project_id = projects.project(end_date=end)
    code = projects.code(project_id)
    last_instant = datetime.combine(end, time.max, tzinfo=UTC)

    run_schedule(projects.factory, projects.settings, last_instant)
    result = projects.reconcile(project_id, kube, last_instant)

    assert projects.state(project_id) is ProjectState.ACTIVE
    assert result.phase is WorkspacePhase.READY
    assert live_keys(kube, code) == projects.desired_keys(project_id)

    midnight = start_of_day(end + timedelta(days=1))
    assert midnight - last_instant == timedelta(microseconds=1)
    run_schedule(projects.factory, projects.settings, midnight)

    assert projects.state(project_id) is ProjectState.EXPIRED
    first = projects.reconcile(project_id, kube, midnight)
    assert first.phase is not WorkspacePhase.TORN_DOWN  # the namespace is still terminating
    clock = [midnight]

    def step() -> ReconcileResult:
        clock[0] += timedelta(seconds=3)
        result = projects.reconcile(project_id, kube, clock[0])
        if result.phase is WorkspacePhase.TORN_DOWN:
            assert kube.get("Namespace", None, namespace_name(code)) is None
        return result

    settle(step, WorkspacePhase.TORN_DOWN)
    assert live_keys(kube, code, terminating=True) == set()
