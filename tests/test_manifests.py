"""Manifest builders, compared as dicts for a small workspace, plus the properties every rendered
workspace must have (no hostPath unless chosen, least-privilege RBAC, everything labelled)."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from orchestrator import manifests, names
from orchestrator.config import ComputeSize, StorageBackend
from orchestrator.models import ProjectState
from orchestrator.workspace import DatasetMount, HubConfig, StorageConfig, WorkspaceSpec

NS = "kluis-p-12345"
HUB_LABELS = {"app.kubernetes.io/name": "kluis", "app.kubernetes.io/component": "hub"}
PROXY_LABELS = {"app.kubernetes.io/name": "kluis", "app.kubernetes.io/component": "proxy"}
VERSION = DatasetMount(
    version_id=7,
    dataset_code="GBAPERSOONTAB",
    label="2024V1",
    location="gbapersoontab/2024V1",
    size_bytes=3 * 1024 * 1024 + 1,
)


def make_spec(**changes: Any) -> WorkspaceSpec:
    spec = WorkspaceSpec(
        project_code="12345",
        namespace=NS,
        state=ProjectState.ACTIVE,
        servers_allowed=True,
        size=ComputeSize(cpu="2", memory="8Gi", storage="50Gi"),
        members=("ann", "bob"),
        datasets=(VERSION,),
        storage=StorageConfig(
            backend=StorageBackend.HOST_PATH, microdata_path="/srv/micro", projects_path="/srv/p"
        ),
        hub=HubConfig(
            namespace="kluis",
            service_account="hub",
            hub_pod_labels=HUB_LABELS,
            proxy_pod_labels=PROXY_LABELS,
            server_port=8888,
            api_port=8081,
        ),
        pod_security_version="v1.36",
    )
    return dataclasses.replace(spec, **changes)


def labels(kind: str, **extra: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/managed-by": "kluis",
        "app.kubernetes.io/part-of": "kluis",
        "app.kubernetes.io/component": "workspace",
        "kluis.io/project": "12345",
        "kluis.io/kind": kind,
        **extra,
    }


def test_make_namespace_enforces_restricted_pod_security() -> None:
    assert manifests.make_namespace(make_spec()) == {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": NS,
            "labels": {
                **labels("namespace"),
                "pod-security.kubernetes.io/enforce": "restricted",
                "pod-security.kubernetes.io/enforce-version": "v1.36",
                "pod-security.kubernetes.io/audit": "restricted",
                "pod-security.kubernetes.io/audit-version": "v1.36",
                "pod-security.kubernetes.io/warn": "restricted",
                "pod-security.kubernetes.io/warn-version": "v1.36",
            },
        },
    }


def test_make_resource_quota_active_has_size_and_no_pod_cap() -> None:
    assert manifests.make_resource_quota(make_spec()) == {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": {
            "name": "kluis-quota-e86879ef53",
            "namespace": NS,
            "labels": labels("resource-quota"),
        },
        "spec": {
            "hard": {
                "limits.cpu": "2",
                "limits.memory": "8Gi",
                "persistentvolumeclaims": "6",
                "requests.cpu": "2",
                "requests.memory": "8Gi",
                "requests.storage": "50Gi",
                "services.loadbalancers": "0",
                "services.nodeports": "0",
            }
        },
    }


def test_make_resource_quota_frozen_allows_no_pods() -> None:
    spec = make_spec(state=ProjectState.FROZEN, servers_allowed=False)

    assert manifests.make_resource_quota(spec)["spec"]["hard"]["pods"] == "0"


def test_make_limit_range_caps_containers_at_the_size() -> None:
    assert manifests.make_limit_range(make_spec()) == {
        "apiVersion": "v1",
        "kind": "LimitRange",
        "metadata": {
            "name": names.object_name("kluis", "limits"),
            "namespace": NS,
            "labels": labels("limit-range"),
        },
        "spec": {
            "limits": [
                {
                    "type": "Container",
                    "default": {"cpu": "2", "memory": "8Gi"},
                    "defaultRequest": {"cpu": "100m", "memory": "256Mi"},
                    "max": {"cpu": "2", "memory": "8Gi"},
                }
            ]
        },
    }


def test_make_network_policies_deny_all_but_hub_paths() -> None:
    hub = {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kluis"}},
        "podSelector": {"matchLabels": HUB_LABELS},
    }
    proxy = {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kluis"}},
        "podSelector": {"matchLabels": PROXY_LABELS},
    }
    servers = {"matchLabels": {"kluis.io/kind": "server"}}

    policies = manifests.make_network_policies(make_spec())

    assert policies == [
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {
                "name": names.object_name("kluis", "default-deny"),
                "namespace": NS,
                "labels": labels("network-policy"),
            },
            "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]},
        },
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {
                "name": names.object_name("kluis", "allow-hub-to-servers"),
                "namespace": NS,
                "labels": labels("network-policy"),
            },
            "spec": {
                "podSelector": servers,
                "policyTypes": ["Ingress"],
                "ingress": [{"from": [hub, proxy], "ports": [{"protocol": "TCP", "port": 8888}]}],
            },
        },
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {
                "name": names.object_name("kluis", "allow-servers-to-hub"),
                "namespace": NS,
                "labels": labels("network-policy"),
            },
            "spec": {
                "podSelector": servers,
                "policyTypes": ["Egress"],
                "egress": [{"to": [hub], "ports": [{"protocol": "TCP", "port": 8081}]}],
            },
        },
    ]


def test_make_network_policies_open_no_cidr_and_no_dns() -> None:
    text = repr(manifests.make_network_policies(make_spec()))

    assert "ipBlock" not in text
    assert "53" not in text
    assert "169.254" not in text


def test_make_service_account_mounts_no_token() -> None:
    assert manifests.make_service_account(make_spec()) == {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {
            "name": names.object_name("kluis", "workspace"),
            "namespace": NS,
            "labels": labels("service-account"),
        },
        "automountServiceAccountToken": False,
    }


def test_make_hub_role_and_binding() -> None:
    spec = make_spec()
    name = names.object_name("kluis", "hub")

    role = manifests.make_hub_role(spec)
    binding = manifests.make_hub_role_binding(spec)

    assert role == {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": name, "namespace": NS, "labels": labels("hub-role")},
        "rules": [
            {"apiGroups": [""], "resources": ["events"], "verbs": ["get", "list", "watch"]},
            {
                "apiGroups": [""],
                "resources": ["persistentvolumeclaims"],
                "verbs": ["get", "list", "watch"],
            },
            {
                "apiGroups": [""],
                "resources": ["pods"],
                "verbs": ["create", "delete", "get", "list", "patch", "watch"],
            },
            {
                "apiGroups": [""],
                "resources": ["services"],
                "verbs": ["create", "delete", "get", "list", "patch", "watch"],
            },
        ],
    }
    assert binding == {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": name, "namespace": NS, "labels": labels("hub-role-binding")},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
        "subjects": [{"kind": "ServiceAccount", "name": "hub", "namespace": "kluis"}],
    }


def test_make_hub_role_has_no_wildcards_secrets_or_escalation() -> None:
    rules = manifests.make_hub_role(make_spec())["rules"]

    for rule in rules:
        for key in ("apiGroups", "resources", "verbs"):
            assert "*" not in rule[key]
        assert not {"secrets", "configmaps", "serviceaccounts", "roles", "rolebindings"} & set(
            rule["resources"]
        )
        assert not {"escalate", "bind", "impersonate"} & set(rule["verbs"])
        assert "resourceNames" not in rule
    claims = next(r for r in rules if r["resources"] == ["persistentvolumeclaims"])
    assert claims["verbs"] == ["get", "list", "watch"]


def test_make_dataset_pv_host_path_is_read_only_and_pre_bound() -> None:
    claim = names.dataset_claim_name("GBAPERSOONTAB", "2024V1", 7)

    assert manifests.make_dataset_pv(make_spec(), VERSION) == {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {
            "name": "kluis-12345-ds-gbapersoontab-2024v1-7-6d1fac7dea",
            "labels": labels("dataset-volume", **{"kluis.io/dataset-version": "7"}),
        },
        "spec": {
            "accessModes": ["ReadOnlyMany"],
            "capacity": {"storage": "4Mi"},
            "claimRef": {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "name": claim,
                "namespace": NS,
            },
            "persistentVolumeReclaimPolicy": "Retain",
            "storageClassName": "",
            "volumeMode": "Filesystem",
            "hostPath": {"path": "/srv/micro/gbapersoontab/2024V1", "type": "Directory"},
        },
    }


def test_make_dataset_pvc_names_its_volume() -> None:
    assert manifests.make_dataset_pvc(make_spec(), VERSION) == {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {
            "name": names.dataset_claim_name("GBAPERSOONTAB", "2024V1", 7),
            "namespace": NS,
            "labels": labels("dataset-claim", **{"kluis.io/dataset-version": "7"}),
        },
        "spec": {
            "accessModes": ["ReadOnlyMany"],
            "resources": {"requests": {"storage": "1Mi"}},
            "storageClassName": "",
            "volumeMode": "Filesystem",
            "volumeName": "kluis-12345-ds-gbapersoontab-2024v1-7-6d1fac7dea",
        },
    }


def test_make_dataset_pv_nfs_is_read_only() -> None:
    spec = make_spec(
        storage=StorageConfig(
            backend=StorageBackend.NFS,
            microdata_path="/export/micro",
            projects_path="/export/projects",
            nfs_server="nfs.example.org",
        )
    )

    pv = manifests.make_dataset_pv(spec, VERSION)

    assert pv["spec"]["nfs"] == {
        "server": "nfs.example.org",
        "path": "/export/micro/gbapersoontab/2024V1",
        "readOnly": True,
    }
    assert "hostPath" not in pv["spec"]


def test_make_dataset_pv_csi_uses_the_volume_handle_template() -> None:
    spec = make_spec(
        storage=StorageConfig(
            backend=StorageBackend.CSI,
            microdata_path="/micro",
            projects_path="/projects",
            csi_driver="csi.example.org",
            csi_volume_handle="share1:{path}",
        )
    )

    pv = manifests.make_dataset_pv(spec, VERSION)

    assert pv["spec"]["csi"] == {
        "driver": "csi.example.org",
        "volumeHandle": "share1:/micro/gbapersoontab/2024V1",
        "readOnly": True,
    }


@pytest.mark.parametrize("location", ["../other", "/etc", "a/../../b", "", "a/./b"])
def test_make_dataset_pv_refuses_paths_outside_the_root(location: str) -> None:
    version = dataclasses.replace(VERSION, location=location)

    with pytest.raises(ValueError, match="not a safe relative path"):
        manifests.make_dataset_pv(make_spec(), version)


def test_make_storage_and_home_volumes_under_the_project_folder() -> None:
    spec = make_spec()

    workspace = manifests.make_storage_pv(spec, "workspace")
    imported = manifests.make_storage_pv(spec, "import")
    home = manifests.make_home_pv(spec, "ann")
    home_claim = manifests.make_home_pvc(spec, "ann")

    assert workspace["spec"]["hostPath"]["path"] == "/srv/p/12345/workspace"
    assert workspace["spec"]["accessModes"] == ["ReadWriteMany"]
    assert imported["spec"]["accessModes"] == ["ReadOnlyMany"]
    assert home["spec"]["hostPath"]["path"] == "/srv/p/12345/home/ann"
    assert home["spec"]["claimRef"]["name"] == home_claim["metadata"]["name"]
    assert home_claim["spec"]["volumeName"] == home["metadata"]["name"]
    assert home_claim["spec"]["accessModes"] == ["ReadWriteOnce"]


def test_make_workspace_order_and_content() -> None:
    objects = manifests.make_workspace(make_spec())

    kinds = [(o["kind"], o["metadata"]["labels"]["kluis.io/kind"]) for o in objects]
    assert kinds == [
        ("Namespace", "namespace"),
        ("ResourceQuota", "resource-quota"),
        ("LimitRange", "limit-range"),
        ("NetworkPolicy", "network-policy"),
        ("NetworkPolicy", "network-policy"),
        ("NetworkPolicy", "network-policy"),
        ("ServiceAccount", "service-account"),
        ("Role", "hub-role"),
        ("RoleBinding", "hub-role-binding"),
        ("PersistentVolume", "dataset-volume"),
        ("PersistentVolumeClaim", "dataset-claim"),
        *[("PersistentVolume", "storage-volume"), ("PersistentVolumeClaim", "storage-claim")] * 3,
        *[("PersistentVolume", "home-volume"), ("PersistentVolumeClaim", "home-claim")] * 2,
    ]
    keys = [(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]) for o in objects]
    assert len(set(keys)) == len(keys)


def test_make_workspace_every_pv_pre_bound_to_a_claim_of_this_namespace() -> None:
    objects = manifests.make_workspace(make_spec())
    claims = {o["metadata"]["name"]: o for o in objects if o["kind"] == "PersistentVolumeClaim"}

    for pv in (o for o in objects if o["kind"] == "PersistentVolume"):
        ref = pv["spec"]["claimRef"]
        assert ref["namespace"] == NS
        assert claims[ref["name"]]["spec"]["volumeName"] == pv["metadata"]["name"]
        assert pv["spec"]["persistentVolumeReclaimPolicy"] == "Retain"
        assert pv["spec"]["storageClassName"] == ""
        assert "12345" in pv["metadata"]["name"]


def test_make_workspace_is_deterministic_whatever_the_input_order() -> None:
    other = dataclasses.replace(VERSION, version_id=3, dataset_code="ABC", location="abc/1")
    one = make_spec(datasets=(VERSION, other), members=("bob", "ann"))
    two = make_spec(datasets=(other, VERSION), members=("ann", "bob"))

    assert manifests.make_workspace(one) == manifests.make_workspace(two)


@pytest.mark.parametrize("backend", [StorageBackend.NFS, StorageBackend.CSI])
def test_make_workspace_without_host_path_backend_has_no_host_path(backend: StorageBackend) -> None:
    spec = make_spec(
        storage=StorageConfig(
            backend=backend,
            microdata_path="/micro",
            projects_path="/projects",
            nfs_server="nfs.example.org",
            csi_driver="csi.example.org",
        )
    )

    assert "hostPath" not in repr(manifests.make_workspace(spec))


def test_make_workspace_labels_every_object_for_the_reconciler() -> None:
    for obj in manifests.make_workspace(make_spec()):
        assert names.MANAGED_LABELS.items() <= obj["metadata"]["labels"].items()
        assert obj["metadata"]["labels"]["kluis.io/project"] == "12345"
        assert names.DNS1123_LABEL.fullmatch(obj["metadata"]["name"])
        assert len(obj["metadata"]["name"]) <= names.MAX_NAME_LENGTH


def test_make_workspace_builds_no_pod_affecting_object_that_could_run_code() -> None:
    # The workspace builds no pods, deployments or jobs: the hub starts servers under the
    # namespace's restricted Pod Security; the namespace is the only pod-affecting object.
    kinds = {o["kind"] for o in manifests.make_workspace(make_spec())}

    assert not kinds & {"Pod", "Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob"}
