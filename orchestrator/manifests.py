"""Pure builders of a project's Kubernetes objects as plain dicts: no I/O, no client import.

`make_workspace(spec)` returns them all in apply order; the other `make_*` build one kind each.
Everything is deterministic (sorted), so the reconciler can compare desired with observed.
"""

from __future__ import annotations

import posixpath
from typing import Any

from orchestrator import names
from orchestrator.config import StorageBackend
from orchestrator.workspace import HOME_AREA, STORAGE_AREAS, DatasetMount, WorkspaceSpec

Manifest = dict[str, Any]

POD_SECURITY_LEVEL = "restricted"
# Claims are bound to pre-made volumes whose size the backend enforces; each claim asks for this
# nominal amount so the namespace's storage quota stops anyone adding real claims.
CLAIM_REQUEST = "1Mi"
MEBIBYTE = 1024 * 1024
# Containers that state no requests get these (LimitRange defaults); limits default to the size.
DEFAULT_CPU_REQUEST = "100m"
DEFAULT_MEMORY_REQUEST = "256Mi"
# Access of the storage areas: import holds approved uploads the workspace may only read.
AREA_ACCESS = {"workspace": "ReadWriteMany", "import": "ReadOnlyMany", "export": "ReadWriteMany"}
HOME_ACCESS = "ReadWriteOnce"


def _metadata(spec: WorkspaceSpec, kind: str, name: str, *, namespaced: bool = True) -> Manifest:
    meta: Manifest = {"name": name, "labels": names.project_labels(spec.project_code, kind)}
    if namespaced:
        meta["namespace"] = spec.namespace
    return meta


def _under(root: str, relative: str) -> str:
    """`relative` joined under `root`; `ValueError` if it is absolute or climbs out with '..'."""
    parts = relative.split("/")
    if posixpath.isabs(relative) or any(part in ("..", ".") for part in parts) or not relative:
        raise ValueError(f"not a safe relative path: {relative!r}")
    return posixpath.join(root, posixpath.normpath(relative))


# --- namespace and its limits ---------------------------------------------------------------------


def make_namespace(spec: WorkspaceSpec) -> Manifest:
    """The project's namespace with Pod Security `restricted` enforced, audited and warned."""
    meta = _metadata(spec, "namespace", spec.namespace, namespaced=False)
    for mode in ("enforce", "audit", "warn"):
        meta["labels"][f"pod-security.kubernetes.io/{mode}"] = POD_SECURITY_LEVEL
        meta["labels"][f"pod-security.kubernetes.io/{mode}-version"] = spec.pod_security_version
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": meta}


def _claim_count(spec: WorkspaceSpec) -> int:
    return len(spec.datasets) + len(STORAGE_AREAS) + len(spec.members)


def make_resource_quota(spec: WorkspaceSpec) -> Manifest:
    """CPU, memory and storage of the project's size; no pods at all unless servers may run."""
    size = spec.size
    hard = {
        "limits.cpu": size.cpu,
        "limits.memory": size.memory,
        "persistentvolumeclaims": str(_claim_count(spec)),
        "requests.cpu": size.cpu,
        "requests.memory": size.memory,
        "requests.storage": size.storage,
        "services.loadbalancers": "0",
        "services.nodeports": "0",
    }
    if not spec.servers_allowed:
        hard["pods"] = "0"
    return {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": _metadata(spec, "resource-quota", names.object_name("kluis", "quota")),
        "spec": {"hard": hard},
    }


def make_limit_range(spec: WorkspaceSpec) -> Manifest:
    """Defaults for containers that state nothing, and no container larger than the project."""
    size = spec.size
    return {
        "apiVersion": "v1",
        "kind": "LimitRange",
        "metadata": _metadata(spec, "limit-range", names.object_name("kluis", "limits")),
        "spec": {
            "limits": [
                {
                    "type": "Container",
                    "default": {"cpu": size.cpu, "memory": size.memory},
                    "defaultRequest": {
                        "cpu": DEFAULT_CPU_REQUEST,
                        "memory": DEFAULT_MEMORY_REQUEST,
                    },
                    "max": {"cpu": size.cpu, "memory": size.memory},
                }
            ]
        },
    }


# --- network --------------------------------------------------------------------------------------


def _hub_peer(spec: WorkspaceSpec, pod_labels: dict[str, str]) -> Manifest:
    return {
        "namespaceSelector": {
            "matchLabels": {"kubernetes.io/metadata.name": spec.hub.namespace},
        },
        "podSelector": {"matchLabels": dict(sorted(pod_labels.items()))},
    }


def make_network_policies(spec: WorkspaceSpec) -> list[Manifest]:
    """Deny all traffic in and out; then only hub and proxy -> servers on the server port, and
    servers -> hub on its API port. No DNS, no metadata endpoint, nothing else."""
    servers = {"matchLabels": dict(names.SERVER_POD_LABELS)}
    deny = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _metadata(spec, "network-policy", names.object_name("kluis", "default-deny")),
        "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]},
    }
    ingress = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _metadata(
            spec, "network-policy", names.object_name("kluis", "allow-hub-to-servers")
        ),
        "spec": {
            "podSelector": servers,
            "policyTypes": ["Ingress"],
            "ingress": [
                {
                    "from": [
                        _hub_peer(spec, spec.hub.hub_pod_labels),
                        _hub_peer(spec, spec.hub.proxy_pod_labels),
                    ],
                    "ports": [{"protocol": "TCP", "port": spec.hub.server_port}],
                }
            ],
        },
    }
    egress = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _metadata(
            spec, "network-policy", names.object_name("kluis", "allow-servers-to-hub")
        ),
        "spec": {
            "podSelector": servers,
            "policyTypes": ["Egress"],
            "egress": [
                {
                    "to": [_hub_peer(spec, spec.hub.hub_pod_labels)],
                    "ports": [{"protocol": "TCP", "port": spec.hub.api_port}],
                }
            ],
        },
    }
    return [deny, ingress, egress]


# --- identities -----------------------------------------------------------------------------------


def make_service_account(spec: WorkspaceSpec) -> Manifest:
    """The identity of workspace servers: no API token is ever mounted."""
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": _metadata(spec, "service-account", workspace_service_account_name()),
        "automountServiceAccountToken": False,
    }


def workspace_service_account_name() -> str:
    return names.object_name("kluis", "workspace")


def hub_role_name() -> str:
    return names.object_name("kluis", "hub")


def make_hub_role(spec: WorkspaceSpec) -> Manifest:
    """What the hub needs to run servers here: pods and services, reading claims and events.
    No secrets, no wildcards, nothing outside this namespace."""
    read = ["get", "list", "watch"]
    manage = ["create", "delete", "get", "list", "patch", "watch"]
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": _metadata(spec, "hub-role", hub_role_name()),
        "rules": [
            {"apiGroups": [""], "resources": ["events"], "verbs": read},
            {"apiGroups": [""], "resources": ["persistentvolumeclaims"], "verbs": read},
            {"apiGroups": [""], "resources": ["pods"], "verbs": manage},
            {"apiGroups": [""], "resources": ["services"], "verbs": manage},
        ],
    }


def make_hub_role_binding(spec: WorkspaceSpec) -> Manifest:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": _metadata(spec, "hub-role-binding", hub_role_name()),
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "Role",
            "name": hub_role_name(),
        },
        "subjects": [
            {
                "kind": "ServiceAccount",
                "name": spec.hub.service_account,
                "namespace": spec.hub.namespace,
            }
        ],
    }


# --- volumes and claims ---------------------------------------------------------------------------


def _source(spec: WorkspaceSpec, path: str, *, read_only: bool) -> Manifest:
    """The volume source of `path` (a path as the backend sees it) for the configured backend."""
    storage = spec.storage
    if storage.backend is StorageBackend.HOST_PATH:
        # hostPath has no read-only flag: the pod's volumeMount must say readOnly.
        return {"hostPath": {"path": path, "type": "Directory"}}
    if storage.backend is StorageBackend.NFS:
        return {"nfs": {"server": storage.nfs_server, "path": path, "readOnly": read_only}}
    return {
        "csi": {
            "driver": storage.csi_driver,
            "volumeHandle": storage.csi_volume_handle.format(path=path),
            "readOnly": read_only,
        }
    }


def _volume(
    spec: WorkspaceSpec,
    *,
    kind: str,
    name: str,
    claim: str,
    access: str,
    capacity: str,
    path: str,
    extra_labels: dict[str, str] | None = None,
) -> Manifest:
    """A static volume pre-bound (claimRef) to exactly one claim in the project's namespace."""
    meta = _metadata(spec, kind, name, namespaced=False)
    meta["labels"].update(extra_labels or {})
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": meta,
        "spec": {
            "accessModes": [access],
            "capacity": {"storage": capacity},
            "claimRef": {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "name": claim,
                "namespace": spec.namespace,
            },
            "persistentVolumeReclaimPolicy": "Retain",
            "storageClassName": "",
            "volumeMode": "Filesystem",
            **_source(spec, path, read_only=access == "ReadOnlyMany"),
        },
    }


def _claim(
    spec: WorkspaceSpec,
    *,
    kind: str,
    name: str,
    volume: str,
    access: str,
    extra_labels: dict[str, str] | None = None,
) -> Manifest:
    meta = _metadata(spec, kind, name)
    meta["labels"].update(extra_labels or {})
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": meta,
        "spec": {
            "accessModes": [access],
            "resources": {"requests": {"storage": CLAIM_REQUEST}},
            "storageClassName": "",
            "volumeMode": "Filesystem",
            "volumeName": volume,
        },
    }


def _dataset_names(spec: WorkspaceSpec, version: DatasetMount) -> tuple[str, str]:
    claim = names.dataset_claim_name(version.dataset_code, version.label, version.version_id)
    volume = names.dataset_volume_name(
        spec.project_code, version.dataset_code, version.label, version.version_id
    )
    return volume, claim


def _mebibytes(size_bytes: int) -> str:
    return f"{max(1, -(-size_bytes // MEBIBYTE))}Mi"


def make_dataset_pv(spec: WorkspaceSpec, version: DatasetMount) -> Manifest:
    """The read-only volume of one granted dataset version, for this project's claim only."""
    volume, claim = _dataset_names(spec, version)
    return _volume(
        spec,
        kind="dataset-volume",
        name=volume,
        claim=claim,
        access="ReadOnlyMany",
        capacity=_mebibytes(version.size_bytes),
        path=_under(spec.storage.microdata_path, version.location),
        extra_labels={names.DATASET_VERSION_LABEL: str(version.version_id)},
    )


def make_dataset_pvc(spec: WorkspaceSpec, version: DatasetMount) -> Manifest:
    volume, claim = _dataset_names(spec, version)
    return _claim(
        spec,
        kind="dataset-claim",
        name=claim,
        volume=volume,
        access="ReadOnlyMany",
        extra_labels={names.DATASET_VERSION_LABEL: str(version.version_id)},
    )


def _project_path(spec: WorkspaceSpec, *relative: str) -> str:
    return _under(spec.storage.projects_path, "/".join((spec.project_code, *relative)))


def make_storage_pv(spec: WorkspaceSpec, area: str) -> Manifest:
    """The volume of one project storage area (`workspace`, `import` or `export`)."""
    return _volume(
        spec,
        kind="storage-volume",
        name=names.storage_volume_name(spec.project_code, area),
        claim=names.storage_claim_name(area),
        access=AREA_ACCESS[area],
        capacity=spec.size.storage,
        path=_project_path(spec, area),
    )


def make_storage_pvc(spec: WorkspaceSpec, area: str) -> Manifest:
    return _claim(
        spec,
        kind="storage-claim",
        name=names.storage_claim_name(area),
        volume=names.storage_volume_name(spec.project_code, area),
        access=AREA_ACCESS[area],
    )


def make_home_pv(spec: WorkspaceSpec, username: str) -> Manifest:
    """The volume of one member's home folder, `home/<user>/` in the project's storage."""
    return _volume(
        spec,
        kind="home-volume",
        name=names.home_volume_name(spec.project_code, username),
        claim=names.home_claim_name(username),
        access=HOME_ACCESS,
        capacity=spec.size.storage,
        path=_project_path(spec, HOME_AREA, username),
    )


def make_home_pvc(spec: WorkspaceSpec, username: str) -> Manifest:
    return _claim(
        spec,
        kind="home-claim",
        name=names.home_claim_name(username),
        volume=names.home_volume_name(spec.project_code, username),
        access=HOME_ACCESS,
    )


# --- all of it ------------------------------------------------------------------------------------


def make_workspace(spec: WorkspaceSpec) -> list[Manifest]:
    """Every object of the project's workspace in apply order: the namespace first, then its
    limits and policies (before anything could run), identities, and each volume before its
    claim. Deterministic: datasets by version id, areas in fixed order, members by name."""
    objects: list[Manifest] = [
        make_namespace(spec),
        make_resource_quota(spec),
        make_limit_range(spec),
        *make_network_policies(spec),
        make_service_account(spec),
        make_hub_role(spec),
        make_hub_role_binding(spec),
    ]
    for version in sorted(spec.datasets, key=lambda mount: mount.version_id):
        objects += [make_dataset_pv(spec, version), make_dataset_pvc(spec, version)]
    for area in STORAGE_AREAS:
        objects += [make_storage_pv(spec, area), make_storage_pvc(spec, area)]
    for username in sorted(spec.members):
        objects += [make_home_pv(spec, username), make_home_pvc(spec, username)]
    return objects
