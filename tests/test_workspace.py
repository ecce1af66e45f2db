"""The desired workspace read from the database (both backends): only unrevoked grants, only open
memberships; and `kluis render`, which prints it as YAML."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml
from project_factories import make_dataset_version, make_project, make_researcher, utcnow
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from orchestrator.cli import app
from orchestrator.config import ComputeSize, Settings, StorageBackend
from orchestrator.db import make_engine, upgrade_database
from orchestrator.errors import Invalid
from orchestrator.models import Grant, ProjectState
from orchestrator.names import namespace_name
from orchestrator.workspace import (
    DatasetMount,
    HubConfig,
    StorageConfig,
    desired_workspace,
    make_storage_config,
)

S = ProjectState


def test_desired_workspace_active_grants_and_current_members_only(
    db_session: Session, tmp_path: Path
) -> None:
    settings = Settings(data_dir=tmp_path)
    ann = make_researcher(db_session, username="ann-ws")
    bob = make_researcher(db_session, username="bob-ws")
    kept = make_dataset_version(db_session, code="DS_KEPT", label="2024V1")
    revoked = make_dataset_version(db_session, code="DS_REVOKED", label="2023V2")
    project = make_project(
        db_session, state=S.ACTIVE, lead=ann, members=[bob], versions=[kept, revoked]
    )
    for grant in db_session.query(Grant).filter_by(dataset_version_id=revoked.id):
        grant.revoked_at = utcnow()
    member = next(m for m in project.members if m.user_id == bob.id)
    member.removed_at = utcnow()
    db_session.flush()

    spec = desired_workspace(db_session, project, settings)

    assert spec.project_code == project.code
    assert spec.namespace == namespace_name(project.code)
    assert spec.state is S.ACTIVE
    assert spec.servers_allowed
    assert spec.size == ComputeSize(cpu="2", memory="8Gi", storage="50Gi")
    assert spec.members == ("ann-ws",)
    assert spec.datasets == (
        DatasetMount(
            version_id=kept.id,
            dataset_code="DS_KEPT",
            label="2024V1",
            location="ds_kept/2024V1",
            size_bytes=0,
        ),
    )
    assert spec.storage == StorageConfig(
        backend=StorageBackend.HOST_PATH,
        microdata_path=str(tmp_path / "microdata"),
        projects_path=str(tmp_path / "projects"),
    )
    assert spec.hub == HubConfig(
        namespace="kluis",
        service_account="hub",
        hub_pod_labels={"app.kubernetes.io/name": "kluis", "app.kubernetes.io/component": "hub"},
        proxy_pod_labels={
            "app.kubernetes.io/name": "kluis",
            "app.kubernetes.io/component": "proxy",
        },
        server_port=8888,
        api_port=8081,
    )
    assert spec.pod_security_version == "v1.36"


def test_desired_workspace_sorts_members_and_datasets(db_session: Session, tmp_path: Path) -> None:
    zed = make_researcher(db_session, username="zed-ws")
    amy = make_researcher(db_session, username="amy-ws")
    first = make_dataset_version(db_session)
    second = make_dataset_version(db_session)
    project = make_project(
        db_session, state=S.ACTIVE, lead=zed, members=[amy], versions=[second, first]
    )

    spec = desired_workspace(db_session, project, Settings(data_dir=tmp_path))

    assert spec.members == ("amy-ws", "zed-ws")
    assert [d.version_id for d in spec.datasets] == sorted([first.id, second.id])


def test_desired_workspace_frozen_allows_no_servers(db_session: Session, tmp_path: Path) -> None:
    project = make_project(db_session, state=S.FROZEN)

    spec = desired_workspace(db_session, project, Settings(data_dir=tmp_path))

    assert spec.state is S.FROZEN
    assert not spec.servers_allowed
    assert len(spec.datasets) == 1


def test_desired_workspace_unknown_size_is_invalid(db_session: Session, tmp_path: Path) -> None:
    project = make_project(db_session, state=S.ACTIVE)
    project.compute_size = "huge"

    with pytest.raises(Invalid, match="unknown compute size"):
        desired_workspace(db_session, project, Settings(data_dir=tmp_path))


def test_make_storage_config_nfs_needs_a_server(tmp_path: Path) -> None:
    with pytest.raises(Invalid, match="STORAGE_NFS_SERVER"):
        make_storage_config(Settings(data_dir=tmp_path, storage_backend="nfs"))


def test_make_storage_config_csi_needs_driver_and_path_in_handle(tmp_path: Path) -> None:
    with pytest.raises(Invalid, match="STORAGE_CSI_DRIVER"):
        make_storage_config(Settings(data_dir=tmp_path, storage_backend="csi"))
    with pytest.raises(Invalid, match="must contain"):
        make_storage_config(
            Settings(
                data_dir=tmp_path,
                storage_backend="csi",
                storage_csi_driver="csi.example.org",
                storage_csi_volume_handle="fixed",
            )
        )


def test_make_storage_config_nfs_uses_server_paths(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path,
        storage_backend="nfs",
        storage_nfs_server="nfs.example.org",
        storage_microdata_path="/export/micro",
        storage_projects_path="/export/projects",
    )

    assert make_storage_config(settings) == StorageConfig(
        backend=StorageBackend.NFS,
        microdata_path="/export/micro",
        projects_path="/export/projects",
        nfs_server="nfs.example.org",
        csi_driver=None,
    )


# --- kluis render ---------------------------------------------------------------------------------

runner = CliRunner()


@pytest.fixture
def cli_settings(unmigrated_settings: Settings, clean_env: Path) -> Settings:
    upgrade_database(unmigrated_settings)
    return unmigrated_settings


def env_for(settings: Settings) -> dict[str, str]:
    env = {
        "KLUIS_ENVIRONMENT": "development",
        "KLUIS_DATA_DIR": str(settings.data_dir),
        "KLUIS_LOG_LEVEL": "WARNING",
    }
    if settings.database_url:
        env["KLUIS_DATABASE_URL"] = settings.database_url
    return env


def test_cli_render_prints_the_workspace_as_yaml(cli_settings: Settings) -> None:
    engine = make_engine(cli_settings)
    with Session(engine, expire_on_commit=False) as session:
        lead = make_researcher(session, username="render-lead")
        project = make_project(session, state=S.ACTIVE, lead=lead)
        session.commit()
        code = project.code
    engine.dispose()

    result = runner.invoke(app, ["render", code], env=env_for(cli_settings))

    assert result.exit_code == 0, result.output
    documents = list(yaml.safe_load_all(result.stdout))
    assert documents[0]["kind"] == "Namespace"
    assert documents[0]["metadata"]["name"] == f"kluis-p-{code}"
    assert [d["kind"] for d in documents].count("PersistentVolume") == 1 + 3 + 1
    assert result.stdout.startswith("---\n")


def test_cli_render_unknown_project_fails(cli_settings: Settings) -> None:
    result = runner.invoke(app, ["render", "99999"], env=env_for(cli_settings))

    assert result.exit_code == 1
    assert "no project '99999'" in result.stderr


def test_workspace_spec_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        DatasetMount(1, "A", "B", "a/b", 0).label = "C"  # type: ignore[misc]
