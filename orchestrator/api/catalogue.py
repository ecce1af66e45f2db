"""Dataset catalogue routes under `/api/datasets`: everyone logged in browses metadata; data
stewards add and change datasets and versions and scan versions' folders.

Storage locations and file lists go to staff only (docs/security.md, "Dataset catalogue").
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request

from orchestrator import catalogue
from orchestrator.api.access import allow, require_step_up
from orchestrator.api.deps import (
    CurrentPrincipal,
    NowDep,
    SessionDep,
    SettingsDep,
    request_source,
)
from orchestrator.models import Dataset, DatasetVersion, User
from orchestrator.policy import Action
from orchestrator.schemas import (
    DatasetCreate,
    DatasetFileRead,
    DatasetPage,
    DatasetRead,
    DatasetUpdate,
    DatasetVersionCreate,
    DatasetVersionRead,
)

router = APIRouter(prefix="/api/datasets", tags=["catalogue"])

Code = Annotated[str, Path(min_length=1, max_length=64)]
Label = Annotated[str, Path(min_length=1, max_length=64)]
Limit = Annotated[int, Query(ge=1, le=200)]
Offset = Annotated[int, Query(ge=0, le=1_000_000)]
STEP_UP: dict[int | str, dict[str, Any]] = {
    403: {"description": "Forbidden, or a recent step-up is needed."}
}


def _sees_storage(user: User) -> bool:
    """Staff see where a version lives and which files it holds; researchers see neither: they
    need the metadata to choose data, not the layout of the storage behind it."""
    return user.is_staff


def version_read(
    version: DatasetVersion, viewer: User, now: datetime, *, with_files: bool
) -> DatasetVersionRead:
    storage = _sees_storage(viewer)
    return DatasetVersionRead(
        id=version.id,
        label=version.label,
        size_bytes=version.size_bytes,
        file_count=len(version.files),
        scanned_at=version.scanned_at,
        available_from=version.available_from,
        available_until=version.available_until,
        available=catalogue.is_available(version, now.date()),
        created_at=version.created_at,
        location=version.location if storage else None,
        files=[DatasetFileRead(**f) for f in version.files] if storage and with_files else None,
    )


def dataset_read(dataset: Dataset, viewer: User, now: datetime, *, with_files: bool) -> DatasetRead:
    return DatasetRead(
        id=dataset.id,
        code=dataset.code,
        title=dataset.title,
        topic=dataset.topic,
        description=dataset.description,
        created_at=dataset.created_at,
        updated_at=dataset.updated_at,
        version=dataset.version,
        versions=[version_read(v, viewer, now, with_files=with_files) for v in dataset.versions],
    )


@router.get("")
def list_datasets(
    principal: CurrentPrincipal,
    session: SessionDep,
    now: NowDep,
    q: Annotated[str | None, Query(max_length=100, description="Part of code or title.")] = None,
    topic: Annotated[str | None, Query(max_length=160)] = None,
    limit: Limit = 50,
    offset: Offset = 0,
) -> DatasetPage:
    """The catalogue by code, with each dataset's versions (without file lists)."""
    allow(principal, Action.CATALOGUE_READ)
    items, total = catalogue.list_datasets(
        session, query=q, topic=topic, limit=limit, offset=offset
    )
    return DatasetPage(
        items=[dataset_read(d, principal.user, now, with_files=False) for d in items],
        total=total,
        limit=limit,
        offset=offset,
    )


@router.post("", status_code=201)
def create_dataset(
    body: DatasetCreate,
    principal: CurrentPrincipal,
    session: SessionDep,
    settings: SettingsDep,
    now: NowDep,
    request: Request,
) -> DatasetRead:
    allow(principal, Action.CATALOGUE_MANAGE)
    dataset = catalogue.create_dataset(
        session,
        code=body.code,
        title=body.title,
        topic=body.topic,
        description=body.description,
        actor=principal.user,
        source=request_source(request, settings),
    )
    return dataset_read(dataset, principal.user, now, with_files=True)


@router.get("/{code}")
def get_dataset(
    code: Code, principal: CurrentPrincipal, session: SessionDep, now: NowDep
) -> DatasetRead:
    """One dataset with its versions (and, for staff, their file lists)."""
    allow(principal, Action.CATALOGUE_READ)
    dataset = catalogue.get_dataset(session, code)
    return dataset_read(dataset, principal.user, now, with_files=True)


@router.patch("/{code}", responses={409: {"description": "Stale `version`."}})
def update_dataset(
    code: Code,
    body: DatasetUpdate,
    principal: CurrentPrincipal,
    session: SessionDep,
    settings: SettingsDep,
    now: NowDep,
    request: Request,
) -> DatasetRead:
    """Change the title, topic or description; `version` must be the one last read, else 409."""
    allow(principal, Action.CATALOGUE_MANAGE)
    dataset = catalogue.get_dataset(session, code)
    catalogue.update_dataset(
        session,
        dataset,
        version=body.version,
        actor=principal.user,
        source=request_source(request, settings),
        title=body.title,
        topic=body.topic,
        description=body.description,
    )
    return dataset_read(dataset, principal.user, now, with_files=True)


@router.post("/{code}/versions", status_code=201, responses=STEP_UP)
def add_version(
    code: Code,
    body: DatasetVersionCreate,
    principal: CurrentPrincipal,
    session: SessionDep,
    settings: SettingsDep,
    now: NowDep,
    request: Request,
) -> DatasetVersionRead:
    """A new version in a folder below the microdata root. Its location decides which files a
    grant mounts, so this needs a recent step-up."""
    allow(principal, Action.CATALOGUE_MANAGE)
    dataset = catalogue.get_dataset(session, code)
    require_step_up(principal, settings, now)
    version = catalogue.add_version(
        session,
        settings,
        dataset,
        label=body.label,
        location=body.location,
        available_from=body.available_from,
        available_until=body.available_until,
        actor=principal.user,
        source=request_source(request, settings),
    )
    return version_read(version, principal.user, now, with_files=True)


@router.get("/{code}/versions/{label}")
def get_version(
    code: Code, label: Label, principal: CurrentPrincipal, session: SessionDep, now: NowDep
) -> DatasetVersionRead:
    allow(principal, Action.CATALOGUE_READ)
    dataset = catalogue.get_dataset(session, code)
    version = catalogue.get_dataset_version(session, dataset, label)
    return version_read(version, principal.user, now, with_files=True)


@router.post(
    "/{code}/versions/{label}/scan",
    responses={409: {"description": "The folder is missing or cannot be mounted safely."}},
)
def scan_version(
    code: Code,
    label: Label,
    principal: CurrentPrincipal,
    session: SessionDep,
    settings: SettingsDep,
    now: NowDep,
    request: Request,
) -> DatasetVersionRead:
    """Record the files of the version's folder with sizes and SHA-256 checksums (runs while the
    request waits: scan large versions with `kluis catalogue scan`)."""
    allow(principal, Action.CATALOGUE_MANAGE)
    dataset = catalogue.get_dataset(session, code)
    version = catalogue.get_dataset_version(session, dataset, label)
    catalogue.scan_version(
        settings,
        session,
        version,
        principal.user,
        source=request_source(request, settings),
        now=now,
    )
    return version_read(version, principal.user, now, with_files=True)
