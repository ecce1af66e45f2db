"""Project-aware spawners. `KluisSpawner` (KubeSpawner) starts a user's server named after the
project in the project's namespace and takes everything that matters for isolation — namespace,
image, resources, volumes and mounts, environment, identity and security context — from the
control plane's spawn spec. User options can only choose among what the spec allows; the
control plane refuses anything else (and so does the spawner, before asking).

`KluisDevSpawner` is for development only (`make dev`, where kwok pods run no container): a real
`jupyterhub-singleuser` as a local process of the hub's own user, in a folder that links the
project's folders. It enforces nothing (no read-only mounts, no network policy, no user
separation) and is never used in production.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from jupyterhub.spawner import SimpleLocalProcessSpawner
from kubespawner import KubeSpawner
from tornado import web
from traitlets import Unicode

from orchestrator.hub.authenticator import valid_project_code
from orchestrator.hub.control_plane import ControlPlane, ControlPlaneRefused

ALLOWED_OPTIONS = frozenset({"image"})


def check_user_options(options: dict[str, Any]) -> dict[str, Any]:
    """Only the options a project may offer (an image from its allow-list, checked by the control
    plane); `HTTPError(400)` for anything else: namespace, volumes, service account, security
    context or any other key never reach the pod."""
    unknown = sorted(set(options) - ALLOWED_OPTIONS)
    if unknown:
        raise web.HTTPError(400, f"Options not allowed: {', '.join(unknown)}.")
    return dict(options)


async def fetch_spawn_spec(
    control_plane: ControlPlane, username: str, server_name: str, options: dict[str, Any]
) -> dict[str, Any]:
    if not valid_project_code(server_name):
        raise web.HTTPError(400, "Servers are named after a project: open one from the portal.")
    try:
        return await control_plane.spawn_spec(username, server_name, check_user_options(options))
    except ControlPlaneRefused as refused:
        status = refused.status if refused.status != 401 else 503
        raise web.HTTPError(status, refused.message) from None


def _control_plane_url() -> Unicode[str, str | bytes]:
    return Unicode("http://127.0.0.1:8000", config=True, help="The control plane.")


def _service_token() -> Unicode[str, str | bytes]:
    return Unicode("", config=True, help="KLUIS_HUB_SERVICE_TOKEN.")


class KluisSpawner(KubeSpawner):  # type: ignore[misc]
    control_plane_url = _control_plane_url()
    service_token = _service_token()

    def _control_plane(self) -> ControlPlane:
        return ControlPlane(self.control_plane_url, self.service_token)

    async def load_user_options(self) -> None:
        """Replaces KubeSpawner's profile handling: the spawn spec is the only source."""
        spec = await fetch_spawn_spec(
            self._control_plane(), self.user.name, self.name, dict(self.user_options or {})
        )
        self.apply_spawn_spec(spec)

    def apply_spawn_spec(self, spec: dict[str, Any]) -> None:
        for name, value in spawner_traits(spec, dict(self.environment)).items():
            setattr(self, name, value)


def spawner_traits(spec: dict[str, Any], environment: dict[str, Any]) -> dict[str, Any]:
    """KubeSpawner's traits from a spawn spec; also switches off everything of KubeSpawner's own
    that could add a volume, a container or pod settings (storage, init containers, extras)."""
    return {
        "namespace": spec["namespace"],
        "service_account": spec["service_account"],
        "automount_service_account_token": bool(spec["automount_service_account_token"]),
        "image": spec["image"],
        "port": int(spec["port"]),
        "cpu_limit": float(spec["cpu_limit"]),
        "cpu_guarantee": float(spec["cpu_guarantee"]),
        "mem_limit": int(spec["mem_limit"]),
        "mem_guarantee": int(spec["mem_guarantee"]),
        "volumes": list(spec["volumes"]),
        "volume_mounts": list(spec["volume_mounts"]),
        "working_dir": spec["working_dir"],
        "environment": {**environment, **spec["environment"]},
        "extra_labels": dict(spec["labels"]),
        "uid": int(spec["uid"]),
        "gid": int(spec["gid"]),
        "fs_gid": int(spec["fs_gid"]),
        "supplemental_gids": [],
        "privileged": False,
        "allow_privilege_escalation": False,
        "pod_security_context": dict(spec["pod_security_context"]),
        "container_security_context": dict(spec["container_security_context"]),
        "storage_pvc_ensure": False,
        "init_containers": [],
        "extra_containers": [],
        "extra_pod_config": {},
        "extra_container_config": {},
        "lifecycle_hooks": {},
        "node_selector": {},
        "services_enabled": False,
    }


class KluisDevSpawner(SimpleLocalProcessSpawner):  # type: ignore[misc]
    """DEVELOPMENT ONLY: a local `jupyterhub-singleuser` whose root folder links the project's
    folders (datasets, workspace, import, export, home) as the spawn spec names them."""

    control_plane_url = _control_plane_url()
    service_token = _service_token()

    servers_root = Unicode(
        "/tmp/kluis-dev-servers",  # noqa: S108 - development only
        config=True,
        help="Where each (user, project) development server gets its folder of links.",
    )

    def _control_plane(self) -> ControlPlane:
        return ControlPlane(self.control_plane_url, self.service_token)

    async def start(self) -> Any:
        spec = await fetch_spawn_spec(
            self._control_plane(), self.user.name, self.name, dict(self.user_options or {})
        )
        root = Path(self.servers_root) / f"{self.user.name}-{spec['project']}"
        root.mkdir(parents=True, exist_ok=True)
        for mount_path, local in spec["local_paths"].items():
            link = root / mount_path.lstrip("/")
            link.parent.mkdir(parents=True, exist_ok=True)
            Path(local).mkdir(parents=True, exist_ok=True)
            if link.is_symlink() and os.readlink(link) != local:
                link.unlink()
            if not link.exists():
                link.symlink_to(local, target_is_directory=True)
        environment: dict[str, Any] = dict(self.environment)
        traits = {
            "home_dir": str(root),
            "notebook_dir": str(root),
            "environment": {**environment, **spec["environment"], "KLUIS_DEVELOPMENT_SERVER": "1"},
        }
        for name, value in traits.items():
            setattr(self, name, value)
        return await super().start()
