"""The dataset catalogue (`orchestrator/catalogue.py`) on SQLite and PostgreSQL: validation of
codes, labels and locations, uniqueness, optimistic locking, search, availability, and scans of real
folders (sizes, SHA-256, nested and empty folders; symbolic links and special files refused)."""

from __future__ import annotations

import hashlib
import os
import socket
import stat
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from catalogue_factories import make_dataset, make_version, with_microdata_root, write_files
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from orchestrator import catalogue
from orchestrator.config import Settings
from orchestrator.db import make_sessionmaker
from orchestrator.errors import Conflict, Invalid, NotFound
from orchestrator.models import AuditEvent, Dataset, DatasetVersion, utcnow

DAY = date(2026, 3, 1)


@pytest.fixture
def settings(db_settings: Settings, tmp_path: Path) -> Settings:
    return with_microdata_root(db_settings, tmp_path / "microdata")


@pytest.fixture
def root(settings: Settings) -> Path:
    assert settings.microdata_root is not None
    return settings.microdata_root


def events(session: Session, action: str, object_id: int | None = None) -> list[AuditEvent]:
    stmt = select(AuditEvent).where(AuditEvent.action == action)
    if object_id is not None:
        stmt = stmt.where(AuditEvent.object_id == str(object_id))
    return list(session.scalars(stmt.order_by(AuditEvent.seq)).all())


def add(
    session: Session, settings: Settings, dataset: Dataset, label: str = "V1", **kw: Any
) -> DatasetVersion:
    kw.setdefault("location", f"{dataset.code.lower()}/{label}")
    kw.setdefault("available_from", DAY)
    return catalogue.add_version(session, settings, dataset, label=label, **kw)


# --- datasets -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "stored"),
    [("GBAPERSOONTAB", "GBAPERSOONTAB"), ("income_2024", "INCOME_2024"), (" AB ", "AB")],
)
def test_create_dataset_code_normalised(db_session: Session, given: str, stored: str) -> None:
    dataset = catalogue.create_dataset(db_session, code=given, title="T", topic="persons")

    assert dataset.code == stored


@pytest.mark.parametrize(
    "code",
    [
        "A",
        "1ABC",
        "_ABC",
        "AB-C",
        "AB C",
        "ÄBC",
        "A" * 41,
        "A\nB",
        "AB\x00",
        "",
        "AB/C",
        "\uff21\uff22\uff23",
    ],
)
def test_create_dataset_invalid_code_refused(db_session: Session, code: str) -> None:
    with pytest.raises(Invalid) as refused:
        catalogue.create_dataset(db_session, code=code, title="T", topic="persons")

    assert refused.value.details["field"] == "code"
    assert db_session.scalar(select(func.count()).select_from(Dataset)) == 0


@pytest.mark.parametrize("second", ["PERSONS", "persons", " Persons "])
def test_create_dataset_duplicate_code_409(db_session: Session, second: str) -> None:
    catalogue.create_dataset(db_session, code="PERSONS", title="T", topic="persons")

    with pytest.raises(Conflict) as refused:
        catalogue.create_dataset(db_session, code=second, title="Other", topic="persons")

    assert refused.value.status_code == 409
    assert "PERSONS" in refused.value.message


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("title", ""),
        ("title", "   "),
        ("title", "x" * 201),
        ("title", "bad\x00title"),
        ("title", "right\u202eto-left"),
        ("topic", ""),
        ("topic", "x" * 81),
        ("topic", "in\x07come"),
        ("description", "x" * 10_001),
        ("description", "bell\x07"),
    ],
)
def test_create_dataset_invalid_text_refused(db_session: Session, field: str, value: str) -> None:
    values = {"title": "T", "topic": "persons", "description": "", field: value}

    with pytest.raises(Invalid) as refused:
        catalogue.create_dataset(db_session, code="DS", **values)

    assert refused.value.details["field"] == field


def test_create_dataset_topic_and_title_normalised(db_session: Session) -> None:
    dataset = catalogue.create_dataset(
        db_session,
        code="DS",
        title="  Persons   register ",
        topic=" Income  AND Wealth ",
        description="line one\n\tline two\n",
    )

    assert (dataset.title, dataset.topic) == ("Persons register", "income and wealth")
    assert dataset.description == "line one\n\tline two"


def test_create_dataset_audited(db_session: Session) -> None:
    dataset = catalogue.create_dataset(db_session, code="DS", title="T", topic="persons")

    [event] = events(db_session, "dataset_created", dataset.id)
    assert event.actor == "system"
    assert event.details == {"code": "DS", "title": "T", "topic": "persons"}


def test_update_dataset_changes_and_audits(db_session: Session) -> None:
    dataset = make_dataset(db_session, title="Old", topic="persons")

    catalogue.update_dataset(
        db_session, dataset, version=1, title="New", topic="Income", description="More."
    )

    assert (dataset.title, dataset.topic, dataset.description) == ("New", "income", "More.")
    assert dataset.version == 2
    [event] = events(db_session, "dataset_updated", dataset.id)
    assert event.details["changes"] == {
        "title": ["Old", "New"],
        "topic": ["persons", "income"],
        "description": "changed",
    }


def test_update_dataset_stale_version_409(db_session: Session) -> None:
    dataset = make_dataset(db_session, title="Old")
    catalogue.update_dataset(db_session, dataset, version=1, title="Second")

    with pytest.raises(Conflict) as refused:
        catalogue.update_dataset(db_session, dataset, version=1, title="Third")

    assert refused.value.details["rule"] == "optimistic_lock"
    assert dataset.title == "Second"


def test_update_dataset_concurrent_writer_409(isolated_engine: tuple[Settings, Engine]) -> None:
    _settings, engine = isolated_engine
    factory = make_sessionmaker(engine)
    with factory() as setup, setup.begin():
        dataset_id = make_dataset(setup, code="RACE").id
    with factory() as first, factory() as second:
        mine, theirs = first.get(Dataset, dataset_id), second.get(Dataset, dataset_id)
        assert mine is not None
        assert theirs is not None
        first.commit()
        second.commit()  # both have read version 1; neither holds a transaction now
        catalogue.update_dataset(first, mine, version=1, title="First wins")
        first.commit()

        with pytest.raises(Conflict) as refused:
            catalogue.update_dataset(second, theirs, version=1, title="Second loses")

    assert refused.value.details["rule"] == "optimistic_lock"


def test_update_dataset_nothing_changed_writes_nothing(db_session: Session) -> None:
    dataset = make_dataset(db_session, title="Same")

    catalogue.update_dataset(db_session, dataset, version=1, title=" Same ")

    assert dataset.version == 1
    assert events(db_session, "dataset_updated") == []


# --- versions -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "label", ["", "a b", "x" * 41, ".", "..", "...", "a/b", "v\u00e91", "v\n1", "v1\x00", "a\\b"]
)
def test_add_version_invalid_label_refused(
    db_session: Session, settings: Settings, label: str
) -> None:
    dataset = make_dataset(db_session)

    with pytest.raises(Invalid) as refused:
        add(db_session, settings, dataset, label, location="somewhere")

    assert refused.value.details["field"] == "label"


@pytest.mark.parametrize("label", ["2024V1", "v1.2", "2024-06_rev", "A" * 40])
def test_add_version_valid_label_accepted(
    db_session: Session, settings: Settings, label: str
) -> None:
    dataset = make_dataset(db_session)

    version = add(db_session, settings, dataset, label, location="somewhere")

    assert version.label == label
    assert dataset.versions == [version]


@pytest.mark.parametrize("second", ["2024V1", "2024v1"])
def test_add_version_duplicate_label_409(
    db_session: Session, settings: Settings, second: str
) -> None:
    dataset = make_dataset(db_session)
    add(db_session, settings, dataset, "2024V1", location="a")

    with pytest.raises(Conflict) as refused:
        add(db_session, settings, dataset, second, location="b")

    assert refused.value.details["field"] == "label"


def test_add_version_same_label_other_dataset_accepted(
    db_session: Session, settings: Settings
) -> None:
    first, second = make_dataset(db_session), make_dataset(db_session)
    add(db_session, settings, first, "2024V1", location="a")

    version = add(db_session, settings, second, "2024V1", location="b")

    assert version.dataset_id == second.id


@pytest.mark.parametrize(
    ("location", "rule"),
    [
        ("/etc", "absolute"),
        ("/", "absolute"),
        ("../outside", "parent_reference"),
        ("a/../../outside", "parent_reference"),
        ("a/..", "parent_reference"),
        ("a\\b", "backslash"),
        ("..\\x", "backslash"),
        ("a\x00b", "control_characters"),
        ("a\nb", "control_characters"),
        ("a\u202eb", "control_characters"),
        ("", "root_itself"),
        (".", "root_itself"),
        ("./", "root_itself"),
        ("x" * 401, "max_length"),
        ("a/" + "x" * 256, "name_length"),
    ],
)
def test_add_version_bad_location_refused(
    db_session: Session, settings: Settings, location: str, rule: str
) -> None:
    dataset = make_dataset(db_session)

    with pytest.raises(Invalid) as refused:
        add(db_session, settings, dataset, location=location)

    assert refused.value.details == {"field": "location", "rule": rule}
    assert dataset.versions == []


def test_add_version_location_normalised(db_session: Session, settings: Settings) -> None:
    dataset = make_dataset(db_session)

    version = add(db_session, settings, dataset, location=" persons//2024V1/./ ")

    assert version.location == "persons/2024V1"


def test_add_version_symlink_escaping_root_refused(
    db_session: Session, settings: Settings, root: Path, tmp_path: Path
) -> None:
    outside = write_files(tmp_path / "elsewhere", {"secret.csv": b"x"})
    (root / "link").symlink_to(outside, target_is_directory=True)
    dataset = make_dataset(db_session)

    with pytest.raises(Invalid) as refused:
        add(db_session, settings, dataset, location="link/data")

    assert refused.value.details["rule"] == "outside_root"


def test_add_version_symlink_to_root_itself_refused(
    db_session: Session, settings: Settings, root: Path
) -> None:
    (root / "everything").symlink_to(root, target_is_directory=True)
    dataset = make_dataset(db_session)

    with pytest.raises(Invalid) as refused:
        add(db_session, settings, dataset, location="everything")

    assert refused.value.details["rule"] == "outside_root"


def test_add_version_symlink_loop_refused(
    db_session: Session, settings: Settings, root: Path
) -> None:
    (root / "loop").symlink_to(root / "loop")
    dataset = make_dataset(db_session)

    with pytest.raises(Invalid) as refused:
        add(db_session, settings, dataset, location="loop/x")

    assert refused.value.details["rule"] in {"unresolvable", "outside_root"}


def test_add_version_symlink_inside_root_accepted(
    db_session: Session, settings: Settings, root: Path
) -> None:
    write_files(root / "store" / "persons", {"p.csv": b"1"})
    (root / "alias").symlink_to(root / "store", target_is_directory=True)
    dataset = make_dataset(db_session)

    version = add(db_session, settings, dataset, location="alias/persons")

    assert version.location == "alias/persons"


@pytest.mark.parametrize("second", ["shared/v1", "shared/v1/sub", "shared", "./shared//v1/"])
def test_add_version_overlapping_location_409(
    db_session: Session, settings: Settings, second: str
) -> None:
    first, other = make_dataset(db_session), make_dataset(db_session)
    add(db_session, settings, first, location="shared/v1")

    with pytest.raises(Conflict) as refused:
        add(db_session, settings, other, location=second)

    assert refused.value.details["rule"] == "overlapping_location"


def test_add_version_overlap_through_symlink_409(
    db_session: Session, settings: Settings, root: Path
) -> None:
    (root / "real" / "v1").mkdir(parents=True)
    (root / "alias").symlink_to(root / "real", target_is_directory=True)
    first, other = make_dataset(db_session), make_dataset(db_session)
    add(db_session, settings, first, location="real/v1")

    with pytest.raises(Conflict) as refused:
        add(db_session, settings, other, location="alias/v1")

    assert refused.value.details["rule"] == "overlapping_location"


def test_add_version_sibling_with_common_prefix_accepted(
    db_session: Session, settings: Settings
) -> None:
    first, other = make_dataset(db_session), make_dataset(db_session)
    add(db_session, settings, first, location="data/v1")

    version = add(db_session, settings, other, location="data/v10")

    assert version.location == "data/v10"


def test_add_version_until_before_from_refused(db_session: Session, settings: Settings) -> None:
    dataset = make_dataset(db_session)

    with pytest.raises(Invalid) as refused:
        add(db_session, settings, dataset, available_until=DAY - timedelta(days=1))

    assert refused.value.details["field"] == "available_until"


def test_add_version_audited(db_session: Session, settings: Settings) -> None:
    dataset = make_dataset(db_session, code="PERSONS")

    version = add(db_session, settings, dataset, "2024V1", location="p/2024V1", available_until=DAY)

    [event] = events(db_session, "dataset_version_added", version.id)
    assert event.details == {
        "dataset": "PERSONS",
        "label": "2024V1",
        "location": "p/2024V1",
        "available_from": DAY.isoformat(),
        "available_until": DAY.isoformat(),
    }


# --- lookups, search, availability ----------------------------------------------------------------


def test_get_dataset_any_case(db_session: Session) -> None:
    dataset = make_dataset(db_session, code="PERSONS")

    assert catalogue.get_dataset(db_session, "persons") is dataset


@pytest.mark.parametrize("code", ["NOPE", "../etc", "A\x00B", "x" * 1000, ""])
def test_get_dataset_unknown_not_found(db_session: Session, code: str) -> None:
    make_dataset(db_session, code="PERSONS")

    assert catalogue.find_dataset(db_session, code) is None
    with pytest.raises(NotFound):
        catalogue.get_dataset(db_session, code)


def test_get_dataset_version_by_label_any_case(db_session: Session) -> None:
    dataset = make_dataset(db_session)
    version = make_version(db_session, dataset, label="2024V1")

    assert catalogue.get_dataset_version(db_session, dataset, "2024v1") is version
    assert catalogue.get_dataset_version_by_id(db_session, version.id) is version


@pytest.mark.parametrize("label", ["2025V1", "..", "a\x00", ""])
def test_get_dataset_version_unknown_not_found(db_session: Session, label: str) -> None:
    dataset = make_dataset(db_session)
    make_version(db_session, dataset, label="2024V1")

    assert catalogue.find_dataset_version(db_session, dataset, label) is None
    with pytest.raises(NotFound):
        catalogue.get_dataset_version(db_session, dataset, label)


def test_get_dataset_version_of_other_dataset_not_found(db_session: Session) -> None:
    mine, other = make_dataset(db_session), make_dataset(db_session)
    make_version(db_session, other, label="2024V1")

    with pytest.raises(NotFound):
        catalogue.get_dataset_version(db_session, mine, "2024V1")


def test_get_dataset_version_by_unknown_id_not_found(db_session: Session) -> None:
    with pytest.raises(NotFound):
        catalogue.get_dataset_version_by_id(db_session, 2_000_000_000)


def test_list_datasets_search_by_code_title_topic_paginated(db_session: Session) -> None:
    make_dataset(db_session, code="GBAPERSOONTAB", title="Persons register", topic="persons")
    make_dataset(db_session, code="INPATAB", title="Personal income", topic="income")
    make_dataset(db_session, code="ABR", title="Business register", topic="companies")

    by_code, _ = catalogue.list_datasets(db_session, query="gba")
    by_title, _ = catalogue.list_datasets(db_session, query="REGISTER")
    by_topic, _ = catalogue.list_datasets(db_session, topic=" Income ")
    page, total = catalogue.list_datasets(db_session, limit=2, offset=1)

    assert [d.code for d in by_code] == ["GBAPERSOONTAB"]
    assert [d.code for d in by_title] == ["ABR", "GBAPERSOONTAB"]
    assert [d.code for d in by_topic] == ["INPATAB"]
    assert ([d.code for d in page], total) == (["GBAPERSOONTAB", "INPATAB"], 3)


@pytest.mark.parametrize("query", ["%", "_", "\\", "A%B", "x\x00%"])
def test_list_datasets_query_wildcards_literal(db_session: Session, query: str) -> None:
    make_dataset(db_session, code="AB", title="plain")

    items, total = catalogue.list_datasets(db_session, query=query)

    assert (items, total) == ([], 0)


@pytest.mark.parametrize("topic", ["", "   ", None])
def test_list_datasets_blank_topic_ignored(db_session: Session, topic: str | None) -> None:
    make_dataset(db_session, code="AB")

    _items, total = catalogue.list_datasets(db_session, topic=topic)

    assert total == 1


def test_list_versions_unscanned_only(db_session: Session) -> None:
    dataset = make_dataset(db_session, code="DS")
    scanned = make_version(db_session, dataset, label="V1")
    scanned.scanned_at = utcnow()
    pending = make_version(db_session, dataset, label="V2")

    assert catalogue.list_versions(db_session, unscanned_only=True) == [pending]
    assert catalogue.list_versions(db_session) == [scanned, pending]


@pytest.mark.parametrize(
    ("until", "on", "available"),
    [
        (None, DAY - timedelta(days=1), False),
        (None, DAY, True),
        (None, date(2100, 1, 1), True),
        (DAY + timedelta(days=10), DAY + timedelta(days=10), True),
        (DAY + timedelta(days=10), DAY + timedelta(days=11), False),
    ],
)
def test_is_available_boundaries_inclusive(
    db_session: Session, until: date | None, on: date, available: bool
) -> None:
    version = make_version(
        db_session, make_dataset(db_session), available_from=DAY, available_until=until
    )

    assert catalogue.is_available(version, on) is available


# --- scanning -------------------------------------------------------------------------------------


def test_scan_version_records_sizes_and_sha256(
    db_session: Session, settings: Settings, root: Path
) -> None:
    contents = {
        "persons.csv": b"id,year\n1,1961\n",
        "codebook/variables.csv": b"variable,description\n",
        "codebook/deeper/notes.txt": "ünïcode\n".encode(),
        "empty.csv": b"",
    }
    write_files(root / "persons" / "V1", contents)
    (root / "persons" / "V1" / "empty-folder").mkdir()
    version = add(db_session, settings, make_dataset(db_session), location="persons/V1")

    catalogue.scan_version(settings, db_session, version, now=utcnow())

    assert version.files == [
        {"path": path, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        for path, data in sorted(contents.items())
    ]
    assert version.size_bytes == sum(len(data) for data in contents.values())
    assert version.scanned_at is not None


def test_scan_version_large_file_hashed_in_chunks(
    db_session: Session, settings: Settings, root: Path
) -> None:
    data = os.urandom(catalogue.CHUNK_BYTES * 2 + 12_345)
    write_files(root / "big", {"big.bin": data})
    version = add(db_session, settings, make_dataset(db_session), location="big")

    catalogue.scan_version(settings, db_session, version)

    assert version.files == [
        {"path": "big.bin", "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    ]


def test_scan_version_empty_folder(db_session: Session, settings: Settings, root: Path) -> None:
    (root / "empty").mkdir()
    version = add(db_session, settings, make_dataset(db_session), location="empty")

    catalogue.scan_version(settings, db_session, version)

    assert (version.files, version.size_bytes) == ([], 0)
    assert version.scanned_at is not None


def test_scan_version_missing_folder_409(db_session: Session, settings: Settings) -> None:
    version = add(db_session, settings, make_dataset(db_session), location="not/there")

    with pytest.raises(Conflict) as refused:
        catalogue.scan_version(settings, db_session, version)

    assert refused.value.details["rule"] == "location_missing"
    assert "not/there" in refused.value.message
    assert version.scanned_at is None


def test_scan_version_location_is_a_file_409(
    db_session: Session, settings: Settings, root: Path
) -> None:
    (root / "file.csv").write_bytes(b"x")
    version = add(db_session, settings, make_dataset(db_session), location="file.csv")

    with pytest.raises(Conflict) as refused:
        catalogue.scan_version(settings, db_session, version)

    assert refused.value.details["rule"] == "location_not_folder"


def test_scan_version_location_is_a_fifo_409(
    db_session: Session, settings: Settings, root: Path
) -> None:
    os.mkfifo(root / "pipe")
    version = add(db_session, settings, make_dataset(db_session), location="pipe")

    with pytest.raises(Conflict) as refused:
        catalogue.scan_version(settings, db_session, version)

    assert refused.value.details["rule"] == "location_not_folder"


def test_scan_version_missing_microdata_root_409(
    db_session: Session, db_settings: Settings, tmp_path: Path
) -> None:
    settings = db_settings.model_copy(update={"microdata_root": tmp_path / "absent"})
    version = make_version(db_session, make_dataset(db_session), location="v1")

    with pytest.raises(Conflict) as refused:
        catalogue.scan_version(settings, db_session, version)

    assert refused.value.details["rule"] == "microdata_root_missing"


def test_scan_version_folder_turned_into_escaping_symlink_409(
    db_session: Session, settings: Settings, root: Path, tmp_path: Path
) -> None:
    version = add(db_session, settings, make_dataset(db_session), location="later")
    outside = write_files(tmp_path / "outside", {"secret.csv": b"secret"})
    (root / "later").symlink_to(outside, target_is_directory=True)

    with pytest.raises(Conflict) as refused:
        catalogue.scan_version(settings, db_session, version)

    assert refused.value.details["rule"] == "outside_root"
    assert version.files == []


@pytest.mark.parametrize("kind", ["file_link", "dir_link_out", "dir_link_in", "dangling"])
def test_scan_version_symlinks_inside_refused(
    db_session: Session, settings: Settings, root: Path, tmp_path: Path, kind: str
) -> None:
    folder = write_files(root / "v1", {"ok.csv": b"1"})
    outside = write_files(tmp_path / "outside", {"secret.csv": b"secret"})
    targets = {
        "file_link": outside / "secret.csv",
        "dir_link_out": outside,
        "dir_link_in": folder,
        "dangling": tmp_path / "nothing",
    }
    (folder / "link").symlink_to(targets[kind])
    version = add(db_session, settings, make_dataset(db_session), location="v1")

    with pytest.raises(Conflict) as refused:
        catalogue.scan_version(settings, db_session, version)

    assert refused.value.details["rule"] == "unsafe_entries"
    assert refused.value.details["problems"] == [{"path": "link", "problem": "is a symbolic link"}]
    assert (version.files, version.scanned_at) == ([], None)


def test_scan_version_fifo_refused(db_session: Session, settings: Settings, root: Path) -> None:
    folder = write_files(root / "v1", {"sub/ok.csv": b"1"})
    os.mkfifo(folder / "sub" / "pipe")
    version = add(db_session, settings, make_dataset(db_session), location="v1")

    with pytest.raises(Conflict) as refused:
        catalogue.scan_version(settings, db_session, version)

    assert refused.value.details["problems"] == [
        {"path": "sub/pipe", "problem": "is a special file (device, FIFO or socket)"}
    ]


def test_scan_version_socket_refused(db_session: Session, settings: Settings, root: Path) -> None:
    folder = write_files(root / "v1", {"ok.csv": b"1"})
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(folder / "sock"))
    version = add(db_session, settings, make_dataset(db_session), location="v1")

    try:
        with pytest.raises(Conflict) as refused:
            catalogue.scan_version(settings, db_session, version)
    finally:
        server.close()

    assert refused.value.details["problems"][0]["path"] == "sock"


@pytest.mark.skipif(os.geteuid() != 0, reason="creating a device node needs root")
def test_scan_version_device_refused(db_session: Session, settings: Settings, root: Path) -> None:
    folder = write_files(root / "v1", {"ok.csv": b"1"})
    os.mknod(folder / "null", 0o600 | stat.S_IFCHR, os.makedev(1, 3))  # like /dev/null
    version = add(db_session, settings, make_dataset(db_session), location="v1")

    with pytest.raises(Conflict) as refused:
        catalogue.scan_version(settings, db_session, version)

    assert refused.value.details["problems"] == [
        {"path": "null", "problem": "is a special file (device, FIFO or socket)"}
    ]


@pytest.mark.parametrize("name", [b"bad\nname.csv", b"\xff\xfe.csv", b"bidi\xe2\x80\xae.csv"])
def test_scan_version_unsafe_file_name_refused(
    db_session: Session, settings: Settings, root: Path, name: bytes
) -> None:
    folder = write_files(root / "v1", {"ok.csv": b"1"})
    with open(os.path.join(os.fsencode(folder), name), "wb") as handle:
        handle.write(b"x")
    version = add(db_session, settings, make_dataset(db_session), location="v1")

    with pytest.raises(Conflict) as refused:
        catalogue.scan_version(settings, db_session, version)

    [problem] = refused.value.details["problems"]
    assert "not valid UTF-8 or has control characters" in problem["problem"]
    assert problem["path"].isascii()


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_scan_version_unreadable_file_refused(
    db_session: Session, settings: Settings, root: Path
) -> None:
    folder = write_files(root / "v1", {"locked.csv": b"1"})
    (folder / "locked.csv").chmod(0)
    version = add(db_session, settings, make_dataset(db_session), location="v1")

    with pytest.raises(Conflict) as refused:
        catalogue.scan_version(settings, db_session, version)

    assert refused.value.details["problems"][0]["path"] == "locked.csv"


def test_scan_version_too_deep_refused(db_session: Session, settings: Settings, root: Path) -> None:
    deep = "/".join(["d"] * (catalogue.MAX_DEPTH + 1))
    write_files(root / "v1", {f"{deep}/f.csv": b"1"})
    version = add(db_session, settings, make_dataset(db_session), location="v1")

    with pytest.raises(Conflict) as refused:
        catalogue.scan_version(settings, db_session, version)

    assert "deeper" in refused.value.details["problems"][0]["problem"]


def test_scan_version_audited_with_counts_only(
    db_session: Session, settings: Settings, root: Path
) -> None:
    write_files(root / "v1", {"a.csv": b"12345", "b/c.csv": b"678"})
    dataset = make_dataset(db_session, code="PERSONS")
    version = add(db_session, settings, dataset, "V1", location="v1")

    catalogue.scan_version(settings, db_session, version)

    [event] = events(db_session, "dataset_version_scanned", version.id)
    assert event.details == {
        "dataset": "PERSONS",
        "label": "V1",
        "files": 2,
        "size_bytes": 8,
        "changed": None,
    }


def test_scan_version_again_reports_change(
    db_session: Session, settings: Settings, root: Path
) -> None:
    folder = write_files(root / "v1", {"a.csv": b"1"})
    version = add(db_session, settings, make_dataset(db_session), location="v1")
    catalogue.scan_version(settings, db_session, version)
    catalogue.scan_version(settings, db_session, version)
    (folder / "a.csv").write_bytes(b"2")

    catalogue.scan_version(settings, db_session, version)

    changed = [e.details["changed"] for e in events(db_session, "dataset_version_scanned")]
    assert changed == [None, False, True]
    assert version.files[0]["sha256"] == hashlib.sha256(b"2").hexdigest()


def test_scan_version_refused_records_nothing(
    db_session: Session, settings: Settings, root: Path
) -> None:
    folder = write_files(root / "v1", {"a.csv": b"1"})
    version = add(db_session, settings, make_dataset(db_session), location="v1")
    catalogue.scan_version(settings, db_session, version)
    before = list(version.files)
    os.mkfifo(folder / "pipe")

    with pytest.raises(Conflict):
        catalogue.scan_version(settings, db_session, version)

    assert version.files == before
    assert len(events(db_session, "dataset_version_scanned")) == 1


# --- demo data ------------------------------------------------------------------------------------


def test_seed_demo_catalogue_idempotent_and_scanned(
    db_session: Session, settings: Settings, root: Path
) -> None:
    first = catalogue.seed_demo_catalogue(db_session, settings)

    second = catalogue.seed_demo_catalogue(db_session, settings)

    assert [d.code for d in first] == [d.code for d in second]
    assert {d.topic for d in first} == {"persons", "income", "companies"}
    for dataset in first:
        [version] = dataset.versions
        assert version.scanned_at is not None
        assert version.files
        for f in version.files:
            data = (root / version.location / f["path"]).read_bytes()
            assert f["sha256"] == hashlib.sha256(data).hexdigest()
    assert len(events(db_session, "dataset_created")) == 3
    assert len(events(db_session, "dataset_version_scanned")) == 3
