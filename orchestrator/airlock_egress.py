"""The airlock's egress: output requests from a project's `export/` folder, frozen at submission,
checked against the disclosure policy, reviewed four-eyes, released with a signed manifest, and
downloaded (checksum verified, audited) by the project's current members, from the portal only,
after a fresh code from their token (step-up).

States and who moves them (`OUTPUT_TRANSITIONS`):
    draft ─submit (submitter)─> checked   (files frozen and hashed, checks run: "submitted" and
                                           "checked" are both audited)
    checked | in_review ─approve (output checker)─> in_review | approved (enough approvals)
    checked | in_review ─return (output checker, comment)─> returned ─resubmit─> new draft (v+1)
    checked | in_review ─reject (output checker, comment)─> rejected
    approved ─release (output checker)─> released (manifest signed)
    draft | checked | in_review ─withdraw (submitter)─> withdrawn
Reviewers are output checkers who are not the submitter and not (and never were) members of the
project; each reviews a request once.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from sqlalchemy import select
from sqlalchemy.orm import Session

from orchestrator import airlock, audit, disclosure, policy
from orchestrator.airlock_models import (
    OutputFile,
    OutputKind,
    OutputRequest,
    OutputReview,
    OutputState,
    ReviewDecision,
    Verdict,
)
from orchestrator.config import Settings
from orchestrator.db import check_version, conflict_if_stale
from orchestrator.errors import Conflict, Forbidden, Invalid, NotFound
from orchestrator.models import Project, Role, User

S = OutputState
MAX_TEXT = 5000
OPEN_STATES = frozenset({S.CHECKED, S.IN_REVIEW})
CHECKERS = frozenset({Role.OUTPUT_CHECKER})  # who review output requests
REVIEW_EVENTS: Mapping[ReviewDecision, str] = {
    ReviewDecision.APPROVE: "airlock_output_approval",  # one of the approvals needed
    ReviewDecision.RETURN: "airlock_output_returned",
    ReviewDecision.REJECT: "airlock_output_rejected",
}

OUTPUT_TRANSITIONS: Mapping[tuple[OutputState, str], OutputState] = {
    (S.DRAFT, "submit"): S.CHECKED,
    (S.CHECKED, "approve"): S.IN_REVIEW,  # or APPROVED once enough approvals are in
    (S.IN_REVIEW, "approve"): S.IN_REVIEW,
    (S.CHECKED, "return"): S.RETURNED,
    (S.IN_REVIEW, "return"): S.RETURNED,
    (S.CHECKED, "reject"): S.REJECTED,
    (S.IN_REVIEW, "reject"): S.REJECTED,
    (S.APPROVED, "release"): S.RELEASED,
    (S.DRAFT, "withdraw"): S.WITHDRAWN,
    (S.CHECKED, "withdraw"): S.WITHDRAWN,
    (S.IN_REVIEW, "withdraw"): S.WITHDRAWN,
}


@dataclass(frozen=True)
class FileSpec:
    path: str  # relative to the project's export/ folder
    kind: OutputKind
    description: str
    controls: str = ""


def _step(request: OutputRequest, action: str) -> OutputState:
    target = OUTPUT_TRANSITIONS.get((request.state, action))
    if target is None:
        possible = sorted(a for (s, a) in OUTPUT_TRANSITIONS if s is request.state)
        raise Conflict(
            f"Output request {request.id} is {request.state.value}: it cannot be {action}ed"
            + (f" (possible: {', '.join(possible)})." if possible else ".")
        )
    return target


# --- files ----------------------------------------------------------------------------------------


def export_dir(settings: Settings, project: Project) -> Path:
    return airlock.project_area(settings, project, "export")


def resolve_export_file(settings: Settings, project: Project, relative: str) -> Path:
    """The regular file `relative` under the project's export/, or `Invalid`: no absolute paths,
    no `..`, no symbolic links anywhere on the way (the workspace writes export/)."""
    problem = airlock.entry_name_problem(relative)
    if problem:
        raise Invalid(f"{relative!r}: {problem}.")
    root = export_dir(settings, project)
    path = root
    for part in Path(relative).parts:
        path = path / part
        if path.is_symlink():
            raise Invalid(f"{relative!r}: symbolic links are not followed.")
    if not path.is_file():
        raise Invalid(f"{relative!r} is not a file in the project's export folder.")
    if not path.resolve().is_relative_to(root.resolve()):
        raise Invalid(f"{relative!r} is outside the export folder.")
    return path


def outputs_dir(settings: Settings, request: OutputRequest) -> Path:
    return settings.effective_airlock_dir / "outputs" / str(request.id)


def frozen_path(settings: Settings, output: OutputFile) -> Path:
    return outputs_dir(settings, output.request) / output.frozen_name


def open_no_links(root: Path, relative: str) -> int:
    """A read-only descriptor of `root/relative`, opened component by component relative to
    the previous folder with O_NOFOLLOW: a folder or file swapped for a link between the check
    and the copy (the workspace writes export/) makes the open fail instead of leaving root."""
    parts = Path(relative).parts
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for part in parts[:-1]:
            next_fd = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            os.close(fd)
            fd = next_fd
        file_fd = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW, dir_fd=fd)
    finally:
        os.close(fd)
    if not stat.S_ISREG(os.fstat(file_fd).st_mode):
        os.close(file_fd)
        raise Invalid(f"{relative!r} is not a regular file.")
    return file_fd


def _freeze(root: Path, relative: str, target: Path) -> tuple[int, str]:
    """Copy `root/relative` without following any link, hashing on the way; the copy is 0400."""
    digest, size = hashlib.sha256(), 0
    fd = open_no_links(root, relative)
    with os.fdopen(fd, "rb") as reader, open(target, "wb") as writer:
        while chunk := reader.read(airlock.CHUNK):
            digest.update(chunk)
            size += len(chunk)
            writer.write(chunk)
        writer.flush()
        os.fsync(writer.fileno())
    os.chmod(target, 0o400)
    return size, digest.hexdigest()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as reader:
        while chunk := reader.read(airlock.CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


# --- authorisation --------------------------------------------------------------------------------


def authorize_submitter(user: User, project: Project) -> None:
    airlock.ensure_visible(user, project)
    if user.role is not Role.RESEARCHER or not airlock.is_current_member(user, project):
        raise Forbidden("Only current members of the project ask for outputs.")
    if project.state.value != "active":
        raise Conflict(f"Outputs are requested only while the project is active ({project.state}).")


def authorize_output_review(user: User, request: OutputRequest) -> None:
    airlock.ensure_visible(user, request.project)
    if user.role is not Role.OUTPUT_CHECKER:
        raise Forbidden("Only output checkers review output requests.")
    if user.id == request.submitted_by_id:
        raise Forbidden("Nobody reviews their own output request.")
    if policy.is_or_was_member(user, request.project):
        raise Forbidden("Members of a project never review its output requests.")


def _own(user: User, request: OutputRequest) -> None:
    if user.id != request.submitted_by_id:
        raise Forbidden("Only the person who made the request may do this.")


# --- requests -------------------------------------------------------------------------------------


def create_request(
    session: Session,
    settings: Settings,
    actor: User,
    project: Project,
    title: str,
    files: Sequence[FileSpec],
    now: datetime,
    *,
    light: bool = False,
    previous: OutputRequest | None = None,
    source: str = "",
) -> OutputRequest:
    """A draft naming files in export/ (each with its kind and description)."""
    authorize_submitter(actor, project)
    title = title.strip()
    if not title or len(title) > 200:
        raise Invalid("Give the request a title (1 to 200 characters).")
    if not files or len(files) > settings.airlock_max_output_files:
        raise Invalid(f"Name 1 to {settings.airlock_max_output_files} files.")
    seen: set[str] = set()
    for spec in files:
        resolve_export_file(settings, project, spec.path)
        if spec.path in seen:
            raise Invalid(f"{spec.path!r} is named twice.")
        seen.add(spec.path)
        if not spec.description.strip() or len(spec.description) > MAX_TEXT:
            raise Invalid(f"Describe what {spec.path!r} shows (1 to {MAX_TEXT} characters).")
        if len(spec.controls) > MAX_TEXT:
            raise Invalid(f"The disclosure controls of {spec.path!r} are too long.")
    request = OutputRequest(
        project_id=project.id,
        submitted_by_id=actor.id,
        title=title,
        light=light,
        state=S.DRAFT,
        previous_id=previous.id if previous is not None else None,
        revision=previous.revision + 1 if previous is not None else 1,
        created_at=now,
        state_changed_at=now,
    )
    request.files = [
        OutputFile(
            path=spec.path,
            kind=spec.kind,
            description=spec.description.strip(),
            controls=spec.controls.strip(),
        )
        for spec in files
    ]
    session.add(request)
    session.flush()
    audit.record(
        session,
        "airlock_output_created",
        actor=actor,
        object_type="output_request",
        object_id=request.id,
        source=source,
        details={"project": project.code, "files": [s.path for s in files], "light": light},
    )
    return request


def preflight(settings: Settings, request: OutputRequest) -> dict[int, disclosure.FileCheck]:
    """The checks on the files as they are now in export/ (nothing recorded): shown to the
    researcher before submitting."""
    rules = disclosure.load_policy(settings.airlock_policy_file)
    results = {}
    live: dict[str, tuple[Path, str]] = {}
    for output in request.files:
        try:
            path = resolve_export_file(settings, request.project, output.path)
        except Invalid as exc:
            results[output.id] = disclosure.FileCheck(
                Verdict.FAIL, [{"rule": "file", "verdict": "fail", "detail": exc.message}]
            )
            continue
        results[output.id] = disclosure.check_output(path, output.path, output.kind, rules)
        live[output.path] = (path, _sha256(path))
    ids = {f.path: f.id for f in request.files}
    for file_path, extra in disclosure.acro_findings(live).items():
        check = results[ids[file_path]]
        findings = [*check.findings, *extra]
        verdict = disclosure.worst([Verdict(f["verdict"]) for f in findings])
        results[ids[file_path]] = disclosure.FileCheck(verdict, findings)
    return results


def _merge_acro(
    outputs: dict[int, OutputFile], files: dict[str, tuple[Path, str]], ids: dict[str, int]
) -> None:
    """Add the findings from ACRO's results and checksums to the files they concern."""
    for path, extra in disclosure.acro_findings(files).items():
        output = outputs[ids[path]]
        output.findings = [*output.findings, *extra]
        verdicts = [Verdict(f["verdict"]) for f in output.findings]
        output.verdict = disclosure.worst(verdicts).value


MAX_APPROVALS = 5


def required_approvals(project: Project) -> int:
    """The project's number of independent approvals; a request keeps the number it was
    submitted with."""
    return project.airlock_approvals


def set_required_approvals(
    session: Session,
    actor: User,
    project: Project,
    approvals: int,
    version: int | None,
    now: datetime,
    source: str = "",
) -> Project:
    """A data steward sets how many independent output checkers approve the project's output
    requests (1 to 5; default 2). Applies to requests submitted from now on. Audited."""
    airlock.ensure_visible(actor, project)
    if actor.role is not Role.DATA_STEWARD:
        raise Forbidden("Only data stewards set the number of approvals.")
    if not 1 <= approvals <= MAX_APPROVALS:
        raise Invalid(f"The number of approvals is 1 to {MAX_APPROVALS}.")
    check_version(f"Project {project.code}", version, project.version)
    before = project.airlock_approvals
    if before == approvals:
        return project
    with conflict_if_stale(f"Project {project.code}", version):
        project.airlock_approvals = approvals
        session.flush()
    audit.record(
        session,
        "airlock_approvals_changed",
        actor=actor,
        object_type="project",
        object_id=project.id,
        source=source,
        details={"project": project.code, "from": before, "to": approvals},
    )
    return project


def submit_request(
    session: Session,
    settings: Settings,
    actor: User,
    request: OutputRequest,
    version: int | None,
    now: datetime,
    source: str = "",
) -> OutputRequest:
    """Freeze every file (copied out of export/, sha256 recorded), run the checks on the frozen
    copies, and put the request in the reviewers' queue. Later edits in export/ change nothing."""
    authorize_submitter(actor, request.project)
    _own(actor, request)
    check_version(f"Output request {request.id}", version, request.version)
    target = _step(request, "submit")
    rules = disclosure.load_policy(settings.airlock_policy_file)
    folder = outputs_dir(settings, request)
    if folder.exists():  # an earlier attempt that did not commit: start again
        airlock.remove_tree(folder)
    folder.mkdir(mode=0o700, parents=True)
    total = 0
    for number, output in enumerate(request.files, start=1):
        resolve_export_file(settings, request.project, output.path)
        output.frozen_name = f"{number:04d}{Path(output.path).suffix.lower()[:10]}"
        try:
            output.size_bytes, output.sha256 = _freeze(
                export_dir(settings, request.project), output.path, folder / output.frozen_name
            )
        except OSError as exc:
            raise Invalid(f"{output.path!r} cannot be read: {exc.strerror}") from exc
        total += output.size_bytes
        if total > settings.airlock_max_output_bytes:
            airlock.remove_tree(folder)
            raise Invalid(f"The files are larger than {settings.airlock_max_output_bytes} bytes.")
        result = disclosure.check_output(
            folder / output.frozen_name, output.path, output.kind, rules
        )
        output.verdict = result.verdict.value
        output.findings = result.findings
    _merge_acro(
        {f.id: f for f in request.files},
        {f.path: (folder / f.frozen_name, f.sha256) for f in request.files},
        {f.path: f.id for f in request.files},
    )
    with conflict_if_stale(f"Output request {request.id}", version):
        request.state = target
        request.policy_version = rules.version
        request.required_approvals = required_approvals(request.project)
        request.submitted_at = now
        request.state_changed_at = now
        session.flush()
    files = [{"path": f.path, "sha256": f.sha256, "verdict": f.verdict} for f in request.files]
    for action in ("airlock_output_submitted", "airlock_output_checked"):
        audit.record(
            session,
            action,
            actor=actor if action.endswith("submitted") else None,
            object_type="output_request",
            object_id=request.id,
            source=source,
            details={
                "project": request.project.code,
                "files": files,
                "policy_version": rules.version,
            },
        )
    lane = "LIGHT " if request.light else ""
    airlock.notify_reviewers(
        session,
        request.project,
        f"{lane}output request {request.id} awaits review",
        "outputs",
        actor,
        CHECKERS,
    )
    return request


def review_request(
    session: Session,
    actor: User,
    request: OutputRequest,
    decision: ReviewDecision,
    comment: str,
    file_comments: Mapping[int, str],
    version: int | None,
    now: datetime,
    source: str = "",
) -> OutputRequest:
    """Record one output checker's decision. Approvals count until `required_approvals` are in;
    a return or a rejection (with a comment) ends the review at once."""
    authorize_output_review(actor, request)
    check_version(f"Output request {request.id}", version, request.version)
    target = _step(request, decision.value)
    if any(r.reviewer_id == actor.id for r in request.reviews):
        raise Conflict("You have already reviewed this request; another checker must do so.")
    comment = comment.strip()
    if decision is not ReviewDecision.APPROVE and not comment:
        raise Invalid("Give your reasons when returning or rejecting.")
    if len(comment) > MAX_TEXT:
        raise Invalid(f"The comment is longer than {MAX_TEXT} characters.")
    ids = {f.id for f in request.files}
    notes = {}
    for file_id, text in file_comments.items():
        if file_id not in ids:
            raise Invalid(f"File {file_id} is not part of this request.")
        if text.strip():
            notes[str(file_id)] = text.strip()[:MAX_TEXT]
    review = OutputReview(
        request_id=request.id,
        reviewer_id=actor.id,
        decision=decision,
        comment=comment,
        file_comments=notes,
        created_at=now,
    )
    session.add(review)
    request.reviews.append(review)
    approvals = sum(1 for r in request.reviews if r.decision is ReviewDecision.APPROVE)
    if decision is ReviewDecision.APPROVE and approvals >= request.required_approvals:
        target = S.APPROVED
    with conflict_if_stale(f"Output request {request.id}", version):
        request.state = target
        request.state_changed_at = now
        if target in (S.APPROVED, S.RETURNED, S.REJECTED):
            request.decided_at = now
        if comment and decision is not ReviewDecision.APPROVE:
            request.comment = comment
        session.flush()
    audit.record(
        session,
        REVIEW_EVENTS[decision] if target is not S.APPROVED else "airlock_output_approved",
        actor=actor,
        object_type="output_request",
        object_id=request.id,
        source=source,
        details={
            "project": request.project.code,
            "decision": decision.value,
            "approvals": approvals,
            "state": target.value,
        },
    )
    if target in (S.APPROVED, S.RETURNED, S.REJECTED):
        text = comment or f"{approvals} output checker(s) approved it; it will be released shortly."
        airlock._tell(
            session,
            request.submitted_by,
            request.project,
            f"output request {request.id} {target.value}",
            text,
        )
    return request


def resubmit_request(
    session: Session,
    settings: Settings,
    actor: User,
    request: OutputRequest,
    now: datetime,
    source: str = "",
) -> OutputRequest:
    """After a return: a new draft (the next revision) naming the same files as they are now."""
    airlock.ensure_visible(actor, request.project)
    _own(actor, request)
    if request.state is not S.RETURNED:
        raise Conflict(f"Only a returned request is resubmitted (this one is {request.state}).")
    specs = [FileSpec(f.path, f.kind, f.description, f.controls) for f in request.files]
    return create_request(
        session,
        settings,
        actor,
        request.project,
        request.title,
        specs,
        now,
        light=request.light,
        previous=request,
        source=source,
    )


def withdraw_request(
    session: Session,
    actor: User,
    request: OutputRequest,
    version: int | None,
    now: datetime,
    source: str = "",
) -> OutputRequest:
    airlock.ensure_visible(actor, request.project)
    _own(actor, request)
    check_version(f"Output request {request.id}", version, request.version)
    target = _step(request, "withdraw")
    was = request.state
    with conflict_if_stale(f"Output request {request.id}", version):
        request.state = target
        request.state_changed_at = now
        session.flush()
    audit.record(
        session,
        "airlock_output_withdrawn",
        actor=actor,
        object_type="output_request",
        object_id=request.id,
        source=source,
        details={"project": request.project.code, "from": was.value},
    )
    airlock._tell(
        session,
        request.submitted_by,
        request.project,
        f"output request {request.id} withdrawn",
        "You withdrew it; nothing will be released from it.",
    )
    if was in OPEN_STATES:  # it was in the checkers' queue: they need not look any more
        airlock.notify_reviewers(
            session,
            request.project,
            f"output request {request.id} was withdrawn and left the review queue",
            "outputs",
            actor,
            CHECKERS,
        )
    return request


def release_request(
    session: Session,
    settings: Settings,
    actor: User,
    request: OutputRequest,
    version: int | None,
    now: datetime,
    source: str = "",
) -> OutputRequest:
    """Verify every frozen file's checksum once more and sign the release manifest."""
    authorize_output_review(actor, request)
    check_version(f"Output request {request.id}", version, request.version)
    target = _step(request, "release")
    for output in request.files:
        if _sha256(frozen_path(settings, output)) != output.sha256:
            raise Conflict(f"The frozen copy of {output.path!r} changed; it is not released.")
    with conflict_if_stale(f"Output request {request.id}", version):
        request.state = target
        request.released_at = now
        request.state_changed_at = now
        request.manifest = sign_manifest(settings, make_manifest(request, now))
        session.flush()
    audit.record(
        session,
        "airlock_output_released",
        actor=actor,
        object_type="output_request",
        object_id=request.id,
        source=source,
        details={"project": request.project.code, "signature": request.manifest["signature"][:16]},
    )
    for member in current_members(request.project):
        airlock._tell(
            session,
            member,
            request.project,
            f"output request {request.id} released",
            "Members of the project download the files from the portal (a fresh code from "
            "your token is asked).",
        )
    return request


def current_members(project: Project) -> list[User]:
    return [m.user for m in project.members if m.removed_at is None]


def may_download(user: User, request: OutputRequest) -> bool:
    """Released files go to the project's current members (not former members, not staff)."""
    return request.state is S.RELEASED and airlock.is_current_member(user, request.project)


def open_download(
    session: Session,
    settings: Settings,
    actor: User,
    output: OutputFile,
    now: datetime,
    source: str = "",
) -> Path:
    """The frozen file of a released request for a current member of its project, checksum
    verified; audited. Only the portal calls this, after the step-up (`sessions`)."""
    request = output.request
    airlock.ensure_visible(actor, request.project)
    if not airlock.is_current_member(actor, request.project):
        raise Forbidden("Released outputs are downloaded only by the project's current members.")
    if request.state is not S.RELEASED:
        raise Conflict(f"Output request {request.id} is {request.state.value}, not released.")
    path = frozen_path(settings, output)
    if not path.exists() or _sha256(path) != output.sha256:
        raise Conflict(f"The released copy of {output.path!r} does not match its checksum.")
    audit.record(
        session,
        "airlock_output_downloaded",
        actor=actor,
        object_type="output_file",
        object_id=output.id,
        source=source,
        details={
            "project": request.project.code,
            "request": request.id,
            "path": output.path,
            "sha256": output.sha256,
        },
    )
    return path


def get_request(session: Session, request_id: int) -> OutputRequest:
    request = session.get(OutputRequest, request_id)
    if request is None:
        raise NotFound("Output request not found.")
    return request


def find_visible_request(session: Session, user: User, request_id: int) -> OutputRequest:
    request = get_request(session, request_id)
    if not airlock.can_see_project_airlock(user, request.project):
        raise NotFound("Output request not found.")
    return request


def find_visible_file(session: Session, user: User, file_id: int) -> OutputFile:
    output = session.get(OutputFile, file_id)
    if output is None or not airlock.can_see_project_airlock(user, output.request.project):
        raise NotFound("File not found.")
    return output


def list_requests(session: Session, user: User, project: Project) -> list[OutputRequest]:
    airlock.ensure_visible(user, project)
    stmt = (
        select(OutputRequest)
        .where(OutputRequest.project_id == project.id)
        .order_by(OutputRequest.id.desc())
        .limit(500)
    )
    return list(session.scalars(stmt))


def review_queue(session: Session, user: User, light: bool | None = None) -> list[OutputRequest]:
    """Requests awaiting review that this output checker may review, oldest first."""
    if user.role is not Role.OUTPUT_CHECKER:
        raise Forbidden("Only output checkers have an output review queue.")
    stmt = select(OutputRequest).where(OutputRequest.state.in_(list(OPEN_STATES)))
    if light is not None:
        stmt = stmt.where(OutputRequest.light.is_(light))
    rows = session.scalars(stmt.order_by(OutputRequest.submitted_at, OutputRequest.id)).all()
    return [
        r
        for r in rows
        if r.submitted_by_id != user.id
        and not policy.is_or_was_member(user, r.project)
        and all(v.reviewer_id != user.id for v in r.reviews)
    ]


REVIEW_TARGET_DAYS = 3  # a decision within three working days of submission


def working_days_since(start: datetime, now: datetime) -> int:
    """Whole working days (Monday to Friday) between two moments: the 3-day target's clock."""
    days, day = 0, start.date()
    while day < now.date():
        day += timedelta(days=1)
        if day.weekday() < 5:
            days += 1
    return days


# --- the signed release manifest ------------------------------------------------------------------


def make_manifest(request: OutputRequest, now: datetime) -> dict[str, Any]:
    return {
        "kind": "kluis-release-manifest/1",
        "request": request.id,
        "revision": request.revision,
        "project": request.project.code,
        "title": request.title,
        "requested_by": request.submitted_by.username,
        "submitted_at": request.submitted_at.isoformat() if request.submitted_at else None,
        "released_at": now.isoformat(),
        "policy_version": request.policy_version,
        "required_approvals": request.required_approvals,
        "files": [
            {
                "path": f.path,
                "kind": f.kind.value,
                "size": f.size_bytes,
                "sha256": f.sha256,
                "verdict": f.verdict,
                "findings": f.findings,
            }
            for f in request.files
        ],
        "reviews": [
            {
                "reviewer": r.reviewer.username,
                "decision": r.decision.value,
                "at": r.created_at.isoformat(),
            }
            for r in request.reviews
        ],
    }


def _canonical(document: Mapping[str, Any]) -> bytes:
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def signing_key(settings: Settings) -> Ed25519PrivateKey:
    """The control plane's Ed25519 key: configured, or made once in the airlock folder (0600)."""
    if settings.airlock_signing_key is not None:
        raw = base64.b64decode(settings.airlock_signing_key.get_secret_value())
        return Ed25519PrivateKey.from_private_bytes(raw)
    path = settings.effective_airlock_dir / "signing-key"
    if not path.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        key = Ed25519PrivateKey.generate()
        from cryptography.hazmat.primitives.serialization import NoEncryption, PrivateFormat

        raw = key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another process made it first: use theirs
        else:
            with os.fdopen(fd, "wb") as out:
                out.write(base64.b64encode(raw))
    return Ed25519PrivateKey.from_private_bytes(base64.b64decode(path.read_bytes()))


def public_key_text(key: Ed25519PublicKey) -> str:
    return base64.b64encode(key.public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()


def sign_manifest(settings: Settings, manifest: dict[str, Any]) -> dict[str, Any]:
    key = signing_key(settings)
    signature = key.sign(_canonical(manifest))
    return {
        "manifest": manifest,
        "signature": base64.b64encode(signature).decode(),
        "public_key": public_key_text(key.public_key()),
    }


def verify_manifest(settings: Settings, document: Mapping[str, Any]) -> bool:
    """Whether `document` was signed by this control plane's key and is unchanged."""
    try:
        manifest = document["manifest"]
        signature = base64.b64decode(document["signature"], validate=True)
    except (KeyError, TypeError, ValueError):
        return False
    public = signing_key(settings).public_key()
    try:
        public.verify(signature, _canonical(manifest))
    except InvalidSignature:
        return False
    return True


def remove_request_files(settings: Settings, request: OutputRequest) -> None:
    airlock.remove_tree(outputs_dir(settings, request))


ENDED_STATES = frozenset({S.RETURNED, S.REJECTED, S.WITHDRAWN})


def sweep_outputs(session: Session, settings: Settings, now: datetime) -> int:
    """Delete the frozen copies of requests that ended without release (returned, rejected,
    withdrawn) once the retention period has passed; rows, hashes and findings stay. Audited."""
    cutoff = now - timedelta(days=settings.airlock_retention_days)
    ended = session.scalars(
        select(OutputRequest).where(
            OutputRequest.state.in_(list(ENDED_STATES)), OutputRequest.state_changed_at <= cutoff
        )
    ).all()
    removed = 0
    for request in ended:
        folder = outputs_dir(settings, request)
        if not folder.exists():
            continue
        remove_request_files(settings, request)
        audit.record(
            session,
            "airlock_output_files_purged",
            object_type="output_request",
            object_id=request.id,
            details={"project": request.project.code, "state": request.state.value},
        )
        removed += 1
    return removed
