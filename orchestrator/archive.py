"""The end of a project's data: an archived project's storage folder packed into the archive
area as a tar with a checksum manifest, and at deletion the archive removed and a deletion
certificate drawn up.

The steps are file work only (no Kubernetes, no writes to the database): the reconciler calls
`settle_archived` and `remove_project_data` once a project's workspace is torn down (nothing
writes to the folder any more) and records what they return; the readers at the end serve the
API, the portal and the command line. Every step is idempotent and crash-safe: files are written
under a temporary name, fsynced and renamed into place; an archive counts only once it has been
read back and matches its manifest; the live folder is removed only after that. A rerun after a
crash at any point converges to one verified archive and no live folder.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import stat
import tarfile
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import structlog
from sqlalchemy import select
from sqlalchemy.orm import Session

from orchestrator.errors import Invalid, NotFound
from orchestrator.models import DeletionCertificate, Project, ProjectArchive

log = structlog.get_logger(__name__)

CHUNK_BYTES = 1024 * 1024
MANIFEST_FORMAT = 1
TAR_SUFFIX = ".tar"
MANIFEST_SUFFIX = ".manifest.json"
PARTIAL_SUFFIX = ".partial"


class ArchiveMismatch(Exception):
    """An archive on disk does not match its manifest (or either cannot be read)."""


@dataclass(frozen=True)
class ArchiveFacts:
    """A verified archive, as recorded in `ProjectArchive` and in deletion certificates."""

    path: str
    manifest_path: str
    sha256: str  # of the tar file
    manifest_sha256: str
    size_bytes: int  # of the tar file
    content_bytes: int  # the archived files' sizes added up
    file_count: int
    source_path: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def archive_paths(archive_root: Path, project_code: str) -> tuple[Path, Path]:
    """Where a project's archive and its manifest live: `<root>/<code>.tar` and
    `<root>/<code>.manifest.json`."""
    code = _component(project_code)
    return archive_root / f"{code}{TAR_SUFFIX}", archive_root / f"{code}{MANIFEST_SUFFIX}"


def project_folder(storage_root: Path, project_code: str) -> Path:
    """The project's live folder on the project storage root."""
    return storage_root / _component(project_code)


# --- packing -------------------------------------------------------------------------------------


class _HashingWriter:
    """A write-only file object that hashes and counts what passes through to `raw`."""

    def __init__(self, raw: IO[bytes]) -> None:
        self.raw = raw
        self.hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.hash.update(data)
        self.size += len(data)
        return self.raw.write(data)

    def flush(self) -> None:
        self.raw.flush()


class _HashingReader:
    """A read-only file object that hashes what is read from `raw`."""

    def __init__(self, raw: IO[bytes]) -> None:
        self.raw = raw
        self.hash = hashlib.sha256()
        self.size = 0

    def read(self, size: int = -1) -> bytes:
        data = self.raw.read(size)
        self.hash.update(data)
        self.size += len(data)
        return data


def _entries(source: Path) -> Iterator[Path]:
    """Every path under `source`, parents before children, in a stable (sorted) order; symbolic
    links are listed, never followed. A folder that cannot be listed raises (`os.walk` would
    skip it silently, and the archive would verify without its files)."""

    def fail(error: OSError) -> None:
        raise error

    for directory, subdirs, files in os.walk(source, onerror=fail, followlinks=False):
        subdirs.sort()
        base = Path(directory)
        for name in sorted([*subdirs, *files]):
            yield base / name


def pack_project(
    source: Path, tar_path: Path, manifest_path: Path, project_code: str, now: datetime
) -> ArchiveFacts:
    """Pack `source` (which may be missing: an empty archive says so) into `tar_path`, streaming
    (never a whole file in memory), and write the manifest beside it: the SHA-256 of every file
    and of the archive. Both are written under a temporary name, fsynced and renamed; the
    manifest goes last, so a manifest always describes a complete tar."""
    tar_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    partial = tar_path.with_name(tar_path.name + PARTIAL_SUFFIX)
    files: list[dict[str, Any]] = []
    content_bytes = 0
    with _open_private(partial) as raw:
        writer = _HashingWriter(raw)
        with tarfile.open(fileobj=writer, mode="w|", format=tarfile.PAX_FORMAT) as tar:  # type: ignore[call-overload]
            if source.is_dir():
                for path in _entries(source):
                    name = path.relative_to(source).as_posix()
                    info = tar.gettarinfo(str(path), arcname=name)
                    mode = os.lstat(path).st_mode
                    if stat.S_ISREG(mode):
                        with path.open("rb") as handle:
                            reader = _HashingReader(handle)
                            tar.addfile(info, reader)
                        files.append(
                            {"path": name, "size": reader.size, "sha256": reader.hash.hexdigest()}
                        )
                        content_bytes += reader.size
                    elif stat.S_ISDIR(mode) or stat.S_ISLNK(mode):
                        tar.addfile(info)
                    else:  # sockets, fifos, devices have no place in project storage
                        raise Invalid(f"{path} is not a file, folder or link: cannot archive it")
        raw.flush()
        os.fsync(raw.fileno())
    archive_sha256 = writer.hash.hexdigest()
    manifest = {
        "format": MANIFEST_FORMAT,
        "project": project_code,
        "created_at": now.isoformat(),
        "source": str(source),
        "source_present": source.is_dir(),
        "archive": {"name": tar_path.name, "sha256": archive_sha256, "size": writer.size},
        "file_count": len(files),
        "content_bytes": content_bytes,
        "files": files,
    }
    manifest_bytes = _canonical(manifest)
    partial.replace(tar_path)
    _write_durably(manifest_path, manifest_bytes)  # under a temporary name, then renamed
    _fsync_dir(tar_path.parent)
    return ArchiveFacts(
        path=str(tar_path),
        manifest_path=str(manifest_path),
        sha256=archive_sha256,
        manifest_sha256=hashlib.sha256(manifest_bytes).hexdigest(),
        size_bytes=writer.size,
        content_bytes=content_bytes,
        file_count=len(files),
        source_path=str(source),
    )


def verify_archive(tar_path: Path, manifest_path: Path) -> ArchiveFacts:
    """Read the archive back (streaming) and check it against its manifest: the archive's
    SHA-256 and size, and every file's SHA-256 and size, no file missing or extra.
    `ArchiveMismatch` otherwise (a missing file included)."""
    try:
        manifest_bytes = manifest_path.read_bytes()
        manifest = json.loads(manifest_bytes)
        expected = {entry["path"]: entry for entry in manifest["files"]}
        seen: dict[str, tuple[int, str]] = {}
        with tar_path.open("rb") as raw:
            reader = _HashingReader(raw)
            with tarfile.open(fileobj=reader, mode="r|") as tar:  # type: ignore[call-overload]
                for member in tar:
                    if not member.isfile():
                        continue
                    handle = tar.extractfile(member)
                    assert handle is not None
                    digest = hashlib.sha256()
                    size = 0
                    while chunk := handle.read(CHUNK_BYTES):
                        digest.update(chunk)
                        size += len(chunk)
                    seen[member.name] = (size, digest.hexdigest())
            while reader.read(CHUNK_BYTES):  # the end-of-archive padding counts too
                pass
    except (OSError, ValueError, KeyError, TypeError, tarfile.TarError) as exc:
        raise ArchiveMismatch(f"{tar_path}: cannot be read back: {exc}") from exc
    archive = manifest["archive"]
    if reader.hash.hexdigest() != archive["sha256"] or reader.size != archive["size"]:
        raise ArchiveMismatch(f"{tar_path}: SHA-256 or size differs from its manifest")
    if set(seen) != set(expected):
        raise ArchiveMismatch(f"{tar_path}: its files differ from its manifest")
    for name, (size, sha256) in seen.items():
        if size != expected[name]["size"] or sha256 != expected[name]["sha256"]:
            raise ArchiveMismatch(f"{tar_path}: {name} differs from its manifest")
    return ArchiveFacts(
        path=str(tar_path),
        manifest_path=str(manifest_path),
        sha256=archive["sha256"],
        manifest_sha256=hashlib.sha256(manifest_bytes).hexdigest(),
        size_bytes=archive["size"],
        content_bytes=int(manifest["content_bytes"]),
        file_count=len(expected),
        source_path=str(manifest["source"]),
    )


# --- the lifecycle steps -------------------------------------------------------------------------


def settle_archived(
    storage_root: Path,
    archive_root: Path,
    project_code: str,
    now: datetime,
    recorded: ArchiveFacts | None = None,
) -> ArchiveFacts:
    """Converge an archived project's storage: one verified archive in the archive area and no
    live folder. Idempotent: an archive already there that verifies is kept (not repacked); one
    that does not is repacked from the live folder; the live folder is removed only after the
    archive verified. `Invalid` when the archive is damaged and the live folder already gone
    (nothing left to repack: somebody must look), or when `recorded` (the database's account)
    names a different archive than the one on disk."""
    source = project_folder(storage_root, project_code)
    tar_path, manifest_path = archive_paths(archive_root, project_code)
    facts: ArchiveFacts | None = None
    if tar_path.exists() or manifest_path.exists():
        try:
            facts = verify_archive(tar_path, manifest_path)
        except ArchiveMismatch as exc:
            if not source.is_dir():
                raise Invalid(
                    f"the archive of project {project_code} does not verify ({exc}) and its "
                    f"live folder {source} is gone: restore the archive from backup"
                ) from exc
            log.warning("archive_repacked", project=project_code, reason=str(exc))
    elif recorded is not None:
        raise Invalid(
            f"the archive of project {project_code} recorded at {recorded.path} is missing: "
            "restore it from backup"
        )
    if facts is None:
        pack_project(source, tar_path, manifest_path, project_code, now)
        facts = verify_archive(tar_path, manifest_path)  # what counts is what reads back
        log.info(
            "project_archived",
            project=project_code,
            files=facts.file_count,
            bytes=facts.size_bytes,
        )
    if recorded is not None and recorded.sha256 != facts.sha256:
        raise Invalid(
            f"the archive of project {project_code} on disk ({facts.sha256[:12]}…) is not the "
            f"one recorded ({recorded.sha256[:12]}…)"
        )
    if source.is_dir():
        _remove_tree(source)
    return facts


def remove_project_data(
    storage_root: Path, archive_root: Path, project_code: str
) -> list[dict[str, Any]]:
    """Remove a deleted project's archive, its manifest, any partial file and any live folder
    left. Idempotent; returns what this call found and removed (path, kind, bytes)."""
    tar_path, manifest_path = archive_paths(archive_root, project_code)
    partial = tar_path.with_name(tar_path.name + PARTIAL_SUFFIX)
    manifest_partial = manifest_path.with_name(manifest_path.name + PARTIAL_SUFFIX)
    removed: list[dict[str, Any]] = []
    for path, kind in (
        (tar_path, "archive"),
        (manifest_path, "manifest"),
        (partial, "partial archive"),
        (manifest_partial, "partial manifest"),
    ):
        with contextlib.suppress(FileNotFoundError):
            size = path.stat().st_size
            path.unlink()
            removed.append({"path": str(path), "kind": kind, "bytes": size})
    source = project_folder(storage_root, project_code)
    if source.is_dir():
        size = sum(path.lstat().st_size for path in _entries(source) if path.is_file())
        _remove_tree(source)
        removed.append({"path": str(source), "kind": "project folder", "bytes": size})
    if removed:
        _fsync_dir(archive_root)
    return removed


def certificate_digest(content: Mapping[str, Any]) -> str:
    """SHA-256 of a certificate's canonical JSON (what `DeletionCertificate.sha256` holds)."""
    return hashlib.sha256(_canonical(dict(content))).hexdigest()


# --- reading the records ------------------------------------------------------------------------


def find_archive(session: Session, project: Project) -> ProjectArchive | None:
    return session.scalars(
        select(ProjectArchive).where(ProjectArchive.project_id == project.id)
    ).one_or_none()


def find_certificate(session: Session, project: Project) -> DeletionCertificate | None:
    return session.scalars(
        select(DeletionCertificate).where(DeletionCertificate.project_id == project.id)
    ).one_or_none()


def get_certificate(session: Session, project: Project) -> DeletionCertificate:
    """The project's deletion certificate; `NotFound` until the reconciler has issued it."""
    certificate = find_certificate(session, project)
    if certificate is None:
        raise NotFound(f"Project {project.code} has no deletion certificate (yet).")
    return certificate


def certificate_body(certificate: DeletionCertificate) -> dict[str, Any]:
    """What a certificate's `sha256` covers."""
    return {
        "project_code": certificate.project_code,
        "project_id": certificate.project_id,
        "issued_at": certificate.issued_at.isoformat(),
        "issued_by": certificate.issued_by,
        "policy": certificate.policy,
        "removed": certificate.removed,
    }


def certificate_intact(certificate: DeletionCertificate) -> bool:
    """Whether the stored certificate still hashes to its `sha256` (no field edited since)."""
    return certificate_digest(certificate_body(certificate)) == certificate.sha256


# --- plumbing ------------------------------------------------------------------------------------


def _canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _write_durably(path: Path, data: bytes) -> None:
    partial = path.with_name(path.name + PARTIAL_SUFFIX)
    with _open_private(partial) as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    partial.replace(path)


def _open_private(path: Path) -> IO[bytes]:
    """Open for writing (truncated), readable by the owner only: an archive holds project data."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(descriptor, 0o600)  # also when the file was left by an earlier attempt
    return os.fdopen(descriptor, "wb")


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        descriptor = os.open(path, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


def _remove_tree(path: Path) -> None:
    # Folders made read-only by their owners must still go: give the owner write access first.
    def retry(function: Any, target: str, _exc: Any) -> None:
        os.chmod(os.path.dirname(target), 0o700)
        function(target)

    shutil.rmtree(path, onerror=retry)
    _fsync_dir(path.parent)


def _component(name: str) -> str:
    if not name or "/" in name or "\\" in name or "\0" in name or name.startswith("."):
        raise Invalid(f"project code {name!r} cannot name a file")
    return name
