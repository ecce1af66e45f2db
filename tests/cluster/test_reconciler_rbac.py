"""The reconciler runs under a service account bound to the ClusterRole Kluis ships
(`orchestrator.rbac`), not as cluster admin: it provisions and tears down a workspace with those
rights, the API server says no to everything it was not given, and a role missing one rule
blocks a workspace with the server's 403."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config
from project_factories import utcnow
from sqlalchemy import Engine

from cluster.reconciler_support import (
    Projects,
    live_keys,
    service_account_token,
    settle,
    token_kubeconfig,
)
from orchestrator.config import Settings
from orchestrator.db import make_sessionmaker
from orchestrator.devcluster.cluster import LocalCluster
from orchestrator.kube import KubeClient
from orchestrator.models import ProjectState, WorkspacePhase
from orchestrator.names import namespace_name
from orchestrator.rbac import make_reconciler_cluster_role, make_reconciler_cluster_role_binding

pytestmark = pytest.mark.cluster


@dataclass
class Identity:
    """A service account bound to a ClusterRole, with a client that authenticates as it."""

    user: str
    kubeconfig: Path
    kube: KubeClient


def _apply_cluster_rbac(
    api: client.ApiClient, role: dict[str, Any], binding: dict[str, Any]
) -> None:
    rbac = client.RbacAuthorizationV1Api(api)
    rbac.create_cluster_role(role)
    rbac.create_cluster_role_binding(binding)


def _bound_identity(
    api: client.ApiClient,
    cluster: LocalCluster,
    settings: Settings,
    namespace: str,
    role: dict[str, Any],
    tmp_path: Path,
    created: list[str],
) -> Identity:
    suffix = uuid.uuid4().hex[:8]
    sa = f"reconciler-{suffix}"
    role["metadata"]["name"] = f"kluis-reconciler-test-{suffix}"
    binding = make_reconciler_cluster_role_binding(sa, namespace, role["metadata"]["name"])
    _apply_cluster_rbac(api, role, binding)
    created.append(role["metadata"]["name"])
    token = service_account_token(api, sa, namespace)
    path = token_kubeconfig(cluster.kubeconfig, token, tmp_path / f"{sa}.kubeconfig")
    kube = KubeClient.from_kubeconfig(path, settings.field_manager)
    return Identity(f"system:serviceaccount:{namespace}:{sa}", path, kube)


@pytest.fixture
def setup(
    cluster: LocalCluster,
    kube: client.ApiClient,
    namespace: str,
    isolated_engine: tuple[Settings, Engine],
    tmp_path: Path,
) -> Iterator[tuple[Projects, Any]]:
    settings, engine = isolated_engine
    projects = Projects(settings, make_sessionmaker(engine, write=True))
    created: list[str] = []
    identities: list[Identity] = []

    def identity(role: dict[str, Any] | None = None) -> Identity:
        bound = _bound_identity(
            kube,
            cluster,
            settings,
            namespace,
            role or make_reconciler_cluster_role(),
            tmp_path,
            created,
        )
        identities.append(bound)
        return bound

    yield projects, identity
    admin = KubeClient.from_kubeconfig(cluster.kubeconfig, settings.field_manager)
    projects.clean_up(admin)
    admin.close()
    for bound in identities:
        bound.kube.close()
    rbac = client.RbacAuthorizationV1Api(kube)
    for name in created:
        rbac.delete_cluster_role_binding(name)
        rbac.delete_cluster_role(name)


def _allowed(api: client.ApiClient, user: str, **attributes: str) -> bool:
    review = client.V1SubjectAccessReview(
        spec=client.V1SubjectAccessReviewSpec(
            user=user,
            groups=["system:serviceaccounts", "system:authenticated"],
            resource_attributes=client.V1ResourceAttributes(**attributes),
        )
    )
    answer: Any = client.AuthorizationV1Api(api).create_subject_access_review(review)
    return bool(answer.status.allowed)


def test_shipped_role_provisions_and_tears_down_a_workspace(setup: Any) -> None:
    projects, identity = setup
    reconciler = identity()
    project_id = projects.project()
    code = projects.code(project_id)
    now = utcnow()

    result = projects.reconcile(project_id, reconciler.kube, now)

    assert result.phase is WorkspacePhase.READY, result.reason
    assert live_keys(reconciler.kube, code) == projects.desired_keys(project_id)

    projects.set_state(project_id, ProjectState.EXPIRED)
    tick = [now]

    def step() -> Any:
        tick[0] += timedelta(seconds=5)
        return projects.reconcile(project_id, reconciler.kube, tick[0])

    settle(step, WorkspacePhase.TORN_DOWN)

    assert reconciler.kube.get("Namespace", None, namespace_name(code)) is None
    assert live_keys(reconciler.kube, code, terminating=True) == set()


def test_shipped_role_is_least_privilege(setup: Any, kube: client.ApiClient) -> None:
    projects, identity = setup
    reconciler = identity()
    project_id = projects.project()
    workspace = namespace_name(projects.code(project_id))
    user = reconciler.user

    # What it needs, it has (so the denials below are the role's, not a broken review).
    assert _allowed(kube, user, verb="create", resource="namespaces")
    assert _allowed(
        kube,
        user,
        verb="patch",
        group="networking.k8s.io",
        resource="networkpolicies",
        namespace=workspace,
    )
    denied = [
        {"verb": "get", "resource": "secrets", "namespace": workspace},
        {"verb": "list", "resource": "secrets", "namespace": workspace},
        {"verb": "list", "resource": "secrets"},
        {"verb": "create", "resource": "pods", "subresource": "exec", "namespace": workspace},
        {"verb": "get", "resource": "pods", "subresource": "exec", "namespace": workspace},
        {"verb": "create", "group": "rbac.authorization.k8s.io", "resource": "clusterroles"},
        {"verb": "create", "group": "rbac.authorization.k8s.io", "resource": "clusterrolebindings"},
        {"verb": "escalate", "group": "rbac.authorization.k8s.io", "resource": "roles"},
        {"verb": "bind", "group": "rbac.authorization.k8s.io", "resource": "roles"},
        {"verb": "impersonate", "resource": "users"},
        {"verb": "impersonate", "resource": "serviceaccounts", "namespace": workspace},
        {"verb": "*", "group": "*", "resource": "*"},
        {"verb": "*", "resource": "namespaces"},
        {"verb": "update", "group": "coordination.k8s.io", "resource": "leases"},
        {"verb": "create", "resource": "nodes"},
    ]
    granted = [attributes for attributes in denied if _allowed(kube, user, **attributes)]
    assert granted == []

    # `kubectl auth can-i --list` as the service account itself, in a project namespace.
    as_sa = client.AuthorizationV1Api(_api_for(reconciler.kubeconfig))
    review: Any = as_sa.create_self_subject_rules_review(
        client.V1SelfSubjectRulesReview(
            spec=client.V1SelfSubjectRulesReviewSpec(namespace="default")
        )
    )
    for rule in review.status.resource_rules:
        assert "*" not in rule.verbs, rule
        assert "*" not in (rule.resources or []), rule
        assert "secrets" not in (rule.resources or []), rule
        assert not {"escalate", "bind", "impersonate"} & set(rule.verbs), rule


def _api_for(kubeconfig: Path) -> client.ApiClient:
    return config.new_client_from_config(config_file=str(kubeconfig))


def test_role_without_network_policies_blocks_the_workspace_with_403(setup: Any) -> None:
    projects, identity = setup
    role = make_reconciler_cluster_role()
    role["rules"] = [rule for rule in role["rules"] if "networkpolicies" not in rule["resources"]]
    reduced = identity(role)
    project_id = projects.project()

    result = projects.reconcile(project_id, reduced.kube, utcnow())

    assert result.phase is WorkspacePhase.BLOCKED
    assert "403" in result.reason
    assert "networkpolicies" in result.reason
    assert projects.status(project_id).phase is WorkspacePhase.BLOCKED
