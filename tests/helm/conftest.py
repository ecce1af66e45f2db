"""Fixtures for the Helm chart's tests."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from orchestrator.devcluster.build import ensure_built
from orchestrator.devcluster.cluster import LocalCluster


@pytest.fixture(scope="session")
def helm() -> Path:
    """The helm binary built by orchestrator/devcluster/build.py (built on first use)."""
    return ensure_built() / "helm"


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """The control plane to install into (KLUIS_TEST_CLUSTER_DIR reuses a running one).

    The same recipe as tests/cluster's fixture, which is not visible from here. So that one test
    run starts one control plane, the one tests/cluster's fixture started in this session's
    temporary folder (`cluster0`) is reused when it is up; its owner stops it at the end."""
    reuse = os.environ.get("KLUIS_TEST_CLUSTER_DIR")
    if reuse:
        existing = LocalCluster(Path(reuse))
        if any(state != "healthy" for state in existing.status().values()):
            pytest.fail(f"KLUIS_TEST_CLUSTER_DIR={reuse} is not a healthy cluster")
        yield existing
        return
    sibling = LocalCluster(tmp_path_factory.getbasetemp() / "cluster0")
    if sibling.state_file.exists() and all(
        state == "healthy" for state in sibling.status().values()
    ):
        yield sibling
        return
    local = LocalCluster(tmp_path_factory.mktemp("helm-cluster"), tie_to_parent=True)
    local.up()
    try:
        yield local
    finally:
        local.down()


@pytest.fixture(scope="session")
def kube(cluster: LocalCluster) -> client.ApiClient:
    return config.new_client_from_config(config_file=str(cluster.kubeconfig))


@pytest.fixture
def restricted_namespace(kube: client.ApiClient) -> Iterator[str]:
    """A fresh namespace with Pod Security "restricted" enforced; deleted afterwards."""
    core = client.CoreV1Api(kube)
    name = f"h-{uuid.uuid4().hex[:10]}"
    labels = {"kluis.io/test": "true"}
    for mode in ("enforce", "audit", "warn"):
        labels[f"pod-security.kubernetes.io/{mode}"] = "restricted"
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
