"""A researcher's projects: the list of projects they may see, the application form (a draft that
the lead edits and submits), and the project page with its state, members, datasets and grants,
quote, costs, change requests and history; the lead accepts the quote and asks for changes here.

A project the user may not see answers 404, as if it did not exist. Domain rules (who may take
which step, from which state) live in `projects` and `policy`; these pages only offer what those
allow and show their refusals as error pages. The application form keeps what was typed when the
domain refuses it, and shows why.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request, Response
from sqlalchemy.orm import Session

from orchestrator import (
    accounts,
    applications,
    archive,
    catalogue,
    costs,
    grants,
    policy,
    projects,
    requests,
)
from orchestrator.api.deps import NowDep, Principal, SessionDep, SettingsDep, request_source
from orchestrator.config import Settings
from orchestrator.errors import AuthFailed, Invalid, NotFound
from orchestrator.models import (
    AuditEvent,
    ChangeRequest,
    DatasetVersion,
    Grant,
    MemberRole,
    Project,
    ProjectMember,
    ProjectState,
    RequestKind,
    RequestState,
    Role,
    User,
)
from orchestrator.policy import Action
from orchestrator.projects import ProjectAction
from orchestrator.web.browser import FormPrincipal, PagePrincipal
from orchestrator.web.i18n import Translate, translator
from orchestrator.web.pages_admin import parse_day
from orchestrator.web.portal import PortalRoute
from orchestrator.web.rendering import reaches_all, redirect, render, request_language

router = APIRouter(route_class=PortalRoute, include_in_schema=False)

PAGE_SIZE = 50
MAX_MEMBER_LINES = 100
Text = Annotated[str, Form(max_length=20_000)]
Line = Annotated[str, Form(max_length=1024)]
Day = Annotated[str, Form(max_length=10)]

# Badge colour per state (CSS `badge-<tone>`); other states are `info`.
STATE_TONES: Mapping[str, str] = {
    ProjectState.DRAFT: "wait",
    ProjectState.QUOTED: "wait",
    ProjectState.APPROVED: "ok",
    ProjectState.ACTIVE: "ok",
    ProjectState.REJECTED: "bad",
    ProjectState.FROZEN: "bad",
    ProjectState.EXPIRED: "bad",
    ProjectState.DELETED: "bad",
}
MEMBER_LABELS: Mapping[str, str] = {
    MemberRole.LEAD: "project lead",
    MemberRole.RESEARCHER: "researcher",
}
# Staff moves offered as buttons, with their labels; `submit` and `accept` are the lead's.
ACTION_LABELS: Mapping[str, str] = {
    ProjectAction.RETURN: "Return with comments",
    ProjectAction.REJECT: "Reject",
    ProjectAction.QUOTE: "Make the quote",
    ProjectAction.APPROVE: "Approve",
    ProjectAction.ACTIVATE: "Activate now",
    ProjectAction.FREEZE: "Freeze",
    ProjectAction.UNFREEZE: "Unfreeze",
    ProjectAction.EXPIRE: "End now",
    ProjectAction.ARCHIVE: "Archive",
    ProjectAction.DELETE: "Delete",
}
ACTION_TONES: Mapping[str, str] = {
    ProjectAction.RETURN: "secondary",
    ProjectAction.EXPIRE: "danger",
    ProjectAction.ARCHIVE: "secondary",
    ProjectAction.DELETE: "danger",
}
# What the history shows for each audit action; others show their raw name.
HISTORY_LABELS: Mapping[str, str] = {
    "project_applied": "Applied",
    "project_updated": "Application changed",
    "project_submitted": "Submitted for review",
    "project_returned": "Returned to the lead with comments",
    "project_rejected": "Application rejected",
    "project_quoted": "Quote made",
    "project_accepted": "Quote accepted",
    "project_approved": "Approved",
    "project_activated": "Activated",
    "project_frozen": "Frozen",
    "project_unfrozen": "Unfrozen",
    "project_expired": "Ended",
    "project_archived": "Archived",
    "project_deleted": "Deleted",
    "grant_created": "Dataset access granted",
    "grant_revoked": "Dataset access revoked",
    "change_requested": "Change requested",
    "change_approved": "Change approved",
    "change_rejected": "Change rejected",
    "change_withdrawn": "Request withdrawn",
    "project_member_added": "Member added",
    "project_member_removed": "Member removed",
    "project_dataset_added": "Dataset added",
    "project_extended": "End date moved",
}
# A request in one line; `%(subject)s` is the person, the dataset version or the new end date.
REQUEST_KIND_LABELS: Mapping[str, str] = {
    RequestKind.ADD_MEMBER: "Add member %(subject)s",
    RequestKind.REMOVE_MEMBER: "Remove member %(subject)s",
    RequestKind.ADD_DATASET: "Extra dataset %(subject)s",
    RequestKind.EXTENSION: "Extension to %(subject)s",
}
# The same, as a noun in the history.
REQUEST_KIND_NOUNS: Mapping[str, str] = {
    RequestKind.ADD_MEMBER: "new member",
    RequestKind.REMOVE_MEMBER: "member removal",
    RequestKind.ADD_DATASET: "extra dataset",
    RequestKind.EXTENSION: "extension",
}
# `pending` alone would read as an account's state ("waiting for activation").
REQUEST_STATE_LABELS: Mapping[str, str] = {
    RequestState.PENDING: "awaiting decision",
    RequestState.APPROVED: "approved",
    RequestState.REJECTED: "rejected",
    RequestState.WITHDRAWN: "withdrawn",
}
# The lead's request forms, by the last segment of their path.
REQUEST_FORMS: Mapping[str, RequestKind] = {
    "add-member": RequestKind.ADD_MEMBER,
    "remove-member": RequestKind.REMOVE_MEMBER,
    "add-dataset": RequestKind.ADD_DATASET,
    "extension": RequestKind.EXTENSION,
}


# --- shared with the review pages -----------------------------------------------------------------


def require_page_principal(principal: Principal | None) -> Principal:
    if principal is None:
        raise AuthFailed("Please log in.")
    return principal


def visible_project(session: Session, user: User, code: str) -> Project:
    """The project with this code if the user may see it; 404 otherwise (also for bad codes)."""
    project = projects.find_project_by_code(session, code)
    if project is None or not policy.can_see(user, project):
        raise NotFound("Project not found.")
    return project


def staff_actions(user: User, project: Project, today: date) -> list[str]:
    """The staff steps the state machine and the user's role allow on the project now."""
    if not reaches_all(user, Action.PROJECT_REVIEW):
        return []
    offered = []
    for action in projects.allowed_actions(project.state):
        if action not in ACTION_LABELS:
            continue
        if action is ProjectAction.ACTIVATE and project.start_date > today:
            continue  # the scheduler activates it on its start date
        step = projects.TRANSITIONS[(project.state, action)]
        if policy.can(user, step.permission, project):
            offered.append(action.value)
    return offered


def _currency(project: Project) -> str:
    return project.tariff.currency if project.tariff is not None else ""


def format_money(amount: Decimal | str | None, currency: str) -> str:
    if amount is None:
        return "—"
    try:
        value = Decimal(amount)
    except InvalidOperation:
        return str(amount)
    return f"{currency} {value:,.2f}".strip()


def project_context() -> dict[str, Any]:
    """What every project template needs besides its own data: labels and colours."""
    return {
        "state_tones": STATE_TONES,
        "member_labels": MEMBER_LABELS,
        "action_labels": ACTION_LABELS,
        "action_tones": ACTION_TONES,
        "request_state_labels": REQUEST_STATE_LABELS,
    }


@dataclass(frozen=True)
class RequestRow:
    row: ChangeRequest
    summary: str
    requester: str


def _person(session: Session, user_id: Any) -> str:
    user = session.get(User, user_id) if isinstance(user_id, int) else None
    return f"{user.full_name} ({user.username})" if user is not None else f"#{user_id}"


def _dataset_version(session: Session, version_id: Any) -> str:
    version = session.get(DatasetVersion, version_id) if isinstance(version_id, int) else None
    return f"{version.dataset.code} {version.label}" if version is not None else f"#{version_id}"


def describe_request(session: Session, request: ChangeRequest, _: Translate) -> RequestRow:
    """The request in one line, in the reader's language."""
    payload = request.payload
    if request.kind in (RequestKind.ADD_MEMBER, RequestKind.REMOVE_MEMBER):
        subject = _person(session, payload.get("user_id"))
    elif request.kind is RequestKind.ADD_DATASET:
        subject = _dataset_version(session, payload.get("dataset_version_id"))
    else:
        subject = str(payload.get("new_end_date", ""))
    summary = _(REQUEST_KIND_LABELS[request.kind], subject=subject)
    return RequestRow(request, summary, _person(session, request.requested_by_id))


# --- list -----------------------------------------------------------------------------------------


@router.get("/projects")
def projects_page(
    request: Request, session: SessionDep, principal: PagePrincipal, offset: int = 0
) -> Response:
    principal = require_page_principal(principal)
    user = principal.user
    policy.authorize(user, Action.PROJECT_READ)
    offset = max(0, offset)
    items, total = projects.list_projects(session, user, limit=PAGE_SIZE, offset=offset)
    _ = translator(request_language(request))
    context = {
        **project_context(),
        "title": _("Projects") if user.is_staff else _("My projects"),
        "nav": "projects",
        "items": items,
        "total": total,
        "offset": offset,
        "page_size": PAGE_SIZE,
        "pager_query": "",
        "may_apply": _may_apply(user),
    }
    return render(request, "projects/list.html", context, principal=principal)


def _may_apply(user: User) -> bool:
    """Researchers apply here as the lead; staff apply on someone's behalf elsewhere (API, CLI)."""
    return user.role is Role.RESEARCHER and policy.can(user, Action.PROJECT_APPLY)


# --- the application form -------------------------------------------------------------------------


@dataclass
class ApplicationForm:
    """The fields of the form as typed (strings), so a refused form comes back as it was sent."""

    title: str = ""
    purpose: str = ""
    start_date: str = ""
    end_date: str = ""
    compute_size: str = ""
    dataset_version_ids: Sequence[int] = ()
    members: str = ""
    legal_basis: str = ""
    expected_publications: str = ""
    version: int | None = None

    @classmethod
    def of(cls, project: Project) -> ApplicationForm:
        usernames = [
            m.user.username
            for m in projects.current_members(project)
            if m.role is MemberRole.RESEARCHER
        ]
        return cls(
            title=project.title,
            purpose=project.purpose,
            start_date=project.start_date.isoformat(),
            end_date=project.end_date.isoformat(),
            compute_size=project.compute_size,
            dataset_version_ids=[r.dataset_version_id for r in project.requested_datasets],
            members="\n".join(usernames),
            legal_basis=project.legal_basis,
            expected_publications=project.expected_publications,
            version=project.version,
        )


def member_ids(session: Session, text: str) -> list[int]:
    """The accounts named in the members field: usernames separated by lines, commas or spaces."""
    names = [name for name in text.replace(",", " ").split() if name]
    if len(names) > MAX_MEMBER_LINES:
        raise Invalid(f"At most {MAX_MEMBER_LINES} members.", {"field": "members"})
    ids = []
    for name in names:
        user = accounts.find_user_by_username(session, name)
        if user is None:
            raise Invalid(f"There is no account {name[:64]!r}.", {"field": "members"})
        ids.append(user.id)
    return ids


def _offered_versions(session: Session, today: date) -> list[DatasetVersion]:
    return [v for v in catalogue.list_versions(session) if catalogue.is_available(v, today)]


def _render_form(
    request: Request,
    session: Session,
    settings: Settings,
    principal: Principal,
    today: date,
    form: ApplicationForm,
    *,
    project: Project | None,
    error: str = "",
) -> Response:
    _ = translator(request_language(request))
    if project is None:
        title, action, back = _("Apply for a project"), "/projects/new", "/projects"
        institution = principal.user.institution
    else:
        title = _("Change the application of project %(code)s", code=project.code)
        action = back = f"/projects/{project.code}"
        action += "/edit"
        institution = project.institution
    context = {
        "title": title,
        "nav": "projects",
        "action": action,
        "back_href": back,
        "form": form,
        "error": error,
        "institution": institution,
        "compute_sizes": settings.compute_sizes,
        "dataset_versions": _offered_versions(session, today),
        "max_years": settings.max_project_years,
    }
    return render(
        request,
        "projects/form.html",
        context,
        principal=principal,
        status_code=422 if error else 200,
    )


@router.get("/projects/new")
def application_form(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    principal: PagePrincipal,
    now: NowDep,
) -> Response:
    principal = require_page_principal(principal)
    policy.authorize(principal.user, Action.PROJECT_APPLY)
    today = now.date()
    form = ApplicationForm(
        start_date=today.isoformat(),
        end_date=(today + timedelta(days=365)).isoformat(),
        compute_size=next(iter(settings.compute_sizes), ""),
    )
    return _render_form(request, session, settings, principal, today, form, project=None)


@router.post("/projects/new")
def apply(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    principal: FormPrincipal,
    now: NowDep,
    title: Line = "",
    purpose: Text = "",
    start_date: Day = "",
    end_date: Day = "",
    compute_size: Annotated[str, Form(max_length=40)] = "",
    dataset_version_ids: Annotated[list[int], Form()] = [],  # noqa: B006 (FastAPI copies it)
    members: Annotated[str, Form(max_length=4000)] = "",
    legal_basis: Text = "",
    expected_publications: Text = "",
) -> Response:
    policy.authorize(principal.user, Action.PROJECT_APPLY)
    form = ApplicationForm(
        title, purpose, start_date, end_date, compute_size,
        dataset_version_ids, members, legal_basis, expected_publications,
    )  # fmt: skip
    try:
        with session.begin_nested():  # nothing of a refused application stays
            project = applications.apply_project(
                session,
                settings,
                actor=principal.user,
                now=now,
                title=title,
                purpose=purpose,
                compute_size=compute_size,
                start_date=parse_day(start_date, "start_date"),
                end_date=parse_day(end_date, "end_date"),
                dataset_version_ids=dataset_version_ids,
                member_ids=member_ids(session, members),
                legal_basis=legal_basis,
                expected_publications=expected_publications,
                source=request_source(request, settings),
            )
    except Invalid as exc:
        _ = translator(request_language(request))
        return _render_form(
            request, session, settings, principal, now.date(), form,
            project=None, error=_(exc.message),
        )  # fmt: skip
    return redirect(f"/projects/{project.code}?done=saved")


@router.get("/projects/{code}/edit")
def edit_form(
    code: str,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    principal: PagePrincipal,
    now: NowDep,
) -> Response:
    principal = require_page_principal(principal)
    project = visible_project(session, principal.user, code)
    policy.authorize(principal.user, Action.PROJECT_EDIT, project)
    form = ApplicationForm.of(project)
    return _render_form(request, session, settings, principal, now.date(), form, project=project)


@router.post("/projects/{code}/edit")
def edit(
    code: str,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    principal: FormPrincipal,
    now: NowDep,
    version: Annotated[int, Form()],
    title: Line = "",
    purpose: Text = "",
    start_date: Day = "",
    end_date: Day = "",
    compute_size: Annotated[str, Form(max_length=40)] = "",
    dataset_version_ids: Annotated[list[int], Form()] = [],  # noqa: B006 (FastAPI copies it)
    members: Annotated[str, Form(max_length=4000)] = "",
    legal_basis: Text = "",
    expected_publications: Text = "",
) -> Response:
    project = visible_project(session, principal.user, code)
    policy.authorize(principal.user, Action.PROJECT_EDIT, project)
    form = ApplicationForm(
        title, purpose, start_date, end_date, compute_size,
        dataset_version_ids, members, legal_basis, expected_publications, version,
    )  # fmt: skip
    try:
        with session.begin_nested():  # a refused change leaves the draft as it was
            applications.update_draft(
                session,
                project,
                principal.user,
                now,
                settings,
                version=version,
                title=title,
                purpose=purpose,
                compute_size=compute_size,
                start_date=parse_day(start_date, "start_date"),
                end_date=parse_day(end_date, "end_date"),
                legal_basis=legal_basis,
                expected_publications=expected_publications,
                dataset_version_ids=dataset_version_ids,
                member_ids=member_ids(session, members),
                source=request_source(request, settings),
            )
    except Invalid as exc:
        _ = translator(request_language(request))
        session.refresh(project)
        return _render_form(
            request, session, settings, principal, now.date(), form,
            project=project, error=_(exc.message),
        )  # fmt: skip
    return redirect(f"/projects/{project.code}?done=saved")


# --- the project page -----------------------------------------------------------------------------


@dataclass(frozen=True)
class DatasetRow:
    version: DatasetVersion
    grant: Grant | None


@dataclass(frozen=True)
class MoneyLine:
    description: str
    amount: str
    period: tuple[date, date] | None = None


@dataclass(frozen=True)
class MoneyTable:
    lines: list[MoneyLine]
    total: str


@dataclass(frozen=True)
class HistoryRow:
    at: Any
    actor: str
    summary: str


def dataset_rows(session: Session, project: Project) -> list[DatasetRow]:
    """Requested and granted versions, one row each: the latest grant of a version, if any."""
    latest: dict[int, Grant] = {}
    for grant in grants.grant_history(session, project):
        current = latest.get(grant.dataset_version_id)
        if current is None or grant.granted_at >= current.granted_at:
            latest[grant.dataset_version_id] = grant
    rows = [DatasetRow(g.dataset_version, g) for g in latest.values()]
    rows += [
        DatasetRow(r.dataset_version, None)
        for r in project.requested_datasets
        if r.dataset_version_id not in latest
    ]
    return sorted(rows, key=lambda row: (row.version.dataset.code, row.version.label))


def quote_table(project: Project) -> MoneyTable | None:
    if not project.quote_lines or project.quote_total is None:
        return None
    currency = _currency(project)
    lines = [
        MoneyLine(str(line.get("description", "")), format_money(line.get("amount"), currency))
        for line in project.quote_lines
    ]
    return MoneyTable(lines, format_money(project.quote_total, currency))


def costs_table(session: Session, project: Project, today: date) -> MoneyTable | None:
    """What has been invoiced (or will be, this quarter) since activation; `None` before."""
    if project.activated_at is None:
        return None
    found = costs.project_costs(session, project, today)
    lines = [
        MoneyLine(
            line.description,
            format_money(line.amount, line.currency),
            period=(line.period_start, line.period_end),
        )
        for line in found.invoiced
    ]
    currency = _currency(project)
    return MoneyTable(lines, format_money(found.invoiced_total, currency))


def history_rows(
    events: Sequence[AuditEvent], _: Translate, *, currency: str | None
) -> list[HistoryRow]:
    """The history in the reader's language; amounts only for readers of the costs (`currency`
    not `None`)."""
    rows = []
    for event in events:
        with_costs = currency is not None
        details = event.details if with_costs else projects.without_costs(event.details)
        summary = _(HISTORY_LABELS.get(event.action, event.action))
        kind = details.get("kind")
        if isinstance(kind, str) and kind in REQUEST_KIND_NOUNS:
            summary += f" ({_(REQUEST_KIND_NOUNS[kind])})"
        if event.action == "project_extended" and isinstance(details.get("to"), str):
            summary += f": {details.get('from', '')} → {details['to']}"
        comment = details.get("comment")
        if isinstance(comment, str) and comment:
            summary += f": {comment}"
        if with_costs and "quote_total" in details:
            summary += f" ({format_money(details['quote_total'], currency or '')})"
        if with_costs and "amount" in details:
            summary += f" ({format_money(details['amount'], currency or '')})"
        rows.append(HistoryRow(event.at, event.actor, summary))
    return rows


def lifecycle_panel(session: Session, user: User, project: Project) -> dict[str, Any] | None:
    """The archive and deletion certificate, for staff who read the audit trail; None when
    there is neither (or the caller may not see them)."""
    if not policy.can(user, Action.AUDIT_READ):
        return None
    record = archive.find_archive(session, project)
    certificate = archive.find_certificate(session, project)
    if record is None and certificate is None:
        return None
    return {
        "archive": record,
        "certificate": certificate,
        "intact": certificate is not None and archive.certificate_intact(certificate),
    }


@router.get("/projects/{code}")
def project_page(
    code: str,
    request: Request,
    session: SessionDep,
    principal: PagePrincipal,
    now: NowDep,
) -> Response:
    principal = require_page_principal(principal)
    user = principal.user
    project = visible_project(session, user, code)
    today = now.date()
    state = project.state
    may_see_costs = policy.can(user, Action.PROJECT_COSTS_READ, project)
    events, _total = projects.project_history(session, project, limit=200)
    _ = translator(request_language(request))
    context = {
        **project_context(),
        "title": _("Project %(code)s", code=project.code),
        "nav": "projects",
        "project": project,
        "members": projects.current_members(project),
        "datasets": dataset_rows(session, project),
        "quote": quote_table(project) if may_see_costs else None,
        "costs": costs_table(session, project, today) if may_see_costs else None,
        "history": history_rows(events, _, currency=_currency(project) if may_see_costs else None),
        "may_edit": state is ProjectState.DRAFT and policy.can(user, Action.PROJECT_EDIT, project),
        "may_submit": state is ProjectState.DRAFT
        and policy.can(user, Action.PROJECT_SUBMIT, project),
        "may_accept_quote": state is ProjectState.QUOTED
        and policy.can(user, Action.PROJECT_ACCEPT, project),
        **lead_requests(session, user, project, today, _),
        "actions": staff_actions(user, project, today),
        "lifecycle": lifecycle_panel(session, user, project),
    }
    return render(request, "projects/project.html", context, principal=principal)


def lead_requests(
    session: Session, user: User, project: Project, today: date, _: Translate
) -> dict[str, Any]:
    """The project's change requests, and what the lead may ask for now."""
    may_ask = policy.can(user, Action.PROJECT_REQUEST_CHANGE, project)
    found, _total = requests.list_requests(session, user, project=project, limit=200)
    may_change = may_ask and project.state in requests.OPEN_STATES
    removable: list[ProjectMember] = []
    addable: list[DatasetVersion] = []
    if may_change:
        removable = [
            m for m in projects.current_members(project) if m.role is MemberRole.RESEARCHER
        ]
        granted = {g.dataset_version_id for g in grants.active_grants(session, project)}
        addable = [v for v in _offered_versions(session, today) if v.id not in granted]
    return {
        "requests": [describe_request(session, item, _) for item in found],
        "may_withdraw": may_ask,
        "may_request": may_change,
        "may_extend": may_ask and project.state in requests.EXTENSION_STATES,
        "removable": removable,
        "addable": addable,
    }


# --- the lead's steps -----------------------------------------------------------------------------


@router.post("/projects/{code}/submit")
def submit(
    code: str,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    principal: FormPrincipal,
    now: NowDep,
    version: Annotated[int, Form()],
) -> Response:
    project = visible_project(session, principal.user, code)
    projects.submit_project(
        session,
        project,
        principal.user,
        now,
        settings,
        version=version,
        source=request_source(request, settings),
    )
    return redirect(f"/projects/{project.code}?done=saved")


@router.post("/projects/{code}/accept-quote")
def accept_quote(
    code: str,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    principal: FormPrincipal,
    now: NowDep,
    version: Annotated[int, Form()],
) -> Response:
    project = visible_project(session, principal.user, code)
    projects.accept_quote(
        session,
        project,
        principal.user,
        now,
        settings,
        version=version,
        source=request_source(request, settings),
    )
    return redirect(f"/projects/{project.code}?done=saved")


@router.post("/projects/{code}/requests/{form}")
def ask_for_change(
    code: str,
    form: str,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    principal: FormPrincipal,
    now: NowDep,
    reason: Annotated[str, Form(max_length=4000)] = "",
    username: Annotated[str, Form(max_length=200)] = "",
    user_id: Annotated[int | None, Form()] = None,
    dataset_version_id: Annotated[int | None, Form()] = None,
    new_end_date: Day = "",
) -> Response:
    """One of the lead's request forms: a new member (by username), a member leaving, an extra
    dataset version, or a later end date."""
    kind = REQUEST_FORMS.get(form)
    if kind is None:
        raise NotFound("This page does not exist.")
    project = visible_project(session, principal.user, code)
    if kind is RequestKind.ADD_MEMBER:
        found = accounts.find_user_by_username(session, username)
        if found is None:
            raise Invalid(f"There is no account {username.strip()[:64]!r}.", {"field": "username"})
        user_id = found.id
    requests.create_request(
        session,
        project,
        principal.user,
        now,
        settings,
        kind=kind,
        user_id=user_id,
        dataset_version_id=dataset_version_id,
        new_end_date=parse_day(new_end_date, "new_end_date")
        if kind is RequestKind.EXTENSION
        else None,
        reason=reason,
        source=request_source(request, settings),
    )
    return redirect(f"/projects/{project.code}?done=requested")


@router.post("/projects/{code}/requests/{request_id}/withdraw")
def withdraw(
    code: str,
    request_id: int,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    principal: FormPrincipal,
    now: NowDep,
    version: Annotated[int, Form()],
) -> Response:
    project = visible_project(session, principal.user, code)
    change = requests.get_request(session, request_id)
    if change.project_id != project.id:
        raise NotFound("Request not found.")
    requests.withdraw_request(
        session,
        change,
        principal.user,
        now,
        settings,
        version=version,
        source=request_source(request, settings),
    )
    return redirect(f"/projects/{project.code}?done=saved")
