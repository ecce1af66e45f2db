"""A project's folders on the project storage root: `<root>/<code>/{workspace,import,export,
home/<user>}`, made before the workspace's volumes point at them.

Only the hostPath backend (development) has the root on this machine; with nfs or csi the
storage server's own provisioning owns the folders. Creating is idempotent and never removes or
rewrites anything: a removed member's home and an expired project's data stay where they are.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from orchestrator.config import StorageBackend
from orchestrator.errors import Invalid
from orchestrator.workspace import HOME_AREA, STORAGE_AREAS, WorkspaceSpec

# Shared areas the workspace writes to are group-writable; `import/` (approved uploads) is
# read-only to the workspace, and `home/` only lists the members' own folders.
FOLDER_MODES: dict[str, int] = {
    "workspace": 0o770,
    "import": 0o750,
    "export": 0o770,
    HOME_AREA: 0o750,
}
PROJECT_MODE = 0o750
HOME_MODE = 0o770


@dataclass(frozen=True)
class FolderResult:
    """The folders made by one call (empty when they all existed)."""

    created: tuple[Path, ...]


def project_folders(root: Path, spec: WorkspaceSpec) -> dict[Path, int]:
    """Every folder of the project with the mode it is created with, parents first."""
    base = root / _component(spec.project_code, "project code")
    folders = {base: PROJECT_MODE}
    for area in (*STORAGE_AREAS, HOME_AREA):
        folders[base / area] = FOLDER_MODES[area]
    for username in spec.members:
        folders[base / HOME_AREA / _component(username, "username")] = HOME_MODE
    return folders


def ensure_project_folders(spec: WorkspaceSpec) -> FolderResult:
    """Make the project's folders that are missing (hostPath only; a no-op for nfs and csi).

    Existing folders are left exactly as they are (modes an administrator set included); nothing
    is ever deleted. `Invalid` when the storage root is missing or a name would leave it."""
    if spec.storage.backend is not StorageBackend.HOST_PATH:
        return FolderResult(())
    root = Path(spec.storage.projects_path)
    if not root.is_absolute():
        raise Invalid(f"project storage root {root} must be an absolute path")
    try:
        root.mkdir(mode=0o750, parents=True, exist_ok=True)
    except OSError as exc:
        raise Invalid(f"cannot create the project storage root {root}: {exc.strerror}") from exc
    created: list[Path] = []
    for path, mode in project_folders(root, spec).items():
        try:
            path.mkdir(mode=mode)
        except FileExistsError:
            if not path.is_dir() or path.is_symlink():
                raise Invalid(f"{path} exists and is not a folder") from None
            continue
        except OSError as exc:
            raise Invalid(f"cannot create {path}: {exc.strerror}") from exc
        os.chmod(path, mode)  # mkdir's mode is masked by the umask
        created.append(path)
    return FolderResult(tuple(created))


def _component(name: str, what: str) -> str:
    """`name` as one path component: no separators, no `.`/`..`, no hidden names."""
    if not name or "/" in name or "\\" in name or "\0" in name or name.startswith("."):
        raise Invalid(f"{what} {name!r} cannot name a folder")
    return name
