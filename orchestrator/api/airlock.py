"""Airlock routes: uploads into a project (raw body streamed into quarantine), their review; output
requests from `export/`, their review, release and manifest. Rules live in `airlock` and
`airlock_egress`; these routes check API-token scopes and shape the answers. Released files are
downloaded from the portal only (members, after a step-up): the API has no download route.

An upload is `POST /api/projects/{code}/airlock/uploads?filename=…&legal_basis=…&lawful=true`
with the file as the request body (any content type but a form): the body is streamed to disk,
never held in memory, and the SQLite write lock is not held while it arrives.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from orchestrator import airlock, airlock_egress, policy, projects
from orchestrator.airlock_models import (
    OutputFile,
    OutputKind,
    OutputRequest,
    OutputState,
    ReviewDecision,
    Upload,
    UploadState,
)
from orchestrator.api.deps import (
    CurrentPrincipal,
    NowDep,
    Principal,
    SessionDep,
    SettingsDep,
    request_source,
)
from orchestrator.config import Settings
from orchestrator.errors import Forbidden, Invalid, NotFound
from orchestrator.models import Project

router = APIRouter(tags=["airlock"])

Code = Annotated[str, Path(pattern=r"^[0-9]{4,5}$", description="The project's code.")]
Id = Annotated[int, Path(ge=1, le=2_147_483_647)]


# --- shapes ---------------------------------------------------------------------------------------


class FindingRead(BaseModel):
    check: str = ""
    rule: str = ""
    verdict: str
    detail: str


class UploadRead(BaseModel):
    id: int
    project_code: str
    uploaded_by_id: int
    filename: str
    size_bytes: int
    sha256: str
    content_type: str
    legal_basis: str
    state: UploadState
    findings: list[FindingRead]
    import_path: str
    decided_by_id: int | None
    decided_at: datetime | None
    decision_comment: str
    created_at: datetime
    version: int


class UploadDecisionCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    decision: Literal["approve", "reject"]
    comment: str = Field(default="", max_length=5000)
    version: int = Field(ge=1, le=2_147_483_647)


class OutputFileCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str = Field(min_length=1, max_length=400)
    kind: OutputKind
    description: str = Field(min_length=1, max_length=5000)
    controls: str = Field(default="", max_length=5000)


class OutputRequestCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    title: str = Field(min_length=1, max_length=200)
    light: bool = False
    files: list[OutputFileCreate] = Field(min_length=1, max_length=1000)


class OutputFileRead(BaseModel):
    id: int
    path: str
    kind: OutputKind
    description: str
    controls: str
    size_bytes: int
    sha256: str
    verdict: str
    findings: list[FindingRead]


class OutputReviewRead(BaseModel):
    reviewer_id: int
    decision: ReviewDecision
    comment: str
    file_comments: dict[str, str]
    created_at: datetime


class OutputRequestRead(BaseModel):
    id: int
    project_code: str
    submitted_by_id: int
    title: str
    light: bool
    state: OutputState
    revision: int
    previous_id: int | None
    policy_version: str
    required_approvals: int
    comment: str
    submitted_at: datetime | None
    released_at: datetime | None
    files: list[OutputFileRead]
    reviews: list[OutputReviewRead]
    version: int


class VersionCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: int = Field(ge=1, le=2_147_483_647)


class ApprovalsUpdate(BaseModel):
    """How many independent output checkers approve the project's output requests."""

    model_config = ConfigDict(extra="forbid")

    approvals: int = Field(ge=1, le=airlock_egress.MAX_APPROVALS)
    version: int = Field(ge=1, le=2_147_483_647)  # the project's


class ApprovalsRead(BaseModel):
    project: str
    approvals: int
    version: int


class OutputReviewCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    decision: ReviewDecision
    comment: str = Field(default="", max_length=5000)
    file_comments: dict[int, Annotated[str, Field(max_length=5000)]] = Field(
        default_factory=dict, max_length=1000
    )
    version: int = Field(ge=1, le=2_147_483_647)


class PreflightRead(BaseModel):
    file_id: int
    verdict: str
    findings: list[FindingRead]


# --- helpers --------------------------------------------------------------------------------------


def _scope(principal: Principal, *scopes: str) -> None:
    """An API token needs one of `scopes`; a browser session carries its role's."""
    if principal.api_token is not None and not any(principal.has_scope(s) for s in scopes):
        raise Forbidden(f"This API token lacks the {scopes[0]!r} scope needed here.")


READ = (policy.SCOPE_READ,)
WRITE = (policy.SCOPE_PROJECTS_WRITE,)
REVIEW = (policy.SCOPE_AIRLOCK_REVIEW, policy.SCOPE_ADMIN)


def _project(session: Session, principal: Principal, code: str) -> Project:
    project = projects.find_project_by_code(session, code)
    if project is None or not airlock.can_see_project_airlock(principal.user, project):
        raise NotFound("Project not found.")
    return project


def upload_read(upload: Upload) -> UploadRead:
    return UploadRead(
        id=upload.id,
        project_code=upload.project.code,
        uploaded_by_id=upload.uploaded_by_id,
        filename=upload.filename,
        size_bytes=upload.size_bytes,
        sha256=upload.sha256,
        content_type=upload.content_type,
        legal_basis=upload.legal_basis,
        state=upload.state,
        findings=[FindingRead.model_validate(f) for f in upload.findings],
        import_path=upload.import_path,
        decided_by_id=upload.decided_by_id,
        decided_at=upload.decided_at,
        decision_comment=upload.decision_comment,
        created_at=upload.created_at,
        version=upload.version,
    )


def output_read(request: OutputRequest) -> OutputRequestRead:
    return OutputRequestRead(
        id=request.id,
        project_code=request.project.code,
        submitted_by_id=request.submitted_by_id,
        title=request.title,
        light=request.light,
        state=request.state,
        revision=request.revision,
        previous_id=request.previous_id,
        policy_version=request.policy_version,
        required_approvals=request.required_approvals,
        comment=request.comment,
        submitted_at=request.submitted_at,
        released_at=request.released_at,
        files=[_file_read(f) for f in request.files],
        reviews=[
            OutputReviewRead(
                reviewer_id=r.reviewer_id,
                decision=r.decision,
                comment=r.comment,
                file_comments=r.file_comments,
                created_at=r.created_at,
            )
            for r in request.reviews
        ],
        version=request.version,
    )


def _file_read(output: OutputFile) -> OutputFileRead:
    return OutputFileRead(
        id=output.id,
        path=output.path,
        kind=output.kind,
        description=output.description,
        controls=output.controls,
        size_bytes=output.size_bytes,
        sha256=output.sha256,
        verdict=output.verdict,
        findings=[FindingRead.model_validate(f) for f in output.findings],
    )


# --- uploads --------------------------------------------------------------------------------------


async def stream_upload(
    request: Request,
    session: Session,
    settings: Settings,
    principal: Principal,
    project: Project,
    filename: str,
    legal_basis: str,
    lawful: bool,
    now: datetime,
) -> Upload:
    """Refuse early, end the read transaction (no lock held while bytes arrive), stream the body
    into quarantine, then check and record it. Shared by the API and the portal."""
    user = principal.user
    await run_in_threadpool(
        airlock.check_upload_request,
        session,
        settings,
        user,
        project,
        filename,
        legal_basis,
        lawful,
    )
    declared = request.headers.get("content-length")
    if (
        declared is not None
        and declared.isdigit()
        and int(declared) > settings.airlock_max_upload_bytes
    ):
        raise airlock.TooLarge(
            f"The file is larger than the limit of {settings.airlock_max_upload_bytes} bytes."
        )
    await run_in_threadpool(session.commit)
    writer = airlock.QuarantineWriter(settings)
    try:
        async for chunk in request.stream():
            writer.write(chunk)
    except BaseException:
        writer.abort()
        raise
    received = writer.finish()
    source = request_source(request, settings)
    try:
        checks = await run_in_threadpool(
            airlock.run_checks, settings, airlock.quarantine_dir(settings) / received.name
        )
        return await run_in_threadpool(
            airlock.register_upload,
            session,
            settings,
            user,
            project,
            received,
            filename,
            legal_basis,
            now,
            source,
            checks,
        )
    except BaseException:
        airlock.discard(settings, received)
        raise


@router.post(
    "/api/projects/{code}/airlock/uploads",
    status_code=201,
    responses={413: {"description": "Larger than the upload limit."}},
)
async def create_upload(
    code: Code,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    principal: CurrentPrincipal,
    now: NowDep,
    filename: Annotated[str, Query(min_length=1, max_length=255)],
    legal_basis: Annotated[str, Query(min_length=1, max_length=2000)],
    lawful: Annotated[bool, Query(description="The data was obtained lawfully.")],
) -> UploadRead:
    """Bring a file into the project: the request body is the file."""
    _scope(principal, *WRITE)
    if request.headers.get("content-type", "").startswith(
        ("multipart/form-data", "application/x-www-form-urlencoded")
    ):
        raise Invalid("Send the file itself as the request body, not a form.")
    project = await run_in_threadpool(_project, session, principal, code)
    upload = await stream_upload(
        request, session, settings, principal, project, filename, legal_basis, lawful, now
    )
    return await run_in_threadpool(upload_read, upload)


@router.get("/api/projects/{code}/airlock/uploads")
def list_project_uploads(
    code: Code, session: SessionDep, principal: CurrentPrincipal
) -> list[UploadRead]:
    _scope(principal, *READ)
    project = _project(session, principal, code)
    return [upload_read(u) for u in airlock.list_uploads(session, principal.user, project)]


@router.get("/api/airlock/uploads")
def list_upload_queue(
    session: SessionDep,
    principal: CurrentPrincipal,
    state: UploadState | None = UploadState.PENDING_REVIEW,
) -> list[UploadRead]:
    """Uploads of every project (reviewers and ops), oldest first."""
    _scope(principal, *READ)
    return [upload_read(u) for u in airlock.list_uploads(session, principal.user, None, state)]


@router.get("/api/airlock/uploads/{upload_id}")
def get_upload(upload_id: Id, session: SessionDep, principal: CurrentPrincipal) -> UploadRead:
    _scope(principal, *READ)
    return upload_read(airlock.find_visible_upload(session, principal.user, upload_id))


@router.post("/api/airlock/uploads/{upload_id}/decision")
def decide_upload(
    upload_id: Id,
    body: UploadDecisionCreate,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    principal: CurrentPrincipal,
    now: NowDep,
) -> UploadRead:
    """Approve (placed read-only in import/) or reject (with a comment)."""
    _scope(principal, *REVIEW)
    upload = airlock.find_visible_upload(session, principal.user, upload_id)
    source = request_source(request, settings)
    if body.decision == "approve":
        airlock.approve_upload(
            session, settings, principal.user, upload, body.version, now, body.comment, source
        )
    else:
        airlock.reject_upload(
            session, settings, principal.user, upload, body.version, body.comment, now, source
        )
    return upload_read(upload)


# --- output requests ------------------------------------------------------------------------------


@router.post("/api/projects/{code}/airlock/outputs", status_code=201)
def create_output_request(
    code: Code,
    body: OutputRequestCreate,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    principal: CurrentPrincipal,
    now: NowDep,
) -> OutputRequestRead:
    """A draft naming files in the project's export/ folder."""
    _scope(principal, *WRITE)
    project = _project(session, principal, code)
    specs = [airlock_egress.FileSpec(f.path, f.kind, f.description, f.controls) for f in body.files]
    created = airlock_egress.create_request(
        session,
        settings,
        principal.user,
        project,
        body.title,
        specs,
        now,
        light=body.light,
        source=request_source(request, settings),
    )
    return output_read(created)


@router.get("/api/projects/{code}/airlock/outputs")
def list_project_outputs(
    code: Code, session: SessionDep, principal: CurrentPrincipal
) -> list[OutputRequestRead]:
    _scope(principal, *READ)
    project = _project(session, principal, code)
    return [output_read(r) for r in airlock_egress.list_requests(session, principal.user, project)]


@router.get("/api/projects/{code}/airlock/approvals")
def get_required_approvals(
    code: Code, session: SessionDep, principal: CurrentPrincipal
) -> ApprovalsRead:
    _scope(principal, *READ)
    project = _project(session, principal, code)
    return ApprovalsRead(
        project=project.code, approvals=project.airlock_approvals, version=project.version
    )


@router.put("/api/projects/{code}/airlock/approvals")
def set_required_approvals(
    code: Code,
    body: ApprovalsUpdate,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    principal: CurrentPrincipal,
    now: NowDep,
) -> ApprovalsRead:
    """A data steward sets the project's number of approvals (for requests submitted later)."""
    _scope(principal, *REVIEW)
    project = _project(session, principal, code)
    airlock_egress.set_required_approvals(
        session,
        principal.user,
        project,
        body.approvals,
        body.version,
        now,
        request_source(request, settings),
    )
    return ApprovalsRead(
        project=project.code, approvals=project.airlock_approvals, version=project.version
    )


@router.get("/api/airlock/outputs")
def list_output_queue(
    session: SessionDep, principal: CurrentPrincipal, light: bool | None = None
) -> list[OutputRequestRead]:
    """The output checker's queue: requests they may review, oldest first (`light` for a lane)."""
    _scope(principal, *REVIEW)
    return [output_read(r) for r in airlock_egress.review_queue(session, principal.user, light)]


def _output(session: Session, principal: Principal, request_id: int) -> OutputRequest:
    return airlock_egress.find_visible_request(session, principal.user, request_id)


@router.get("/api/airlock/outputs/{request_id}")
def get_output_request(
    request_id: Id, session: SessionDep, principal: CurrentPrincipal
) -> OutputRequestRead:
    _scope(principal, *READ)
    return output_read(_output(session, principal, request_id))


@router.get("/api/airlock/outputs/{request_id}/preflight")
def preflight_output_request(
    request_id: Id, session: SessionDep, settings: SettingsDep, principal: CurrentPrincipal
) -> list[PreflightRead]:
    """The checks on the files as they are now (a draft's preview; nothing is recorded)."""
    _scope(principal, *READ)
    output = _output(session, principal, request_id)
    if principal.user.id != output.submitted_by_id:
        raise Forbidden("Only the person who made the request sees its preflight.")
    results = airlock_egress.preflight(settings, output)
    return [
        PreflightRead(
            file_id=file_id,
            verdict=result.verdict.value,
            findings=[FindingRead.model_validate(f) for f in result.findings],
        )
        for file_id, result in results.items()
    ]


@router.post("/api/airlock/outputs/{request_id}/submit")
def submit_output_request(
    request_id: Id,
    body: VersionCreate,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    principal: CurrentPrincipal,
    now: NowDep,
) -> OutputRequestRead:
    """Freeze the files, run the checks, queue for review."""
    _scope(principal, *WRITE)
    output = _output(session, principal, request_id)
    airlock_egress.submit_request(
        session,
        settings,
        principal.user,
        output,
        body.version,
        now,
        request_source(request, settings),
    )
    return output_read(output)


@router.post("/api/airlock/outputs/{request_id}/withdraw")
def withdraw_output_request(
    request_id: Id,
    body: VersionCreate,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    principal: CurrentPrincipal,
    now: NowDep,
) -> OutputRequestRead:
    _scope(principal, *WRITE)
    output = _output(session, principal, request_id)
    airlock_egress.withdraw_request(
        session, principal.user, output, body.version, now, request_source(request, settings)
    )
    return output_read(output)


@router.post("/api/airlock/outputs/{request_id}/resubmit", status_code=201)
def resubmit_output_request(
    request_id: Id,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    principal: CurrentPrincipal,
    now: NowDep,
) -> OutputRequestRead:
    """After a return: a new draft (the next revision) with the same files."""
    _scope(principal, *WRITE)
    output = _output(session, principal, request_id)
    again = airlock_egress.resubmit_request(
        session, settings, principal.user, output, now, request_source(request, settings)
    )
    return output_read(again)


@router.post("/api/airlock/outputs/{request_id}/reviews")
def review_output_request(
    request_id: Id,
    body: OutputReviewCreate,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    principal: CurrentPrincipal,
    now: NowDep,
) -> OutputRequestRead:
    _scope(principal, *REVIEW)
    output = _output(session, principal, request_id)
    airlock_egress.review_request(
        session,
        principal.user,
        output,
        body.decision,
        body.comment,
        body.file_comments,
        body.version,
        now,
        request_source(request, settings),
    )
    return output_read(output)


@router.post("/api/airlock/outputs/{request_id}/release")
def release_output_request(
    request_id: Id,
    body: VersionCreate,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    principal: CurrentPrincipal,
    now: NowDep,
) -> OutputRequestRead:
    _scope(principal, *REVIEW)
    output = _output(session, principal, request_id)
    airlock_egress.release_request(
        session,
        settings,
        principal.user,
        output,
        body.version,
        now,
        request_source(request, settings),
    )
    return output_read(output)


@router.get("/api/airlock/outputs/{request_id}/manifest")
def get_release_manifest(
    request_id: Id, session: SessionDep, principal: CurrentPrincipal
) -> dict[str, Any]:
    """The signed release manifest (`kluis airlock verify` checks it)."""
    _scope(principal, *READ)
    output = _output(session, principal, request_id)
    if output.state is not OutputState.RELEASED:
        raise NotFound("This request has not been released.")
    return dict(output.manifest)
