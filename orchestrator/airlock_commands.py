"""`kluis airlock …`: the retention sweep (`sweep`), the control plane's health with clamd
(`scanner`), the verification of a signed release manifest (`verify MANIFEST`), and the staff's
view and decisions: uploads and their review, output requests, a project's number of approvals.

Reading commands act as the system (everything visible) or, with `--as USERNAME`, with that
person's view. A decision always names its staff member (`--as`, required): the domain applies
their rights and segregation of duties, and audits under their name. Released files are
downloaded from the portal only; there is no download here. Exit codes: 0 done, 1 invalid input,
2 usage, 3 not found, 4 not allowed, 5 conflict (a step the state does not allow, or a stale
`--version`); nothing is written when a command fails.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from sqlalchemy import select
from sqlalchemy.orm import Session

from orchestrator import accounts, airlock, airlock_egress, clamd, projects
from orchestrator.airlock_models import (
    OutputRequest,
    OutputState,
    ReviewDecision,
    Upload,
    UploadState,
)
from orchestrator.config import Settings
from orchestrator.db import begin_read, make_engine, make_sessionmaker, session_scope
from orchestrator.errors import Conflict, Forbidden, KluisError, NotFound
from orchestrator.models import Project, User, utcnow

airlock_app = typer.Typer(
    help="The airlock: uploads, output requests, reviews, approvals; sweep, scanner, manifests.",
    no_args_is_help=True,
)

AsOption = Annotated[
    str | None,
    typer.Option(
        "--as", help="Act as this user (their view and rights; audited under their name)."
    ),
]
AsRequired = Annotated[
    str,
    typer.Option("--as", help="The staff member deciding (their rights apply; audited as them)."),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]
IdArgument = Annotated[int, typer.Argument(min=1, max=2_147_483_647)]
LIMIT = 500

EXIT_INVALID = 1
EXIT_NOT_FOUND = 3
EXIT_FORBIDDEN = 4
EXIT_CONFLICT = 5


class UploadDecision(StrEnum):
    APPROVE = "approve"
    REJECT = "reject"


class Lane(StrEnum):
    LIGHT = "light"
    NORMAL = "normal"


def _settings(ctx: typer.Context) -> Settings:
    settings = ctx.find_root().obj
    assert isinstance(settings, Settings)
    return settings


def _fail(message: str, code: int = EXIT_INVALID) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def exit_code(exc: KluisError) -> int:
    """The command's exit code for a refusal of the domain."""
    if isinstance(exc, NotFound):
        return EXIT_NOT_FOUND
    if isinstance(exc, Forbidden):
        return EXIT_FORBIDDEN
    if isinstance(exc, Conflict):
        return EXIT_CONFLICT
    return EXIT_INVALID


@contextlib.contextmanager
def _transaction(settings: Settings) -> Iterator[Session]:
    """One unit of work, committed when the command succeeds; a `KluisError` becomes a one-line
    message and its exit code, and nothing is written. Notifications read the settings from it."""
    engine = make_engine(settings)
    factory = make_sessionmaker(engine, write=True)
    factory.configure(info={"settings": settings})
    try:
        with session_scope(factory) as session:
            yield session
    except KluisError as exc:
        _fail(exc.message, exit_code(exc))
    finally:
        engine.dispose()


def _actor(session: Session, username: str | None) -> User | None:
    """`None` (the system) without `--as`; else that user, whose view and rights apply."""
    if username is None:
        return None
    actor = accounts.find_user_by_username(session, username)
    if actor is None:
        _fail(f"no user {username!r} (--as)", EXIT_NOT_FOUND)
    return actor


def _staff(session: Session, username: str) -> User:
    actor = _actor(session, username)
    assert actor is not None
    return actor


def _project(session: Session, code: str, actor: User | None) -> Project:
    project = projects.find_project_by_code(session, code)
    if project is None or (
        actor is not None and not airlock.can_see_project_airlock(actor, project)
    ):
        _fail(f"no project {code!r}", EXIT_NOT_FOUND)
    return project


def _upload(session: Session, upload_id: int, actor: User | None) -> Upload:
    if actor is None:
        return airlock.get_upload(session, upload_id)
    return airlock.find_visible_upload(session, actor, upload_id)


def _output(session: Session, request_id: int, actor: User | None) -> OutputRequest:
    if actor is None:
        return airlock_egress.get_request(session, request_id)
    return airlock_egress.find_visible_request(session, actor, request_id)


def _username(session: Session, user_id: int | None) -> str | None:
    if user_id is None:
        return None
    user = session.get(User, user_id)
    return user.username if user is not None else str(user_id)


def _when(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def _upload_data(session: Session, upload: Upload) -> dict[str, Any]:
    return {
        "id": upload.id,
        "project": upload.project.code,
        "uploaded_by": upload.uploaded_by.username,
        "filename": upload.filename,
        "size_bytes": upload.size_bytes,
        "sha256": upload.sha256,
        "content_type": upload.content_type,
        "legal_basis": upload.legal_basis,
        "state": upload.state.value,
        "findings": airlock.findings_of(upload),
        "import_path": upload.import_path,
        "decided_by": _username(session, upload.decided_by_id),
        "decided_at": _when(upload.decided_at),
        "decision_comment": upload.decision_comment,
        "created_at": _when(upload.created_at),
        "version": upload.version,
    }


def _output_data(session: Session, request: OutputRequest) -> dict[str, Any]:
    return {
        "id": request.id,
        "project": request.project.code,
        "submitted_by": request.submitted_by.username,
        "title": request.title,
        "lane": Lane.LIGHT.value if request.light else Lane.NORMAL.value,
        "state": request.state.value,
        "revision": request.revision,
        "previous_id": request.previous_id,
        "policy_version": request.policy_version,
        "required_approvals": request.required_approvals,
        "approvals": sum(1 for r in request.reviews if r.decision is ReviewDecision.APPROVE),
        "comment": request.comment,
        "submitted_at": _when(request.submitted_at),
        "released_at": _when(request.released_at),
        "files": [
            {
                "id": f.id,
                "path": f.path,
                "kind": f.kind.value,
                "description": f.description,
                "controls": f.controls,
                "size_bytes": f.size_bytes,
                "sha256": f.sha256,
                "verdict": f.verdict,
                "findings": list(f.findings),
            }
            for f in request.files
        ],
        "reviews": [
            {
                "reviewer": r.reviewer.username,
                "decision": r.decision.value,
                "comment": r.comment,
                "file_comments": dict(r.file_comments),
                "created_at": _when(r.created_at),
            }
            for r in request.reviews
        ],
        "version": request.version,
    }


def _finding_line(finding: dict[str, Any]) -> str:
    what = "/".join(str(finding[k]) for k in ("check", "rule") if finding.get(k)) or "check"
    return f"{finding.get('verdict', '?')}: {what}: {finding.get('detail', '')}"


@airlock_app.command()
def sweep(ctx: typer.Context) -> None:
    """Delete the bytes of blocked and rejected uploads past retention, leftovers of
    interrupted uploads, and the frozen files of output requests that ended without release;
    audited. Safe to run at any time (e.g. daily)."""
    settings = _settings(ctx)
    engine = make_engine(settings)
    try:
        with session_scope(make_sessionmaker(engine)) as session:
            session.info["settings"] = settings
            report = airlock.sweep(session, settings, utcnow())
            outputs = airlock_egress.sweep_outputs(session, settings, utcnow())
    finally:
        engine.dispose()
    typer.echo(
        f"purged {report.purged} uploads, removed {report.orphans} leftover files, "
        f"deleted the frozen files of {outputs} ended output requests"
    )


@airlock_app.command()
def scanner(ctx: typer.Context) -> None:
    """Whether clamd answers on KLUIS_CLAMD_ADDRESS, else on KLUIS_CLAMD_SOCKET (exit 1 if not:
    uploads would be blocked)."""
    settings = _settings(ctx)
    where = clamd.describe(settings.clamd_endpoint)
    if clamd.ping(settings.clamd_endpoint):
        typer.echo(f"clamd answers on {where}")
        return
    typer.echo(f"error: clamd does not answer on {where}", err=True)
    raise typer.Exit(1)


@airlock_app.command()
def verify(
    ctx: typer.Context,
    manifest: Annotated[Path, typer.Argument(help="A release manifest (JSON) to verify.")],
) -> None:
    """Check a release manifest's Ed25519 signature against this control plane's key."""
    settings = _settings(ctx)
    try:
        document = json.loads(manifest.read_text())
    except (OSError, ValueError) as exc:
        typer.echo(f"error: cannot read {manifest}: {exc}", err=True)
        raise typer.Exit(2) from None
    if not isinstance(document, dict) or not airlock_egress.verify_manifest(settings, document):
        typer.echo("INVALID: the signature does not match (edited, or not signed by this key)")
        raise typer.Exit(1)
    body = document["manifest"]
    typer.echo(
        f"valid: request {body.get('request')} of project {body.get('project')}, "
        f"{len(body.get('files', []))} files, policy {body.get('policy_version')}"
    )


# --- uploads --------------------------------------------------------------------------------------


def _print_upload(data: dict[str, Any]) -> None:
    typer.echo(f"upload {data['id']}  {data['filename']}  ({data['state']})")
    typer.echo(f"  project: {data['project']}")
    typer.echo(f"  uploaded by: {data['uploaded_by']} at {data['created_at']}")
    typer.echo(f"  size: {data['size_bytes']} bytes, type {data['content_type'] or '-'}")
    typer.echo(f"  sha256: {data['sha256']}")
    typer.echo(f"  legal basis: {data['legal_basis']}")
    typer.echo("  checks:")
    for finding in data["findings"]:
        typer.echo(f"    {_finding_line(finding)}")
    if not data["findings"]:
        typer.echo("    -")
    if data["decided_by"] is not None:
        typer.echo(f"  decided by: {data['decided_by']} at {data['decided_at']}")
    if data["decision_comment"]:
        typer.echo(f"  reason: {data['decision_comment']}")
    if data["import_path"]:
        typer.echo(f"  in the project's folder: import/{data['import_path']}")
    typer.echo(f"  version: {data['version']}")


@airlock_app.command("uploads")
def uploads_list(
    ctx: typer.Context,
    project: Annotated[str | None, typer.Option(help="Only this project's uploads.")] = None,
    state: Annotated[UploadState | None, typer.Option(help="Only this state.")] = None,
    as_user: AsOption = None,
    as_json: JsonOption = False,
) -> None:
    """Uploads, oldest first (pending_review: the review queue): id, project, state, who, name."""
    with _transaction(_settings(ctx)) as session:
        begin_read(session)  # no write lock for a read
        actor = _actor(session, as_user)
        only = _project(session, project, actor) if project is not None else None
        if actor is not None:
            items = airlock.list_uploads(session, actor, only, state)
        else:
            stmt = select(Upload).order_by(Upload.created_at, Upload.id).limit(LIMIT)
            if only is not None:
                stmt = stmt.where(Upload.project_id == only.id)
            if state is not None:
                stmt = stmt.where(Upload.state == state)
            items = list(session.scalars(stmt))
        if as_json:
            typer.echo(json.dumps([_upload_data(session, u) for u in items]))
            return
        for upload in items:
            typer.echo(
                f"{upload.id:<6} {upload.project.code:<6} {upload.state.value:<15} "
                f"{upload.created_at.date().isoformat()} {upload.uploaded_by.username:<24} "
                f"{upload.filename}"
            )
        typer.echo(f"{len(items)} uploads")


@airlock_app.command("upload")
def upload_show(
    ctx: typer.Context, upload_id: IdArgument, as_user: AsOption = None, as_json: JsonOption = False
) -> None:
    """One upload: file, checksum, legal basis, the automatic checks and the decision."""
    with _transaction(_settings(ctx)) as session:
        begin_read(session)  # no write lock for a read
        actor = _actor(session, as_user)
        data = _upload_data(session, _upload(session, upload_id, actor))
    if as_json:
        typer.echo(json.dumps(data, sort_keys=True))
    else:
        _print_upload(data)


@airlock_app.command("review-upload")
def upload_review(
    ctx: typer.Context,
    upload_id: IdArgument,
    decision: UploadDecision,
    as_user: AsRequired,
    reason: Annotated[str, typer.Option("--reason", "-m", help="Why (required to reject).")] = "",
    version: Annotated[
        int | None,
        typer.Option(min=1, max=2_147_483_647, help="The version you read (refused if stale)."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Approve (placed read-only in the project's import/) or reject (--reason) an upload that
    awaits review. The reviewer is a data steward or output checker, never its uploader nor a
    member of the project."""
    settings = _settings(ctx)
    with _transaction(settings) as session:
        actor = _staff(session, as_user)
        upload = airlock.find_visible_upload(session, actor, upload_id)
        now = utcnow()
        if decision is UploadDecision.APPROVE:
            airlock.approve_upload(session, settings, actor, upload, version, now, reason)
        else:
            airlock.reject_upload(session, settings, actor, upload, version, reason, now)
        data = _upload_data(session, upload)
    if as_json:
        typer.echo(json.dumps(data, sort_keys=True))
    elif data["import_path"]:
        typer.echo(f"upload {data['id']} is {data['state']}: import/{data['import_path']}")
    else:
        typer.echo(f"upload {data['id']} is {data['state']}")


# --- output requests ------------------------------------------------------------------------------


def _print_output(data: dict[str, Any]) -> None:
    typer.echo(f"output request {data['id']}  {data['title']}  ({data['state']})")
    typer.echo(f"  project: {data['project']}, lane {data['lane']}, revision {data['revision']}")
    typer.echo(f"  submitted by: {data['submitted_by']} at {data['submitted_at'] or '-'}")
    typer.echo(
        f"  approvals: {data['approvals']} of {data['required_approvals']}, "
        f"policy {data['policy_version'] or '-'}"
    )
    if data["comment"]:
        typer.echo(f"  comment: {data['comment']}")
    if data["released_at"]:
        typer.echo(f"  released at: {data['released_at']} (download from the portal)")
    typer.echo("  files:")
    for item in data["files"]:
        typer.echo(
            f"    [{item['id']}] {item['path']} ({item['kind']}, {item['size_bytes']} bytes) "
            f"verdict {item['verdict'] or '-'}"
        )
        typer.echo(f"      shows: {item['description']}")
        if item["controls"]:
            typer.echo(f"      controls: {item['controls']}")
        if item["sha256"]:
            typer.echo(f"      sha256: {item['sha256']}")
        for finding in item["findings"]:
            typer.echo(f"      {_finding_line(finding)}")
    typer.echo("  reviews:")
    for review in data["reviews"]:
        typer.echo(f"    {review['created_at']} {review['reviewer']}: {review['decision']}")
        if review["comment"]:
            typer.echo(f"      {review['comment']}")
        for file_id, text in sorted(review["file_comments"].items()):
            typer.echo(f"      [{file_id}] {text}")
    if not data["reviews"]:
        typer.echo("    -")
    typer.echo(f"  version: {data['version']}")


@airlock_app.command("outputs")
def outputs_list(
    ctx: typer.Context,
    project: Annotated[str | None, typer.Option(help="Only this project's requests.")] = None,
    state: Annotated[OutputState | None, typer.Option(help="Only this state.")] = None,
    lane: Annotated[Lane | None, typer.Option(help="Only this lane.")] = None,
    as_user: AsOption = None,
    as_json: JsonOption = False,
) -> None:
    """Output requests, oldest submission first: id, project, state, lane, approvals, who, title.
    With --as, those the user may see."""
    settings = _settings(ctx)
    with _transaction(settings) as session:
        begin_read(session)  # no write lock for a read
        actor = _actor(session, as_user)
        only = _project(session, project, actor) if project is not None else None
        stmt = select(OutputRequest)
        if only is not None:
            stmt = stmt.where(OutputRequest.project_id == only.id)
        if state is not None:
            stmt = stmt.where(OutputRequest.state == state)
        if lane is not None:
            stmt = stmt.where(OutputRequest.light.is_(lane is Lane.LIGHT))
        stmt = stmt.order_by(
            OutputRequest.submitted_at.is_(None), OutputRequest.submitted_at, OutputRequest.id
        ).limit(LIMIT)
        items = [
            r
            for r in session.scalars(stmt)
            if actor is None or airlock.can_see_project_airlock(actor, r.project)
        ]
        if as_json:
            typer.echo(json.dumps([_output_data(session, r) for r in items]))
            return
        now = utcnow()
        for request in items:
            data = _output_data(session, request)
            waited = (
                f"{airlock_egress.working_days_since(request.submitted_at, now)}wd"
                if request.submitted_at is not None
                else "-"
            )
            typer.echo(
                f"{request.id:<6} {request.project.code:<6} {request.state.value:<10} "
                f"{data['lane']:<6} {data['approvals']}/{request.required_approvals} "
                f"{waited:<5} {request.submitted_by.username:<24} {request.title}"
            )
        typer.echo(f"{len(items)} output requests")


@airlock_app.command("output")
def output_show(
    ctx: typer.Context,
    request_id: IdArgument,
    as_user: AsOption = None,
    as_json: JsonOption = False,
) -> None:
    """One output request: its files (frozen checksums, verdicts, findings) and the reviews."""
    with _transaction(_settings(ctx)) as session:
        begin_read(session)  # no write lock for a read
        actor = _actor(session, as_user)
        data = _output_data(session, _output(session, request_id, actor))
    if as_json:
        typer.echo(json.dumps(data, sort_keys=True))
    else:
        _print_output(data)


@airlock_app.command("approvals")
def approvals_set(
    ctx: typer.Context,
    code: str,
    approvals: Annotated[int, typer.Argument(help="Independent approvals needed (1 to 5).")],
    as_user: AsRequired,
    version: Annotated[
        int | None,
        typer.Option(min=1, max=2_147_483_647, help="The project's version you read."),
    ] = None,
) -> None:
    """A data steward sets how many output checkers approve the project's output requests
    (for requests submitted from now on; audited)."""
    with _transaction(_settings(ctx)) as session:
        actor = _staff(session, as_user)
        project = _project(session, code, actor)
        before = project.airlock_approvals
        airlock_egress.set_required_approvals(session, actor, project, approvals, version, utcnow())
        typer.echo(f"project {project.code}: {before} -> {project.airlock_approvals} approvals")
