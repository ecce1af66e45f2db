"""The application use case: a researcher (or staff on their behalf) applies for a project,
which starts in DRAFT with its lead as a member, and edits the draft until it is submitted. The
steps after that are the state machine in `projects`.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Sequence
from datetime import date, datetime
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from orchestrator import audit, policy
from orchestrator.config import Settings
from orchestrator.errors import Conflict, Forbidden, Invalid
from orchestrator.models import (
    MemberRole,
    Project,
    ProjectMember,
    ProjectState,
    RequestedDataset,
    Role,
    User,
)
from orchestrator.policy import Action
from orchestrator.project_rules import (
    MAX_TEXT_LENGTH,
    available_version_ids,
    check_compute_size,
    check_period,
    check_standing,
    clean_code,
    clean_text,
    clean_title,
)
from orchestrator.projects import (
    FREE_TEXT_FIELDS,
    check_version,
    current_members,
    estimate_quote,
    optimistic,
)

MAX_MEMBERS = 100
CODE_ATTEMPTS = 50


def _user(session: Session, user_id: int, field: str) -> User:
    user = session.get(User, user_id)
    if user is None:
        raise Invalid(f"There is no user {user_id}.", {"field": field})
    return user


def _member_users(
    session: Session, member_ids: Iterable[int], lead: User, today: date
) -> list[User]:
    unique = [i for i in dict.fromkeys(member_ids) if i != lead.id]
    if len(unique) + 1 > MAX_MEMBERS:
        raise Invalid(f"At most {MAX_MEMBERS} members.", {"field": "member_ids"})
    users = [_user(session, i, "member_ids") for i in unique]
    for user in users:
        check_standing(user, today, field="member_ids")
    return users


def _new_code(session: Session) -> str:
    for _ in range(CODE_ATTEMPTS):
        code = str(10_000 + secrets.randbelow(90_000))
        if session.scalar(select(Project.id).where(Project.code == code)) is None:
            return code
    raise Conflict("No free project code was found; give one.", {"field": "code"})


def apply_project(
    session: Session,
    settings: Settings,
    *,
    actor: User | None,
    now: datetime,
    title: str,
    purpose: str,
    compute_size: str,
    start_date: date,
    end_date: date,
    dataset_version_ids: Sequence[int] = (),
    member_ids: Sequence[int] = (),
    legal_basis: str = "",
    expected_publications: str = "",
    lead_id: int | None = None,
    code: str | None = None,
    source: str = "",
) -> Project:
    """A new project in DRAFT, its lead a member with role LEAD.

    A researcher applies as the lead of their own project and gets a generated code; staff (or
    the system) apply on a researcher's behalf (`lead_id`) and may give the code. The lead and
    every member must be an active researcher of an institution whose authorisation covers today,
    with a valid confidentiality statement; the requested dataset versions must be available.
    """
    today = now.date()
    if actor is not None:
        policy.authorize(actor, Action.PROJECT_APPLY)
        if actor.role is Role.RESEARCHER:
            if lead_id not in (None, actor.id):
                raise Forbidden("A researcher applies as the lead of their own project.")
            if code is not None:
                raise Forbidden("Project codes are given by staff; leave the code out.")
            lead_id = actor.id
    if lead_id is None:
        raise Invalid("Name the project's lead.", {"field": "lead_id"})
    lead = _user(session, lead_id, "lead_id")
    check_standing(lead, today, field="lead_id", as_lead=True)
    assert lead.institution_id is not None
    fields = {
        "title": clean_title(title),
        "purpose": clean_text(purpose, "purpose", maximum=MAX_TEXT_LENGTH, required=True),
        "legal_basis": clean_text(
            legal_basis, "legal_basis", maximum=MAX_TEXT_LENGTH, required=False
        ),
        "expected_publications": clean_text(
            expected_publications, "expected_publications", maximum=MAX_TEXT_LENGTH, required=False
        ),
        "compute_size": check_compute_size(compute_size, settings),
    }
    check_period(start_date, end_date, settings, today)
    versions = available_version_ids(
        session, dataset_version_ids, today, field="dataset_version_ids"
    )
    members = _member_users(session, member_ids, lead, today)
    if code is not None:
        code = clean_code(code)
        if session.scalar(select(Project.id).where(Project.code == code)) is not None:
            raise Conflict(f"Project code {code} is taken.", {"field": "code"})
    project = Project(
        code=code or _new_code(session),
        institution_id=lead.institution_id,
        lead_id=lead.id,
        start_date=start_date,
        end_date=end_date,
        state=ProjectState.DRAFT,
        state_changed_at=now,
        **fields,
    )
    project.members.append(ProjectMember(user_id=lead.id, role=MemberRole.LEAD, added_at=now))
    for user in members:
        project.members.append(
            ProjectMember(user_id=user.id, role=MemberRole.RESEARCHER, added_at=now)
        )
    for version_id in versions:
        project.requested_datasets.append(RequestedDataset(dataset_version_id=version_id))
    session.add(project)
    try:
        with session.begin_nested():
            session.flush()
    except IntegrityError:
        raise Conflict(f"Project code {project.code} is taken.", {"field": "code"}) from None
    estimate_quote(session, project, today)
    session.flush()
    audit.record(
        session,
        "project_applied",
        actor=actor,
        object_type="project",
        object_id=project.id,
        source=source,
        details={
            "code": project.code,
            "title": project.title,
            "lead_id": lead.id,
            "institution_id": project.institution_id,
            "member_ids": [u.id for u in members],
            "dataset_version_ids": versions,
            "start_date": start_date.isoformat(),
            "end_date": end_date.isoformat(),
            "compute_size": project.compute_size,
        },
    )
    return project


def update_draft(
    session: Session,
    project: Project,
    actor: User | None,
    now: datetime,
    settings: Settings,
    *,
    version: int,
    title: str | None = None,
    purpose: str | None = None,
    compute_size: str | None = None,
    start_date: date | None = None,
    end_date: date | None = None,
    legal_basis: str | None = None,
    expected_publications: str | None = None,
    dataset_version_ids: Sequence[int] | None = None,
    member_ids: Sequence[int] | None = None,
    source: str = "",
) -> dict[str, Any]:
    """Change a DRAFT (the lead or staff); `None` leaves a field as it is. `member_ids` and
    `dataset_version_ids` replace the sets asked for (the lead always stays). Returns the
    changes made; free text is reported as changed, never copied into the audit trail."""
    today = now.date()
    if actor is not None:
        policy.authorize(actor, Action.PROJECT_EDIT, project)
    check_version(project, version)
    if project.state is not ProjectState.DRAFT:
        raise Conflict(
            f"Project {project.code} is {project.state.value}: only a draft can be edited; "
            "changes after approval are requests to a data steward.",
            {"state": project.state.value, "rule": "draft_only"},
        )
    with optimistic(project.code, version):
        changes: dict[str, Any] = {}
        new: dict[str, Any] = {}
        if title is not None:
            new["title"] = clean_title(title)
        for field, value in (
            ("purpose", purpose),
            ("legal_basis", legal_basis),
            ("expected_publications", expected_publications),
        ):
            if value is not None:
                new[field] = clean_text(
                    value, field, maximum=MAX_TEXT_LENGTH, required=field == "purpose"
                )
        if compute_size is not None:
            new["compute_size"] = check_compute_size(compute_size, settings)
        if start_date is not None or end_date is not None:
            new["start_date"] = start_date or project.start_date
            new["end_date"] = end_date or project.end_date
            check_period(new["start_date"], new["end_date"], settings, today)
        for field, value in new.items():
            old = getattr(project, field)
            if value != old:
                setattr(project, field, value)
                changes[field] = (
                    "changed" if field in FREE_TEXT_FIELDS else [_jsonable(old), _jsonable(value)]
                )
        if member_ids is not None:
            lead = _user(session, project.lead_id, "lead_id")
            wanted = {u.id for u in _member_users(session, member_ids, lead, today)}
            researchers = [m for m in current_members(project) if m.role is MemberRole.RESEARCHER]
            present = {m.user_id for m in researchers}
            for member in researchers:
                if member.user_id not in wanted:
                    member.removed_at = now
            for user_id in sorted(wanted - present):
                project.members.append(
                    ProjectMember(user_id=user_id, role=MemberRole.RESEARCHER, added_at=now)
                )
            if wanted != present:
                changes["member_ids"] = [sorted(present), sorted(wanted)]
        if dataset_version_ids is not None:
            wanted_versions = available_version_ids(
                session, dataset_version_ids, today, field="dataset_version_ids"
            )
            present_versions = {r.dataset_version_id for r in project.requested_datasets}
            if set(wanted_versions) != present_versions:
                session.execute(
                    delete(RequestedDataset).where(
                        RequestedDataset.project_id == project.id,
                        RequestedDataset.dataset_version_id.not_in(wanted_versions),
                    )
                )
                session.expire(project, ["requested_datasets"])
                for version_id in wanted_versions:
                    if version_id not in present_versions:
                        session.add(
                            RequestedDataset(project_id=project.id, dataset_version_id=version_id)
                        )
                changes["dataset_version_ids"] = [sorted(present_versions), sorted(wanted_versions)]
        if not changes:
            return changes
        project.updated_at = now  # the row changes (and its version) whatever was edited
        session.flush()
        estimate_quote(session, project, today)
        session.flush()
        audit.record(
            session,
            "project_updated",
            actor=actor,
            object_type="project",
            object_id=project.id,
            source=source,
            details={"code": project.code, "changes": changes, "version": project.version},
        )
        return changes


def _jsonable(value: Any) -> Any:
    return value.isoformat() if isinstance(value, date) else value
