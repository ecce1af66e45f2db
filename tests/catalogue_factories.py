"""Plain factory functions for the catalogue and grant tests: rows written straight to the database
and real folders under a temporary microdata root, so each test states only what matters to it."""

from __future__ import annotations

import secrets
from datetime import date, timedelta
from pathlib import Path

from admin_factories import make_institution, make_user
from sqlalchemy.orm import Session

from orchestrator.config import Settings
from orchestrator.models import Dataset, DatasetVersion, Project, ProjectState, User, utcnow


def with_microdata_root(settings: Settings, root: Path) -> Settings:
    root.mkdir(parents=True, exist_ok=True)
    return settings.model_copy(update={"microdata_root": root})


def make_dataset(
    session: Session, *, code: str | None = None, topic: str = "persons", title: str = "A dataset"
) -> Dataset:
    dataset = Dataset(
        code=code or f"DS_{secrets.token_hex(4).upper()}", title=title, topic=topic, description=""
    )
    session.add(dataset)
    session.flush()
    return dataset


def make_version(
    session: Session,
    dataset: Dataset,
    *,
    label: str = "2024V1",
    location: str | None = None,
    available_from: date | None = None,
    available_until: date | None = None,
) -> DatasetVersion:
    version = DatasetVersion(
        dataset=dataset,
        label=label,
        location=location or f"{dataset.code.lower()}/{label}",
        available_from=available_from or utcnow().date() - timedelta(days=30),
        available_until=available_until,
        files=[],
        size_bytes=0,
    )
    session.add(version)
    session.flush()
    return version


def write_files(folder: Path, files: dict[str, bytes]) -> Path:
    """Create `folder` with the given files (relative paths, nested folders made as needed)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    return folder


def make_project(
    session: Session,
    *,
    state: ProjectState = ProjectState.APPROVED,
    lead: User | None = None,
) -> Project:
    institution = make_institution(session)
    lead = lead or make_user(session, institution=institution)
    today = utcnow().date()
    project = Project(
        code=str(10_000 + secrets.randbelow(89_999)),
        title="A project",
        purpose="Research",
        institution_id=institution.id,
        lead_id=lead.id,
        start_date=today,
        end_date=today + timedelta(days=365),
        compute_size="small",
        state=state,
    )
    session.add(project)
    session.flush()
    return project
