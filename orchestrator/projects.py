"""Projects: the state machine that takes a project from draft to deleted, its steps, and reading
projects (applying and editing the draft is `applications`). `TRANSITIONS` is the one table of
what may happen: (from state, action) -> (to state, the policy action whoever does it needs).
Every step is authorised, audited (`project_<event>`) and notified in the caller's transaction.

Functions take `actor: User | None`; `None` is the system (the scheduler, the command line
without `--as`), which may take every step the table allows.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol

from sqlalchemy import String, cast, func, or_, select
from sqlalchemy.orm import Session, selectinload

from orchestrator import audit, catalogue, costs, db, grants, notify, policy
from orchestrator.config import Settings
from orchestrator.errors import Conflict, Forbidden, NotFound
from orchestrator.institutions import add_years
from orchestrator.models import (
    AuditEvent,
    ChangeRequest,
    DeletionRecord,
    Grant,
    Project,
    ProjectMember,
    ProjectState,
    RequestState,
    User,
)
from orchestrator.policy import Action
from orchestrator.project_rules import CODE_PATTERN, clean_comment, standing_problem

S = ProjectState


class ProjectAction(StrEnum):
    SUBMIT = "submit"
    RETURN = "return"
    REJECT = "reject"
    QUOTE = "quote"
    ACCEPT = "accept"
    APPROVE = "approve"
    ACTIVATE = "activate"
    FREEZE = "freeze"
    UNFREEZE = "unfreeze"
    EXPIRE = "expire"
    ARCHIVE = "archive"
    DELETE = "delete"


A = ProjectAction


@dataclass(frozen=True)
class Step:
    """Where an action leads from one state, and the policy action the actor needs for it."""

    target: ProjectState
    permission: Action


# The state machine. Until approval a data steward may still return (with comments) or reject;
# a draft may be discarded by its lead; archives and rejected applications are deleted by staff.
TRANSITIONS: Mapping[tuple[ProjectState, ProjectAction], Step] = {
    (S.DRAFT, A.SUBMIT): Step(S.SUBMITTED, Action.PROJECT_SUBMIT),
    (S.DRAFT, A.DELETE): Step(S.DELETED, Action.PROJECT_EDIT),
    (S.SUBMITTED, A.RETURN): Step(S.DRAFT, Action.PROJECT_REVIEW),
    (S.SUBMITTED, A.REJECT): Step(S.REJECTED, Action.PROJECT_REVIEW),
    (S.SUBMITTED, A.QUOTE): Step(S.QUOTED, Action.PROJECT_QUOTE),
    (S.QUOTED, A.RETURN): Step(S.DRAFT, Action.PROJECT_REVIEW),
    (S.QUOTED, A.REJECT): Step(S.REJECTED, Action.PROJECT_REVIEW),
    (S.QUOTED, A.ACCEPT): Step(S.ACCEPTED, Action.PROJECT_ACCEPT),
    (S.ACCEPTED, A.RETURN): Step(S.DRAFT, Action.PROJECT_REVIEW),
    (S.ACCEPTED, A.REJECT): Step(S.REJECTED, Action.PROJECT_REVIEW),
    (S.ACCEPTED, A.APPROVE): Step(S.APPROVED, Action.PROJECT_APPROVE),
    (S.REJECTED, A.DELETE): Step(S.DELETED, Action.PROJECT_DELETE),
    (S.APPROVED, A.ACTIVATE): Step(S.ACTIVE, Action.PROJECT_ACTIVATE),
    (S.APPROVED, A.EXPIRE): Step(S.EXPIRED, Action.PROJECT_CLOSE),
    (S.ACTIVE, A.FREEZE): Step(S.FROZEN, Action.PROJECT_FREEZE),
    (S.ACTIVE, A.EXPIRE): Step(S.EXPIRED, Action.PROJECT_CLOSE),
    (S.FROZEN, A.UNFREEZE): Step(S.ACTIVE, Action.PROJECT_FREEZE),
    (S.FROZEN, A.EXPIRE): Step(S.EXPIRED, Action.PROJECT_CLOSE),
    (S.EXPIRED, A.ARCHIVE): Step(S.ARCHIVED, Action.PROJECT_CLOSE),
    (S.ARCHIVED, A.DELETE): Step(S.DELETED, Action.PROJECT_DELETE),
}

# The event each action records (`project_<event>` in the audit trail) and notifies.
EVENTS: Mapping[ProjectAction, str] = {
    A.SUBMIT: "submitted",
    A.RETURN: "returned",
    A.REJECT: "rejected",
    A.QUOTE: "quoted",
    A.ACCEPT: "accepted",
    A.APPROVE: "approved",
    A.ACTIVATE: "activated",
    A.FREEZE: "frozen",
    A.UNFREEZE: "unfrozen",
    A.EXPIRE: "expired",
    A.ARCHIVE: "archived",
    A.DELETE: "deleted",
}
# The lead must be told why; a freeze must say why access stops.
COMMENT_REQUIRED = frozenset({A.RETURN, A.REJECT, A.FREEZE})
# Steps that give or take away access to microdata: a browser session needs a recent step-up.
STEP_UP_ACTIONS = frozenset({A.APPROVE, A.FREEZE, A.UNFREEZE, A.DELETE})
# States in which the workspace may run; the reconciler stops it in every other state.
ACCESS_STATES = frozenset({S.ACTIVE})
# Free text of the application, scrubbed at deletion (and never copied into the audit trail).
FREE_TEXT_FIELDS = ("purpose", "legal_basis", "expected_publications", "review_comments")
# Keys of audit details that show money: left out of a project's history for those who may not
# see its costs.
COST_DETAIL_KEYS = frozenset({"quote_total", "quote_lines", "amount", "charge", "currency"})


def allowed_actions(state: ProjectState) -> list[ProjectAction]:
    """The actions the state machine allows from `state`, in table order."""
    return [action for (source, action) in TRANSITIONS if source is state]


def actions_for(project: Project, actor: User | None) -> list[ProjectAction]:
    """The steps `actor` may take now (the portal's buttons); all of them for the system."""
    return [
        action
        for action in allowed_actions(project.state)
        if actor is None
        or policy.can(actor, TRANSITIONS[(project.state, action)].permission, project)
    ]


# --- reading --------------------------------------------------------------------------------------


def find_project_by_code(session: Session, code: str) -> Project | None:
    code = code.strip()
    if not CODE_PATTERN.fullmatch(code):
        return None
    return session.scalars(select(Project).where(Project.code == code)).one_or_none()


def get_project_by_code(session: Session, code: str) -> Project:
    project = find_project_by_code(session, code)
    if project is None:
        raise NotFound("Project not found.")
    return project


def get_project(session: Session, project_id: int) -> Project:
    project = session.get(Project, project_id)
    if project is None:
        raise NotFound("Project not found.")
    return project


def list_projects(
    session: Session,
    viewer: User | None,
    *,
    state: ProjectState | None = None,
    limit: int = 50,
    offset: int = 0,
) -> tuple[list[Project], int]:
    """One page of the projects the viewer may see (all for the system), by code."""
    stmt = select(Project)
    if viewer is not None:
        stmt = policy.visible_projects(stmt, viewer)
    if state is not None:
        stmt = stmt.where(Project.state == state)
    total = session.scalar(select(func.count()).select_from(stmt.subquery())) or 0
    items = session.scalars(
        stmt.options(
            # what a page shows and what visibility checks read, in two queries instead of 2n
            selectinload(Project.members),
            selectinload(Project.requested_datasets),
        )
        .order_by(Project.code)
        .limit(limit)
        .offset(offset)
    ).all()
    return list(items), total


def current_members(project: Project) -> list[ProjectMember]:
    """Membership rows still open (the lead's included)."""
    return [m for m in project.members if m.removed_at is None]


def membership_history(project: Project) -> list[ProjectMember]:
    """Every membership row, oldest first: a member removed and added again has two rows."""
    return sorted(project.members, key=lambda m: (m.added_at, m.id))


def is_current_member(project: Project, user_id: int) -> bool:
    return any(m.user_id == user_id for m in current_members(project))


def project_history(
    session: Session, project: Project, *, limit: int = 100, offset: int = 0
) -> tuple[list[AuditEvent], int]:
    """The audit events about this project, its change requests and its grants, oldest first."""
    request_ids = select(cast(ChangeRequest.id, String)).where(
        ChangeRequest.project_id == project.id
    )
    grant_ids = select(cast(Grant.id, String)).where(Grant.project_id == project.id)
    stmt = select(AuditEvent).where(
        or_(
            (AuditEvent.object_type == "project") & (AuditEvent.object_id == str(project.id)),
            (AuditEvent.object_type == "change_request") & AuditEvent.object_id.in_(request_ids),
            (AuditEvent.object_type == "grant") & AuditEvent.object_id.in_(grant_ids),
        )
    )
    total = session.scalar(select(func.count()).select_from(stmt.subquery())) or 0
    rows = session.scalars(stmt.order_by(AuditEvent.seq).limit(limit).offset(offset)).all()
    return list(rows), total


def without_costs(details: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of audit details without amounts, for readers who may not see the costs."""
    return {k: v for k, v in details.items() if k not in COST_DETAIL_KEYS}


def grace_until(project: Project, settings: Settings) -> date:
    """The last day on which an expired project may still be extended back to active."""
    return project.end_date + timedelta(days=settings.project_grace_days)


def retention_until(project: Project, settings: Settings) -> date:
    """The last day an archived project is kept before people may delete it."""
    archived = project.archived_at.date() if project.archived_at else project.end_date
    return add_years(archived, settings.project_retention_years)


# --- versions (optimistic locking) ----------------------------------------------------------------


def check_version(project: Project, version: int | None) -> None:
    """`Conflict` when the caller read another version than the current one (optimistic lock)."""
    db.check_version(f"Project {project.code}", version, project.version)


def optimistic(code: str, version: int | None) -> AbstractContextManager[None]:
    return db.conflict_if_stale(f"Project {code}", version)


# --- quotes ---------------------------------------------------------------------------------------


def _store_quote(session: Session, project: Project, today: date) -> costs.Quote:
    """Compute and store the quote with the tariff valid when the project was applied for (or,
    when there was none then, the one in force today: `NotFound` if there is none at all)."""
    applied = project.created_at.date() if project.created_at is not None else today
    try:
        tariff = costs.current_tariff(session, applied)
    except NotFound:
        tariff = costs.current_tariff(session, today)
    quote = costs.compute_quote(session, project, tariff)
    project.tariff_id = tariff.id
    project.tariff = tariff
    project.quote_lines = quote.as_json()
    project.quote_total = quote.total
    return quote


def estimate_quote(session: Session, project: Project, today: date) -> None:
    """Keep the draft's estimate current (the lead sees what the project would cost). Without a
    tariff in force there is no estimate yet; the quote step itself then refuses."""
    try:
        _store_quote(session, project, today)
    except NotFound:
        project.tariff_id = None
        project.quote_lines = []
        project.quote_total = None


# --- the state machine ----------------------------------------------------------------------------


def check_transition(project: Project, action: ProjectAction, actor: User | None) -> Step:
    """The step `action` takes from the project's state, if `actor` may take it.

    Raises `NotFound` when the actor may not see the project, `Forbidden` when their role never
    allows this action on it (or not from here), and `Conflict` naming the current state and the
    actions possible from it when the state machine does not allow the action now.
    """
    if actor is not None and not policy.can_see(actor, project):
        raise NotFound("Project not found.")
    step = TRANSITIONS.get((project.state, action))
    if step is None:
        if actor is not None and not any(
            policy.can(actor, s.permission, project)
            for (_, a), s in TRANSITIONS.items()
            if a is action
        ):
            raise _forbidden(actor, action, project)
        possible = allowed_actions(project.state)
        listed = ", ".join(a.value for a in possible) or "none (this is final)"
        raise Conflict(
            f"Project {project.code} is {project.state.value}: it cannot {action.value} from "
            f"there. Possible now: {listed}.",
            {
                "state": project.state.value,
                "action": action.value,
                "allowed_actions": [a.value for a in possible],
            },
        )
    if actor is not None and not policy.can(actor, step.permission, project):
        raise _forbidden(actor, action, project, step.permission)
    return step


def _forbidden(
    actor: User, action: ProjectAction, project: Project, permission: Action | None = None
) -> Forbidden:
    """Why not: only the lead may (and the actor is not the lead), or not this role at all."""
    grants = policy.GRANTS.get(actor.role, {})
    permissions = (
        [permission]
        if permission is not None
        else [s.permission for (_, a), s in TRANSITIONS.items() if a is action]
    )
    if any(grants.get(p) is policy.Reach.LEAD for p in permissions):
        return Forbidden(f"Only the lead of project {project.code} may {action.value} it.")
    if permission is not None:
        return Forbidden(
            f"Your role ({actor.role.value}) may not {action.value} a project that is "
            f"{project.state.value}."
        )
    return Forbidden(f"Your role ({actor.role.value}) may not {action.value} projects.")


def transition(
    session: Session,
    project: Project,
    action: ProjectAction,
    actor: User | None,
    now: datetime,
    settings: Settings,
    *,
    version: int | None = None,
    comment: str = "",
    source: str = "",
) -> Project:
    """Take one step of `TRANSITIONS`, with its effects, audit row and notification.

    `version` (optional for the system) is the version the caller last read: a stale one is a
    `Conflict`. Approving a project whose start date has come activates it at once.
    """
    step = check_transition(project, action, actor)
    check_version(project, version)
    comment = clean_comment(comment, required=action in COMMENT_REQUIRED)
    with optimistic(project.code, version):
        _apply(session, project, action, step, actor, now, settings, comment, source)
        if action is A.APPROVE and project.start_date <= now.date():
            activate = TRANSITIONS[(project.state, A.ACTIVATE)]
            _apply(session, project, A.ACTIVATE, activate, actor, now, settings, "", source)
    return project


def _apply(
    session: Session,
    project: Project,
    action: ProjectAction,
    step: Step,
    actor: User | None,
    now: datetime,
    settings: Settings,
    comment: str,
    source: str,
) -> None:
    before = project.state
    details: dict[str, Any] = {"code": project.code, "from": before.value, "to": step.target.value}
    effect = _EFFECTS.get(action)
    if effect is not None:
        details |= effect(session, project, actor, now, settings, comment)
    project.state = step.target
    project.state_changed_at = now
    session.flush()
    if comment:
        details["comment"] = comment
    event = EVENTS[action]
    audit.record(
        session,
        f"project_{event}",
        actor=actor,
        object_type="project",
        object_id=project.id,
        source=source,
        details=details,
    )
    notify_event(session, settings, project, event, actor, comment=comment)


def notify_event(
    session: Session,
    settings: Settings,
    project: Project,
    event: str,
    actor: User | None,
    *,
    comment: str = "",
    extra: dict[str, Any] | None = None,
) -> None:
    """Tell whoever must act (`notify.notify_project_event`, in this transaction). The outbox
    reads the settings from the session; whoever calls us handed them to us, so they are put
    there when the session was made without them."""
    session.info.setdefault("settings", settings)
    notify.notify_project_event(session, project, event, actor, comment=comment, extra=extra)


Effect = Callable[[Session, Project, User | None, datetime, Settings, str], dict[str, Any]]


def _check_members_standing(project: Project, today: date) -> None:
    for member in current_members(project):
        problem = standing_problem(member.user, today)
        if problem is not None:
            raise Conflict(
                f"Project {project.code} cannot go on: {member.user.username} cannot be a "
                f"project member ({problem}). Remove them from the draft or renew first.",
                {"rule": "member_standing", "user_id": member.user_id},
            )


def _on_submit(
    session: Session, project: Project, actor: User | None, now: datetime, s: Settings, c: str
) -> dict[str, Any]:
    _check_members_standing(project, now.date())
    estimate_quote(session, project, now.date())
    return {}


def _on_return(
    session: Session, project: Project, actor: User | None, now: datetime, s: Settings, c: str
) -> dict[str, Any]:
    project.review_comments = c
    project.quoted_at = None
    project.quote_accepted_at = None
    return {}


def _on_reject(
    session: Session, project: Project, actor: User | None, now: datetime, s: Settings, c: str
) -> dict[str, Any]:
    project.review_comments = c
    return {}


def _on_quote(
    session: Session, project: Project, actor: User | None, now: datetime, s: Settings, c: str
) -> dict[str, Any]:
    try:
        quote = _store_quote(session, project, now.date())
    except NotFound as exc:  # no tariff in force: configuration is missing, not the project
        raise Conflict(exc.message, {"rule": "tariff_missing"}) from None
    project.quoted_at = now
    return {
        "tariff": quote.tariff_label,
        "currency": quote.currency,
        "quote_total": str(quote.total),
    }


def _on_accept(
    session: Session, project: Project, actor: User | None, now: datetime, s: Settings, c: str
) -> dict[str, Any]:
    project.quote_accepted_at = now
    return {"quote_total": str(project.quote_total)}


def _on_approve(
    session: Session, project: Project, actor: User | None, now: datetime, s: Settings, c: str
) -> dict[str, Any]:
    today = now.date()
    _check_members_standing(project, today)
    project.approved_by_id = actor.id if actor is not None else None
    project.approved_at = now
    granted = []
    for requested in project.requested_datasets:
        version = requested.dataset_version
        if not catalogue.is_available(version, today):
            raise Conflict(
                f"Dataset version {version.dataset.code} {version.label} is no longer "
                "available; return the application to its lead.",
                {"rule": "dataset_available", "dataset_version_id": version.id},
            )
        grants.grant_dataset(session, project, version, actor, now)
        granted.append(version.id)
    return {"granted_dataset_version_ids": granted}


def _on_activate(
    session: Session, project: Project, actor: User | None, now: datetime, s: Settings, c: str
) -> dict[str, Any]:
    if project.start_date > now.date():
        raise Conflict(
            f"Project {project.code} starts on {project.start_date.isoformat()}: it becomes "
            "active then (the scheduler does it).",
            {"rule": "start_date", "start_date": project.start_date.isoformat()},
        )
    project.activated_at = now
    return {}


def _on_expire(
    session: Session, project: Project, actor: User | None, now: datetime, s: Settings, c: str
) -> dict[str, Any]:
    project.expired_at = now
    return {"end_date": project.end_date.isoformat()}


def _close_pending_requests(
    session: Session, project: Project, actor: User | None, now: datetime, why: str
) -> list[int]:
    """Requests still pending can never be approved once a project is archived or deleted:
    they are rejected, so the data stewards' queue holds only what they can decide."""
    pending = session.scalars(
        select(ChangeRequest).where(
            ChangeRequest.project_id == project.id, ChangeRequest.state == RequestState.PENDING
        )
    ).all()
    for request in pending:
        request.state = RequestState.REJECTED
        request.decided_by_id = actor.id if actor is not None else None
        request.decided_at = now
        request.decision_comment = why
    return [r.id for r in pending]


def _on_archive(
    session: Session, project: Project, actor: User | None, now: datetime, s: Settings, c: str
) -> dict[str, Any]:
    project.archived_at = now
    closed = _close_pending_requests(session, project, actor, now, "The project was archived.")
    return {"requests_closed": closed} if closed else {}


def _on_delete(
    session: Session, project: Project, actor: User | None, now: datetime, s: Settings, c: str
) -> dict[str, Any]:
    if actor is not None and project.state is S.ARCHIVED:
        kept = retention_until(project, s)
        if now.date() <= kept:
            raise Conflict(
                f"Project {project.code} is archived and kept until {kept.isoformat()} "
                f"({s.project_retention_years} years); it is deleted after that.",
                {"rule": "retention", "retention_until": kept.isoformat()},
            )
    closed_requests = _close_pending_requests(
        session, project, actor, now, "The project was deleted."
    )
    requests = list(
        session.scalars(select(ChangeRequest).where(ChangeRequest.project_id == project.id))
    )
    revoked = []
    for grant in grants.active_grants(session, project):
        grants.revoke_grant(session, grant, actor, now)
        revoked.append(grant.id)
    closed = 0
    for member in current_members(project):
        member.removed_at = now
        closed += 1
    summary = {
        "title": project.title,
        "state_before": project.state.value,
        "institution_id": project.institution_id,
        "lead_id": project.lead_id,
        "start_date": project.start_date.isoformat(),
        "end_date": project.end_date.isoformat(),
        "dates": {
            name: getattr(project, name).isoformat() if getattr(project, name) else None
            for name in ("created_at", "approved_at", "activated_at", "expired_at", "archived_at")
        },
        "members": len({m.user_id for m in project.members}),
        "memberships": [
            {
                "user_id": m.user_id,
                "role": m.role.value,
                "added_at": m.added_at.isoformat(),
                "removed_at": m.removed_at.isoformat() if m.removed_at else None,
            }
            for m in membership_history(project)
        ],
        "grants": [
            {
                "dataset_version_id": g.dataset_version_id,
                "granted_at": g.granted_at.isoformat(),
                "revoked_at": g.revoked_at.isoformat() if g.revoked_at else None,
            }
            for g in sorted(project.grants, key=lambda g: g.id)
        ],
        "change_requests": len(requests),
        "scrubbed": [*FREE_TEXT_FIELDS, "change request reasons and comments"],
    }
    for field in FREE_TEXT_FIELDS:
        setattr(project, field, "")
    for request in requests:
        request.reason = ""
        request.decision_comment = ""
    project.deleted_at = now
    session.add(
        DeletionRecord(
            project_id=project.id,
            project_code=project.code,
            deleted_at=now,
            deleted_by=actor.username if actor is not None else audit.SYSTEM_ACTOR,
            summary=summary,
        )
    )
    return {
        "members_closed": closed,
        "grants_revoked": revoked,
        "change_requests": len(requests),
        "requests_closed": closed_requests,
    }


_EFFECTS: Mapping[ProjectAction, Effect] = {
    A.SUBMIT: _on_submit,
    A.RETURN: _on_return,
    A.REJECT: _on_reject,
    A.QUOTE: _on_quote,
    A.ACCEPT: _on_accept,
    A.APPROVE: _on_approve,
    A.ACTIVATE: _on_activate,
    A.EXPIRE: _on_expire,
    A.ARCHIVE: _on_archive,
    A.DELETE: _on_delete,
}


# --- one function per step (the portal, the command line and the scheduler call these) ----------


class StepFunction(Protocol):
    def __call__(
        self,
        session: Session,
        project: Project,
        actor: User | None,
        now: datetime,
        settings: Settings,
        *,
        version: int | None = None,
        comment: str = "",
        source: str = "",
    ) -> Project: ...


def _step_function(action: ProjectAction, doc: str) -> StepFunction:
    def step(
        session: Session,
        project: Project,
        actor: User | None,
        now: datetime,
        settings: Settings,
        *,
        version: int | None = None,
        comment: str = "",
        source: str = "",
    ) -> Project:
        return transition(
            session, project, action, actor, now, settings,
            version=version, comment=comment, source=source,
        )  # fmt: skip

    step.__name__ = step.__qualname__ = f"{action.value}_project"
    step.__doc__ = doc
    return step


submit_project = _step_function(A.SUBMIT, "The lead hands the draft in for review.")
return_project = _step_function(
    A.RETURN, "A data steward sends the application back to draft with comments (required)."
)
reject_project = _step_function(
    A.REJECT, "A data steward refuses the application for good (with a reason)."
)
quote_project = _step_function(
    A.QUOTE, "A data steward fixes the quote with the tariff in force today."
)
accept_quote = _step_function(A.ACCEPT, "The lead accepts the quote.")
approve_project = _step_function(
    A.APPROVE,
    "A data steward approves: the requested dataset versions are granted, and the project is "
    "active at once if its start date has come.",
)
activate_project = _step_function(
    A.ACTIVATE, "An approved project becomes active on its start date (the scheduler calls it)."
)
freeze_project = _step_function(
    A.FREEZE, "Stop access for now (with a reason); grants stay, the workspace is stopped."
)
unfreeze_project = _step_function(A.UNFREEZE, "Give access back to a frozen project.")
expire_project = _step_function(
    A.EXPIRE, "The project has ended (the scheduler at the end date, or staff closing it early)."
)
archive_project = _step_function(
    A.ARCHIVE, "After the grace period the project is archived: kept, no longer extendable."
)
delete_project = _step_function(
    A.DELETE,
    "Delete: a `DeletionRecord` says what was deleted; the free text is scrubbed, grants are "
    "revoked and memberships closed; the row stays in state DELETED. People may delete an "
    "archive only after its retention period; the system (the scheduler) decides that itself.",
)
