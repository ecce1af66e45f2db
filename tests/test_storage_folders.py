"""Project storage folders on the hostPath backend: made before the workspace, idempotent, and
nothing is ever removed (a removed member's home and an expired project's data stay)."""

from __future__ import annotations

import dataclasses
import stat
from pathlib import Path

import pytest

from orchestrator.config import ComputeSize, StorageBackend
from orchestrator.errors import Invalid
from orchestrator.models import ProjectState
from orchestrator.project_storage import ensure_project_folders
from orchestrator.workspace import HubConfig, StorageConfig, WorkspaceSpec


def make_spec(
    root: Path, members: tuple[str, ...] = ("ann", "bob"), **storage: str
) -> WorkspaceSpec:
    config = StorageConfig(
        backend=StorageBackend(storage.pop("backend", StorageBackend.HOST_PATH)),
        microdata_path=str(root / "microdata"),
        projects_path=str(root / "projects"),
        **storage,
    )
    return WorkspaceSpec(
        project_code="12345",
        namespace="kluis-p-12345",
        state=ProjectState.ACTIVE,
        servers_allowed=True,
        size=ComputeSize(cpu="1", memory="1Gi", storage="1Gi"),
        members=members,
        datasets=(),
        storage=config,
        hub=HubConfig(namespace="kluis", service_account="hub"),
        pod_security_version="v1.36",
    )


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_ensure_project_folders_creates_every_area_with_its_mode(tmp_path: Path) -> None:
    spec = make_spec(tmp_path)

    result = ensure_project_folders(spec)

    base = tmp_path / "projects" / "12345"
    assert {p.relative_to(base).as_posix() for p in result.created} == {
        ".",
        "workspace",
        "import",
        "export",
        "home",
        "home/ann",
        "home/bob",
    }
    assert mode(base) == 0o750
    assert mode(base / "workspace") == 0o770
    assert mode(base / "import") == 0o750
    assert mode(base / "export") == 0o770
    assert mode(base / "home") == 0o750
    assert mode(base / "home" / "ann") == 0o770


def test_ensure_project_folders_again_creates_nothing_and_keeps_data(tmp_path: Path) -> None:
    spec = make_spec(tmp_path)
    ensure_project_folders(spec)
    base = tmp_path / "projects" / "12345"
    (base / "workspace" / "analysis.py").write_text("print(1)\n")
    (base / "home").chmod(0o700)  # an administrator's choice is left alone

    again = ensure_project_folders(dataclasses.replace(spec, members=("ann",)))

    assert again.created == ()
    assert (base / "workspace" / "analysis.py").read_text() == "print(1)\n"
    assert (base / "home" / "bob").is_dir()  # a removed member's home stays
    assert mode(base / "home") == 0o700


def test_ensure_project_folders_new_member_gets_a_home(tmp_path: Path) -> None:
    ensure_project_folders(make_spec(tmp_path, members=("ann",)))

    result = ensure_project_folders(make_spec(tmp_path, members=("ann", "cas")))

    assert result.created == (tmp_path / "projects" / "12345" / "home" / "cas",)


def test_ensure_project_folders_other_backends_touch_nothing(tmp_path: Path) -> None:
    spec = make_spec(tmp_path, backend=StorageBackend.NFS, nfs_server="nfs.example")

    assert ensure_project_folders(spec).created == ()
    assert not (tmp_path / "projects").exists()


@pytest.mark.parametrize("username", ["..", ".hidden", "a/b", ""])
def test_ensure_project_folders_refuses_a_name_that_leaves_the_root(
    tmp_path: Path, username: str
) -> None:
    with pytest.raises(Invalid):
        ensure_project_folders(make_spec(tmp_path, members=(username,)))


def test_ensure_project_folders_refuses_a_file_where_a_folder_belongs(tmp_path: Path) -> None:
    base = tmp_path / "projects" / "12345"
    base.mkdir(parents=True)
    (base / "export").write_text("not a folder")

    with pytest.raises(Invalid, match="not a folder"):
        ensure_project_folders(make_spec(tmp_path))
