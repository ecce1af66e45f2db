"""The airlock's ingress: files brought into a project, their automated checks, staff review and
placement read-only in the project's `import/` folder; the retention sweep; who may do what.

Flow: the bytes are streamed into the quarantine area (`<airlock dir>/quarantine/`, never held
in memory, limited in size), then checked — name, type by content (libmagic), archive safety
(entry names, links, device files, entry count, expanded size and ratio, nested archives) and a
ClamAV scan by clamd (socket or TCP), fail-closed — and recorded as `pending_review` or `blocked`.
A data steward or output checker who is not in the project approves (the file is copied, checksum
verified, into `import/<upload id>/` read-only, with a `.sha256` beside it) or rejects; blocked
and rejected bytes are deleted by `sweep` after the retention period. Every step is audited.

Authorisation of the airlock lives here (with `policy.is_or_was_member` for membership): members
of an active project upload; staff who review are never members and never the uploader.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import tarfile
import unicodedata
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path, PurePosixPath
from typing import IO, Any

import magic
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from orchestrator import audit, clamd, notify, policy
from orchestrator.airlock_models import Upload, UploadState, Verdict
from orchestrator.config import Settings
from orchestrator.db import check_version, conflict_if_stale
from orchestrator.errors import Conflict, Forbidden, Invalid, KluisError, NotFound
from orchestrator.models import Project, ProjectState, Role, User, UserStatus

CHUNK = 64 * 1024
MAX_FILENAME_BYTES = 255
MAX_LEGAL_BASIS = 2000
MAX_COMMENT = 5000
SNIFF_BYTES = 8192
# Below this many expanded bytes the ratio is not judged (tiny text compresses very well).
RATIO_FLOOR_BYTES = 1024 * 1024
REVIEWER_ROLES = frozenset({Role.DATA_STEWARD, Role.OUTPUT_CHECKER})
PART_MAX_AGE = timedelta(days=1)  # an interrupted upload's partial file

# Types accepted by content (what libmagic says, never the name or the claimed type).
ALLOWED_TYPES = frozenset(
    {
        "text/plain",
        "text/csv",
        "application/csv",
        "text/tab-separated-values",
        "application/json",
        "application/pdf",
        "application/zip",
        "application/x-tar",
        "application/gzip",
        "application/x-gzip",
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        "application/vnd.oasis.opendocument.spreadsheet",
        "application/x-spss-sav",
        "application/x-stata-dta",
    }
)
ARCHIVE_TYPES = frozenset({"application/zip", "application/x-tar", "application/gzip"})
ARCHIVE_TYPES_ALL = ARCHIVE_TYPES | {"application/x-gzip"}
# Office documents are zip files: their parts are checked for safety, not against the list.
DOCUMENT_ZIPS = frozenset(
    {
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        "application/vnd.oasis.opendocument.spreadsheet",
    }
)
NESTED_ARCHIVE_TYPES = frozenset(
    {
        "application/zip",
        "application/x-tar",
        "application/gzip",
        "application/x-gzip",
        "application/x-bzip2",
        "application/x-xz",
        "application/x-7z-compressed",
        "application/x-rar",
        "application/vnd.rar",
        "application/zstd",
    }
)

UPLOAD_TRANSITIONS: Mapping[tuple[UploadState, str], UploadState] = {
    (UploadState.PENDING_REVIEW, "approve"): UploadState.APPROVED,
    (UploadState.PENDING_REVIEW, "reject"): UploadState.REJECTED,
    (UploadState.BLOCKED, "purge"): UploadState.PURGED,
    (UploadState.REJECTED, "purge"): UploadState.PURGED,
}


class TooLarge(KluisError):
    status_code = 413
    code = "too_large"


@dataclass(frozen=True)
class Finding:
    check: str
    verdict: Verdict
    detail: str

    def as_dict(self) -> dict[str, str]:
        return {"check": self.check, "verdict": self.verdict.value, "detail": self.detail}


@dataclass(frozen=True)
class Received:
    """Bytes safely in quarantine: its file name there, size and sha256."""

    name: str
    size: int
    sha256: str


# --- places ---------------------------------------------------------------------------------------


def quarantine_dir(settings: Settings) -> Path:
    path = settings.effective_airlock_dir / "quarantine"
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def project_area(settings: Settings, project: Project, area: str) -> Path:
    return settings.effective_project_storage_root / project.code / area


# --- names ----------------------------------------------------------------------------------------


def _odd_character(text: str) -> str | None:
    for char in text:
        category = unicodedata.category(char)
        # Cc: control characters; Cf: format characters (bidirectional overrides, zero-width).
        if category in ("Cc", "Cf", "Co", "Cs", "Cn"):
            return f"U+{ord(char):04X}"
    return None


def entry_name_problem(name: str) -> str | None:
    """Why an archive entry's name is unsafe, or `None`: absolute paths, drive letters,
    backslashes, `..` components, control and bidirectional characters."""
    if not name or len(name.encode("utf-8", "surrogateescape")) > 1024:
        return "empty or too long name"
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        return "absolute path"
    if "\\" in name:
        return "backslash in name"
    if any(part == ".." for part in PurePosixPath(name).parts):
        return "'..' in path"
    odd = _odd_character(name)
    if odd is not None:
        return f"control or bidirectional character {odd} in name"
    return None


def check_filename(name: str) -> str:
    """The upload's file name as one safe path component, or `Invalid`."""
    name = unicodedata.normalize("NFC", name.strip())
    if not name or len(name.encode()) > MAX_FILENAME_BYTES:
        raise Invalid("The file name must be 1 to 255 bytes long.")
    if "/" in name or "\\" in name or name in (".", "..") or name.startswith("."):
        raise Invalid("The file name must be a plain name: no folders, no leading dot.")
    odd = _odd_character(name)
    if odd is not None:
        raise Invalid(f"The file name contains a control or bidirectional character ({odd}).")
    return name


# --- receiving ------------------------------------------------------------------------------------


class QuarantineWriter:
    """Writes an upload into quarantine chunk by chunk, hashing as it goes; refuses more than
    `limit` bytes (the partial file is removed). Use `finish()` or `abort()`."""

    def __init__(self, settings: Settings) -> None:
        self.name = secrets.token_hex(16)
        self.part = quarantine_dir(settings) / f"{self.name}.part"
        self.limit = settings.airlock_max_upload_bytes
        self.size = 0
        self._hash = hashlib.sha256()
        self._file: IO[bytes] = open(self.part, "xb")  # noqa: SIM115 (closed in finish/abort)
        os.chmod(self.part, 0o600)

    def write(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self.limit:
            self.abort()
            raise TooLarge(f"The file is larger than the limit of {self.limit} bytes.")
        self._hash.update(chunk)
        self._file.write(chunk)

    def finish(self) -> Received:
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        if self.size == 0:
            self.part.unlink(missing_ok=True)
            raise Invalid("The file is empty.")
        os.rename(self.part, self.part.with_suffix(""))
        return Received(self.name, self.size, self._hash.hexdigest())

    def abort(self) -> None:
        if not self._file.closed:
            self._file.close()
        self.part.unlink(missing_ok=True)


def receive_file(settings: Settings, source: IO[bytes]) -> Received:
    """Copy an open file (e.g. a spooled form upload) into quarantine, chunk by chunk."""
    writer = QuarantineWriter(settings)
    try:
        while chunk := source.read(CHUNK):
            writer.write(chunk)
    except BaseException:
        writer.abort()
        raise
    return writer.finish()


def discard(settings: Settings, received: Received) -> None:
    (quarantine_dir(settings) / received.name).unlink(missing_ok=True)


# --- checks ---------------------------------------------------------------------------------------


def detect_type(path: Path) -> str:
    return str(magic.from_file(str(path), mime=True))


def _sniff(data: bytes) -> str:
    return str(magic.from_buffer(data, mime=True))


@dataclass
class _Tally:
    settings: Settings
    archive_size: int
    entries: int = 0
    expanded: int = 0

    def add(self, size: int) -> str | None:
        self.entries += 1
        self.expanded += size
        if self.entries > self.settings.airlock_max_archive_entries:
            return f"more than {self.settings.airlock_max_archive_entries} entries"
        if self.expanded > self.settings.airlock_max_expanded_bytes:
            return f"expands to more than {self.settings.airlock_max_expanded_bytes} bytes"
        return self.ratio_problem()

    def ratio_problem(self) -> str | None:
        ratio = self.settings.airlock_max_expansion_ratio
        if self.expanded > RATIO_FLOOR_BYTES and self.expanded > ratio * max(self.archive_size, 1):
            return f"expansion ratio above {ratio}"
        return None


def _entry_type_problem(head: bytes, in_document: bool) -> str | None:
    kind = _sniff(head) if head else "text/plain"
    if kind in NESTED_ARCHIVE_TYPES and not in_document:
        return "nested archive"
    if not in_document and kind not in ALLOWED_TYPES:
        return f"type {kind} not allowed"
    return None


def check_zip(path: Path, settings: Settings, in_document: bool) -> list[Finding]:
    """Entry names, links, count, and the bytes actually inflated (declared sizes can lie)."""
    tally = _Tally(settings, path.stat().st_size)
    problems: list[str] = []
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            name_problem = entry_name_problem(info.filename)
            if name_problem:
                problems.append(f"{info.filename!r}: {name_problem}")
                continue
            mode = info.external_attr >> 16
            file_type = mode & 0o170000
            if file_type == 0o120000:
                problems.append(f"{info.filename!r}: symbolic link")
                continue
            if file_type not in (0, 0o100000, 0o040000):
                problems.append(f"{info.filename!r}: device or special file")
                continue
            if info.is_dir():
                continue
            head, size = b"", 0
            with archive.open(info) as entry:
                while chunk := entry.read(CHUNK):
                    if len(head) < SNIFF_BYTES:
                        head += chunk[: SNIFF_BYTES - len(head)]
                    size += len(chunk)
                    if tally.expanded + size > settings.airlock_max_expanded_bytes:
                        break
            bomb = tally.add(size)
            if bomb:
                return [Finding("archive", Verdict.FAIL, f"archive bomb: {bomb}")]
            type_problem = _entry_type_problem(head, in_document)
            if type_problem:
                problems.append(f"{info.filename!r}: {type_problem}")
    return _archive_findings(problems, tally)


def check_tar(path: Path, settings: Settings) -> list[Finding]:
    tally = _Tally(settings, path.stat().st_size)
    problems: list[str] = []
    with tarfile.open(path, mode="r:*") as archive:
        for member in archive:
            name_problem = entry_name_problem(member.name)
            if name_problem:
                problems.append(f"{member.name!r}: {name_problem}")
                continue
            if member.issym() or member.islnk():
                problems.append(f"{member.name!r}: link")
                continue
            if member.ischr() or member.isblk() or member.isfifo() or member.isdev():
                problems.append(f"{member.name!r}: device or special file")
                continue
            if member.isdir():
                continue
            if not member.isfile():
                problems.append(f"{member.name!r}: unsupported entry type")
                continue
            bomb = tally.add(member.size)
            if bomb:
                return [Finding("archive", Verdict.FAIL, f"archive bomb: {bomb}")]
            extracted = archive.extractfile(member)
            head = extracted.read(SNIFF_BYTES) if extracted is not None else b""
            type_problem = _entry_type_problem(head, False)
            if type_problem:
                problems.append(f"{member.name!r}: {type_problem}")
    return _archive_findings(problems, tally)


def check_gzip(path: Path, settings: Settings) -> list[Finding]:
    """A lone gzip file: inflated as a stream, counted, its content sniffed."""
    import gzip

    tally = _Tally(settings, path.stat().st_size)
    head, size = b"", 0
    with gzip.open(path, "rb") as stream:
        while chunk := stream.read(CHUNK):
            if len(head) < SNIFF_BYTES:
                head += chunk[: SNIFF_BYTES - len(head)]
            size += len(chunk)
            if size > settings.airlock_max_expanded_bytes:
                break
    bomb = tally.add(size)
    if bomb:
        return [Finding("archive", Verdict.FAIL, f"archive bomb: {bomb}")]
    problem = _entry_type_problem(head, False)
    return _archive_findings([f"content: {problem}"] if problem else [], tally)


def _archive_findings(problems: list[str], tally: _Tally) -> list[Finding]:
    if problems:
        shown = "; ".join(problems[:10]) + (
            f"; and {len(problems) - 10} more" * (len(problems) > 10)
        )
        return [Finding("archive", Verdict.FAIL, shown)]
    detail = f"{tally.entries} entries, {tally.expanded} bytes expanded"
    return [Finding("archive", Verdict.PASS, detail)]


def run_checks(settings: Settings, path: Path) -> tuple[str, list[Finding]]:
    """Every automated check of a quarantined file: (detected type, findings). Fail-closed: a
    check that cannot complete is a failure."""
    findings: list[Finding] = []
    try:
        kind = detect_type(path)
    except Exception as exc:  # libmagic refusing a file is a failed check, not a crash
        kind = ""
        findings.append(Finding("type", Verdict.FAIL, f"type not determined: {type(exc).__name__}"))
    else:
        if kind in ALLOWED_TYPES:
            findings.append(Finding("type", Verdict.PASS, kind))
        else:
            findings.append(Finding("type", Verdict.FAIL, f"type {kind} is not allowed"))
    if kind in ARCHIVE_TYPES_ALL or kind in DOCUMENT_ZIPS:
        try:
            if kind == "application/zip" or kind in DOCUMENT_ZIPS:
                findings.extend(check_zip(path, settings, in_document=kind in DOCUMENT_ZIPS))
            elif kind == "application/x-tar" or tarfile.is_tarfile(path):
                findings.extend(check_tar(path, settings))
            else:
                findings.extend(check_gzip(path, settings))
        except (zipfile.BadZipFile, tarfile.TarError, OSError, EOFError, ValueError) as exc:
            findings.append(Finding("archive", Verdict.FAIL, f"unreadable archive: {exc}"[:300]))
    scan = clamd.scan_file(settings.clamd_endpoint, path, settings.clamd_timeout_seconds)
    findings.append(Finding("malware", Verdict.PASS if scan.clean else Verdict.FAIL, scan.detail))
    return kind, findings


# --- authorisation --------------------------------------------------------------------------------


def is_current_member(user: User, project: Project) -> bool:
    return any(m.user_id == user.id and m.removed_at is None for m in project.members)


def can_see_project_airlock(user: User, project: Project) -> bool:
    """Members (current or former) see their project's airlock; reviewers and ops see all."""
    if user.status is not UserStatus.ACTIVE:
        return False
    if user.role in (Role.DATA_STEWARD, Role.OUTPUT_CHECKER, Role.OPS):
        return True
    return policy.is_or_was_member(user, project)


def ensure_visible(user: User, project: Project) -> None:
    if not can_see_project_airlock(user, project):
        raise NotFound("Project not found.")


def authorize_upload(user: User, project: Project) -> None:
    """Current members of an active project, and data stewards for it, bring files in."""
    ensure_visible(user, project)
    if user.role is Role.DATA_STEWARD:
        pass
    elif user.role is not Role.RESEARCHER or not is_current_member(user, project):
        raise Forbidden("Only current members of the project (or a data steward) upload files.")
    if project.state is not ProjectState.ACTIVE:
        raise Conflict(
            f"Files can be brought in only while the project is active ({project.state})."
        )


def authorize_review(user: User, project: Project, submitter_id: int) -> None:
    """Segregation of duties: a reviewer is a data steward or output checker, never the person
    who submitted, and never anyone who is or was a member of the project."""
    ensure_visible(user, project)
    if user.role not in REVIEWER_ROLES:
        raise Forbidden("Only data stewards and output checkers review the airlock.")
    if user.id == submitter_id:
        raise Forbidden("Nobody reviews what they submitted themselves.")
    if policy.is_or_was_member(user, project):
        raise Forbidden("Members of a project never review its airlock requests.")


# --- uploads --------------------------------------------------------------------------------------


def open_upload_count(session: Session, project: Project) -> int:
    return (
        session.scalar(
            select(func.count())
            .select_from(Upload)
            .where(Upload.project_id == project.id, Upload.state == UploadState.PENDING_REVIEW)
        )
        or 0
    )


def check_upload_request(
    session: Session,
    settings: Settings,
    actor: User,
    project: Project,
    filename: str,
    legal_basis: str,
    lawful: bool,
) -> str:
    """Everything that can be refused before any byte is stored; returns the checked name."""
    authorize_upload(actor, project)
    name = check_filename(filename)
    if not lawful:
        raise Invalid("State that the data was obtained lawfully.")
    legal_basis = legal_basis.strip()
    if not legal_basis or len(legal_basis) > MAX_LEGAL_BASIS:
        raise Invalid(f"Give the legal basis for the data (1 to {MAX_LEGAL_BASIS} characters).")
    if open_upload_count(session, project) >= settings.airlock_max_open_uploads:
        raise Conflict(
            f"The project already has {settings.airlock_max_open_uploads} uploads awaiting "
            "review; wait for decisions first."
        )
    return name


def register_upload(
    session: Session,
    settings: Settings,
    actor: User,
    project: Project,
    received: Received,
    filename: str,
    legal_basis: str,
    now: datetime,
    source: str = "",
    checks: tuple[str, list[Finding]] | None = None,
) -> Upload:
    """Run the checks on quarantined bytes (unless `checks` holds their result, run before the
    caller's transaction began, so no database lock is held during a scan) and record the upload
    (pending_review or blocked), audited and, when it awaits review, notified to the reviewers."""
    name = check_upload_request(session, settings, actor, project, filename, legal_basis, True)
    if checks is None:
        checks = run_checks(settings, quarantine_dir(settings) / received.name)
    kind, findings = checks
    passed = all(f.verdict is Verdict.PASS for f in findings)
    state = UploadState.PENDING_REVIEW if passed else UploadState.BLOCKED
    upload = Upload(
        project_id=project.id,
        uploaded_by_id=actor.id,
        filename=name,
        size_bytes=received.size,
        sha256=received.sha256,
        content_type=kind[:120],
        legal_basis=legal_basis.strip(),
        lawful_statement=True,
        state=state,
        findings=[f.as_dict() for f in findings],
        quarantine_name=received.name,
        purge_after=None if passed else now + timedelta(days=settings.airlock_retention_days),
        created_at=now,
        state_changed_at=now,
    )
    session.add(upload)
    session.flush()
    failed = [f.check for f in findings if f.verdict is not Verdict.PASS]
    audit.record(
        session,
        "airlock_upload_received",
        actor=actor,
        object_type="upload",
        object_id=upload.id,
        source=source,
        details={
            "project": project.code,
            "filename": name,
            "size": received.size,
            "sha256": received.sha256,
            "type": kind,
            "state": state.value,
            "failed_checks": failed,
        },
    )
    if passed:
        notify_reviewers(
            session, project, f"upload {upload.id} ({name}) awaits review", "uploads", actor
        )
    else:
        _tell(session, actor, project, f"upload {name} blocked", _findings_text(findings))
    return upload


def get_upload(session: Session, upload_id: int) -> Upload:
    upload = session.get(Upload, upload_id)
    if upload is None:
        raise NotFound("Upload not found.")
    return upload


def find_visible_upload(session: Session, user: User, upload_id: int) -> Upload:
    upload = get_upload(session, upload_id)
    if not can_see_project_airlock(user, upload.project):
        raise NotFound("Upload not found.")
    return upload


def _step(upload: Upload, action: str) -> UploadState:
    target = UPLOAD_TRANSITIONS.get((upload.state, action))
    if target is None:
        raise Conflict(f"An upload that is {upload.state.value} cannot be {action}d.")
    return target


def approve_upload(
    session: Session,
    settings: Settings,
    actor: User,
    upload: Upload,
    version: int | None,
    now: datetime,
    comment: str = "",
    source: str = "",
) -> Upload:
    """Place the file read-only in `import/<id>/<name>` (checksum verified while copying) and
    record the approval. Idempotent on disk: a copy left by an interrupted approval is redone."""
    authorize_review(actor, upload.project, upload.uploaded_by_id)
    check_version(f"Upload {upload.id}", version, upload.version)
    target_state = _step(upload, "approve")
    relative = place_in_import(settings, upload)
    with conflict_if_stale(f"Upload {upload.id}", version):
        upload.state = target_state
        upload.import_path = relative
        upload.decided_by_id = actor.id
        upload.decided_at = now
        upload.state_changed_at = now
        upload.decision_comment = comment.strip()[:MAX_COMMENT]
        session.flush()
    audit.record(
        session,
        "airlock_upload_approved",
        actor=actor,
        object_type="upload",
        object_id=upload.id,
        source=source,
        details={"project": upload.project.code, "path": relative, "sha256": upload.sha256},
    )
    _tell(
        session,
        upload.uploaded_by,
        upload.project,
        f"upload {upload.filename} approved",
        f"It is in the project's folder import/{relative}.",
    )
    (quarantine_dir(settings) / upload.quarantine_name).unlink(missing_ok=True)
    return upload


def place_in_import(settings: Settings, upload: Upload) -> str:
    """Copy the quarantined bytes to `import/<id>/<name>` (0440, folder 0550) with a `.sha256`
    file; the copy's hash must equal the one recorded at upload. Returns the path under import/."""
    source = quarantine_dir(settings) / upload.quarantine_name
    folder = project_area(settings, upload.project, "import") / str(upload.id)
    target = folder / upload.filename
    relative = f"{upload.id}/{upload.filename}"
    if target.exists() and _sha256(target) == upload.sha256:
        return relative  # an earlier approval got this far before the database said so
    if not source.exists():
        raise Conflict("The quarantined file is missing; the upload cannot be approved.")
    folder.mkdir(mode=0o750, parents=True, exist_ok=True)
    os.chmod(folder, 0o750)  # noqa: S103 (the workspace group reads import/)
    temporary = folder / f".{upload.filename}.part"
    digest = hashlib.sha256()
    with source.open("rb") as reader, open(temporary, "wb") as writer:
        while chunk := reader.read(CHUNK):
            digest.update(chunk)
            writer.write(chunk)
        writer.flush()
        os.fsync(writer.fileno())
    if digest.hexdigest() != upload.sha256:
        temporary.unlink(missing_ok=True)
        raise Conflict("The quarantined file changed since it was checked; it is not approved.")
    os.chmod(temporary, 0o440)
    os.replace(temporary, target)
    checksum = folder / f"{upload.filename}.sha256"
    checksum.unlink(missing_ok=True)
    checksum.write_text(f"{upload.sha256}  {upload.filename}\n")
    os.chmod(checksum, 0o440)
    os.chmod(folder, 0o550)  # noqa: S103 (read-only to the workspace group)
    return relative


def reject_upload(
    session: Session,
    settings: Settings,
    actor: User,
    upload: Upload,
    version: int | None,
    comment: str,
    now: datetime,
    source: str = "",
) -> Upload:
    authorize_review(actor, upload.project, upload.uploaded_by_id)
    check_version(f"Upload {upload.id}", version, upload.version)
    comment = comment.strip()
    if not comment or len(comment) > MAX_COMMENT:
        raise Invalid(f"Give the reason for rejecting (1 to {MAX_COMMENT} characters).")
    target_state = _step(upload, "reject")
    with conflict_if_stale(f"Upload {upload.id}", version):
        upload.state = target_state
        upload.decided_by_id = actor.id
        upload.decided_at = now
        upload.state_changed_at = now
        upload.decision_comment = comment
        upload.purge_after = now + timedelta(days=settings.airlock_retention_days)
        session.flush()
    audit.record(
        session,
        "airlock_upload_rejected",
        actor=actor,
        object_type="upload",
        object_id=upload.id,
        source=source,
        details={"project": upload.project.code},
    )
    _tell(
        session, upload.uploaded_by, upload.project, f"upload {upload.filename} rejected", comment
    )
    return upload


def list_uploads(
    session: Session, user: User, project: Project | None = None, state: UploadState | None = None
) -> list[Upload]:
    """Uploads the user may see: of one project, or (for reviewers) of all projects."""
    stmt = select(Upload).order_by(Upload.created_at, Upload.id)
    if project is not None:
        ensure_visible(user, project)
        stmt = stmt.where(Upload.project_id == project.id)
    elif user.role not in (*REVIEWER_ROLES, Role.OPS):
        raise Forbidden("Only reviewers see the uploads of every project.")
    if state is not None:
        stmt = stmt.where(Upload.state == state)
    return list(session.scalars(stmt.limit(500)))


# --- sweep ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SweepReport:
    purged: int
    orphans: int


def sweep(session: Session, settings: Settings, now: datetime) -> SweepReport:
    """Delete the bytes of blocked and rejected uploads whose retention has passed (the row stays,
    `purged`, audited), and quarantine files no upload refers to (interrupted uploads)."""
    due = session.scalars(
        select(Upload).where(
            Upload.state.in_([UploadState.BLOCKED, UploadState.REJECTED]),
            Upload.purge_after <= now,
        )
    ).all()
    folder = quarantine_dir(settings)
    for upload in due:
        (folder / upload.quarantine_name).unlink(missing_ok=True)
        upload.state = _step(upload, "purge")
        upload.state_changed_at = now
        audit.record(
            session,
            "airlock_upload_purged",
            object_type="upload",
            object_id=upload.id,
            details={"project": upload.project.code, "sha256": upload.sha256},
        )
    session.flush()
    known = set(
        session.scalars(
            select(Upload.quarantine_name).where(
                Upload.state.in_(
                    [UploadState.PENDING_REVIEW, UploadState.BLOCKED, UploadState.REJECTED]
                )
            )
        )
    )
    orphans = 0
    for path in folder.iterdir():
        age = now.timestamp() - path.stat().st_mtime
        if path.name.endswith(".part"):
            stale = age > PART_MAX_AGE.total_seconds()
        else:
            stale = path.name not in known and age > 3600  # a live upload registers within it
        if stale:
            path.unlink(missing_ok=True)
            orphans += 1
    return SweepReport(len(due), orphans)


# --- notifications --------------------------------------------------------------------------------


def reviewers(
    session: Session, project: Project, roles: frozenset[Role] = REVIEWER_ROLES
) -> list[User]:
    people = session.scalars(
        select(User)
        .where(User.role.in_(list(roles)), User.status == UserStatus.ACTIVE)
        .order_by(User.id)
    )
    return [p for p in people if not policy.is_or_was_member(p, project)]


def notify_reviewers(
    session: Session,
    project: Project,
    what: str,
    queue: str,
    actor: User | None,
    roles: frozenset[Role] = REVIEWER_ROLES,
) -> None:
    """E-mail everyone who may review in `queue` (not members of the project, not `actor`)."""
    settings = notify.settings_of(session)
    for person in reviewers(session, project, roles):
        if actor is not None and person.id == actor.id:
            continue
        notify.enqueue(
            session,
            person.email,
            f"{notify.SUBJECT_PREFIX} Project {project.code}: {what}",
            f"Dear {person.full_name},\n\nProject {project.code}: {what}.\n\n"
            f"Review queue: {settings.effective_public_url}/review/airlock/{queue}\n",
        )


def _tell(session: Session, person: User, project: Project, what: str, text: str) -> None:
    settings = notify.settings_of(session)
    notify.enqueue(
        session,
        person.email,
        f"{notify.SUBJECT_PREFIX} Project {project.code}: {what}",
        f"Dear {person.full_name},\n\nProject {project.code}: {what}.\n\n{text}\n\n"
        f"{settings.effective_public_url}/projects/{project.code}/airlock\n",
    )


def _findings_text(findings: Iterable[Finding]) -> str:
    return "\n".join(f"- {f.check}: {f.verdict.value} ({f.detail})" for f in findings)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as reader:
        while chunk := reader.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def findings_of(upload: Upload) -> list[dict[str, Any]]:
    return list(upload.findings)


def remove_tree(path: Path) -> None:
    """Remove a read-only folder tree (tests and deletions): restore write permission first."""
    for folder, _dirs, _files in os.walk(path):
        os.chmod(folder, 0o700)
    shutil.rmtree(path, ignore_errors=True)
