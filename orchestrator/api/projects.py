"""Project routes: `/api/projects` (applications, the state machine's steps, members, grants,
history, change requests of one project) and `/api/requests` (the data stewards' review queue and
decisions). A project or request the caller may not see is a 404, never a 403."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from pydantic import BaseModel
from sqlalchemy.orm import Session

from orchestrator import applications, archive, grants, policy, projects, requests
from orchestrator.api.access import allow, require_step_up
from orchestrator.api.deps import (
    CurrentPrincipal,
    NowDep,
    Principal,
    SessionDep,
    SettingsDep,
    request_source,
)
from orchestrator.errors import NotFound
from orchestrator.models import ChangeRequest, Project, ProjectState, RequestState
from orchestrator.policy import Action
from orchestrator.projects import ProjectAction
from orchestrator.schemas import (
    ChangeRequestCreate,
    ChangeRequestDecisionCreate,
    ChangeRequestPage,
    ChangeRequestRead,
    ProjectCreate,
    ProjectEventPage,
    ProjectEventRead,
    ProjectGrantRead,
    ProjectMemberRead,
    ProjectPage,
    ProjectQuoteLineRead,
    ProjectQuoteRead,
    ProjectRead,
    ProjectTransitionCreate,
    ProjectUpdate,
)

router = APIRouter(tags=["projects"])

Code = Annotated[str, Path(pattern=r"^[0-9]{4,5}$", description="The project's code.")]
RequestId = Annotated[int, Path(ge=1, le=2_147_483_647)]
Limit = Annotated[int, Query(ge=1, le=200)]
Offset = Annotated[int, Query(ge=0, le=1_000_000)]
STEP_UP: dict[int | str, dict[str, Any]] = {
    403: {"description": "Forbidden, or a recent step-up is needed."},
    409: {"description": "Not possible in the current state, or a stale `version`."},
}
CONFLICT: dict[int | str, dict[str, Any]] = {
    409: {"description": "Not possible in the current state, or a stale `version`."}
}


# --- helpers --------------------------------------------------------------------------------------


def _project(session: Session, principal: Principal, code: str) -> Project:
    """The project with this code if the caller may see it; 404 otherwise (the same answer as
    for a code that does not exist)."""
    project = projects.find_project_by_code(session, code)
    if project is None:
        raise NotFound("Project not found.")
    allow(principal, Action.PROJECT_READ, project)
    return project


def _request(session: Session, principal: Principal, request_id: int) -> ChangeRequest:
    request = requests.get_request(session, request_id)
    allow(principal, Action.PROJECT_READ, request)
    return request


def _scope(principal: Principal, action: Action) -> None:
    if principal.api_token is not None:
        policy.authorize_scopes(principal.scopes, action)


def project_read(project: Project, principal: Principal) -> ProjectRead:
    """The project as the caller may see it: the quote only for those who see its costs."""
    user = principal.user
    quote = None
    if policy.can(user, Action.PROJECT_COSTS_READ, project):
        quote = ProjectQuoteRead(
            tariff_id=project.tariff_id,
            lines=[ProjectQuoteLineRead.model_validate(line) for line in project.quote_lines],
            total=project.quote_total,
            quoted_at=project.quoted_at,
            accepted_at=project.quote_accepted_at,
        )
    return ProjectRead(
        id=project.id,
        code=project.code,
        title=project.title,
        purpose=project.purpose,
        institution_id=project.institution_id,
        lead_id=project.lead_id,
        start_date=project.start_date,
        end_date=project.end_date,
        compute_size=project.compute_size,
        legal_basis=project.legal_basis,
        expected_publications=project.expected_publications,
        state=project.state,
        state_changed_at=project.state_changed_at,
        review_comments=project.review_comments,
        requested_dataset_version_ids=sorted(
            r.dataset_version_id for r in project.requested_datasets
        ),
        approved_by_id=project.approved_by_id,
        approved_at=project.approved_at,
        activated_at=project.activated_at,
        expired_at=project.expired_at,
        archived_at=project.archived_at,
        deleted_at=project.deleted_at,
        created_at=project.created_at,
        updated_at=project.updated_at,
        version=project.version,
        actions=[a.value for a in projects.actions_for(project, user)],
        quote=quote,
    )


def request_read(request: ChangeRequest) -> ChangeRequestRead:
    return ChangeRequestRead(
        id=request.id,
        project_id=request.project_id,
        project_code=request.project.code,
        kind=request.kind,
        state=request.state,
        payload=request.payload,
        reason=request.reason,
        requested_by_id=request.requested_by_id,
        requested_at=request.requested_at,
        decided_by_id=request.decided_by_id,
        decided_at=request.decided_at,
        decision_comment=request.decision_comment,
        version=request.version,
    )


# --- projects -------------------------------------------------------------------------------------


@router.get("/api/projects")
def list_projects(
    principal: CurrentPrincipal,
    session: SessionDep,
    state: ProjectState | None = None,
    limit: Limit = 50,
    offset: Offset = 0,
) -> ProjectPage:
    """The projects the caller may see (a researcher: those they are or were a member of)."""
    allow(principal, Action.PROJECT_READ)
    items, total = projects.list_projects(
        session, principal.user, state=state, limit=limit, offset=offset
    )
    return ProjectPage(
        items=[project_read(p, principal) for p in items], total=total, limit=limit, offset=offset
    )


@router.post("/api/projects", status_code=201, responses=CONFLICT)
def apply_project(
    body: ProjectCreate,
    principal: CurrentPrincipal,
    session: SessionDep,
    settings: SettingsDep,
    now: NowDep,
    request: Request,
) -> ProjectRead:
    """Apply for a project: a draft, with the caller as its lead (staff name the lead)."""
    allow(principal, Action.PROJECT_APPLY)
    project = applications.apply_project(
        session,
        settings,
        actor=principal.user,
        now=now,
        title=body.title,
        purpose=body.purpose,
        compute_size=body.compute_size,
        start_date=body.start_date,
        end_date=body.end_date,
        dataset_version_ids=body.dataset_version_ids,
        member_ids=body.member_ids,
        legal_basis=body.legal_basis,
        expected_publications=body.expected_publications,
        lead_id=body.lead_id,
        code=body.code,
        source=request_source(request, settings),
    )
    return project_read(project, principal)


@router.get("/api/projects/{code}")
def get_project(code: Code, principal: CurrentPrincipal, session: SessionDep) -> ProjectRead:
    return project_read(_project(session, principal, code), principal)


@router.patch("/api/projects/{code}", responses=CONFLICT)
def update_project(
    code: Code,
    body: ProjectUpdate,
    principal: CurrentPrincipal,
    session: SessionDep,
    settings: SettingsDep,
    now: NowDep,
    request: Request,
) -> ProjectRead:
    """Edit a draft (the lead or a data steward); `version` must be the one last read."""
    project = _project(session, principal, code)
    allow(principal, Action.PROJECT_EDIT, project)
    applications.update_draft(
        session,
        project,
        principal.user,
        now,
        settings,
        version=body.version,
        title=body.title,
        purpose=body.purpose,
        compute_size=body.compute_size,
        start_date=body.start_date,
        end_date=body.end_date,
        legal_basis=body.legal_basis,
        expected_publications=body.expected_publications,
        dataset_version_ids=body.dataset_version_ids,
        member_ids=body.member_ids,
        source=request_source(request, settings),
    )
    return project_read(project, principal)


@router.post("/api/projects/{code}/transitions/{action}", responses=STEP_UP)
def transition_project(
    code: Code,
    action: ProjectAction,
    body: ProjectTransitionCreate,
    principal: CurrentPrincipal,
    session: SessionDep,
    settings: SettingsDep,
    now: NowDep,
    request: Request,
) -> ProjectRead:
    """Take one step of the state machine. A step not possible from the current state is a 409
    naming the state and the possible steps; approve, freeze, unfreeze and delete need a recent
    step-up."""
    project = _project(session, principal, code)
    step = projects.check_transition(project, action, principal.user)
    _scope(principal, step.permission)
    if action in projects.STEP_UP_ACTIONS:
        require_step_up(principal, settings, now)
    projects.transition(
        session,
        project,
        action,
        principal.user,
        now,
        settings,
        version=body.version,
        comment=body.comment,
        source=request_source(request, settings),
    )
    return project_read(project, principal)


@router.get("/api/projects/{code}/history")
def project_history(
    code: Code,
    principal: CurrentPrincipal,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Offset = 0,
) -> ProjectEventPage:
    """The audit events about the project, its requests and grants, oldest first."""
    project = _project(session, principal, code)
    costs_visible = policy.can(principal.user, Action.PROJECT_COSTS_READ, project)
    rows, total = projects.project_history(session, project, limit=limit, offset=offset)
    items = [
        ProjectEventRead(
            seq=row.seq,
            at=row.at,
            actor=row.actor,
            action=row.action,
            object_type=row.object_type,
            object_id=row.object_id,
            details=dict(row.details) if costs_visible else projects.without_costs(row.details),
        )
        for row in rows
    ]
    return ProjectEventPage(items=items, total=total, limit=limit, offset=offset)


@router.get("/api/projects/{code}/members")
def project_members(
    code: Code, principal: CurrentPrincipal, session: SessionDep
) -> list[ProjectMemberRead]:
    """Every membership period, oldest first (current ones have no `removed_at`)."""
    project = _project(session, principal, code)
    return [
        ProjectMemberRead(
            id=m.id,
            user_id=m.user_id,
            username=m.user.username,
            full_name=m.user.full_name,
            role=m.role,
            added_at=m.added_at,
            removed_at=m.removed_at,
        )
        for m in projects.membership_history(project)
    ]


@router.get("/api/projects/{code}/grants")
def project_grants(
    code: Code, principal: CurrentPrincipal, session: SessionDep
) -> list[ProjectGrantRead]:
    """Every grant the project had, oldest first; unrevoked ones are what its workspace mounts."""
    project = _project(session, principal, code)
    return [
        ProjectGrantRead(
            id=g.id,
            dataset_version_id=g.dataset_version_id,
            dataset_code=g.dataset_version.dataset.code,
            label=g.dataset_version.label,
            granted_at=g.granted_at,
            revoked_at=g.revoked_at,
        )
        for g in grants.grant_history(session, project)
    ]


# --- archive and deletion certificate (staff who read the audit trail) ----------------------------


class ProjectArchiveRead(BaseModel):
    """The verified archive of an archived project's storage (`removed_at`: deleted since)."""

    project_code: str
    path: str
    manifest_path: str
    sha256: str
    manifest_sha256: str
    size_bytes: int
    content_bytes: int
    file_count: int
    created_at: datetime
    removed_at: datetime | None


class DeletionCertificateRead(BaseModel):
    """What was removed when a project was deleted, when, by which policy and process;
    `intact` says whether the stored certificate still matches its `sha256`."""

    project_code: str
    issued_at: datetime
    issued_by: str
    policy: dict[str, Any]
    removed: dict[str, Any]
    sha256: str
    intact: bool


@router.get("/api/projects/{code}/archive")
def get_project_archive(
    code: Code, principal: CurrentPrincipal, session: SessionDep
) -> ProjectArchiveRead:
    """The archive of an archived (or deleted) project; 404 until the reconciler made it."""
    project = _project(session, principal, code)
    allow(principal, Action.AUDIT_READ)
    row = archive.find_archive(session, project)
    if row is None:
        raise NotFound(f"Project {project.code} has no archive (yet).")
    return ProjectArchiveRead.model_validate(row, from_attributes=True)


@router.get("/api/projects/{code}/deletion-certificate")
def get_deletion_certificate(
    code: Code, principal: CurrentPrincipal, session: SessionDep
) -> DeletionCertificateRead:
    """The deletion certificate of a deleted project; 404 until the reconciler issued it."""
    project = _project(session, principal, code)
    allow(principal, Action.AUDIT_READ)
    row = archive.get_certificate(session, project)
    return DeletionCertificateRead(
        project_code=row.project_code,
        issued_at=row.issued_at,
        issued_by=row.issued_by,
        policy=row.policy,
        removed=row.removed,
        sha256=row.sha256,
        intact=archive.certificate_intact(row),
    )


# --- change requests ------------------------------------------------------------------------------


@router.post("/api/projects/{code}/requests", status_code=201, responses=CONFLICT)
def create_request(
    code: Code,
    body: ChangeRequestCreate,
    principal: CurrentPrincipal,
    session: SessionDep,
    settings: SettingsDep,
    now: NowDep,
    request: Request,
) -> ChangeRequestRead:
    """The lead asks for a member in or out, a dataset version, or a later end date."""
    project = _project(session, principal, code)
    allow(principal, Action.PROJECT_REQUEST_CHANGE, project)
    change = requests.create_request(
        session,
        project,
        principal.user,
        now,
        settings,
        kind=body.kind,
        user_id=body.user_id,
        dataset_version_id=body.dataset_version_id,
        new_end_date=body.new_end_date,
        reason=body.reason,
        source=request_source(request, settings),
    )
    return request_read(change)


@router.get("/api/projects/{code}/requests")
def list_project_requests(
    code: Code,
    principal: CurrentPrincipal,
    session: SessionDep,
    state: RequestState | None = None,
    limit: Limit = 50,
    offset: Offset = 0,
) -> ChangeRequestPage:
    project = _project(session, principal, code)
    items, total = requests.list_requests(
        session, principal.user, project=project, state=state, limit=limit, offset=offset
    )
    return ChangeRequestPage(
        items=[request_read(r) for r in items], total=total, limit=limit, offset=offset
    )


@router.get("/api/requests")
def list_requests(
    principal: CurrentPrincipal,
    session: SessionDep,
    state: RequestState | None = None,
    limit: Limit = 50,
    offset: Offset = 0,
) -> ChangeRequestPage:
    """Requests of the projects the caller may see, oldest first; `state=pending` is the data
    stewards' review queue."""
    allow(principal, Action.PROJECT_READ)
    items, total = requests.list_requests(
        session, principal.user, state=state, limit=limit, offset=offset
    )
    return ChangeRequestPage(
        items=[request_read(r) for r in items], total=total, limit=limit, offset=offset
    )


@router.get("/api/requests/{request_id}")
def get_request(
    request_id: RequestId, principal: CurrentPrincipal, session: SessionDep
) -> ChangeRequestRead:
    return request_read(_request(session, principal, request_id))


def _decide(session: Session, principal: Principal, request_id: int) -> ChangeRequest:
    change = _request(session, principal, request_id)
    requests.check_decider(change, principal.user)
    _scope(principal, Action.PROJECT_DECIDE_CHANGE)
    return change


@router.post("/api/requests/{request_id}/approve", responses=STEP_UP)
def approve_request(
    request_id: RequestId,
    body: ChangeRequestDecisionCreate,
    principal: CurrentPrincipal,
    session: SessionDep,
    settings: SettingsDep,
    now: NowDep,
    request: Request,
) -> ChangeRequestRead:
    """A data steward who is not in the project approves: the change and its fee apply at once.
    Needs a recent step-up (access changes)."""
    change = _decide(session, principal, request_id)
    require_step_up(principal, settings, now)
    requests.approve_request(
        session,
        change,
        principal.user,
        now,
        settings,
        version=body.version,
        comment=body.comment,
        source=request_source(request, settings),
    )
    return request_read(change)


@router.post("/api/requests/{request_id}/reject", responses=CONFLICT)
def reject_request(
    request_id: RequestId,
    body: ChangeRequestDecisionCreate,
    principal: CurrentPrincipal,
    session: SessionDep,
    settings: SettingsDep,
    now: NowDep,
    request: Request,
) -> ChangeRequestRead:
    """A data steward who is not in the project refuses (a comment is required)."""
    change = _decide(session, principal, request_id)
    requests.reject_request(
        session,
        change,
        principal.user,
        now,
        settings,
        version=body.version,
        comment=body.comment,
        source=request_source(request, settings),
    )
    return request_read(change)


@router.post("/api/requests/{request_id}/withdraw", responses=CONFLICT)
def withdraw_request(
    request_id: RequestId,
    body: ChangeRequestDecisionCreate,
    principal: CurrentPrincipal,
    session: SessionDep,
    settings: SettingsDep,
    now: NowDep,
    request: Request,
) -> ChangeRequestRead:
    """The lead takes back a pending request."""
    change = _request(session, principal, request_id)
    allow(principal, Action.PROJECT_REQUEST_CHANGE, change)
    requests.withdraw_request(
        session,
        change,
        principal.user,
        now,
        settings,
        version=body.version,
        source=request_source(request, settings),
    )
    return request_read(change)
