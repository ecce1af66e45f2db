"""Change requests: after approval, the lead asks for a member to be added or removed, an extra
dataset version, or a later end date; a data steward who is not in the project approves (which
applies the change and its fee in the same transaction) or rejects; the lead may withdraw a
pending request. Audited and notified like the project's own steps.

Functions take `actor: User | None`; `None` is the system (the command line without `--as`).
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from datetime import date, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, selectinload

from orchestrator import audit, catalogue, costs, db, grants, policy, project_rules, projects
from orchestrator.config import Settings
from orchestrator.errors import Conflict, Forbidden, Invalid, NotFound
from orchestrator.institutions import add_years
from orchestrator.models import (
    ChangeRequest,
    ChargeKind,
    MemberRole,
    Project,
    ProjectMember,
    ProjectState,
    RequestKind,
    RequestState,
    User,
)
from orchestrator.policy import Action

MAX_REASON_LENGTH = 2_000
# The lead asks for changes once the project is approved and until it ends ...
OPEN_STATES = frozenset({ProjectState.APPROVED, ProjectState.ACTIVE, ProjectState.FROZEN})
# ... and for an extension also in the grace period after it expired.
EXTENSION_STATES = OPEN_STATES | {ProjectState.EXPIRED}
FEES: dict[RequestKind, ChargeKind] = {
    RequestKind.ADD_MEMBER: ChargeKind.ADD_RESEARCHER,
    RequestKind.ADD_DATASET: ChargeKind.ADD_DATASET,
    RequestKind.EXTENSION: ChargeKind.EXTENSION,
}


# --- reading --------------------------------------------------------------------------------------


def get_request(session: Session, request_id: int) -> ChangeRequest:
    request = session.get(ChangeRequest, request_id)
    if request is None:
        raise NotFound("Request not found.")
    return request


def list_requests(
    session: Session,
    viewer: User | None,
    *,
    project: Project | None = None,
    state: RequestState | None = None,
    limit: int = 50,
    offset: int = 0,
) -> tuple[list[ChangeRequest], int]:
    """One page of the requests the viewer may see (all for the system), oldest first: with
    `state=PENDING`, the data stewards' review queue."""
    stmt = select(ChangeRequest)
    if viewer is not None:
        stmt = policy.visible_requests(stmt, viewer)
    if project is not None:
        stmt = stmt.where(ChangeRequest.project_id == project.id)
    if state is not None:
        stmt = stmt.where(ChangeRequest.state == state)
    total = session.scalar(select(func.count()).select_from(stmt.subquery())) or 0
    items = session.scalars(
        stmt.options(selectinload(ChangeRequest.project))
        .order_by(ChangeRequest.requested_at, ChangeRequest.id)
        .limit(limit)
        .offset(offset)
    ).all()
    return list(items), total


def pending_requests(session: Session, project: Project) -> list[ChangeRequest]:
    return list(
        session.scalars(
            select(ChangeRequest).where(
                ChangeRequest.project_id == project.id,
                ChangeRequest.state == RequestState.PENDING,
            )
        )
    )


# --- checks shared by asking and deciding ---------------------------------------------------------


def _check_state(project: Project, kind: RequestKind, settings: Settings, today: date) -> None:
    states = EXTENSION_STATES if kind is RequestKind.EXTENSION else OPEN_STATES
    if project.state not in states:
        allowed = ", ".join(sorted(s.value for s in states))
        raise Conflict(
            f"Project {project.code} is {project.state.value}: a {kind.value.replace('_', ' ')} "
            f"request is possible only when it is {allowed}.",
            {"state": project.state.value, "rule": "request_state"},
        )
    if project.state is ProjectState.EXPIRED:
        until = projects.grace_until(project, settings)
        if today > until:
            raise Conflict(
                f"Project {project.code} expired and its grace period ended on "
                f"{until.isoformat()}: it can no longer be extended.",
                {"rule": "grace_period", "grace_until": until.isoformat()},
            )


def _new_member(session: Session, project: Project, user_id: Any, today: date) -> User:
    user = session.get(User, user_id) if isinstance(user_id, int) else None
    if user is None:
        raise Invalid(f"There is no user {user_id}.", {"field": "user_id"})
    if projects.is_current_member(project, user.id):
        raise Conflict(
            f"{user.username} is a member of project {project.code} already.",
            {"field": "user_id", "rule": "already_member"},
        )
    project_rules.check_standing(user, today, field="user_id")
    return user


def _leaving_member(project: Project, user_id: Any) -> ProjectMember:
    if user_id == project.lead_id:
        raise Invalid(
            "The lead cannot be removed from their project.",
            {"field": "user_id", "rule": "lead_stays"},
        )
    for member in projects.current_members(project):
        if member.user_id == user_id:
            return member
    raise Conflict(
        f"User {user_id} is not a member of project {project.code}.",
        {"field": "user_id", "rule": "not_a_member"},
    )


def _new_dataset(session: Session, project: Project, version_id: Any, today: date) -> int:
    if not isinstance(version_id, int):
        raise Invalid("Name the dataset version.", {"field": "dataset_version_id"})
    project_rules.available_version_ids(session, [version_id], today, field="dataset_version_id")
    if any(g.dataset_version_id == version_id for g in grants.active_grants(session, project)):
        raise Conflict(
            f"Project {project.code} has dataset version {version_id} already.",
            {"field": "dataset_version_id", "rule": "already_granted"},
        )
    return version_id


def _new_end_date(project: Project, settings: Settings, value: Any) -> date:
    new_end = value
    if isinstance(value, str):
        try:
            new_end = date.fromisoformat(value)
        except ValueError:
            new_end = None
    if not isinstance(new_end, date):
        raise Invalid("Give the new end date.", {"field": "new_end_date"})
    if new_end <= project.end_date:
        raise Invalid(
            f"An extension must end after the current end date, {project.end_date.isoformat()}.",
            {"field": "new_end_date", "rule": "later_end_date"},
        )
    latest = add_years(project.start_date, settings.max_project_years)
    if new_end > latest:
        raise Invalid(
            f"A project lasts at most {settings.max_project_years} years: from "
            f"{project.start_date.isoformat()} it may run until {latest.isoformat()} at the "
            "latest.",
            {"field": "new_end_date", "rule": "max_project_years"},
        )
    return new_end


def _check_payload(
    session: Session,
    project: Project,
    kind: RequestKind,
    payload: dict[str, Any],
    settings: Settings,
    today: date,
) -> None:
    """`Invalid`/`Conflict` unless the change can be made today (when asked and when decided)."""
    _check_state(project, kind, settings, today)
    if kind is RequestKind.ADD_MEMBER:
        _new_member(session, project, payload.get("user_id"), today)
    elif kind is RequestKind.REMOVE_MEMBER:
        _leaving_member(project, payload.get("user_id"))
    elif kind is RequestKind.ADD_DATASET:
        _new_dataset(session, project, payload.get("dataset_version_id"), today)
    else:
        _new_end_date(project, settings, payload.get("new_end_date"))


def _check_version(request: ChangeRequest, version: int | None) -> None:
    db.check_version(f"Request {request.id}", version, request.version)


def _optimistic(request_id: int, version: int | None) -> AbstractContextManager[None]:
    return db.conflict_if_stale(f"Request {request_id}", version)


def _check_pending(request: ChangeRequest) -> None:
    if request.state is not RequestState.PENDING:
        raise Conflict(
            f"Request {request.id} is {request.state.value} already: only a pending request "
            "can be decided or withdrawn.",
            {"state": request.state.value, "rule": "request_pending"},
        )


# --- asking ---------------------------------------------------------------------------------------


def create_request(
    session: Session,
    project: Project,
    actor: User | None,
    now: datetime,
    settings: Settings,
    *,
    kind: RequestKind,
    user_id: int | None = None,
    dataset_version_id: int | None = None,
    new_end_date: date | None = None,
    reason: str = "",
    source: str = "",
) -> ChangeRequest:
    """The lead asks for a change; a data steward decides. An extension needs a reason."""
    today = now.date()
    if actor is not None:
        policy.authorize(actor, Action.PROJECT_REQUEST_CHANGE, project)
    reason = project_rules.clean_text(
        reason,
        "reason",
        maximum=MAX_REASON_LENGTH,
        required=kind is RequestKind.EXTENSION,
    )
    payload: dict[str, Any]
    if kind in (RequestKind.ADD_MEMBER, RequestKind.REMOVE_MEMBER):
        payload = {"user_id": user_id}
    elif kind is RequestKind.ADD_DATASET:
        payload = {"dataset_version_id": dataset_version_id}
    else:
        payload = {"new_end_date": new_end_date}
    _check_payload(session, project, kind, payload, settings, today)
    if kind is RequestKind.EXTENSION:
        payload = {"new_end_date": _new_end_date(project, settings, new_end_date).isoformat()}
    for other in pending_requests(session, project):
        if other.kind is kind and (kind is RequestKind.EXTENSION or other.payload == payload):
            raise Conflict(
                f"Request {other.id} asks for this already and is pending; withdraw it first.",
                {"rule": "duplicate_request", "request_id": other.id},
            )
    request = ChangeRequest(
        project_id=project.id,
        project=project,
        kind=kind,
        state=RequestState.PENDING,
        payload=payload,
        reason=reason,
        requested_by_id=actor.id if actor is not None else project.lead_id,
        requested_at=now,
    )
    session.add(request)
    session.flush()
    audit.record(
        session,
        "change_requested",
        actor=actor,
        object_type="change_request",
        object_id=request.id,
        source=source,
        details={"code": project.code, "kind": kind.value, **payload},
    )
    projects.notify_event(
        session,
        settings,
        project,
        "change_requested",
        actor,
        comment=reason,
        extra={"request": kind.value.replace("_", " "), **_shown(payload)},
    )
    return request


def _shown(payload: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in payload.items() if v is not None}


# --- deciding -------------------------------------------------------------------------------------


def check_decider(request: ChangeRequest, actor: User | None) -> None:
    """Segregation of duties: nobody decides a request of a project they are or were in, nor
    their own request."""
    if actor is None:
        return
    policy.authorize(actor, Action.PROJECT_DECIDE_CHANGE, request)
    if policy.is_or_was_member(actor, request.project) or actor.id == request.requested_by_id:
        raise Forbidden(
            f"You are (or were) a member of project {request.project.code}: another data "
            "steward must decide its requests.",
            {"rule": "segregation_of_duties"},
        )


def approve_request(
    session: Session,
    request: ChangeRequest,
    actor: User | None,
    now: datetime,
    settings: Settings,
    *,
    version: int | None = None,
    comment: str = "",
    source: str = "",
) -> ChangeRequest:
    """Approve and apply the change in this transaction: a membership row opened or closed, a
    grant, or the new end date (an expired project within its grace period is active again);
    plus the fee of the project's tariff."""
    check_decider(request, actor)
    _check_version(request, version)
    _check_pending(request)
    comment = project_rules.clean_comment(comment, required=False)
    project = request.project
    _check_payload(session, project, request.kind, request.payload, settings, now.date())
    with _optimistic(request.id, version):
        # Claim the request first: of two concurrent decisions, the second stops here.
        request.state = RequestState.APPROVED
        request.decided_by_id = actor.id if actor is not None else None
        request.decided_at = now
        request.decision_comment = comment
        session.flush()
        effect = _apply_change(session, request, actor, now, settings, source)
        fee = FEES.get(request.kind)
        if fee is not None:
            charge = costs.add_charge(session, project, fee, now.date(), change_request=request)
            effect |= {"charge": charge.kind.value, "amount": str(charge.amount)}
    audit.record(
        session,
        "change_approved",
        actor=actor,
        object_type="change_request",
        object_id=request.id,
        source=source,
        details={"code": project.code, "kind": request.kind.value, "comment": comment, **effect},
    )
    projects.notify_event(
        session,
        settings,
        project,
        "change_approved",
        actor,
        comment=comment,
        extra={"request": request.kind.value.replace("_", " "), **_shown(request.payload)},
    )
    if effect.get("reactivated"):
        # Members work again: they are told like at the first activation.
        projects.notify_event(session, settings, project, "activated", actor, comment=comment)
    return request


def _apply_change(
    session: Session,
    request: ChangeRequest,
    actor: User | None,
    now: datetime,
    settings: Settings,
    source: str,
) -> dict[str, Any]:
    project = request.project
    payload = request.payload
    details: dict[str, Any] = {"code": project.code, "request_id": request.id}
    if request.kind is RequestKind.ADD_MEMBER:
        user = _new_member(session, project, payload["user_id"], now.date())
        project.members.append(
            ProjectMember(user_id=user.id, role=MemberRole.RESEARCHER, added_at=now)
        )
        event, details["user_id"] = "project_member_added", user.id
    elif request.kind is RequestKind.REMOVE_MEMBER:
        member = _leaving_member(project, payload["user_id"])
        member.removed_at = now
        event, details["user_id"] = "project_member_removed", member.user_id
    elif request.kind is RequestKind.ADD_DATASET:
        version = catalogue.get_dataset_version_by_id(session, payload["dataset_version_id"])
        grants.grant_dataset(session, project, version, actor, now)
        event, details["dataset_version_id"] = "project_dataset_added", version.id
    else:
        new_end = _new_end_date(project, settings, payload["new_end_date"])
        details |= {"from": project.end_date.isoformat(), "to": new_end.isoformat()}
        project.end_date = new_end
        event = "project_extended"
        if project.state is ProjectState.EXPIRED:
            project.state = ProjectState.ACTIVE
            project.state_changed_at = now
            project.expired_at = None
            details["reactivated"] = True
    session.flush()
    audit.record(
        session,
        event,
        actor=actor,
        object_type="project",
        object_id=project.id,
        source=source,
        details=details,
    )
    return {k: v for k, v in details.items() if k not in ("code", "request_id")}


def reject_request(
    session: Session,
    request: ChangeRequest,
    actor: User | None,
    now: datetime,
    settings: Settings,
    *,
    version: int | None = None,
    comment: str = "",
    source: str = "",
) -> ChangeRequest:
    """Refuse the change; the lead is told why (a comment is required)."""
    check_decider(request, actor)
    _check_version(request, version)
    _check_pending(request)
    comment = project_rules.clean_comment(comment, required=True)
    with _optimistic(request.id, version):
        request.state = RequestState.REJECTED
        request.decided_by_id = actor.id if actor is not None else None
        request.decided_at = now
        request.decision_comment = comment
        session.flush()
    audit.record(
        session,
        "change_rejected",
        actor=actor,
        object_type="change_request",
        object_id=request.id,
        source=source,
        details={"code": request.project.code, "kind": request.kind.value, "comment": comment},
    )
    projects.notify_event(
        session,
        settings,
        request.project,
        "change_rejected",
        actor,
        comment=comment,
        extra={"request": request.kind.value.replace("_", " "), **_shown(request.payload)},
    )
    return request


def withdraw_request(
    session: Session,
    request: ChangeRequest,
    actor: User | None,
    now: datetime,
    settings: Settings,
    *,
    version: int | None = None,
    source: str = "",
) -> ChangeRequest:
    """The lead takes back a pending request (nobody has to act, so nobody is notified)."""
    if actor is not None:
        policy.authorize(actor, Action.PROJECT_REQUEST_CHANGE, request)
    _check_version(request, version)
    _check_pending(request)
    with _optimistic(request.id, version):
        request.state = RequestState.WITHDRAWN
        request.decided_by_id = actor.id if actor is not None else None
        request.decided_at = now
        session.flush()
    audit.record(
        session,
        "change_withdrawn",
        actor=actor,
        object_type="change_request",
        object_id=request.id,
        source=source,
        details={"code": request.project.code, "kind": request.kind.value},
    )
    return request
