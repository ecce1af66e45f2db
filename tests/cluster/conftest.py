"""Fixtures for tests against the real local control plane (one per test session)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from orchestrator.devcluster.cluster import LocalCluster

TEST_LABEL = "kluis.io/test"


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """The control plane, brought up once. Set KLUIS_TEST_CLUSTER_DIR to reuse a running one."""
    reuse = os.environ.get("KLUIS_TEST_CLUSTER_DIR")
    if reuse:
        existing = LocalCluster(Path(reuse))
        if any(state != "healthy" for state in existing.status().values()):
            pytest.fail(
                f"KLUIS_TEST_CLUSTER_DIR={reuse} is not a healthy cluster: {existing.status()}"
            )
        yield existing
        return
    local = LocalCluster(tmp_path_factory.mktemp("cluster"), tie_to_parent=True)
    local.up()
    try:
        yield local
    finally:
        local.down()


@pytest.fixture(scope="session")
def kube(cluster: LocalCluster) -> client.ApiClient:
    return config.new_client_from_config(config_file=str(cluster.kubeconfig))


@pytest.fixture
def namespace(kube: client.ApiClient, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace per test, labelled so leftovers can be found; deleted afterwards."""
    core = client.CoreV1Api(kube)
    name = f"t-{uuid.uuid4().hex[:10]}"
    labels = {TEST_LABEL: "true"}
    marker = request.node.get_closest_marker("pod_security")
    if marker:
        level = marker.args[0]
        for mode in ("enforce", "audit", "warn"):
            labels[f"pod-security.kubernetes.io/{mode}"] = level
            labels[f"pod-security.kubernetes.io/{mode}-version"] = "v1.36"
    core.create_namespace(
        client.V1Namespace(metadata=client.V1ObjectMeta(name=name, labels=labels))
    )
    yield name
    try:
        core.delete_namespace(name)
    except ApiException as exc:
        if exc.status != 404:
            raise
