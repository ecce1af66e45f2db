"""Proof that the test bed is a real Kubernetes control plane, not a fake.

Each test relies on behaviour that only the real apiserver, controller-manager, scheduler and kwok
provide: Pod Security admission, quota admission, namespace finalisation, server-side apply field
ownership, RBAC, scheduling and pod status.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from orchestrator.devcluster import build
from orchestrator.devcluster.cluster import LocalCluster

pytestmark = pytest.mark.cluster


def wait_for(check: Callable[[], Any], timeout: float = 30.0, interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)


def compliant_pod(name: str, cpu: str = "100m") -> client.V1Pod:
    return client.V1Pod(
        metadata=client.V1ObjectMeta(name=name),
        spec=client.V1PodSpec(
            automount_service_account_token=False,
            security_context=client.V1PodSecurityContext(
                run_as_non_root=True,
                run_as_user=1000,
                seccomp_profile=client.V1SeccompProfile(type="RuntimeDefault"),
            ),
            containers=[
                client.V1Container(
                    name="main",
                    image="registry.invalid/kluis/workspace:test",
                    resources=client.V1ResourceRequirements(
                        requests={"cpu": cpu, "memory": "64Mi"},
                        limits={"cpu": cpu, "memory": "64Mi"},
                    ),
                    security_context=client.V1SecurityContext(
                        allow_privilege_escalation=False,
                        capabilities=client.V1Capabilities(drop=["ALL"]),
                    ),
                )
            ],
        ),
    )


def test_cluster_reports_real_version_and_ready_node(kube: client.ApiClient) -> None:
    version = client.VersionApi(kube).get_code()
    nodes = client.CoreV1Api(kube).list_node().items

    assert version.git_version == build.PINNED.kubernetes
    assert nodes, "kwok should have registered a node"
    ready = {c.type: c.status for c in nodes[0].status.conditions}
    assert ready["Ready"] == "True"


def root_pod_with_capabilities(name: str) -> client.V1Pod:
    """Valid for the API, but violates Pod Security "restricted" (and "baseline")."""
    return client.V1Pod(
        metadata=client.V1ObjectMeta(name=name),
        spec=client.V1PodSpec(
            containers=[
                client.V1Container(
                    name="main",
                    image="registry.invalid/any:1",
                    security_context=client.V1SecurityContext(
                        run_as_user=0, capabilities=client.V1Capabilities(add=["SYS_ADMIN"])
                    ),
                )
            ]
        ),
    )


@pytest.mark.pod_security("restricted")
def test_pod_security_restricted_rejects_root_pod_with_capabilities(
    kube: client.ApiClient, namespace: str
) -> None:
    core = client.CoreV1Api(kube)

    with pytest.raises(ApiException) as err:
        core.create_namespaced_pod(namespace, root_pod_with_capabilities("bad"))

    assert err.value.status == 403
    assert "violates PodSecurity" in err.value.body
    assert "SYS_ADMIN" in err.value.body


def test_pod_security_unlabelled_namespace_admits_same_pod(
    kube: client.ApiClient, namespace: str
) -> None:
    # The control for the test above: the rejection comes from the namespace's label.
    core = client.CoreV1Api(kube)

    created = core.create_namespaced_pod(namespace, root_pod_with_capabilities("root"))

    assert created.metadata.uid


@pytest.mark.pod_security("restricted")
def test_apiserver_rejects_privileged_container(kube: client.ApiClient, namespace: str) -> None:
    core = client.CoreV1Api(kube)
    pod = compliant_pod("privileged")
    pod.spec.containers[0].security_context = client.V1SecurityContext(privileged=True)

    with pytest.raises(ApiException) as err:
        core.create_namespaced_pod(namespace, pod)

    # --allow-privileged=false refuses it before admission even runs.
    assert err.value.status == 422
    assert "privileged" in err.value.body


@pytest.mark.pod_security("restricted")
def test_pod_security_restricted_admits_compliant_pod_which_runs(
    kube: client.ApiClient, namespace: str
) -> None:
    core = client.CoreV1Api(kube)

    core.create_namespaced_pod(namespace, compliant_pod("good"))

    pod = wait_for(
        lambda: (p := core.read_namespaced_pod("good", namespace)).status.phase == "Running" and p
    )
    assert pod.spec.node_name.startswith("kwok-node-")
    assert pod.status.pod_ip


def test_resource_quota_blocks_over_limit_pod(kube: client.ApiClient, namespace: str) -> None:
    core = client.CoreV1Api(kube)
    quota = client.V1ResourceQuota(
        metadata=client.V1ObjectMeta(name="small"),
        spec=client.V1ResourceQuotaSpec(hard={"limits.cpu": "500m", "limits.memory": "1Gi"}),
    )
    core.create_namespaced_resource_quota(namespace, quota)
    wait_for(lambda: core.read_namespaced_resource_quota("small", namespace).status.hard)

    with pytest.raises(ApiException) as err:
        core.create_namespaced_pod(namespace, compliant_pod("big", cpu="2"))
    core.create_namespaced_pod(namespace, compliant_pod("fits", cpu="200m"))

    assert err.value.status == 403
    assert "exceeded quota" in err.value.body


def test_namespace_deletion_finishes(kube: client.ApiClient) -> None:
    core = client.CoreV1Api(kube)
    name = f"t-delete-{int(time.time() * 1000) % 10**8}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    core.create_namespaced_config_map(
        name, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="data"), data={"a": "1"})
    )
    core.create_namespaced_pod(name, compliant_pod("p"))

    core.delete_namespace(name)

    def gone() -> bool:
        try:
            core.read_namespace(name)
        except ApiException as exc:
            return exc.status == 404
        return False

    wait_for(gone, timeout=60)


def test_server_side_apply_reports_conflict_between_managers(
    kube: client.ApiClient, namespace: str
) -> None:
    core = client.CoreV1Api(kube)

    def apply(manager: str, value: str, force: bool = False) -> None:
        body = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "owned", "namespace": namespace},
            "data": {"x": value},
        }
        core.patch_namespaced_config_map(
            "owned",
            namespace,
            body,
            field_manager=manager,
            force=force,
            _content_type="application/apply-patch+yaml",
        )

    apply("kluis-reconciler", "1")
    with pytest.raises(ApiException) as err:
        apply("someone-else", "2")
    apply("someone-else", "3", force=True)

    assert err.value.status == 409
    assert "conflict" in err.value.body.lower()
    assert core.read_namespaced_config_map("owned", namespace).data == {"x": "3"}


def test_rbac_denies_service_account_what_it_was_not_granted(
    cluster: LocalCluster, kube: client.ApiClient, namespace: str
) -> None:
    core, rbac = client.CoreV1Api(kube), client.RbacAuthorizationV1Api(kube)
    core.create_namespaced_service_account(
        namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name="reader"))
    )
    rbac.create_namespaced_role(
        namespace,
        client.V1Role(
            metadata=client.V1ObjectMeta(name="configmap-reader"),
            rules=[
                client.V1PolicyRule(
                    api_groups=[""], resources=["configmaps"], verbs=["get", "list"]
                )
            ],
        ),
    )
    rbac.create_namespaced_role_binding(
        namespace,
        client.V1RoleBinding(
            metadata=client.V1ObjectMeta(name="reader"),
            role_ref=client.V1RoleRef(
                api_group="rbac.authorization.k8s.io", kind="Role", name="configmap-reader"
            ),
            subjects=[
                client.RbacV1Subject(kind="ServiceAccount", name="reader", namespace=namespace)
            ],
        ),
    )
    token = core.create_namespaced_service_account_token(
        "reader",
        namespace,
        client.AuthenticationV1TokenRequest(
            spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=600)
        ),
    ).status.token
    configuration = client.Configuration()
    configuration.host = cluster.server
    configuration.ssl_ca_cert = str(cluster.pki.ca_cert)
    configuration.api_key = {"authorization": f"Bearer {token}"}
    as_reader = client.CoreV1Api(client.ApiClient(configuration))

    allowed = as_reader.list_namespaced_config_map(namespace)
    with pytest.raises(ApiException) as secrets_err:
        as_reader.list_namespaced_secret(namespace)
    with pytest.raises(ApiException) as other_ns_err:
        as_reader.list_namespaced_config_map("default")

    assert allowed.items is not None
    assert secrets_err.value.status == 403
    assert other_ns_err.value.status == 403
