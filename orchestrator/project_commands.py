"""`kluis projects ...`: research projects from the shell: list, show, every step of the state
machine, the change-request queue and decisions. Commands act as "system" in the audit trail
(the shell already holds the platform's keys); `--as USERNAME` records a named person instead and
applies that person's rights, as the API would (without its step-up: there is no browser here).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, NoReturn

import typer
from sqlalchemy.orm import Session

from orchestrator import (
    accounts,
    applications,
    archive,
    catalogue,
    grants,
    policy,
    projects,
    requests,
)
from orchestrator.config import Settings
from orchestrator.db import make_engine, make_sessionmaker, session_scope
from orchestrator.errors import KluisError
from orchestrator.models import ChangeRequest, Project, ProjectState, RequestState, User, utcnow
from orchestrator.policy import Action
from orchestrator.projects import ProjectAction

projects_app = typer.Typer(
    help="Research projects: list, show, take a step (submit ... delete), decide requests.",
    no_args_is_help=True,
)

AsOption = Annotated[
    str | None,
    typer.Option("--as", help="Act as this user (their rights apply; audited under their name)."),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]
CommentOption = Annotated[
    str, typer.Option("--comment", "-m", help="Why (required to return, reject and freeze).")
]


class Decision(StrEnum):
    APPROVE = "approve"
    REJECT = "reject"
    WITHDRAW = "withdraw"


STEP_HELP: dict[ProjectAction, str] = {
    ProjectAction.SUBMIT: "The lead hands a draft in for review.",
    ProjectAction.RETURN: "Send an application back to its lead with comments (-m).",
    ProjectAction.REJECT: "Refuse an application for good (-m).",
    ProjectAction.QUOTE: "Fix the quote with the tariff in force today.",
    ProjectAction.ACCEPT: "The lead accepts the quote.",
    ProjectAction.APPROVE: "Approve: grant the requested data; active at once if it has started.",
    ProjectAction.ACTIVATE: "Activate an approved project whose start date has come.",
    ProjectAction.FREEZE: "Stop access for now (-m); grants stay.",
    ProjectAction.UNFREEZE: "Give a frozen project access again.",
    ProjectAction.EXPIRE: "End a project now.",
    ProjectAction.ARCHIVE: "Archive an expired project (no more extensions).",
    ProjectAction.DELETE: "Delete: scrub free text, keep a deletion record.",
}


# --- plumbing -------------------------------------------------------------------------------------


def _settings(ctx: typer.Context) -> Settings:
    settings = ctx.find_root().obj
    assert isinstance(settings, Settings)
    return settings


def _fail(message: str, code: int = 1) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


@contextlib.contextmanager
def _transaction(settings: Settings) -> Iterator[Session]:
    """One unit of work, committed when the command succeeds; a `KluisError` becomes a one-line
    message and exit code 1, and nothing is written. Notifications read the settings from it."""
    engine = make_engine(settings)
    factory = make_sessionmaker(engine, write=True)
    factory.configure(info={"settings": settings})
    try:
        with session_scope(factory) as session:
            yield session
    except KluisError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(1) from None
    finally:
        engine.dispose()


def _actor(session: Session, username: str | None) -> User | None:
    """`None` (the system) without `--as`; else that user, whose rights the domain applies."""
    if username is None:
        return None
    actor = accounts.find_user_by_username(session, username)
    if actor is None:
        _fail(f"no user {username!r} (--as)")
    return actor


def _project(session: Session, code: str, actor: User | None) -> Project:
    project = projects.find_project_by_code(session, code)
    if project is None or (actor is not None and not policy.can_see(actor, project)):
        _fail(f"no project {code!r}")
    return project


def _request(session: Session, request_id: int, actor: User | None) -> ChangeRequest:
    request = session.get(ChangeRequest, request_id)
    if request is None or (actor is not None and not policy.can_see(actor, request)):
        _fail(f"no request {request_id}")
    return request


def _project_data(session: Session, project: Project, actor: User | None) -> dict[str, Any]:
    data: dict[str, Any] = {
        "code": project.code,
        "title": project.title,
        "state": project.state.value,
        "lead": project.lead.username,
        "institution": project.institution.name,
        "start_date": project.start_date.isoformat(),
        "end_date": project.end_date.isoformat(),
        "compute_size": project.compute_size,
        "version": project.version,
        "members": sorted(m.user.username for m in projects.current_members(project)),
        "grants": [
            f"{g.dataset_version.dataset.code} {g.dataset_version.label}"
            for g in grants.active_grants(session, project)
        ],
        "review_comments": project.review_comments,
        "actions": [a.value for a in projects.actions_for(project, actor)],
    }
    if actor is None or policy.can(actor, Action.PROJECT_COSTS_READ, project):
        data["quote_total"] = str(project.quote_total) if project.quote_total is not None else None
        data["quote_accepted"] = project.quote_accepted_at is not None
    return data


def _request_data(request: ChangeRequest) -> dict[str, Any]:
    return {
        "id": request.id,
        "project": request.project.code,
        "kind": request.kind.value,
        "state": request.state.value,
        "payload": request.payload,
        "reason": request.reason,
        "requested_at": request.requested_at.isoformat(),
        "decision_comment": request.decision_comment,
        "version": request.version,
    }


def _print_project(data: dict[str, Any], as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(data, sort_keys=True))
        return
    typer.echo(f"{data['code']}  {data['title']}")
    for key in ("state", "lead", "institution", "start_date", "end_date", "compute_size"):
        typer.echo(f"  {key.replace('_', ' ')}: {data[key]}")
    typer.echo(f"  members: {', '.join(data['members']) or '-'}")
    typer.echo(f"  grants: {', '.join(data['grants']) or '-'}")
    if data.get("quote_total") is not None:
        accepted = " (accepted)" if data["quote_accepted"] else ""
        typer.echo(f"  quote: {data['quote_total']}{accepted}")
    if data["review_comments"]:
        typer.echo(f"  review comments: {data['review_comments']}")
    typer.echo(f"  next steps: {', '.join(data['actions']) or '-'}")


# --- reading --------------------------------------------------------------------------------------


@projects_app.command("list")
def projects_list(
    ctx: typer.Context,
    state: Annotated[ProjectState | None, typer.Option(help="Only this state.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000)] = 200,
    as_user: AsOption = None,
    as_json: JsonOption = False,
) -> None:
    """List projects (with --as, those that user may see): code, state, dates, lead, title."""
    with _transaction(_settings(ctx)) as session:
        actor = _actor(session, as_user)
        items, total = projects.list_projects(session, actor, state=state, limit=limit)
        if as_json:
            typer.echo(json.dumps([_project_data(session, p, actor) for p in items]))
            return
        for project in items:
            typer.echo(
                f"{project.code:<6} {project.state.value:<10} {project.start_date.isoformat()} "
                f"{project.end_date.isoformat()} {project.lead.username:<24} {project.title}"
            )
        typer.echo(f"{len(items)} of {total} projects")


@projects_app.command("show")
def projects_show(
    ctx: typer.Context, code: str, as_user: AsOption = None, as_json: JsonOption = False
) -> None:
    """One project: state, people, dates, grants, quote and the steps possible now."""
    with _transaction(_settings(ctx)) as session:
        actor = _actor(session, as_user)
        project = _project(session, code, actor)
        _print_project(_project_data(session, project, actor), as_json)


@projects_app.command("apply")
def projects_apply(
    ctx: typer.Context,
    title: Annotated[str, typer.Option(help="Project title.")],
    purpose: Annotated[str, typer.Option(help="What the research is for.")],
    start: Annotated[datetime, typer.Option(formats=["%Y-%m-%d"], help="Start date.")],
    end: Annotated[datetime, typer.Option(formats=["%Y-%m-%d"], help="End date (inclusive).")],
    size: Annotated[str, typer.Option(help="Compute size (a key of KLUIS_COMPUTE_SIZES).")],
    lead: Annotated[
        str | None, typer.Option(help="Lead's username (required without --as).")
    ] = None,
    dataset: Annotated[
        list[str] | None, typer.Option(help="CODE:LABEL of a dataset version; repeatable.")
    ] = None,
    member: Annotated[
        list[str] | None, typer.Option(help="Username of a co-researcher; repeatable.")
    ] = None,
    legal_basis: Annotated[str, typer.Option(help="Legal basis text.")] = "",
    publications: Annotated[str, typer.Option(help="Expected publications.")] = "",
    code: Annotated[str | None, typer.Option(help="Project code (staff; else generated).")] = None,
    as_user: AsOption = None,
    as_json: JsonOption = False,
) -> None:
    """Apply for a project: a new draft whose lead is --as (a researcher) or --lead."""
    settings = _settings(ctx)
    with _transaction(settings) as session:
        actor = _actor(session, as_user)
        lead_user = None
        if lead is not None:
            lead_user = accounts.find_user_by_username(session, lead)
            if lead_user is None:
                _fail(f"no user {lead!r} (--lead)")
        elif actor is None:
            _fail("give --lead USERNAME, or apply --as the lead")
        version_ids = []
        for item in dataset or []:
            dataset_code, _, label = item.partition(":")
            if not label:
                _fail(f"--dataset {item!r}: use CODE:LABEL")
            found = catalogue.get_dataset(session, dataset_code)
            version_ids.append(catalogue.get_dataset_version(session, found, label).id)
        member_ids = []
        for username in member or []:
            user = accounts.find_user_by_username(session, username)
            if user is None:
                _fail(f"no user {username!r} (--member)")
            member_ids.append(user.id)
        project = applications.apply_project(
            session,
            settings,
            actor=actor,
            now=utcnow(),
            title=title,
            purpose=purpose,
            compute_size=size,
            start_date=start.date(),
            end_date=end.date(),
            dataset_version_ids=version_ids,
            member_ids=member_ids,
            legal_basis=legal_basis,
            expected_publications=publications,
            lead_id=lead_user.id if lead_user is not None else None,
            code=code,
        )
        if as_json:
            _print_project(_project_data(session, project, actor), True)
        else:
            typer.echo(f"project {project.code}: draft (submit it with `kluis projects submit`)")


# --- the steps ------------------------------------------------------------------------------------


def _step_command(action: ProjectAction) -> Callable[..., None]:
    def command(
        ctx: typer.Context,
        code: str,
        comment: CommentOption = "",
        as_user: AsOption = None,
        as_json: JsonOption = False,
    ) -> None:
        settings = _settings(ctx)
        with _transaction(settings) as session:
            actor = _actor(session, as_user)
            project = _project(session, code, actor)
            before = project.state
            projects.transition(
                session, project, action, actor, utcnow(), settings, comment=comment
            )
            if as_json:
                _print_project(_project_data(session, project, actor), True)
            else:
                typer.echo(f"project {project.code}: {before.value} -> {project.state.value}")

    command.__name__ = f"projects_{action.value}"
    command.__doc__ = STEP_HELP[action]
    return command


for _action in ProjectAction:
    projects_app.command(_action.value)(_step_command(_action))


# --- change requests ------------------------------------------------------------------------------


@projects_app.command("requests")
def projects_requests(
    ctx: typer.Context,
    state: Annotated[
        RequestState | None, typer.Option(help="Only this state (pending: the review queue).")
    ] = None,
    project: Annotated[str | None, typer.Option(help="Only this project's requests.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000)] = 200,
    as_user: AsOption = None,
    as_json: JsonOption = False,
) -> None:
    """Change requests, oldest first: id, project, kind, state, what is asked."""
    with _transaction(_settings(ctx)) as session:
        actor = _actor(session, as_user)
        only = _project(session, project, actor) if project is not None else None
        items, total = requests.list_requests(
            session, actor, project=only, state=state, limit=limit
        )
        if as_json:
            typer.echo(json.dumps([_request_data(r) for r in items]))
            return
        for request in items:
            asked = " ".join(f"{k}={v}" for k, v in request.payload.items())
            typer.echo(
                f"{request.id:<6} {request.project.code:<6} {request.kind.value:<14} "
                f"{request.state.value:<10} {asked}"
            )
        typer.echo(f"{len(items)} of {total} requests")


@projects_app.command("decide")
def projects_decide(
    ctx: typer.Context,
    request_id: Annotated[int, typer.Argument(min=1, max=2_147_483_647)],
    decision: Decision,
    comment: CommentOption = "",
    as_user: AsOption = None,
    as_json: JsonOption = False,
) -> None:
    """Approve (the change and its fee apply now), reject (-m) or withdraw a pending request."""
    settings = _settings(ctx)
    with _transaction(settings) as session:
        actor = _actor(session, as_user)
        request = _request(session, request_id, actor)
        now = utcnow()
        if decision is Decision.APPROVE:
            requests.approve_request(session, request, actor, now, settings, comment=comment)
        elif decision is Decision.REJECT:
            requests.reject_request(session, request, actor, now, settings, comment=comment)
        else:
            requests.withdraw_request(session, request, actor, now, settings)
        if as_json:
            typer.echo(json.dumps(_request_data(request)))
        else:
            typer.echo(f"request {request.id} ({request.kind.value}) is {request.state.value}")


@projects_app.command("certificate")
def projects_certificate(
    ctx: typer.Context, code: str, as_user: AsOption = None, as_json: JsonOption = False
) -> None:
    """A deleted project's deletion certificate: what was removed, when, by which policy."""
    with _transaction(_settings(ctx)) as session:
        actor = _actor(session, as_user)
        project = _project(session, code, actor)
        if actor is not None:
            policy.authorize(actor, Action.AUDIT_READ)
        certificate = archive.get_certificate(session, project)
        data = {
            **archive.certificate_body(certificate),
            "sha256": certificate.sha256,
            "intact": archive.certificate_intact(certificate),
        }
    if as_json:
        typer.echo(json.dumps(data, indent=2))
        return
    removed = data["removed"]
    typer.echo(f"Deletion certificate of project {data['project_code']}")
    typer.echo(f"  issued      {data['issued_at']} by {data['issued_by']}")
    typer.echo(
        f"  policy      kept {data['policy'].get('retention_years')} years after archiving "
        f"(until {data['policy'].get('retention_until')})"
    )
    if removed.get("archive"):
        item = removed["archive"]
        typer.echo(
            f"  archive     sha256 {item['sha256']}, {item['file_count']} files, "
            f"{item['size_bytes']} bytes"
        )
    for entry in removed.get("paths", []):
        typer.echo(f"  removed     {entry['path']} ({entry['kind']})")
    typer.echo(f"  sha256      {data['sha256']} ({'intact' if data['intact'] else 'ALTERED'})")
