"""Grants: a project's access to specific dataset versions, with its history. The unrevoked grants
are what a project's workspace mounts.

Domain functions only: callers authorise (project approval and approved "add dataset" requests
call `grant_dataset`). Each change is audited in the caller's transaction.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import CursorResult, select, update
from sqlalchemy.orm import Session, selectinload

from orchestrator import audit, catalogue
from orchestrator.errors import Conflict
from orchestrator.models import DatasetVersion, Grant, Project, ProjectState, User

# A project in one of these states will never use data again: granting to it is a mistake.
CLOSED_STATES = frozenset({ProjectState.REJECTED, ProjectState.ARCHIVED, ProjectState.DELETED})


_WITH_VERSION = selectinload(Grant.dataset_version).selectinload(DatasetVersion.dataset)


def find_active_grant(session: Session, project: Project, version: DatasetVersion) -> Grant | None:
    """The project's unrevoked grant of this version, if there is one."""
    return session.scalars(
        select(Grant)
        .where(
            Grant.project_id == project.id,
            Grant.dataset_version_id == version.id,
            Grant.revoked_at.is_(None),
        )
        .order_by(Grant.id)
        .limit(1)
    ).one_or_none()


def active_grants(session: Session, project: Project) -> list[Grant]:
    """The project's unrevoked grants, oldest first: exactly what its workspace will mount."""
    return list(
        session.scalars(
            select(Grant)
            .where(Grant.project_id == project.id, Grant.revoked_at.is_(None))
            .options(_WITH_VERSION)
            .order_by(Grant.granted_at, Grant.id)
        ).all()
    )


def grant_history(session: Session, project: Project) -> list[Grant]:
    """Every grant the project ever had, revoked ones included, oldest first (for the project page
    and for invoicing by day)."""
    return list(
        session.scalars(
            select(Grant)
            .where(Grant.project_id == project.id)
            .options(_WITH_VERSION)
            .order_by(Grant.granted_at, Grant.id)
        ).all()
    )


def grant_dataset(
    session: Session,
    project: Project,
    version: DatasetVersion,
    actor: User | None,
    now: datetime,
    *,
    source: str = "",
) -> Grant:
    """Grant `project` access to `version` from `now` on; `actor=None` is the system.

    Idempotent: if the project holds an unrevoked grant of this version, that grant is returned
    and nothing is written. Otherwise the version must be available on `now`'s date and the
    project must not be rejected, archived or deleted (`Conflict`).
    """
    # Serialise grants to one project (PostgreSQL row lock; SQLite serialises writers anyway), so
    # two concurrent approvals cannot both find no grant and add one each.
    session.execute(select(Project.id).where(Project.id == project.id).with_for_update())
    existing = find_active_grant(session, project, version)
    if existing is not None:
        return existing
    if project.state in CLOSED_STATES:
        raise Conflict(
            f"Project {project.code} is {project.state.value}; it cannot be granted data.",
            {"rule": "project_closed", "state": project.state.value},
        )
    dataset = version.dataset
    if not catalogue.is_available(version, now.date()):
        until = version.available_until.isoformat() if version.available_until else "open-ended"
        raise Conflict(
            f"{dataset.code} {version.label} is not available on {now.date().isoformat()} "
            f"(available from {version.available_from.isoformat()} until {until}).",
            {"rule": "version_unavailable"},
        )
    grant = Grant(
        project=project,
        dataset_version=version,
        granted_at=now,
        granted_by_id=actor.id if actor is not None else None,
    )
    session.add(grant)
    session.flush()
    audit.record(
        session,
        "grant_created",
        actor=actor,
        object_type="grant",
        object_id=grant.id,
        source=source,
        details={
            "project": project.code,
            "dataset": dataset.code,
            "label": version.label,
            "dataset_version_id": version.id,
        },
    )
    return grant


def revoke_grant(
    session: Session,
    grant: Grant,
    actor: User | None,
    now: datetime,
    *,
    reason: str = "",
    source: str = "",
) -> Grant:
    """End a grant at `now`: its version is no longer mounted. `Conflict` if it was revoked
    already (also when a concurrent revocation got there first: one conditional UPDATE)."""
    result = session.execute(
        update(Grant)
        .where(Grant.id == grant.id, Grant.revoked_at.is_(None))
        .values(revoked_at=now, revoked_by_id=actor.id if actor is not None else None)
        .execution_options(synchronize_session=False)
    )
    assert isinstance(result, CursorResult)
    if result.rowcount != 1:
        session.refresh(grant)
        when = grant.revoked_at.isoformat() if grant.revoked_at else "earlier"
        raise Conflict(f"This grant was revoked already ({when}).", {"rule": "already_revoked"})
    session.refresh(grant)
    version = grant.dataset_version
    audit.record(
        session,
        "grant_revoked",
        actor=actor,
        object_type="grant",
        object_id=grant.id,
        source=source,
        details={
            "project": grant.project.code,
            "dataset": version.dataset.code,
            "label": version.label,
            "dataset_version_id": version.id,
            "reason": reason[:500],
        },
    )
    return grant
