"""Plain factory functions for project tests (and anyone who needs a project in some state):
rows written straight to the database with what that state implies (dates, quote, grants), so a
test states only what matters to it.

`make_project(state=...)` gives a project as the state machine would have left it: members with
their rows (the lead with role LEAD), requested dataset versions, a quote from a tariff from
QUOTED on, grants from APPROVED on, and the timestamps of the steps taken.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from sqlalchemy import select
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
    UserStatus,
)

S = ProjectState
QUOTED_STATES = frozenset(
    {S.QUOTED, S.ACCEPTED, S.APPROVED, S.ACTIVE, S.FROZEN, S.EXPIRED, S.ARCHIVED, S.DELETED}
)
ACCEPTED_STATES = QUOTED_STATES - {S.QUOTED}
APPROVED_STATES = ACCEPTED_STATES - {S.ACCEPTED}
ACTIVATED_STATES = frozenset({S.ACTIVE, S.FROZEN, S.EXPIRED, S.ARCHIVED, S.DELETED})
ENDED_STATES = frozenset({S.EXPIRED, S.ARCHIVED, S.DELETED})
_UNSET = date.min


def utcnow() -> datetime:
    return datetime.now(UTC)


def today() -> date:
    return utcnow().date()


def make_institution(
    session: Session,
    *,
    authorised_from: date | None = None,
    authorised_until: date | None = None,
) -> Institution:
    institution = Institution(
        name=f"Institute {secrets.token_hex(4)}",
        country="NL",
        authorised_from=authorised_from or today() - timedelta(days=30),
        authorised_until=authorised_until or today() + timedelta(days=365),
        allowed_networks=[],
    )
    session.add(institution)
    session.flush()
    return institution


def make_researcher(
    session: Session,
    *,
    institution: Institution | None = None,
    statement_valid_until: date | None = _UNSET,
    status: UserStatus = UserStatus.ACTIVE,
    username: str | None = None,
) -> User:
    """An active researcher of an authorised institution with a statement valid for a year:
    someone who may be a project's lead or member. Pass arguments to take that away."""
    institution = institution or make_institution(session)
    user = User(
        username=username or f"researcher-{secrets.token_hex(4)}",
        email=f"r{secrets.token_hex(3)}@example.org",
        full_name="Re Searcher",
        role=Role.RESEARCHER,
        status=status,
        institution_id=institution.id,
        statement_signed_at=utcnow() - timedelta(days=1),
        statement_valid_until=(
            today() + timedelta(days=365)
            if statement_valid_until is _UNSET
            else statement_valid_until
        ),
    )
    session.add(user)
    session.flush()
    return user


def make_staff(session: Session, role: Role = Role.DATA_STEWARD) -> User:
    user = User(
        username=f"{role.value.replace('_', '-')}-{secrets.token_hex(4)}",
        email=f"s{secrets.token_hex(3)}@example.org",
        full_name="Staff Member",
        role=role,
        status=UserStatus.ACTIVE,
        statement_signed_at=utcnow() - timedelta(days=1),
        statement_valid_until=today() + timedelta(days=365),
    )
    session.add(user)
    session.flush()
    return user


def make_dataset_version(
    session: Session,
    *,
    code: str | None = None,
    topic: str | None = None,
    label: str = "2024V1",
    available_from: date | None = None,
    available_until: date | None = None,
) -> DatasetVersion:
    """A version of a new dataset (its own topic unless given), available from 30 days ago."""
    dataset = Dataset(
        code=code or f"DS_{secrets.token_hex(4).upper()}",
        title="A dataset",
        topic=topic or f"topic-{secrets.token_hex(3)}",
        description="",
    )
    session.add(dataset)
    version = DatasetVersion(
        dataset=dataset,
        label=label,
        location=f"{dataset.code.lower()}/{label}",
        available_from=available_from or today() - timedelta(days=30),
        available_until=available_until,
        files=[],
        size_bytes=0,
    )
    session.add(version)
    session.flush()
    return version


def make_tariff(
    session: Session,
    *,
    label: str | None = None,
    valid_from: date | None = None,
    base_fee: str = "1000.00",
    per_researcher_month: str = "100.00",
    per_topic_month: str = "50.00",
    fee_add_researcher: str = "250.00",
    fee_add_dataset: str = "300.00",
    fee_extension: str = "200.00",
) -> Tariff:
    """A tariff valid from 2000-01-01 (unless given), so every project finds it."""
    tariff = Tariff(
        label=label or f"T{secrets.token_hex(4)}",
        valid_from=valid_from or date(2000, 1, 1),
        currency="EUR",
        base_fee=Decimal(base_fee),
        per_researcher_month=Decimal(per_researcher_month),
        per_topic_month=Decimal(per_topic_month),
        fee_add_researcher=Decimal(fee_add_researcher),
        fee_add_dataset=Decimal(fee_add_dataset),
        fee_extension=Decimal(fee_extension),
    )
    session.add(tariff)
    session.flush()
    return tariff


def _free_code(session: Session) -> str:
    while True:
        code = str(10_000 + secrets.randbelow(90_000))
        if session.scalar(select(Project.id).where(Project.code == code)) is None:
            return code


def make_project(
    session: Session,
    *,
    state: ProjectState = ProjectState.DRAFT,
    lead: User | None = None,
    members: Sequence[User] = (),
    versions: Sequence[DatasetVersion] | None = None,
    tariff: Tariff | None = None,
    code: str | None = None,
    start_date: date | None = None,
    end_date: date | None = None,
    archived_at: datetime | None = None,
    title: str = "Income and health",
) -> Project:
    """A project in `state` with its lead (a new researcher unless given), `members`, and
    `versions` (one new dataset version unless given).

    Dates: start today and a year long; ended projects (expired, archived, deleted) ended
    yesterday after a year. From QUOTED on the project has a quote (from `tariff`, a new one
    unless given); from APPROVED on the requested versions are granted.
    """
    now = utcnow()
    lead = lead or make_researcher(session)
    if versions is None:
        versions = [make_dataset_version(session)]
    if state in ENDED_STATES:
        end_date = end_date or today() - timedelta(days=1)
        start_date = start_date or end_date - timedelta(days=365)
    start_date = start_date or today()
    end_date = end_date or start_date + timedelta(days=365)
    project = Project(
        code=code or _free_code(session),
        title=title,
        purpose="Whether income predicts health outcomes.",
        institution_id=lead.institution_id,
        lead_id=lead.id,
        start_date=start_date,
        end_date=end_date,
        compute_size="small",
        legal_basis="Statistics Act, art. 41",
        expected_publications="A paper.",
        state=state,
        state_changed_at=now,
    )
    if state in (S.REJECTED,):
        project.review_comments = "Out of scope."
    if state in QUOTED_STATES:
        tariff = tariff or make_tariff(session)
        project.tariff_id = tariff.id
        project.quote_total = Decimal("2000.00")
        project.quote_lines = [
            {
                "description": "Base fee",
                "quantity": "1",
                "unit_price": "2000.00",
                "amount": "2000.00",
            }
        ]
        project.quoted_at = now - timedelta(days=3)
    if state in ACCEPTED_STATES:
        project.quote_accepted_at = now - timedelta(days=2)
    if state in APPROVED_STATES:
        project.approved_at = now - timedelta(days=1)
    if state in ACTIVATED_STATES:
        project.activated_at = datetime.combine(start_date, datetime.min.time(), tzinfo=UTC)
    if state in ENDED_STATES:
        project.expired_at = datetime.combine(
            end_date + timedelta(days=1), datetime.min.time(), tzinfo=UTC
        )
    if state in (S.ARCHIVED, S.DELETED):
        project.archived_at = archived_at or now
    if state is S.DELETED:
        project.deleted_at = now
    added = now - timedelta(days=5)
    project.members.append(ProjectMember(user_id=lead.id, role=MemberRole.LEAD, added_at=added))
    for member in members:
        project.members.append(
            ProjectMember(user_id=member.id, role=MemberRole.RESEARCHER, added_at=added)
        )
    for version in versions:
        project.requested_datasets.append(RequestedDataset(dataset_version_id=version.id))
    session.add(project)
    session.flush()
    if state in APPROVED_STATES - {S.DELETED}:
        for version in versions:
            session.add(
                Grant(project_id=project.id, dataset_version_id=version.id, granted_at=added)
            )
        session.flush()
    session.refresh(project)
    return project
