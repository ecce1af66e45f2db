"""Minimal rows for the cost, notification and schedule tests: tariffs, datasets, projects with
member and grant history written straight to the database, so each test states its history."""

from __future__ import annotations

import secrets
from datetime import UTC, date, datetime, timedelta
from functools import partial

import project_factories
from admin_factories import make_institution, make_user
from sqlalchemy.orm import Session

from orchestrator.models import (
    Dataset,
    DatasetVersion,
    Grant,
    Institution,
    MemberRole,
    Project,
    ProjectMember,
    ProjectState,
    RequestedDataset,
    Role,
    Tariff,
    User,
)


def at(text: str) -> datetime:
    """`"2026-07-10 09:00"` -> an aware UTC datetime."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


# The project factories' tariff with the fees the cost tests were written against.
make_tariff = partial(
    project_factories.make_tariff,
    valid_from=date(2001, 1, 1),
    per_researcher_month="300.00",
    per_topic_month="200.00",
    fee_add_researcher="150.00",
    fee_add_dataset="100.00",
    fee_extension="250.00",
)


def make_version(session: Session, topic: str, *, code: str | None = None) -> DatasetVersion:
    dataset = Dataset(
        code=code or f"DS{secrets.token_hex(4).upper()}",
        title="A dataset",
        topic=topic,
    )
    session.add(dataset)
    session.flush()
    version = DatasetVersion(
        dataset_id=dataset.id,
        label="2024V1",
        location=f"{dataset.code}/2024V1",
        available_from=date(2000, 1, 1),
    )
    session.add(version)
    session.flush()
    return version


def _code(session: Session) -> str:
    while True:
        code = str(secrets.randbelow(90000) + 10000)
        if session.query(Project.id).filter(Project.code == code).first() is None:
            return code


def make_project(
    session: Session,
    *,
    start: date,
    end: date,
    state: ProjectState = ProjectState.DRAFT,
    lead: User | None = None,
    institution: Institution | None = None,
    tariff: Tariff | None = None,
    activated_at: datetime | None = None,
    expired_at: datetime | None = None,
    archived_at: datetime | None = None,
    lead_added_at: datetime | None = None,
) -> Project:
    """A project with its lead as a member (row added at `lead_added_at` or a day before the
    start)."""
    institution = institution or make_institution(session)
    lead = lead or make_user(session, institution=institution)
    project = Project(
        code=_code(session),
        title="Income and health",
        purpose="Research",
        institution_id=institution.id,
        lead_id=lead.id,
        start_date=start,
        end_date=end,
        compute_size="small",
        state=state,
        tariff_id=tariff.id if tariff else None,
        activated_at=activated_at,
        expired_at=expired_at,
        archived_at=archived_at,
    )
    session.add(project)
    session.flush()
    add_member(
        session,
        project,
        lead,
        lead_added_at or datetime.combine(start - timedelta(days=1), datetime.min.time(), UTC),
        role=MemberRole.LEAD,
    )
    return project


def add_member(
    session: Session,
    project: Project,
    user: User,
    added_at: datetime,
    removed_at: datetime | None = None,
    *,
    role: MemberRole = MemberRole.RESEARCHER,
) -> ProjectMember:
    member = ProjectMember(
        project_id=project.id, user_id=user.id, role=role, added_at=added_at, removed_at=removed_at
    )
    session.add(member)
    session.flush()
    session.refresh(project)
    return member


def add_researcher(
    session: Session,
    project: Project,
    added_at: datetime,
    removed_at: datetime | None = None,
) -> User:
    user = make_user(session, institution=project.institution)
    add_member(session, project, user, added_at, removed_at)
    return user


def add_grant(
    session: Session,
    project: Project,
    version: DatasetVersion,
    granted_at: datetime,
    revoked_at: datetime | None = None,
) -> Grant:
    grant = Grant(
        project_id=project.id,
        dataset_version_id=version.id,
        granted_at=granted_at,
        revoked_at=revoked_at,
    )
    session.add(grant)
    session.flush()
    session.refresh(project)
    return grant


def request_version(session: Session, project: Project, version: DatasetVersion) -> None:
    session.add(RequestedDataset(project_id=project.id, dataset_version_id=version.id))
    session.flush()
    session.refresh(project)


def make_steward(session: Session) -> User:
    return make_user(session, role=Role.DATA_STEWARD)
