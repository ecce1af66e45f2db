"""The data steward's review queues: projects by state, each with the steps the state machine
allows from there (return with comments, reject, quote, approve, freeze, unfreeze, end, archive,
delete), and the lead's change requests waiting for a decision.

Steps that give or take away access to microdata (`projects.STEP_UP_ACTIONS`, and deciding a
request that does) ask for a fresh code through the staff step-up prompt, as the API does.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request, Response
from sqlalchemy import func, select

from orchestrator import policy, projects, requests
from orchestrator.api.deps import NowDep, SessionDep, SettingsDep, request_source
from orchestrator.errors import NotFound
from orchestrator.models import Project, ProjectState, RequestState
from orchestrator.policy import Action
from orchestrator.projects import ProjectAction
from orchestrator.web.browser import MAX_NEXT_LENGTH, FormPrincipal, safe_next
from orchestrator.web.i18n import translator
from orchestrator.web.pages_projects import (
    ACTION_LABELS,
    describe_request,
    format_money,
    project_context,
    staff_actions,
    visible_project,
)
from orchestrator.web.portal import PortalRoute
from orchestrator.web.rendering import redirect, render, request_language
from orchestrator.web.staff import StaffPrincipal, StepUpCode, authorize_page, confirm_change

router = APIRouter(route_class=PortalRoute, include_in_schema=False)

PAGE_SIZE = 25
# The queues in the order of the life of a project, with their headings.
QUEUES: tuple[tuple[ProjectState, str], ...] = (
    (ProjectState.SUBMITTED, "Submitted: to review"),
    (ProjectState.QUOTED, "Quoted: waiting for the lead"),
    (ProjectState.ACCEPTED, "Accepted: to approve"),
    (ProjectState.APPROVED, "Approved: waiting for the start date"),
    (ProjectState.ACTIVE, "Active"),
    (ProjectState.FROZEN, "Frozen"),
    (ProjectState.EXPIRED, "Expired"),
    (ProjectState.ARCHIVED, "Archived"),
    (ProjectState.REJECTED, "Rejected"),
)
QUEUE_TABS: dict[ProjectState, str] = {
    ProjectState.SUBMITTED: "Submitted",
    ProjectState.QUOTED: "Quoted",
    ProjectState.ACCEPTED: "Accepted",
    ProjectState.APPROVED: "Approved",
    ProjectState.ACTIVE: "Active",
    ProjectState.FROZEN: "Frozen",
    ProjectState.EXPIRED: "Expired",
    ProjectState.ARCHIVED: "Archived",
    ProjectState.REJECTED: "Rejected",
}
COMMENT_LENGTH = 4000


@router.get("/review/projects")
def project_queue(
    request: Request,
    session: SessionDep,
    principal: StaffPrincipal,
    now: NowDep,
    state: str = "",
    offset: int = 0,
) -> Response:
    authorize_page(principal, Action.PROJECT_REVIEW)
    user = principal.user
    shown = dict(QUEUES)
    wanted = ProjectState(state) if state in {s.value for s in shown} else ProjectState.SUBMITTED
    offset = max(0, offset)
    visible = policy.visible_projects(select(Project.id), user)
    rows = session.execute(
        select(Project.state, func.count()).where(Project.id.in_(visible)).group_by(Project.state)
    )
    counts: dict[ProjectState, int] = dict(rows.all())
    items, total = projects.list_projects(
        session, user, state=wanted, limit=PAGE_SIZE, offset=offset
    )
    today = now.date()
    _ = translator(request_language(request))
    context = {
        **project_context(),
        "title": _("Project review"),
        "nav": "review",
        "nav_tab": "projects",
        "queues": [(s.value, QUEUE_TABS[s], counts.get(s, 0)) for s, _label in QUEUES],
        "state": wanted.value,
        "queue_label": shown[wanted],
        "items": items,
        "actions_of": {project.id: staff_actions(user, project, today) for project in items},
        "money": format_money,
        "total": total,
        "offset": offset,
        "page_size": PAGE_SIZE,
        "pager_query": f"state={wanted.value}&",
    }
    return render(request, "projects/review_projects.html", context, principal=principal)


@router.post("/review/projects/{code}/{action}")
def take_step(
    code: str,
    action: str,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    principal: FormPrincipal,
    now: NowDep,
    stepup: StepUpCode,
    version: Annotated[int, Form()],
    comments: Annotated[str, Form(max_length=COMMENT_LENGTH)] = "",
    next: Annotated[str, Form(max_length=MAX_NEXT_LENGTH)] = "",
) -> Response:
    """One staff step of the state machine; the project's queue (or page) shows the result."""
    if action not in ACTION_LABELS:
        raise NotFound("This page does not exist.")
    step = ProjectAction(action)
    project = visible_project(session, principal.user, code)
    permission = projects.check_transition(project, step, principal.user).permission
    confirm_change(
        session,
        settings,
        principal,
        stepup,
        now,
        permission,
        project,
        sensitive=step in projects.STEP_UP_ACTIONS,
    )
    projects.transition(
        session,
        project,
        step,
        principal.user,
        now,
        settings,
        version=version,
        comment=comments,
        source=request_source(request, settings),
    )
    return redirect(with_notice(safe_next(next, f"/projects/{project.code}")))


def with_notice(target: str, notice: str = "saved") -> str:
    """`target` with `done=<notice>` (replacing one it had), for the page to confirm the change."""
    path, _sep, query = target.partition("?")
    kept = [part for part in query.split("&") if part and not part.startswith("done=")]
    return f"{path}?{'&'.join([*kept, f'done={notice}'])}"


# --- change requests ------------------------------------------------------------------------------


@router.get("/review/requests")
def request_queue(
    request: Request,
    session: SessionDep,
    principal: StaffPrincipal,
    offset: int = 0,
) -> Response:
    authorize_page(principal, Action.PROJECT_DECIDE_CHANGE)
    user = principal.user
    offset = max(0, offset)
    found, total = requests.list_requests(
        session, user, state=RequestState.PENDING, limit=PAGE_SIZE, offset=offset
    )
    _ = translator(request_language(request))
    items = [describe_request(session, item, _) for item in found]
    context = {
        **project_context(),
        "title": _("Request review"),
        "nav": "review",
        "nav_tab": "requests",
        "items": items,
        # Segregation of duties: a steward who is or was in the project does not decide.
        "may_decide": {
            item.row.id: not policy.is_or_was_member(user, item.row.project) for item in items
        },
        "total": total,
        "offset": offset,
        "page_size": PAGE_SIZE,
        "pager_query": "",
    }
    return render(request, "projects/review_requests.html", context, principal=principal)


@router.post("/review/requests/{request_id}/{decision}")
def decide_request(
    request_id: int,
    decision: str,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    principal: FormPrincipal,
    now: NowDep,
    stepup: StepUpCode,
    version: Annotated[int, Form()],
    comment: Annotated[str, Form(max_length=COMMENT_LENGTH)] = "",
) -> Response:
    """Approve (which changes access or the end date: step-up, as in the API) or reject."""
    if decision not in ("approve", "reject"):
        raise NotFound("This page does not exist.")
    user = principal.user
    change = requests.get_request(session, request_id)
    if not policy.can_see(user, change):
        raise NotFound("Request not found.")
    requests.check_decider(change, user)
    approve = decision == "approve"
    confirm_change(
        session,
        settings,
        principal,
        stepup,
        now,
        Action.PROJECT_DECIDE_CHANGE,
        change,
        sensitive=approve,
    )
    decide = requests.approve_request if approve else requests.reject_request
    decide(
        session,
        change,
        user,
        now,
        settings,
        version=version,
        comment=comment,
        source=request_source(request, settings),
    )
    return redirect("/review/requests?done=saved")
