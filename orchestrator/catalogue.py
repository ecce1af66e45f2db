"""The dataset catalogue: datasets, their versions under the microdata root, and the scan that
records each version's files with sizes and SHA-256 checksums. Metadata only: nothing here ever
returns what a file contains.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
import unicodedata
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload

from orchestrator import audit, db
from orchestrator.config import Settings
from orchestrator.errors import Conflict, Invalid, NotFound
from orchestrator.models import Dataset, DatasetVersion, User, utcnow

CODE_PATTERN = re.compile(r"[A-Z][A-Z0-9_]{1,39}")
LABEL_PATTERN = re.compile(r"[0-9A-Za-z._-]{1,40}")
MAX_TITLE_LENGTH = 200
MAX_TOPIC_LENGTH = 80
MAX_DESCRIPTION_LENGTH = 10_000
MAX_LOCATION_LENGTH = 400
MAX_NAME_BYTES = 255  # one path component, as most file systems allow
MAX_FILES = 100_000  # a version's file list is stored as one JSON value
MAX_DEPTH = 32
MAX_PROBLEMS = 20  # a refused scan names at most this many problems
CHUNK_BYTES = 1 << 20  # files are hashed in 1 MiB reads, never read whole into memory

# O_NONBLOCK: should a FIFO be swapped in after the type check, opening it does not hang.
_OPEN_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_OPEN_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


# --- lookups --------------------------------------------------------------------------------------


def find_dataset(session: Session, code: str) -> Dataset | None:
    """The dataset with this code (any case), or `None`; `None` too for text that is no code."""
    wanted = code.strip().upper()
    if not CODE_PATTERN.fullmatch(wanted):
        return None
    return session.scalars(select(Dataset).where(Dataset.code == wanted)).one_or_none()


def get_dataset(session: Session, code: str) -> Dataset:
    dataset = find_dataset(session, code)
    if dataset is None:
        raise NotFound("Dataset not found.")
    return dataset


def find_dataset_version(session: Session, dataset: Dataset, label: str) -> DatasetVersion | None:
    """The version of `dataset` with this label; labels are unique regardless of case."""
    if not LABEL_PATTERN.fullmatch(label):
        return None
    return session.scalars(
        select(DatasetVersion).where(
            DatasetVersion.dataset_id == dataset.id,
            func.lower(DatasetVersion.label) == label.lower(),
        )
    ).one_or_none()


def get_dataset_version(session: Session, dataset: Dataset, label: str) -> DatasetVersion:
    version = find_dataset_version(session, dataset, label)
    if version is None:
        raise NotFound(f"Dataset {dataset.code} has no version {label[:40]!r}.")
    return version


def get_dataset_version_by_id(session: Session, version_id: int) -> DatasetVersion:
    version = session.get(DatasetVersion, version_id)
    if version is None:
        raise NotFound("Dataset version not found.")
    return version


def list_datasets(
    session: Session,
    *,
    query: str | None = None,
    topic: str | None = None,
    limit: int = 50,
    offset: int = 0,
) -> tuple[list[Dataset], int]:
    """One page of datasets by code, with their versions loaded.

    `query` is a case-insensitive part of the code or the title; `topic` an exact topic (compared
    in its normal form, see `clean_topic`).
    """
    stmt = select(Dataset)
    # Control characters can match nothing (they are refused in codes and titles); PostgreSQL
    # refuses NUL outright, so they are dropped from the search text.
    needle = "".join(c for c in query or "" if not _has_control(c)).strip().lower()
    if needle:
        stmt = stmt.where(
            or_(
                func.lower(Dataset.code).contains(needle, autoescape=True),
                func.lower(Dataset.title).contains(needle, autoescape=True),
            )
        )
    if topic and topic.strip():
        stmt = stmt.where(Dataset.topic == clean_topic(topic))
    total = session.scalar(select(func.count()).select_from(stmt.subquery())) or 0
    items = session.scalars(
        stmt.options(selectinload(Dataset.versions))
        .order_by(Dataset.code)
        .limit(limit)
        .offset(offset)
    ).all()
    return list(items), total


def list_versions(session: Session, *, unscanned_only: bool = False) -> list[DatasetVersion]:
    """Every version (or only those never scanned), by dataset code and label."""
    stmt = select(DatasetVersion).join(DatasetVersion.dataset)
    if unscanned_only:
        stmt = stmt.where(DatasetVersion.scanned_at.is_(None))
    return list(session.scalars(stmt.order_by(Dataset.code, DatasetVersion.label)).all())


def is_available(version: DatasetVersion, on: date) -> bool:
    """Whether the version may be granted on day `on` (both ends inclusive; no end: open)."""
    if on < version.available_from:
        return False
    return version.available_until is None or on <= version.available_until


# --- validation -----------------------------------------------------------------------------------


def _has_control(text: str, allowed: str = "") -> bool:
    return any(unicodedata.category(c).startswith("C") and c not in allowed for c in text)


def clean_code(value: str) -> str:
    """Upper case, 2-40 characters: a letter, then letters, digits or underscores."""
    code = value.strip().upper()
    if not CODE_PATTERN.fullmatch(code):
        raise Invalid(
            "A dataset code is 2 to 40 characters: a letter, then letters A-Z, digits or "
            "underscores (such as GBAPERSOONTAB).",
            {"field": "code", "rule": "code_pattern"},
        )
    return code


def clean_label(value: str) -> str:
    """1-40 of A-Z, a-z, 0-9, `.`, `_`, `-`; not only dots (it appears in URLs and paths)."""
    label = value.strip()
    if not LABEL_PATTERN.fullmatch(label) or not label.strip("."):
        raise Invalid(
            "A version label is 1 to 40 characters of letters, digits, '.', '_' or '-' "
            "(such as 2024V1).",
            {"field": "label", "rule": "label_pattern"},
        )
    return label


def _clean_text(value: str, name: str, maximum: int) -> str:
    text = " ".join(unicodedata.normalize("NFC", value).split())
    if not text:
        raise Invalid(f"The {name} must not be empty.", {"field": name})
    if len(text) > maximum:
        raise Invalid(f"The {name} is longer than {maximum} characters.", {"field": name})
    if _has_control(text):
        raise Invalid(f"The {name} contains control characters.", {"field": name})
    return text


def clean_title(value: str) -> str:
    return _clean_text(value, "title", MAX_TITLE_LENGTH)


def clean_topic(value: str) -> str:
    """Topics are the unit of pricing, so "Income" and " income " must be one topic: NFC, single
    spaces, lower case."""
    return _clean_text(value, "topic", MAX_TOPIC_LENGTH).lower()


def clean_description(value: str) -> str:
    text = unicodedata.normalize("NFC", value).strip()
    if len(text) > MAX_DESCRIPTION_LENGTH:
        raise Invalid(
            f"The description is longer than {MAX_DESCRIPTION_LENGTH} characters.",
            {"field": "description"},
        )
    if _has_control(text, allowed="\n\t"):
        raise Invalid("The description contains control characters.", {"field": "description"})
    return text


def _bad_location(message: str, rule: str) -> Invalid:
    return Invalid(message, {"field": "location", "rule": rule})


def clean_location(value: str) -> str:
    """A folder below the microdata root, written relative to it with `/`: `persons/2024V1`.

    Refused: absolute paths, `..`, backslashes, control and format characters (also invisible
    ones such as U+202E), and the root itself. `a//b/./c/` is written as `a/b/c`.
    """
    text = value.strip()
    if len(text) > MAX_LOCATION_LENGTH:
        raise _bad_location(
            f"The location is longer than {MAX_LOCATION_LENGTH} characters.", "max_length"
        )
    if _has_control(text):
        raise _bad_location("The location contains control characters.", "control_characters")
    if "\\" in text:
        raise _bad_location("The location uses '/' between folders, never '\\'.", "backslash")
    if text.startswith("/"):
        raise _bad_location(
            "The location is relative to the microdata root; absolute paths are refused.",
            "absolute",
        )
    parts = [part for part in text.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise _bad_location("The location may not contain '..'.", "parent_reference")
    if not parts:
        raise _bad_location(
            "The location must name a folder inside the microdata root, not the root itself.",
            "root_itself",
        )
    if any(len(part.encode("utf-8")) > MAX_NAME_BYTES for part in parts):
        raise _bad_location(
            f"A folder name in the location is longer than {MAX_NAME_BYTES} bytes.", "name_length"
        )
    return "/".join(parts)


def microdata_root(settings: Settings) -> Path:
    """The microdata root with its own symbolic links resolved (containment is checked on this)."""
    return settings.effective_microdata_root.resolve()


def resolve_location(settings: Settings, location: str) -> Path:
    """The absolute folder of a location, symbolic links resolved; `Invalid` unless it lies
    strictly inside the microdata root. The folder need not exist yet."""
    relative = clean_location(location)
    root = microdata_root(settings)
    try:
        target = (root / relative).resolve()
    except (OSError, RuntimeError):  # RuntimeError: a symbolic-link loop (Python 3.11)
        raise _bad_location(
            f"The location {relative!r} cannot be resolved (a symbolic-link loop?).", "unresolvable"
        ) from None
    if target == root or not target.is_relative_to(root):
        raise _bad_location(
            f"The location {relative!r} leads out of the microdata root through a symbolic link.",
            "outside_root",
        )
    return target


def _overlaps(a: Path, b: Path) -> bool:
    return a == b or a.is_relative_to(b) or b.is_relative_to(a)


def _check_no_overlap(session: Session, settings: Settings, relative: str, target: Path) -> None:
    """A grant mounts a version's whole folder, so one version's folder may never hold, or lie
    inside, another's: granting one would also grant the other."""
    lexical = Path(relative)
    for other in session.scalars(
        select(DatasetVersion).options(selectinload(DatasetVersion.dataset))
    ):
        other_lexical = Path(other.location)
        try:
            other_target: Path | None = resolve_location(settings, other.location)
        except Invalid:
            other_target = None
        if _overlaps(lexical, other_lexical) or (
            other_target is not None and _overlaps(target, other_target)
        ):
            raise Conflict(
                f"The location {relative!r} overlaps the folder of {other.dataset.code} "
                f"{other.label} ({other.location!r}); each version needs a folder of its own.",
                {"field": "location", "rule": "overlapping_location"},
            )


def _check_period(available_from: date, available_until: date | None) -> None:
    if available_until is not None and available_until < available_from:
        raise Invalid(
            "A version cannot stop being available before it becomes available.",
            {"field": "available_until", "rule": "until_after_from"},
        )


# --- changes --------------------------------------------------------------------------------------


def create_dataset(
    session: Session,
    *,
    code: str,
    title: str,
    topic: str,
    description: str = "",
    actor: User | None = None,
    source: str = "",
) -> Dataset:
    """Validate and add a dataset (no versions yet); `actor=None` is the system."""
    code = clean_code(code)
    dataset = Dataset(
        code=code,
        title=clean_title(title),
        topic=clean_topic(topic),
        description=clean_description(description),
    )
    if find_dataset(session, code) is not None:
        raise _code_taken(code)
    session.add(dataset)
    try:
        with session.begin_nested():
            session.flush()
    except IntegrityError:  # created concurrently since our check
        raise _code_taken(code) from None
    audit.record(
        session,
        "dataset_created",
        actor=actor,
        object_type="dataset",
        object_id=dataset.id,
        source=source,
        details={"code": code, "title": dataset.title, "topic": dataset.topic},
    )
    return dataset


def _code_taken(code: str) -> Conflict:
    return Conflict(f"A dataset with code {code} exists already.", {"field": "code"})


def update_dataset(
    session: Session,
    dataset: Dataset,
    *,
    version: int,
    actor: User | None = None,
    source: str = "",
    title: str | None = None,
    topic: str | None = None,
    description: str | None = None,
) -> Dataset:
    """Change the given fields (`None` leaves one as it is); the code never changes.

    `version` is the version the caller last read: if the dataset changed since, nothing is
    written and `Conflict` says to reload (optimistic locking; a concurrent writer that commits
    between our read and our flush is caught by the ORM's version check the same way).
    """
    code = dataset.code  # read now: after a failed flush the row can no longer be loaded
    db.check_version(f"Dataset {code}", version, dataset.version)
    new: dict[str, str] = {}
    if title is not None:
        new["title"] = clean_title(title)
    if topic is not None:
        new["topic"] = clean_topic(topic)
    if description is not None:
        new["description"] = clean_description(description)
    changes: dict[str, Any] = {}
    for name, value in new.items():
        old = getattr(dataset, name)
        if value != old:
            # The description can be long: the trail records that it changed, not both texts.
            changes[name] = "changed" if name == "description" else [old, value]
            setattr(dataset, name, value)
    if not changes:
        return dataset
    with db.conflict_if_stale(f"Dataset {code}", version):
        session.flush()
    audit.record(
        session,
        "dataset_updated",
        actor=actor,
        object_type="dataset",
        object_id=dataset.id,
        source=source,
        details={"code": dataset.code, "changes": changes, "version": dataset.version},
    )
    return dataset


def add_version(
    session: Session,
    settings: Settings,
    dataset: Dataset,
    *,
    label: str,
    location: str,
    available_from: date,
    available_until: date | None = None,
    actor: User | None = None,
    source: str = "",
) -> DatasetVersion:
    """Add a version whose files live in `location` below the microdata root.

    The folder need not exist yet (`scan_version` requires it), but its path must stay inside the
    root once symbolic links are resolved, and must not hold or lie inside another version's
    folder. Labels are unique per dataset regardless of case.
    """
    label = clean_label(label)
    relative = clean_location(location)
    _check_period(available_from, available_until)
    target = resolve_location(settings, relative)
    if find_dataset_version(session, dataset, label) is not None:
        raise _label_taken(dataset, label)
    _check_no_overlap(session, settings, relative, target)
    version = DatasetVersion(
        dataset=dataset,
        label=label,
        location=relative,
        available_from=available_from,
        available_until=available_until,
        size_bytes=0,
        files=[],
    )
    session.add(version)
    try:
        with session.begin_nested():
            session.flush()
    except IntegrityError:
        raise _label_taken(dataset, label) from None
    audit.record(
        session,
        "dataset_version_added",
        actor=actor,
        object_type="dataset_version",
        object_id=version.id,
        source=source,
        details={
            "dataset": dataset.code,
            "label": label,
            "location": relative,
            "available_from": available_from.isoformat(),
            "available_until": available_until.isoformat() if available_until else None,
        },
    )
    return version


def _label_taken(dataset: Dataset, label: str) -> Conflict:
    return Conflict(f"Dataset {dataset.code} has a version {label} already.", {"field": "label"})


# --- scanning -------------------------------------------------------------------------------------


@dataclass
class _Walk:
    """What a walk of a version's folder found: regular files, or problems that refuse it."""

    files: list[dict[str, Any]] = field(default_factory=list)
    problems: list[dict[str, str]] = field(default_factory=list)

    def refuse(self, path: str, problem: str) -> None:
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append({"path": path, "problem": problem})


def _safe_name(name: str) -> bool:
    """Names must be valid UTF-8 without control characters: they are stored as JSON and shown."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:  # undecodable bytes come through as lone surrogates
        return False
    return not _has_control(name)


def _hash_file(dir_fd: int, name: str, path: str, walk: _Walk) -> None:
    try:
        fd = os.open(name, _OPEN_FILE, dir_fd=dir_fd)
    except OSError as exc:
        walk.refuse(path, f"cannot be opened ({exc.strerror})")
        return
    with os.fdopen(fd, "rb", buffering=0) as handle:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            walk.refuse(path, "is no longer a regular file")
            return
        digest, size = hashlib.sha256(), 0
        buffer = bytearray(CHUNK_BYTES)
        view = memoryview(buffer)
        while count := handle.readinto(buffer):
            digest.update(view[:count])
            size += count
    walk.files.append({"path": path, "size": size, "sha256": digest.hexdigest()})


def _walk_folder(dir_fd: int, prefix: str, depth: int, walk: _Walk) -> None:
    """Depth-first through one open folder. Nothing is followed: symbolic links and special files
    (devices, FIFOs, sockets) are problems, and every open uses `O_NOFOLLOW` relative to the
    folder's descriptor, so a path swapped for a link during the walk is refused too."""
    with os.scandir(dir_fd) as entries:
        listed = sorted(entries, key=lambda entry: entry.name)
    for entry in listed:
        if len(walk.problems) >= MAX_PROBLEMS:
            return
        if not _safe_name(entry.name):
            walk.refuse(
                prefix + ascii(entry.name), "the name is not valid UTF-8 or has control characters"
            )
            continue
        path = prefix + entry.name
        try:
            mode = entry.stat(follow_symlinks=False).st_mode
        except OSError as exc:
            walk.refuse(path, f"cannot be examined ({exc.strerror})")
            continue
        if stat.S_ISLNK(mode):
            walk.refuse(path, "is a symbolic link")
        elif stat.S_ISDIR(mode):
            if depth >= MAX_DEPTH:
                walk.refuse(path, f"is nested deeper than {MAX_DEPTH} folders")
                continue
            try:
                child = os.open(entry.name, _OPEN_DIR, dir_fd=dir_fd)
            except OSError as exc:
                walk.refuse(path, f"cannot be opened ({exc.strerror})")
                continue
            try:
                _walk_folder(child, path + "/", depth + 1, walk)
            finally:
                os.close(child)
        elif stat.S_ISREG(mode):
            if len(walk.files) >= MAX_FILES:
                walk.refuse(path, f"is beyond the limit of {MAX_FILES} files per version")
            elif not walk.problems:  # once refused, only look for further problems
                _hash_file(dir_fd, entry.name, path, walk)
        else:
            walk.refuse(path, "is a special file (device, FIFO or socket)")


def scan_folder(folder: Path) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """Every regular file below `folder` as `{"path", "size", "sha256"}` sorted by path, and the
    problems that make the folder unfit to be mounted (empty when it is fit).

    `folder` itself is opened with `O_NOFOLLOW`: pass it with its symbolic links resolved.
    Raises `OSError` when it cannot be opened as a folder.
    """
    walk = _Walk()
    top = os.open(folder, _OPEN_DIR)
    try:
        _walk_folder(top, "", 0, walk)
    finally:
        os.close(top)
    return sorted(walk.files, key=lambda f: f["path"]), walk.problems


def _scan_refused(version: DatasetVersion, message: str, rule: str, **extra: Any) -> Conflict:
    where = f"{version.dataset.code} {version.label} ({version.location!r})"
    return Conflict(f"Cannot scan {where}: {message}", {"rule": rule, **extra})


def scan_version(
    settings: Settings,
    session: Session,
    version: DatasetVersion,
    actor: User | None = None,
    *,
    source: str = "",
    now: datetime | None = None,
) -> DatasetVersion:
    """Record every regular file of the version's folder (relative path, size, SHA-256), the total
    size and the time of the scan; audited as `dataset_version_scanned` with counts only.

    All or nothing: a missing folder, a path leading out of the microdata root, a symbolic link or
    special file inside, or an unreadable file is a `Conflict` naming the problems, and nothing is
    recorded. Scanning again replaces the earlier result; the audit event says whether it changed.
    """
    now = now or utcnow()
    if not settings.effective_microdata_root.is_dir():
        raise _scan_refused(
            version,
            "the microdata root (KLUIS_MICRODATA_ROOT) does not exist or is no folder.",
            "microdata_root_missing",
        )
    try:
        folder = resolve_location(settings, version.location)
    except Invalid as exc:
        raise _scan_refused(version, exc.message, exc.details.get("rule", "location")) from None
    try:
        files, problems = scan_folder(folder)
    except FileNotFoundError:
        raise _scan_refused(version, "the folder does not exist.", "location_missing") from None
    except NotADirectoryError:
        raise _scan_refused(version, "that is not a folder.", "location_not_folder") from None
    except OSError as exc:
        raise _scan_refused(
            version, f"the folder cannot be opened ({exc.strerror}).", "location_unreadable"
        ) from None
    if problems:
        raise _scan_refused(
            version,
            f"{len(problems)} entr{'y' if len(problems) == 1 else 'ies'} cannot be mounted "
            f"safely (first: {problems[0]['path']!r} {problems[0]['problem']}).",
            "unsafe_entries",
            problems=problems,
        )
    changed = None if version.scanned_at is None else files != version.files
    version.files = files
    version.size_bytes = sum(f["size"] for f in files)
    version.scanned_at = now
    session.flush()
    audit.record(
        session,
        "dataset_version_scanned",
        actor=actor,
        object_type="dataset_version",
        object_id=version.id,
        source=source,
        details={
            "dataset": version.dataset.code,
            "label": version.label,
            "files": len(files),
            "size_bytes": version.size_bytes,
            "changed": changed,
        },
    )
    return version


# --- development ----------------------------------------------------------------------------------

DEMO_FROM = date(2025, 1, 1)
DEMO_CATALOGUE: tuple[tuple[str, str, str, str, dict[str, str]], ...] = (
    (
        "DEMO_PERSONS",
        "Demo persons register",
        "persons",
        "Synthetic persons: pseudonymised id, year of birth, sex, municipality. Not real data.",
        {
            "persons.csv": "rinpersoon,birth_year,sex,municipality\n"
            "P000001,1961,F,GM0363\nP000002,1984,M,GM0599\nP000003,1999,F,GM0344\n"
            "P000004,1972,M,GM0518\n",
            "codebook/variables.csv": "variable,description\nrinpersoon,pseudonymised person id\n"
            "birth_year,year of birth\nsex,F or M\nmunicipality,municipality code\n",
        },
    ),
    (
        "DEMO_INCOME",
        "Demo personal income",
        "income",
        "Synthetic yearly gross income per person, linkable on rinpersoon. Not real data.",
        {
            "income_2024.csv": "rinpersoon,year,gross_income_eur\nP000001,2024,41200\n"
            "P000002,2024,38950\nP000003,2024,22400\nP000004,2024,57300\n",
        },
    ),
    (
        "DEMO_COMPANIES",
        "Demo business register",
        "companies",
        "Synthetic companies: pseudonymised id, sector, size class. Not real data.",
        {
            "companies.csv": "beid,sector,size_class\nB000101,C,3\nB000102,G,1\nB000103,M,2\n",
        },
    ),
)
DEMO_LABEL = "2025V1"


def seed_demo_catalogue(session: Session, settings: Settings) -> list[Dataset]:
    """Development only, idempotent: three small synthetic datasets (topics persons, income,
    companies), one version each under `<microdata root>/demo/`, scanned. Existing files are
    left as they are."""
    datasets = []
    for code, title, topic, description, files in DEMO_CATALOGUE:
        dataset = find_dataset(session, code) or create_dataset(
            session, code=code, title=title, topic=topic, description=description
        )
        location = f"demo/{code.removeprefix('DEMO_').lower()}/{DEMO_LABEL}"
        folder = resolve_location(settings, location)
        for name, content in files.items():
            path = folder / name
            path.parent.mkdir(parents=True, exist_ok=True)
            if not path.exists():
                path.write_text(content, encoding="utf-8")
        version = find_dataset_version(session, dataset, DEMO_LABEL) or add_version(
            session,
            settings,
            dataset,
            label=DEMO_LABEL,
            location=location,
            available_from=DEMO_FROM,
        )
        if version.scanned_at is None:
            scan_version(settings, session, version)
        datasets.append(dataset)
    return datasets
