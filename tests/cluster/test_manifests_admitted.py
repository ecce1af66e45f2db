"""The real apiserver accepts every object of a rendered workspace, and the objects do what they
promise: Pod Security restricted is enforced, a frozen quota stops pods, a dataset volume never
binds to a claim in another project's namespace, and the hub's service account may run servers in
the project's namespace and nothing more."""

from __future__ import annotations

import dataclasses
import secrets
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException
from kubernetes.dynamic import DynamicClient

from orchestrator import manifests, names
from orchestrator.config import ComputeSize, StorageBackend
from orchestrator.models import ProjectState
from orchestrator.workspace import DatasetMount, HubConfig, StorageConfig, WorkspaceSpec

pytestmark = pytest.mark.cluster

FIELD_MANAGER = "kluis-test"


def wait_for(check: Callable[[], Any], timeout: float = 30.0, interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)


def free_code() -> str:
    return str(10_000 + secrets.randbelow(90_000))


def make_spec(code: str, hub_namespace: str, **changes: Any) -> WorkspaceSpec:
    spec = WorkspaceSpec(
        project_code=code,
        namespace=names.namespace_name(code),
        state=ProjectState.ACTIVE,
        servers_allowed=True,
        size=ComputeSize(cpu="2", memory="8Gi", storage="50Gi"),
        members=("ann", "bob"),
        datasets=(
            DatasetMount(7, "GBAPERSOONTAB", "2024V1", "gbapersoontab/2024V1", 5 * 1024**3),
            DatasetMount(9, "INPATAB", "2023V2", "inpatab/2023V2", 0),
        ),
        storage=StorageConfig(
            backend=StorageBackend.HOST_PATH,
            microdata_path="/srv/kluis/microdata",
            projects_path="/srv/kluis/projects",
        ),
        hub=HubConfig(
            namespace=hub_namespace,
            service_account="hub",
            hub_pod_labels={
                "app.kubernetes.io/name": "kluis",
                "app.kubernetes.io/component": "hub",
            },
            proxy_pod_labels={
                "app.kubernetes.io/name": "kluis",
                "app.kubernetes.io/component": "proxy",
            },
        ),
        pod_security_version="v1.36",
    )
    return dataclasses.replace(spec, **changes)


def apply(dyn: DynamicClient, obj: dict[str, Any]) -> Any:
    resource = dyn.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])
    return dyn.server_side_apply(
        resource,
        body=obj,
        namespace=obj["metadata"].get("namespace"),
        field_manager=FIELD_MANAGER,
        force_conflicts=True,
    )


def claim_phase(core: client.CoreV1Api, name: str, namespace: str) -> str:
    return str(core.read_namespaced_persistent_volume_claim(name, namespace).status.phase)


def quota_ready(core: client.CoreV1Api, namespace: str) -> bool:
    # ResourceQuota admission refuses pods until the quota controller has filled in the status.
    quotas = core.list_namespaced_resource_quota(namespace).items
    return bool(quotas) and all(q.status and q.status.hard for q in quotas)


@pytest.fixture(scope="module")
def dyn(kube: client.ApiClient) -> DynamicClient:
    return DynamicClient(kube)


@pytest.fixture(scope="module")
def hub_namespace(kube: client.ApiClient) -> Iterator[str]:
    """A hub namespace with the hub's service account, as the Helm chart will make it."""
    core = client.CoreV1Api(kube)
    name = f"kluis-hub-{secrets.token_hex(4)}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    core.create_namespaced_service_account(
        name, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name="hub"))
    )
    yield name
    core.delete_namespace(name)


@pytest.fixture(scope="module")
def applied(
    kube: client.ApiClient, dyn: DynamicClient, hub_namespace: str
) -> Iterator[tuple[WorkspaceSpec, WorkspaceSpec]]:
    """Two projects' workspaces, every object applied; removed (namespaces and PVs) afterwards."""
    # B has no grants: the claims the test makes in B's namespace copy A's exactly.
    specs = (
        make_spec(free_code(), hub_namespace),
        make_spec(free_code(), hub_namespace, datasets=()),
    )
    for spec in specs:
        for obj in manifests.make_workspace(spec):
            apply(dyn, obj)
    yield specs
    core = client.CoreV1Api(kube)
    for spec in specs:
        core.delete_namespace(spec.namespace)
        core.delete_collection_persistent_volume(
            label_selector=names.project_selector(spec.project_code)
        )


def workspace_pod(name: str, *, compliant: bool = True) -> client.V1Pod:
    """What the hub will start: a server under the workspace service account, restricted."""
    container = client.V1Container(
        name="notebook",
        image="registry.invalid/kluis/workspace:test",
        ports=[client.V1ContainerPort(container_port=8888)],
        resources=client.V1ResourceRequirements(
            requests={"cpu": "500m", "memory": "1Gi"}, limits={"cpu": "1", "memory": "2Gi"}
        ),
        security_context=client.V1SecurityContext(
            allow_privilege_escalation=False,
            capabilities=client.V1Capabilities(drop=["ALL"]),
            read_only_root_filesystem=True,
        ),
    )
    security = client.V1PodSecurityContext(
        run_as_non_root=True, run_as_user=1000, seccomp_profile={"type": "RuntimeDefault"}
    )
    if not compliant:
        container.security_context = client.V1SecurityContext(run_as_user=0)
        security = None
    return client.V1Pod(
        metadata=client.V1ObjectMeta(name=name, labels=dict(names.SERVER_POD_LABELS)),
        spec=client.V1PodSpec(
            service_account_name=manifests.workspace_service_account_name(),
            automount_service_account_token=False,
            security_context=security,
            containers=[container],
        ),
    )


def test_workspace_every_object_accepted_and_claims_bound(
    kube: client.ApiClient, dyn: DynamicClient, applied: tuple[WorkspaceSpec, WorkspaceSpec]
) -> None:
    spec = applied[0]
    core = client.CoreV1Api(kube)

    for obj in manifests.make_workspace(spec):
        resource = dyn.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])
        live = dyn.get(
            resource, name=obj["metadata"]["name"], namespace=obj["metadata"].get("namespace")
        )
        assert live.metadata.labels["kluis.io/project"] == spec.project_code

    claims = [
        o["metadata"]["name"]
        for o in manifests.make_workspace(spec)
        if o["kind"] == "PersistentVolumeClaim"
    ]
    assert len(claims) == 2 + 3 + 2
    for claim in claims:
        wait_for(lambda claim=claim: claim_phase(core, claim, spec.namespace) == "Bound")


def test_workspace_reapplied_unchanged_is_accepted_again(
    dyn: DynamicClient, applied: tuple[WorkspaceSpec, WorkspaceSpec]
) -> None:
    # Idempotence as the apiserver sees it: the same apply again changes no generation.
    spec = applied[0]
    policy = manifests.make_network_policies(spec)[0]
    before = apply(dyn, policy).metadata.generation

    after = apply(dyn, policy).metadata.generation

    assert after == before


def test_workspace_namespace_admits_compliant_server_pod(
    kube: client.ApiClient, applied: tuple[WorkspaceSpec, WorkspaceSpec]
) -> None:
    spec = applied[0]
    core = client.CoreV1Api(kube)
    wait_for(lambda: quota_ready(core, spec.namespace))

    created = core.create_namespaced_pod(spec.namespace, workspace_pod("server-ok"))

    assert created.metadata.uid
    core.delete_namespaced_pod("server-ok", spec.namespace, grace_period_seconds=0)


def test_workspace_namespace_rejects_non_compliant_pod(
    kube: client.ApiClient, applied: tuple[WorkspaceSpec, WorkspaceSpec]
) -> None:
    spec = applied[0]
    core = client.CoreV1Api(kube)
    wait_for(lambda: quota_ready(core, spec.namespace))

    with pytest.raises(ApiException) as err:
        core.create_namespaced_pod(spec.namespace, workspace_pod("root", compliant=False))

    assert err.value.status == 403
    assert "violates PodSecurity" in err.value.body


def test_workspace_limit_range_refuses_container_above_the_size(
    kube: client.ApiClient, applied: tuple[WorkspaceSpec, WorkspaceSpec]
) -> None:
    spec = applied[0]
    core = client.CoreV1Api(kube)
    wait_for(lambda: quota_ready(core, spec.namespace))
    pod = workspace_pod("too-big")
    pod.spec.containers[0].resources = client.V1ResourceRequirements(
        requests={"cpu": "1", "memory": "1Gi"}, limits={"cpu": "3", "memory": "1Gi"}
    )

    with pytest.raises(ApiException) as err:
        core.create_namespaced_pod(spec.namespace, pod)

    assert err.value.status == 403
    assert "maximum cpu usage" in err.value.body


def test_frozen_workspace_quota_admits_no_pods(
    kube: client.ApiClient, dyn: DynamicClient, hub_namespace: str
) -> None:
    spec = make_spec(
        free_code(), hub_namespace, state=ProjectState.FROZEN, servers_allowed=False, datasets=()
    )
    core = client.CoreV1Api(kube)
    for obj in manifests.make_workspace(spec)[:7]:  # namespace, limits, policies, account
        apply(dyn, obj)
    try:
        wait_for(lambda: quota_ready(core, spec.namespace))

        with pytest.raises(ApiException) as err:
            core.create_namespaced_pod(spec.namespace, workspace_pod("server"))

        assert err.value.status == 403
        assert "exceeded quota" in err.value.body
    finally:
        core.delete_namespace(spec.namespace)


def test_dataset_volume_of_project_a_never_binds_to_claim_in_project_b(
    kube: client.ApiClient, dyn: DynamicClient, applied: tuple[WorkspaceSpec, WorkspaceSpec]
) -> None:
    a, b = applied
    core = client.CoreV1Api(kube)
    version = a.datasets[0]
    a_claim = manifests.make_dataset_pvc(a, version)
    volume = a_claim["spec"]["volumeName"]
    wait_for(lambda: claim_phase(core, a_claim["metadata"]["name"], a.namespace) == "Bound")
    # A volume pre-bound to A's claim that A has not claimed yet: the tempting case.
    unclaimed = dataclasses.replace(version, version_id=1001, location="gbapersoontab/2025V1")
    apply(dyn, manifests.make_dataset_pv(a, unclaimed))
    unclaimed_volume = manifests.make_dataset_pvc(a, unclaimed)["spec"]["volumeName"]

    # B's namespace gets claims identical to A's (same names, same volumeName); its quota counts
    # only its own claims (see the test below), so raise it for this test.
    quota = manifests.make_resource_quota(b)
    quota["spec"]["hard"]["persistentvolumeclaims"] = "10"
    apply(dyn, quota)
    wait_for(
        lambda: (
            core.read_namespaced_resource_quota(quota["metadata"]["name"], b.namespace).status.hard[
                "persistentvolumeclaims"
            ]
            == "10"
        )
    )
    for target in (volume, unclaimed_volume):
        claim = manifests.make_dataset_pvc(a, version if target == volume else unclaimed)
        claim["metadata"]["namespace"] = b.namespace
        apply(dyn, claim)
    time.sleep(5)  # give the volume controller time to (wrongly) bind

    for target, claim_version in ((volume, version), (unclaimed_volume, unclaimed)):
        name = names.dataset_claim_name(
            claim_version.dataset_code, claim_version.label, claim_version.version_id
        )
        assert claim_phase(core, name, b.namespace) == "Pending"
        pv = core.read_persistent_volume(target)
        assert pv.spec.claim_ref.namespace == a.namespace
        assert pv.spec.claim_ref.name == name
    assert core.read_persistent_volume(volume).status.phase == "Bound"
    assert core.read_persistent_volume(unclaimed_volume).status.phase == "Available"


def test_workspace_quota_refuses_a_claim_beyond_the_desired_ones(
    kube: client.ApiClient, dyn: DynamicClient, hub_namespace: str
) -> None:
    spec = make_spec(free_code(), hub_namespace, datasets=())
    core = client.CoreV1Api(kube)
    objects = manifests.make_workspace(spec)
    for obj in objects:
        apply(dyn, obj)
    extra = next(o for o in objects if o["kind"] == "PersistentVolumeClaim")
    extra["metadata"]["name"] = "extra"
    try:
        wait_for(lambda: quota_ready(core, spec.namespace))

        with pytest.raises(ApiException) as err:
            apply(dyn, extra)

        assert err.value.status == 403
        assert "exceeded quota" in err.value.body
    finally:
        core.delete_namespace(spec.namespace)
        core.delete_collection_persistent_volume(
            label_selector=names.project_selector(spec.project_code)
        )


def can(kube: client.ApiClient, hub_namespace: str, **attributes: str) -> bool:
    review = client.V1SubjectAccessReview(
        spec=client.V1SubjectAccessReviewSpec(
            user=f"system:serviceaccount:{hub_namespace}:hub",
            groups=["system:serviceaccounts", f"system:serviceaccounts:{hub_namespace}"],
            resource_attributes=client.V1ResourceAttributes(**attributes),
        )
    )
    result = client.AuthorizationV1Api(kube).create_subject_access_review(review)
    return bool(result.status.allowed)


def test_hub_service_account_may_run_servers_in_the_project_namespace_only(
    kube: client.ApiClient,
    applied: tuple[WorkspaceSpec, WorkspaceSpec],
    hub_namespace: str,
    namespace: str,
) -> None:
    spec = applied[0]
    ns = spec.namespace

    allowed = {
        "create pods": can(kube, hub_namespace, namespace=ns, verb="create", resource="pods"),
        "delete pods": can(kube, hub_namespace, namespace=ns, verb="delete", resource="pods"),
        "create services": can(
            kube, hub_namespace, namespace=ns, verb="create", resource="services"
        ),
        "list claims": can(
            kube, hub_namespace, namespace=ns, verb="list", resource="persistentvolumeclaims"
        ),
        "watch events": can(kube, hub_namespace, namespace=ns, verb="watch", resource="events"),
    }
    denied = {
        "get secrets": can(kube, hub_namespace, namespace=ns, verb="get", resource="secrets"),
        "list secrets": can(kube, hub_namespace, namespace=ns, verb="list", resource="secrets"),
        "create claims": can(
            kube, hub_namespace, namespace=ns, verb="create", resource="persistentvolumeclaims"
        ),
        "pods/exec": can(
            kube, hub_namespace, namespace=ns, verb="create", resource="pods", subresource="exec"
        ),
        "create roles": can(
            kube,
            hub_namespace,
            namespace=ns,
            verb="create",
            resource="roles",
            group="rbac.authorization.k8s.io",
        ),
        "pods elsewhere": can(
            kube, hub_namespace, namespace=namespace, verb="create", resource="pods"
        ),
        "pods cluster-wide": can(kube, hub_namespace, verb="list", resource="pods"),
        "volumes": can(kube, hub_namespace, verb="get", resource="persistentvolumes"),
        "patch namespace": can(kube, hub_namespace, verb="patch", resource="namespaces", name=ns),
    }

    assert allowed == dict.fromkeys(allowed, True)
    assert denied == dict.fromkeys(denied, False)
