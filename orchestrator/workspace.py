"""A project's workspace as plain data: everything the manifest builders need, read from the
database (active grants and current members only) and the settings, and nothing else.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, field

from sqlalchemy.orm import Session

from orchestrator import grants
from orchestrator.config import ComputeSize, Settings, StorageBackend
from orchestrator.errors import Invalid
from orchestrator.models import Project, ProjectState
from orchestrator.names import namespace_name
from orchestrator.projects import ACCESS_STATES, current_members

# The folders of a project's storage, relative to `<project storage root>/<code>/`.
STORAGE_AREAS = ("workspace", "import", "export")
HOME_AREA = "home"


@dataclass(frozen=True)
class DatasetMount:
    """One granted dataset version; `location` is relative to the microdata root."""

    version_id: int
    dataset_code: str
    label: str
    location: str
    size_bytes: int


@dataclass(frozen=True)
class StorageConfig:
    """Where the backend finds the two roots: node paths for hostPath, server paths otherwise."""

    backend: StorageBackend
    microdata_path: str
    projects_path: str
    nfs_server: str | None = None
    csi_driver: str | None = None
    csi_volume_handle: str = "{path}"


@dataclass(frozen=True)
class HubConfig:
    """The hub that starts servers in project namespaces and the ports between them."""

    namespace: str
    service_account: str
    hub_pod_labels: dict[str, str] = field(default_factory=dict)
    proxy_pod_labels: dict[str, str] = field(default_factory=dict)
    server_port: int = 8888
    api_port: int = 8081


@dataclass(frozen=True)
class WorkspaceSpec:
    """The desired workspace of one project. Lists are sorted, so equal rows give equal specs."""

    project_code: str
    namespace: str
    state: ProjectState
    servers_allowed: bool  # whether workspace servers may run (the project is in an access state)
    size: ComputeSize
    members: tuple[str, ...]  # usernames, sorted
    datasets: tuple[DatasetMount, ...]  # sorted by version id
    storage: StorageConfig
    hub: HubConfig
    pod_security_version: str


def make_storage_config(settings: Settings) -> StorageConfig:
    """The storage part of the settings; `Invalid` when the chosen backend lacks what it needs."""
    backend = settings.storage_backend
    if backend is StorageBackend.HOST_PATH:
        return StorageConfig(
            backend=backend,
            microdata_path=str(settings.effective_microdata_root),
            projects_path=str(settings.effective_project_storage_root),
        )
    for name, value in (
        ("storage_microdata_path", settings.storage_microdata_path),
        ("storage_projects_path", settings.storage_projects_path),
    ):
        if not posixpath.isabs(value):
            raise Invalid(f"KLUIS_{name.upper()} must be an absolute path", {"field": name})
    if backend is StorageBackend.NFS and not settings.storage_nfs_server:
        raise Invalid("KLUIS_STORAGE_NFS_SERVER is required for the nfs storage backend")
    if backend is StorageBackend.CSI:
        if not settings.storage_csi_driver:
            raise Invalid("KLUIS_STORAGE_CSI_DRIVER is required for the csi storage backend")
        if "{path}" not in settings.storage_csi_volume_handle:
            raise Invalid("KLUIS_STORAGE_CSI_VOLUME_HANDLE must contain {path}")
    return StorageConfig(
        backend=backend,
        microdata_path=settings.storage_microdata_path,
        projects_path=settings.storage_projects_path,
        nfs_server=settings.storage_nfs_server,
        csi_driver=settings.storage_csi_driver,
        csi_volume_handle=settings.storage_csi_volume_handle,
    )


def make_hub_config(settings: Settings) -> HubConfig:
    return HubConfig(
        namespace=settings.hub_namespace,
        service_account=settings.hub_service_account,
        hub_pod_labels=dict(settings.hub_pod_labels),
        proxy_pod_labels=dict(settings.proxy_pod_labels),
        server_port=settings.workspace_server_port,
        api_port=settings.hub_api_port,
    )


def desired_workspace(session: Session, project: Project, settings: Settings) -> WorkspaceSpec:
    """What the cluster should hold for `project` now: its unrevoked grants and the members whose
    membership is open. Reads only; `Invalid` for an unknown compute size or incomplete storage
    settings."""
    size = settings.compute_sizes.get(project.compute_size)
    if size is None:
        raise Invalid(
            f"project {project.code} has an unknown compute size {project.compute_size!r}",
            {"field": "compute_size"},
        )
    datasets = sorted(
        (
            DatasetMount(
                version_id=grant.dataset_version.id,
                dataset_code=grant.dataset_version.dataset.code,
                label=grant.dataset_version.label,
                location=grant.dataset_version.location,
                size_bytes=grant.dataset_version.size_bytes,
            )
            for grant in grants.active_grants(session, project)
        ),
        key=lambda mount: mount.version_id,
    )
    # Two open grants of one version would mount it once.
    unique = {mount.version_id: mount for mount in datasets}
    members = sorted({member.user.username for member in current_members(project)})
    return WorkspaceSpec(
        project_code=project.code,
        namespace=namespace_name(project.code),
        state=project.state,
        servers_allowed=project.state in ACCESS_STATES,
        size=size,
        members=tuple(members),
        datasets=tuple(unique.values()),
        storage=make_storage_config(settings),
        hub=make_hub_config(settings),
        pod_security_version=settings.pod_security_version,
    )
