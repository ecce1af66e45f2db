"""The airlock in the portal: a project's airlock page (upload form, uploads, output requests and
a form to ask for outputs from export/), an output request's page (files, automated findings or
the preflight, reviews, and the moves the caller may make), the reviewers' queues, and the
step-up download. Rules live in `airlock` and `airlock_egress`; refusals become error pages.

A browser upload is a multipart form: Starlette spools it (to disk beyond 1 MiB) while the CSRF
check reads the form; a request whose Content-Length is over the limit is refused before that.
The file is then copied into quarantine chunk by chunk. (The API streams the raw body instead.)
The texts of these pages carry their Dutch here (`DUTCH`), merged over the portal's catalogue.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Request, Response
from fastapi.responses import FileResponse
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from orchestrator import airlock, airlock_egress, projects, sessions
from orchestrator.airlock_models import (
    OutputKind,
    OutputRequest,
    OutputState,
    ReviewDecision,
    UploadState,
)
from orchestrator.api.deps import NowDep, Principal, SessionDep, SettingsDep, request_source
from orchestrator.config import Settings
from orchestrator.errors import AuthFailed, Conflict, Forbidden, Invalid, NotFound
from orchestrator.models import Project, Role
from orchestrator.web.browser import FormPrincipal, PagePrincipal, form_file
from orchestrator.web.i18n import translator
from orchestrator.web.portal import PortalRoute
from orchestrator.web.rendering import redirect, render, request_language
from orchestrator.web.staff import StepUpCode

router = APIRouter(route_class=PortalRoute, include_in_schema=False)

MAX_EXPORT_LISTED = 200
FORM_OVERHEAD = 64 * 1024  # multipart boundaries and the text fields around the file
Text = Annotated[str, Form(max_length=5000)]

DUTCH: Mapping[str, str] = {
    "Airlock": "Sluis",
    "Airlock of project %(code)s": "Sluis van project %(code)s",
    "Bring a file in": "Een bestand binnenbrengen",
    "File": "Bestand",
    "Legal basis": "Grondslag",
    "How and on what legal basis the data was obtained.": (
        "Hoe en op welke grondslag de gegevens zijn verkregen."
    ),
    "I declare that this data was obtained lawfully.": (
        "Ik verklaar dat deze gegevens rechtmatig zijn verkregen."
    ),
    "Upload": "Uploaden",
    "Uploads": "Uploads",
    "Name": "Naam",
    "Size": "Grootte",
    "State": "Status",
    "Checks": "Controles",
    "Nothing yet.": "Nog niets.",
    "Output requests": "Outputverzoeken",
    "Ask for output": "Output aanvragen",
    "Title": "Titel",
    "Small output (LIGHT lane)": "Kleine output (LIGHT-route)",
    "Kind": "Soort",
    "What it shows": "Wat het laat zien",
    "Disclosure controls applied": "Toegepaste onthullingscontroles",
    "Include": "Meenemen",
    "Create draft": "Concept maken",
    "The export folder is empty.": "De exportmap is leeg.",
    "Output request %(id)s": "Outputverzoek %(id)s",
    "Revision": "Versie",
    "Policy": "Beleid",
    "Approvals needed": "Benodigde goedkeuringen",
    "Independent approvals for output requests": (
        "Onafhankelijke goedkeuringen voor outputverzoeken"
    ),
    "Submitted": "Ingediend",
    "Files": "Bestanden",
    "Verdict": "Oordeel",
    "Findings": "Bevindingen",
    "Preflight: the checks on the files as they are now.": (
        "Voorcontrole: de controles op de bestanden zoals ze nu zijn."
    ),
    "Submit for checking": "Indienen ter controle",
    "Withdraw": "Intrekken",
    "Make a new version": "Nieuwe versie maken",
    "Reviews": "Beoordelingen",
    "Your review": "Uw beoordeling",
    "Decision": "Besluit",
    "Comment": "Opmerking",
    "Needed when you return or reject.": "Nodig bij terugsturen of afwijzen.",
    "Comment on %(file)s": "Opmerking bij %(file)s",
    "Record review": "Beoordeling vastleggen",
    "Release": "Vrijgeven",
    "Download": "Downloaden",
    "Release manifest": "Vrijgavemanifest",
    "Approve": "Goedkeuren",
    "Reject": "Afwijzen",
    "Return with comments": "Terugsturen met opmerkingen",
    "Waiting": "Wachttijd",
    "%(days)s of %(target)s working days": "%(days)s van %(target)s werkdagen",
    "overdue": "te laat",
    "submitted %(day)s": "ingediend %(day)s",
    "%(given)s of %(needed)s approvals": "%(given)s van %(needed)s goedkeuringen",
    "Oldest first; the target is a decision within %(target)s working days.": (
        "Oudste eerst; het doel is een besluit binnen %(target)s werkdagen."
    ),
    "%(days)s working days": "%(days)s werkdagen",
    "LIGHT lane": "LIGHT-route",
    "Regular lane": "Gewone route",
    "Project": "Project",
    "The file was received and checked.": "Het bestand is ontvangen en gecontroleerd.",
    "Back to the airlock": "Terug naar de sluis",
    "pending_review": "wacht op beoordeling",
    "blocked": "geblokkeerd",
    "approved": "goedgekeurd",
    "rejected": "afgewezen",
    "purged": "opgeruimd",
    "draft": "concept",
    "submitted": "ingediend",
    "checked": "gecontroleerd",
    "in_review": "in beoordeling",
    "returned": "teruggestuurd",
    "released": "vrijgegeven",
    "withdrawn": "ingetrokken",
    "pass": "in orde",
    "review": "beoordelen",
    "fail": "afgekeurd",
    "table": "tabel",
    "model": "model",
    "figure": "figuur",
    "text": "tekst",
    "approve": "goedkeuren",
    "return": "terugsturen",
    "reject": "afwijzen",
}
TONES: Mapping[str, str] = {
    "pass": "ok",
    "fail": "bad",
    "review": "wait",
    "approved": "ok",
    "released": "ok",
    "blocked": "bad",
    "rejected": "bad",
    "pending_review": "wait",
    "checked": "wait",
    "in_review": "wait",
    "returned": "wait",
}


def _texts(request: Request) -> Any:
    language = request_language(request)
    portal_ = translator(language)

    def _(message: str, **values: Any) -> str:
        if language == "nl" and message in DUTCH:
            text = DUTCH[message]
            return text % values if values else text
        return portal_(message, **values)

    return _


def _page(request: Request, template: str, principal: Principal, **context: Any) -> Response:
    return render(
        request,
        f"airlock/{template}",
        {"_": _texts(request), "tones": TONES, **context},
        principal=principal,
    )


def _logged_in(principal: Principal | None) -> Principal:
    if principal is None:
        raise AuthFailed("Please log in.")
    return principal


def _project(session: Session, principal: Principal, code: str) -> Project:
    project = projects.find_project_by_code(session, code)
    if project is None or not airlock.can_see_project_airlock(principal.user, project):
        raise NotFound("Project not found.")
    return project


def _output(session: Session, principal: Principal, code: str, request_id: int) -> OutputRequest:
    output = airlock_egress.find_visible_request(session, principal.user, request_id)
    if output.project.code != code:
        raise NotFound("Output request not found.")
    return output


def export_listing(settings: Settings, project: Project) -> list[str]:
    """Regular files under export/ (relative paths, links skipped), at most 200."""
    root = airlock_egress.export_dir(settings, project)
    if not root.is_dir():
        return []
    found: list[str] = []
    for path in sorted(root.rglob("*")):
        if path.is_symlink() or not path.is_file():
            continue
        found.append(path.relative_to(root).as_posix())
        if len(found) >= MAX_EXPORT_LISTED:
            break
    return found


# --- a project's airlock --------------------------------------------------------------------------


@router.get("/projects/{code}/airlock")
def airlock_page(
    code: str,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    principal: PagePrincipal,
) -> Response:
    principal = _logged_in(principal)
    project = _project(session, principal, code)
    user = principal.user
    may_upload = may_ask = True
    try:
        airlock.authorize_upload(user, project)
    except (Forbidden, Invalid, NotFound, Conflict):
        may_upload = False
    try:
        airlock_egress.authorize_submitter(user, project)
    except (Forbidden, Invalid, NotFound, Conflict):
        may_ask = False
    return _page(
        request,
        "project.html",
        principal,
        title=f"Airlock {project.code}",
        nav="projects",
        project=project,
        uploads=airlock.list_uploads(session, user, project),
        outputs=airlock_egress.list_requests(session, user, project),
        may_upload=may_upload,
        may_ask=may_ask,
        may_set_approvals=user.role is Role.DATA_STEWARD,
        max_approvals=airlock_egress.MAX_APPROVALS,
        export_files=export_listing(settings, project) if may_ask else [],
        kinds=[k.value for k in OutputKind],
        max_bytes=settings.airlock_max_upload_bytes,
    )


@router.post("/projects/{code}/airlock/approvals")
def set_approvals(
    code: str,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    principal: FormPrincipal,
    now: NowDep,
    approvals: Annotated[int, Form(ge=1, le=airlock_egress.MAX_APPROVALS)],
    version: Annotated[int, Form(ge=1, le=2_147_483_647)] = 1,
) -> Response:
    """A data steward sets how many output checkers approve this project's output requests."""
    project = _project(session, principal, code)
    airlock_egress.set_required_approvals(
        session,
        principal.user,
        project,
        approvals,
        version,
        now,
        request_source(request, settings),
    )
    return redirect(f"/projects/{code}/airlock")


async def limit_form_size(request: Request, settings: SettingsDep) -> None:
    """Refuse an oversized upload before the form is parsed (and spooled)."""
    declared = request.headers.get("content-length", "")
    if not declared.isdigit():
        raise Invalid("The upload must state its length.")
    if int(declared) > settings.airlock_max_upload_bytes + FORM_OVERHEAD:
        raise airlock.TooLarge(
            f"The file is larger than the limit of {settings.airlock_max_upload_bytes} bytes."
        )


@router.post("/projects/{code}/airlock/uploads", dependencies=[Depends(limit_form_size)])
async def upload_file(
    code: str,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    principal: FormPrincipal,
    now: NowDep,
    legal_basis: Annotated[str, Form(max_length=2000)] = "",
    lawful: Annotated[str, Form(max_length=10)] = "",
) -> Response:
    upload = await form_file(request, "file")
    if upload is None or not upload.filename:
        raise Invalid("Choose a file to upload.")
    project = await run_in_threadpool(_project, session, principal, code)
    await run_in_threadpool(
        airlock.check_upload_request,
        session,
        settings,
        principal.user,
        project,
        upload.filename,
        legal_basis,
        lawful == "yes",
    )
    await run_in_threadpool(session.commit)  # no lock held while the bytes are copied and scanned
    received = await run_in_threadpool(airlock.receive_file, settings, upload.file)
    try:
        checks = await run_in_threadpool(
            airlock.run_checks, settings, airlock.quarantine_dir(settings) / received.name
        )
        await run_in_threadpool(
            airlock.register_upload,
            session,
            settings,
            principal.user,
            project,
            received,
            upload.filename,
            legal_basis,
            now,
            request_source(request, settings),
            checks,
        )
    except BaseException:
        airlock.discard(settings, received)
        raise
    return redirect(f"/projects/{code}/airlock")


@router.post("/projects/{code}/airlock/outputs")
async def create_output(
    code: str,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    principal: FormPrincipal,
    now: NowDep,
    title: Annotated[str, Form(max_length=200)] = "",
    light: Annotated[str, Form(max_length=10)] = "",
) -> Response:
    """The form names each export file by its position: `file-N` (checkbox with the path),
    `kind-N`, `description-N`, `controls-N`."""
    form = await request.form()
    specs = []
    for index in range(MAX_EXPORT_LISTED):
        path = form.get(f"file-{index}")
        if not isinstance(path, str) or not path:
            continue
        kind = form.get(f"kind-{index}")
        if kind not in {k.value for k in OutputKind}:
            raise Invalid(f"Choose the kind of {path!r}.")
        description, controls = form.get(f"description-{index}"), form.get(f"controls-{index}")
        specs.append(
            airlock_egress.FileSpec(
                path[:400],
                OutputKind(str(kind)),
                description[:5000] if isinstance(description, str) else "",
                controls[:5000] if isinstance(controls, str) else "",
            )
        )
    project = _project(session, principal, code)
    created = await run_in_threadpool(
        airlock_egress.create_request,
        session,
        settings,
        principal.user,
        project,
        title,
        specs,
        now,
        light=light == "yes",
        source=request_source(request, settings),
    )
    return redirect(f"/projects/{code}/airlock/outputs/{created.id}")


# --- an output request ----------------------------------------------------------------------------


@router.get("/projects/{code}/airlock/outputs/{request_id}")
def output_page(
    code: str,
    request_id: int,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    principal: PagePrincipal,
    now: NowDep,
) -> Response:
    principal = _logged_in(principal)
    output = _output(session, principal, code, request_id)
    user = principal.user
    own = user.id == output.submitted_by_id
    may_review = False
    if output.state in airlock_egress.OPEN_STATES:
        try:
            airlock_egress.authorize_output_review(user, output)
            may_review = all(r.reviewer_id != user.id for r in output.reviews)
        except (Forbidden, NotFound):
            may_review = False
    may_release = False
    if output.state is OutputState.APPROVED:
        try:
            airlock_egress.authorize_output_review(user, output)
            may_release = True
        except (Forbidden, NotFound):
            may_release = False
    preflight = (
        airlock_egress.preflight(settings, output)
        if own and output.state is OutputState.DRAFT
        else {}
    )
    waited = (
        airlock_egress.working_days_since(output.submitted_at, now) if output.submitted_at else None
    )
    return _page(
        request,
        "output.html",
        principal,
        title=f"Output request {output.id}",
        nav="projects",
        output=output,
        project=output.project,
        own=own,
        may_review=may_review,
        may_release=may_release,
        may_download=airlock_egress.may_download(user, output),
        preflight=preflight,
        decisions=[d.value for d in ReviewDecision],
        waited=waited,
        approvals=sum(1 for r in output.reviews if r.decision is ReviewDecision.APPROVE),
    )


@router.post("/projects/{code}/airlock/outputs/{request_id}/{move}")
async def output_move(
    code: str,
    request_id: int,
    move: str,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    principal: FormPrincipal,
    now: NowDep,
    version: Annotated[int, Form(ge=1, le=2_147_483_647)] = 1,
    decision: Annotated[str, Form(max_length=10)] = "",
    comment: Text = "",
) -> Response:
    """submit, withdraw, resubmit (the submitter); review (with `note-<file id>` per file) and
    release (output checkers)."""
    form = await request.form()
    notes = {
        key: value[:5000]
        for key, value in form.multi_items()
        if key.startswith("note-") and isinstance(value, str) and value.strip()
    }
    return await run_in_threadpool(
        _output_move,
        session,
        settings,
        principal,
        request_source(request, settings),
        now,
        code,
        request_id,
        move,
        version,
        decision,
        comment,
        notes,
    )


def _output_move(
    session: Session,
    settings: Settings,
    principal: Principal,
    source: str,
    now: datetime,
    code: str,
    request_id: int,
    move: str,
    version: int,
    decision: str,
    comment: str,
    notes: dict[str, str],
) -> Response:
    output = _output(session, principal, code, request_id)
    user = principal.user
    target = f"/projects/{code}/airlock/outputs/{output.id}"
    if move == "submit":
        airlock_egress.submit_request(session, settings, user, output, version, now, source)
    elif move == "withdraw":
        airlock_egress.withdraw_request(session, user, output, version, now, source)
    elif move == "resubmit":
        again = airlock_egress.resubmit_request(session, settings, user, output, now, source)
        target = f"/projects/{code}/airlock/outputs/{again.id}"
    elif move == "review":
        if decision not in {d.value for d in ReviewDecision}:
            raise Invalid("Choose a decision.")
        file_notes = {}
        for key, text in notes.items():
            number = key.removeprefix("note-")
            if not number.isdigit():
                raise Invalid("Unknown comment field.")
            file_notes[int(number)] = text
        airlock_egress.review_request(
            session,
            user,
            output,
            ReviewDecision(decision),
            comment,
            file_notes,
            version,
            now,
            source,
        )
    elif move == "release":
        airlock_egress.release_request(session, settings, user, output, version, now, source)
    else:
        raise NotFound("This page does not exist.")
    return redirect(target)


@router.post("/projects/{code}/airlock/files/{file_id}/download")
def download(
    code: str,
    file_id: int,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    principal: FormPrincipal,
    now: NowDep,
    stepup: StepUpCode,
) -> Response:
    """A released file for a current member of the project, after a fresh code (the step-up
    prompt asks for it). The portal is the only way out: the API has no download route."""
    output = airlock_egress.find_visible_file(session, principal.user, file_id)
    if output.request.project.code != code:
        raise NotFound("File not found.")
    if not airlock.is_current_member(principal.user, output.request.project):
        raise Forbidden("Released outputs are downloaded only by the project's current members.")
    if stepup and principal.session is not None:
        sessions.step_up(session, principal.session, principal.user, stepup, settings, now)
    sessions.require_recent_step_up(principal.session, settings, now)
    path = airlock_egress.open_download(
        session, settings, principal.user, output, now, request_source(request, settings)
    )
    return FileResponse(
        path,
        media_type="application/octet-stream",
        filename=output.path.rsplit("/", 1)[-1],
        headers={"X-Content-SHA256": output.sha256},
    )


@router.get("/projects/{code}/airlock/outputs/{request_id}/manifest.json")
def manifest(code: str, request_id: int, session: SessionDep, principal: PagePrincipal) -> Response:
    output = _output(session, _logged_in(principal), code, request_id)
    if output.state is not OutputState.RELEASED:
        raise NotFound("This request has not been released.")
    return Response(
        json.dumps(output.manifest, indent=2, sort_keys=True),
        media_type="application/json",
        headers={"Content-Disposition": f'attachment; filename="release-{output.id}.json"'},
    )


# --- reviewers' queues ----------------------------------------------------------------------------


@router.get("/review/airlock/uploads")
def upload_queue(request: Request, session: SessionDep, principal: PagePrincipal) -> Response:
    principal = _logged_in(principal)
    if principal.user.role not in airlock.REVIEWER_ROLES:
        raise Forbidden("Only data stewards and output checkers review uploads.")
    items = airlock.list_uploads(session, principal.user, None, UploadState.PENDING_REVIEW)
    return _page(
        request,
        "uploads.html",
        principal,
        title="Upload review",
        nav="airlock-uploads",
        items=items,
    )


@router.post("/review/airlock/uploads/{upload_id}/{move}")
def decide_upload(
    upload_id: int,
    move: str,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    principal: FormPrincipal,
    now: NowDep,
    version: Annotated[int, Form(ge=1, le=2_147_483_647)] = 1,
    comment: Text = "",
) -> Response:
    upload = airlock.find_visible_upload(session, principal.user, upload_id)
    source = request_source(request, settings)
    if move == "approve":
        airlock.approve_upload(
            session, settings, principal.user, upload, version, now, comment, source
        )
    elif move == "reject":
        airlock.reject_upload(
            session, settings, principal.user, upload, version, comment, now, source
        )
    else:
        raise NotFound("This page does not exist.")
    return redirect("/review/airlock/uploads")


@router.get("/review/airlock/outputs")
def output_queue(
    request: Request, session: SessionDep, principal: PagePrincipal, now: NowDep
) -> Response:
    principal = _logged_in(principal)
    if principal.user.role is not Role.OUTPUT_CHECKER:
        raise Forbidden("Only output checkers review output requests.")
    lanes = [
        ("LIGHT lane", airlock_egress.review_queue(session, principal.user, light=True)),
        ("Regular lane", airlock_egress.review_queue(session, principal.user, light=False)),
    ]
    waited = {
        r.id: airlock_egress.working_days_since(r.submitted_at, now)
        for _label, rows in lanes
        for r in rows
        if r.submitted_at is not None
    }
    return _page(
        request,
        "outputs.html",
        principal,
        title="Output review",
        nav="airlock-outputs",
        lanes=lanes,
        waited=waited,
        target=airlock_egress.REVIEW_TARGET_DAYS,
    )
