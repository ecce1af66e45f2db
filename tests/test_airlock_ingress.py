"""Airlock ingress against a real clamd and real files: clean files reach `import/` read-only with
their checksum only after a reviewer who is not in the project approves; hostile uploads
(traversal, links, device files, bombs, nested archives, odd names, EICAR, a scanner that is down,
huge files) are blocked and never reach `import/`; retention deletes rejected bytes; an upload
interrupted mid-stream leaves nothing that counts and is cleaned up by the sweep."""

from __future__ import annotations

import io
import os
import stat
import tarfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from airlock_helpers import (
    EICAR,
    airlock_settings,
    clamd_socket,  # noqa: F401 (session fixture)
    start_clamd,
    tar_bytes,
    tar_member,
    zip_bytes,
)
from project_factories import make_project, make_researcher, make_staff
from sqlalchemy import select
from sqlalchemy.orm import Session

from orchestrator import airlock
from orchestrator.airlock_models import Upload, UploadState
from orchestrator.config import Settings
from orchestrator.errors import Conflict, Forbidden, Invalid, NotFound
from orchestrator.models import (
    AuditEvent,
    MemberRole,
    OutboxMessage,
    ProjectMember,
    ProjectState,
    Role,
)

CSV = b"region,count\nNorth,120\nSouth,85\n"


@pytest.fixture
def settings(db_settings: Settings, tmp_path: Path, clamd_socket: Path) -> Settings:  # noqa: F811
    return airlock_settings(db_settings, tmp_path, clamd_socket)


@pytest.fixture
def world(db_session: Session, settings: Settings) -> dict[str, object]:
    db_session.info["settings"] = settings
    member = make_researcher(db_session)
    project = make_project(db_session, state=ProjectState.ACTIVE, members=[member])
    return {
        "project": project,
        "member": member,
        "checker": make_staff(db_session, Role.OUTPUT_CHECKER),
        "steward": make_staff(db_session, Role.DATA_STEWARD),
    }


def upload(
    session: Session,
    settings: Settings,
    world: dict[str, object],
    data: bytes,
    name: str = "regions.csv",
) -> Upload:
    received = airlock.receive_file(settings, io.BytesIO(data))
    return airlock.register_upload(
        session,
        settings,
        world["member"],
        world["project"],
        received,
        name,  # type: ignore[arg-type]
        "Survey by our institute under consent",
        datetime.now(UTC),
    )


def import_files(settings: Settings, world: dict[str, object]) -> list[Path]:
    folder = airlock.project_area(settings, world["project"], "import")  # type: ignore[arg-type]
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def test_upload_clean_csv_approved_lands_read_only_with_checksum(db_session, settings, world):
    row = upload(db_session, settings, world, CSV)
    assert row.state is UploadState.PENDING_REVIEW
    assert {f["check"]: f["verdict"] for f in row.findings} == {"type": "pass", "malware": "pass"}
    assert import_files(settings, world) == []

    airlock.approve_upload(
        db_session, settings, world["checker"], row, row.version, datetime.now(UTC)
    )

    assert row.state is UploadState.APPROVED
    placed = airlock.project_area(settings, world["project"], "import") / row.import_path
    assert placed.read_bytes() == CSV
    assert stat.S_IMODE(placed.stat().st_mode) == 0o440
    assert stat.S_IMODE(placed.parent.stat().st_mode) == 0o550
    assert (placed.parent / "regions.csv.sha256").read_text().split()[0] == row.sha256
    assert not (airlock.quarantine_dir(settings) / row.quarantine_name).exists()
    actions = db_session.scalars(
        select(AuditEvent.action).where(
            AuditEvent.object_type == "upload", AuditEvent.object_id == str(row.id)
        )
    ).all()
    assert actions == ["airlock_upload_received", "airlock_upload_approved"]
    airlock.remove_tree(airlock.project_area(settings, world["project"], "import"))


def test_upload_eicar_is_blocked_by_clamd(db_session, settings, world):
    row = upload(db_session, settings, world, EICAR, "notes.txt")
    assert row.state is UploadState.BLOCKED
    malware = next(f for f in row.findings if f["check"] == "malware")
    assert malware["verdict"] == "fail"
    assert "Kluis.Test.EICAR" in malware["detail"]
    with pytest.raises(Conflict):
        airlock.approve_upload(db_session, settings, world["checker"], row, None, datetime.now(UTC))
    assert import_files(settings, world) == []


def test_upload_eicar_inside_zip_is_blocked(db_session, settings, world):
    row = upload(db_session, settings, world, zip_bytes({"a/eicar.txt": EICAR}), "data.zip")
    assert row.state is UploadState.BLOCKED


def test_upload_scanner_down_fails_closed(db_session, settings, world, tmp_path):
    down = settings.model_copy(update={"clamd_socket": tmp_path / "no-such.sock"})
    row = upload(db_session, down, world, CSV)
    assert row.state is UploadState.BLOCKED
    malware = next(f for f in row.findings if f["check"] == "malware")
    assert malware["verdict"] == "fail"
    assert "unavailable" in malware["detail"]


def test_upload_scanner_timeout_fails_closed(db_session, settings, world, tmp_path):
    import socket
    import threading

    path = tmp_path / "silent.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)
    accepted: list[socket.socket] = []
    thread = threading.Thread(target=lambda: accepted.append(server.accept()[0]), daemon=True)
    thread.start()
    slow = settings.model_copy(update={"clamd_socket": path, "clamd_timeout_seconds": 0.5})
    try:
        row = upload(db_session, slow, world, CSV)
    finally:
        server.close()
        for conn in accepted:
            conn.close()
    assert row.state is UploadState.BLOCKED
    assert "timed out" in next(f for f in row.findings if f["check"] == "malware")["detail"]


@pytest.mark.parametrize(
    ("archive", "expected"),
    [
        (zip_bytes({"../../etc/passwd": b"x"}), "'..'"),
        (zip_bytes({"/etc/cron.d/evil": b"x"}), "absolute path"),
        (zip_bytes({"C:\\win\\evil.txt": b"x"}), "absolute path"),
        (zip_bytes({"a\\..\\b.txt": b"x"}), "backslash"),
        (zip_bytes({"report\u202etxt.exe": b"x"}), "bidirectional"),
        (zip_bytes({"line\nbreak.txt": b"x"}), "control"),
        (zip_bytes({"ok.txt": b"x"}, symlinks={"link": "/etc/passwd"}), "symbolic link"),
        (zip_bytes({"inner.zip": zip_bytes({"a.txt": b"x"})}), "nested archive"),
        (zip_bytes({"prog": b"\x7fELF\x02\x01\x01" + b"\0" * 200}), "not allowed"),
    ],
)
def test_upload_hostile_zip_is_blocked(db_session, settings, world, archive, expected):
    row = upload(db_session, settings, world, archive, "bundle.zip")
    assert row.state is UploadState.BLOCKED
    finding = next(f for f in row.findings if f["check"] == "archive")
    assert finding["verdict"] == "fail"
    assert expected in finding["detail"]
    assert import_files(settings, world) == []


@pytest.mark.parametrize(
    ("members", "expected"),
    [
        ([tar_member("link", tarfile.SYMTYPE, "/etc/shadow")], "link"),
        ([tar_member("hard", tarfile.LNKTYPE, "x")], "link"),
        ([tar_member("dev", tarfile.CHRTYPE)], "device"),
        ([tar_member("fifo", tarfile.FIFOTYPE)], "device"),
        ([tar_member("../escape.txt")], "'..'"),
        ([tar_member("/abs.txt")], "absolute"),
    ],
)
def test_upload_hostile_tar_is_blocked(db_session, settings, world, members, expected):
    data = {m.name: b"x" for m in members if m.type == tarfile.REGTYPE}
    row = upload(db_session, settings, world, tar_bytes(members, data), "bundle.tar.gz")
    assert row.state is UploadState.BLOCKED
    finding = next(f for f in row.findings if f["check"] == "archive")
    assert expected in finding["detail"]


def test_upload_zip_bomb_is_blocked(db_session, settings, world):
    bomb = zip_bytes({"zeros.txt": b"0" * (20 * 1024 * 1024)})
    assert len(bomb) < 100_000
    row = upload(db_session, settings, world, bomb, "bomb.zip")
    assert row.state is UploadState.BLOCKED
    assert "archive bomb" in next(f for f in row.findings if f["check"] == "archive")["detail"]


def test_upload_expanded_size_and_entry_count_limits(db_session, settings, world):
    small = settings.model_copy(
        update={"airlock_max_expanded_bytes": 1000, "airlock_max_archive_entries": 3}
    )
    big = upload(
        db_session, small, world, zip_bytes({"a.txt": os.urandom(800).hex().encode()}), "big.zip"
    )
    many = upload(
        db_session, small, world, zip_bytes({f"{i}.txt": b"x" for i in range(5)}), "many.zip"
    )
    assert big.state is UploadState.BLOCKED
    assert many.state is UploadState.BLOCKED
    assert "entries" in next(f for f in many.findings if f["check"] == "archive")["detail"]


def test_upload_clean_zip_passes(db_session, settings, world):
    row = upload(
        db_session, settings, world, zip_bytes({"a/b.csv": CSV, "c.txt": b"hi"}), "bundle.zip"
    )
    assert row.state is UploadState.PENDING_REVIEW


def test_upload_executable_type_is_blocked(db_session, settings, world):
    row = upload(db_session, settings, world, Path("/usr/bin/true").read_bytes(), "tool.csv")
    assert row.state is UploadState.BLOCKED
    assert next(f for f in row.findings if f["check"] == "type")["verdict"] == "fail"


@pytest.mark.parametrize(
    "name", ["../x.csv", "a/b.csv", ".hidden", "evil\u202etxt.csv", "tab\there.csv", "", "x" * 300]
)
def test_upload_bad_filename_refused_before_storing(db_session, settings, world, name):
    with pytest.raises(Invalid):
        airlock.check_upload_request(
            db_session, settings, world["member"], world["project"], name, "basis", True
        )


def test_upload_needs_statement_and_legal_basis(db_session, settings, world):
    with pytest.raises(Invalid):
        airlock.check_upload_request(
            db_session, settings, world["member"], world["project"], "a.csv", "basis", False
        )
    with pytest.raises(Invalid):
        airlock.check_upload_request(
            db_session, settings, world["member"], world["project"], "a.csv", "  ", True
        )


def test_upload_too_large_leaves_no_file(settings):
    small = settings.model_copy(update={"airlock_max_upload_bytes": 1000})
    with pytest.raises(airlock.TooLarge):
        airlock.receive_file(small, io.BytesIO(b"x" * 5000))
    assert list(airlock.quarantine_dir(small).iterdir()) == []


def test_upload_open_count_limit(db_session, settings, world):
    limited = settings.model_copy(update={"airlock_max_open_uploads": 1})
    upload(db_session, limited, world, CSV)
    with pytest.raises(Conflict):
        upload(db_session, limited, world, CSV, "second.csv")


def test_upload_by_outsider_or_in_inactive_project_refused(db_session, settings, world):
    outsider = make_researcher(db_session)
    with pytest.raises(NotFound):
        airlock.authorize_upload(outsider, world["project"])
    frozen = make_project(db_session, state=ProjectState.FROZEN, lead=world["member"])
    with pytest.raises(Conflict):
        airlock.authorize_upload(world["member"], frozen)
    with pytest.raises(Forbidden):
        airlock.authorize_upload(world["checker"], world["project"])


def test_review_segregation_of_duties(db_session, settings, world):
    row = upload(db_session, settings, world, CSV)
    now = datetime.now(UTC)
    with pytest.raises(Forbidden):  # a researcher
        airlock.approve_upload(db_session, settings, world["member"], row, None, now)
    steward_member = make_staff(db_session, Role.DATA_STEWARD)
    world["project"].members.append(  # type: ignore[attr-defined]
        ProjectMember(user_id=steward_member.id, role=MemberRole.RESEARCHER)
    )
    db_session.flush()
    with pytest.raises(Forbidden):  # a member of the project, even as staff
        airlock.approve_upload(db_session, settings, steward_member, row, None, now)
    with pytest.raises(Conflict):  # stale version
        airlock.approve_upload(db_session, settings, world["steward"], row, row.version + 1, now)
    assert row.state is UploadState.PENDING_REVIEW
    assert import_files(settings, world) == []


def test_steward_upload_cannot_be_approved_by_same_steward(db_session, settings, world):
    steward = world["steward"]
    received = airlock.receive_file(settings, io.BytesIO(CSV))
    row = airlock.register_upload(
        db_session,
        settings,
        steward,
        world["project"],
        received,
        "s.csv",
        "Public register",
        datetime.now(UTC),
    )
    with pytest.raises(Forbidden):
        airlock.approve_upload(db_session, settings, steward, row, None, datetime.now(UTC))


def test_reject_then_sweep_after_retention_deletes_bytes(db_session, settings, world):
    row = upload(db_session, settings, world, CSV)
    now = datetime.now(UTC)
    with pytest.raises(Invalid):
        airlock.reject_upload(db_session, settings, world["checker"], row, None, " ", now)
    airlock.reject_upload(db_session, settings, world["checker"], row, None, "Not needed", now)
    quarantined = airlock.quarantine_dir(settings) / row.quarantine_name
    assert quarantined.exists()
    assert airlock.sweep(db_session, settings, now + timedelta(days=1)).purged == 0
    report = airlock.sweep(db_session, settings, now + timedelta(days=31))
    assert report.purged == 1
    assert row.state is UploadState.PURGED
    assert not quarantined.exists()
    mails = db_session.scalars(select(OutboxMessage.subject)).all()
    assert any("rejected" in s for s in mails)


def test_interrupted_upload_leaves_only_a_part_file_that_the_sweep_removes(
    db_session, settings, world
):
    writer = airlock.QuarantineWriter(settings)
    writer.write(b"half of a file")  # the process dies here: no finish, no row
    writer._file.close()
    assert writer.part.exists()
    assert db_session.scalars(select(Upload)).all() == []
    later = datetime.now(UTC) + timedelta(days=2)
    assert airlock.sweep(db_session, settings, later).orphans == 1
    assert not writer.part.exists()


def test_approval_redone_after_crash_between_copy_and_commit(db_session, settings, world):
    row = upload(db_session, settings, world, CSV)
    relative = airlock.place_in_import(settings, row)  # the copy happened, the commit did not
    airlock.approve_upload(db_session, settings, world["checker"], row, None, datetime.now(UTC))
    assert row.import_path == relative
    assert len(import_files(settings, world)) == 2  # the file and its .sha256, once
    airlock.remove_tree(airlock.project_area(settings, world["project"], "import"))


@pytest.fixture(scope="module")
def small_clamd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A second clamd that refuses streams over 1 MiB (its StreamMaxLength)."""
    process, sock = start_clamd(tmp_path_factory.mktemp("small-clamd"), stream_max="1M")
    yield sock
    process.terminate()
    process.wait(timeout=10)


def test_upload_larger_than_clamds_stream_limit_is_blocked_with_its_reason(
    db_session, settings, world, small_clamd
):
    limited = settings.model_copy(update={"clamd_socket": small_clamd})
    row = upload(db_session, limited, world, b"region,count\n" + b"North,120\n" * 300_000)
    assert row.state is UploadState.BLOCKED
    malware = next(f for f in row.findings if f["check"] == "malware")
    assert malware["verdict"] == "fail"
    assert "INSTREAM size limit exceeded" in malware["detail"]


@pytest.mark.parametrize("state", list(UploadState))
@pytest.mark.parametrize("action", ["approve", "reject"])
def test_upload_every_state_action_role(db_session, settings, world, state, action):
    passed = ("text/csv", [airlock.Finding("type", airlock.Verdict.PASS, "text/csv")])
    received = airlock.receive_file(settings, io.BytesIO(CSV))
    row = airlock.register_upload(
        db_session,
        settings,
        world["member"],
        world["project"],
        received,
        "r.csv",
        "basis",
        datetime.now(UTC),
        checks=passed,
    )
    row.state = state
    db_session.flush()
    people = {
        "uploader": world["member"],
        "lead": world["project"].lead,
        "outsider": make_researcher(db_session),
        "checker": world["checker"],
        "steward": world["steward"],
        "ops": make_staff(db_session, Role.OPS),
    }
    now = datetime.now(UTC)

    def take(person: object) -> None:
        if action == "approve":
            airlock.approve_upload(db_session, settings, person, row, None, now)
        else:
            airlock.reject_upload(db_session, settings, person, row, None, "no", now)

    for who, person in people.items():
        if who == "outsider":
            expected: type[Exception] | None = NotFound
        elif who not in ("checker", "steward"):
            expected = Forbidden
        elif state is not UploadState.PENDING_REVIEW:
            expected = Conflict
        else:
            expected = None
        with db_session.begin_nested() as attempt:
            if expected is None:
                take(person)
            else:
                with pytest.raises(expected):
                    take(person)
            attempt.rollback()
        db_session.expire_all()
    airlock.remove_tree(airlock.project_area(settings, world["project"], "import"))
