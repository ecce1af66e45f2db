"""`kluis catalogue ...`, run in-process against a fresh migrated database per test (SQLite and
PostgreSQL) and real folders under a temporary microdata root: add, list, show, scan (one or all),
errors with exit codes, `--as`, `--json`, and the demo catalogue of `kluis demo-data`."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from catalogue_factories import write_files
from sqlalchemy import select
from sqlalchemy.orm import Session
from typer.testing import CliRunner, Result

from orchestrator.cli import app
from orchestrator.config import Settings
from orchestrator.db import make_engine, upgrade_database
from orchestrator.models import AuditEvent, Dataset, DatasetVersion

runner = CliRunner()


@pytest.fixture
def root(tmp_path: Path) -> Path:
    path = tmp_path / "microdata"
    path.mkdir()
    return path


@pytest.fixture
def cli_env(unmigrated_settings: Settings, clean_env: Path, root: Path) -> dict[str, str]:
    """Environment for `kluis` pointing at a fresh, migrated database and microdata root."""
    upgrade_database(unmigrated_settings)
    env = {
        "KLUIS_ENVIRONMENT": "development",
        "KLUIS_DATA_DIR": str(unmigrated_settings.data_dir),
        "KLUIS_MICRODATA_ROOT": str(root),
        "KLUIS_LOG_LEVEL": "WARNING",
    }
    if unmigrated_settings.database_url:
        env["KLUIS_DATABASE_URL"] = unmigrated_settings.database_url
    return env


@pytest.fixture
def db(unmigrated_settings: Settings) -> Iterator[Session]:
    """A session on the same database, to look at what the commands wrote."""
    engine = make_engine(unmigrated_settings)
    with Session(engine) as session:
        yield session
    engine.dispose()


def kluis(env: dict[str, str], *args: str) -> Result:
    return runner.invoke(app, list(args), env=env)


def ok(env: dict[str, str], *args: str) -> Result:
    result = kluis(env, *args)
    assert result.exit_code == 0, result.output
    return result


def add_persons(env: dict[str, str], *extra: str) -> Result:
    ok(env, "catalogue", "add-dataset", "persons", "--title", "Persons", "--topic", "Persons")
    return ok(
        env, "catalogue", "add-version", "PERSONS", "2024V1",
        "--location", "persons/2024V1", "--from", "2026-01-01", *extra,
    )  # fmt: skip


def test_cli_catalogue_add_scan_list_show(cli_env: dict[str, str], root: Path, db: Session) -> None:
    files = {"persons.csv": b"id\n1\n2\n", "doc/codebook.txt": b"id: person\n"}
    write_files(root / "persons" / "2024V1", files)
    add_persons(cli_env)

    scanned = ok(cli_env, "catalogue", "scan", "PERSONS", "2024V1")
    listed = ok(cli_env, "catalogue", "list")
    shown = ok(cli_env, "catalogue", "show", "persons", "--json")

    total = sum(len(data) for data in files.values())
    assert f"scanned PERSONS 2024V1: 2 files, {total} bytes" in scanned.stdout
    assert "PERSONS" in listed.stdout
    assert "persons/2024V1" in listed.stdout
    assert "1 of 1 datasets" in listed.stdout
    detail = json.loads(shown.stdout)
    assert detail["topic"] == "persons"
    assert {f["path"]: f["sha256"] for f in detail["versions"][0]["files"]} == {
        path: hashlib.sha256(data).hexdigest() for path, data in files.items()
    }
    actions = db.scalars(select(AuditEvent.action).order_by(AuditEvent.seq)).all()
    assert actions == ["dataset_created", "dataset_version_added", "dataset_version_scanned"]
    assert set(db.scalars(select(AuditEvent.actor)).all()) == {"system"}


def test_cli_catalogue_add_version_with_scan_json(cli_env: dict[str, str], root: Path) -> None:
    write_files(root / "persons" / "2024V1", {"a.csv": b"12345"})

    result = add_persons(cli_env, "--until", "2027-12-31", "--scan", "--json")

    version = json.loads(result.stdout)
    assert (version["label"], version["size_bytes"], version["available_until"]) == (
        "2024V1",
        5,
        "2027-12-31",
    )
    assert version["files"] == [
        {"path": "a.csv", "size": 5, "sha256": hashlib.sha256(b"12345").hexdigest()}
    ]


def test_cli_catalogue_list_json_and_filters(cli_env: dict[str, str]) -> None:
    add_persons(cli_env)
    ok(cli_env, "catalogue", "add-dataset", "INCOME", "--title", "Income", "--topic", "income")

    everything = json.loads(ok(cli_env, "catalogue", "list", "--json").stdout)
    income = json.loads(ok(cli_env, "catalogue", "list", "--topic", "income", "--json").stdout)
    query = json.loads(ok(cli_env, "catalogue", "list", "-q", "pers", "--json").stdout)

    assert [d["code"] for d in everything] == ["INCOME", "PERSONS"]
    assert "files" not in everything[1]["versions"][0]
    assert [d["code"] for d in income] == ["INCOME"]
    assert [d["code"] for d in query] == ["PERSONS"]


def test_cli_catalogue_update_dataset(cli_env: dict[str, str], db: Session) -> None:
    add_persons(cli_env)

    result = ok(cli_env, "catalogue", "update-dataset", "PERSONS", "--title", "Persons register")

    assert "version 2" in result.stdout
    assert db.scalars(select(Dataset.title)).one() == "Persons register"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("add-dataset", "bad-code", "--title", "T", "--topic", "t"), "dataset code"),
        (("add-dataset", "PERSONS", "--title", "T", "--topic", "t"), "exists already"),
        (
            ("add-version", "PERSONS", "V2", "--location", "/etc", "--from", "2026-01-01"),
            "absolute paths are refused",
        ),
        (
            ("add-version", "PERSONS", "V2", "--location", "../x", "--from", "2026-01-01"),
            "'..'",
        ),
        (
            ("add-version", "PERSONS", "2024v1", "--location", "p/2", "--from", "2026-01-01"),
            "has a version 2024v1 already",
        ),
        (("add-version", "NOPE", "V1", "--location", "x", "--from", "2026-01-01"), "not found"),
        (("scan", "PERSONS", "2024V1"), "the folder does not exist"),
        (("scan", "PERSONS", "1999V1"), "has no version"),
        (("show", "NOPE"), "not found"),
    ],
    ids=lambda value: value[0] if isinstance(value, tuple) else "",
)
def test_cli_catalogue_refusal_exits_1(
    cli_env: dict[str, str], db: Session, args: tuple[str, ...], message: str
) -> None:
    add_persons(cli_env)
    events_before = len(db.scalars(select(AuditEvent)).all())

    result = kluis(cli_env, "catalogue", *args)

    assert result.exit_code == 1, result.output
    assert message in result.stderr
    db.expire_all()
    assert len(db.scalars(select(AuditEvent)).all()) == events_before


@pytest.mark.parametrize(
    "args",
    [
        ("scan",),
        ("scan", "PERSONS", "2024V1", "--all"),
        ("scan", "PERSONS"),
        ("add-version", "PERSONS", "V2", "--location", "x", "--from", "31-12-2026"),
    ],
)
def test_cli_catalogue_wrong_usage_exits_2(cli_env: dict[str, str], args: tuple[str, ...]) -> None:
    result = kluis(cli_env, "catalogue", *args)

    assert result.exit_code == 2, result.output


def test_cli_catalogue_scan_special_file_lists_problems(
    cli_env: dict[str, str], root: Path, db: Session
) -> None:
    folder = write_files(root / "persons" / "2024V1", {"ok.csv": b"1"})
    os.mkfifo(folder / "pipe")
    (folder / "link").symlink_to("/etc/passwd")
    add_persons(cli_env)

    result = kluis(cli_env, "catalogue", "scan", "PERSONS", "2024V1")

    assert result.exit_code == 1
    assert "2 entries cannot be mounted safely" in result.stderr
    assert "  link: is a symbolic link" in result.stderr
    assert "  pipe: is a special file (device, FIFO or socket)" in result.stderr
    assert db.scalars(select(DatasetVersion.scanned_at)).one() is None


def test_cli_catalogue_scan_all_commits_each_and_reports_failures(
    cli_env: dict[str, str], root: Path, db: Session
) -> None:
    write_files(root / "persons" / "2024V1", {"a.csv": b"1"})
    add_persons(cli_env)
    ok(cli_env, "catalogue", "add-version", "PERSONS", "2025V1", "--location", "persons/2025V1",
       "--from", "2026-01-01")  # fmt: skip

    result = kluis(cli_env, "catalogue", "scan", "--all")
    again = kluis(cli_env, "catalogue", "scan", "--all", "--json")

    assert result.exit_code == 1
    assert "scanned PERSONS 2024V1: 1 files, 1 bytes" in result.stdout
    assert "1 of 2 unscanned versions scanned" in result.stdout
    assert "persons/2025V1" in result.stderr
    assert again.exit_code == 1
    [failure] = json.loads(again.stdout)
    assert (failure["label"], failure["problems"]) == ("2025V1", [])
    assert "does not exist" in failure["error"]
    scanned = dict(db.execute(select(DatasetVersion.label, DatasetVersion.scanned_at)).all())
    assert scanned["2024V1"] is not None
    assert scanned["2025V1"] is None


def test_cli_catalogue_scan_all_nothing_to_do(cli_env: dict[str, str]) -> None:
    result = ok(cli_env, "catalogue", "scan", "--all")

    assert "0 of 0 unscanned versions scanned" in result.stdout


def test_cli_catalogue_as_user_rights_apply(cli_env: dict[str, str], db: Session) -> None:
    ok(cli_env, "demo-data")

    refused = kluis(
        cli_env, "catalogue", "add-dataset", "NEWDATA", "--title", "T", "--topic", "t",
        "--as", "researcher1",
    )  # fmt: skip
    unknown = kluis(
        cli_env, "catalogue", "add-dataset", "NEWDATA", "--title", "T", "--topic", "t",
        "--as", "nobody",
    )  # fmt: skip
    allowed = kluis(
        cli_env, "catalogue", "add-dataset", "NEWDATA", "--title", "T", "--topic", "t",
        "--as", "steward",
    )  # fmt: skip

    assert refused.exit_code == 1
    assert "catalogue.manage" in refused.stderr
    assert unknown.exit_code == 1
    assert allowed.exit_code == 0, allowed.output
    event = db.scalars(
        select(AuditEvent).where(
            AuditEvent.action == "dataset_created",
            AuditEvent.details["code"].as_string() == "NEWDATA",
        )
    ).one()
    assert event.actor == "steward"


def test_cli_catalogue_demo_data_seeds_scanned_catalogue(
    cli_env: dict[str, str], root: Path
) -> None:
    ok(cli_env, "demo-data")
    ok(cli_env, "demo-data")

    datasets = json.loads(ok(cli_env, "catalogue", "list", "--json").stdout)

    assert sorted(d["topic"] for d in datasets) == ["companies", "income", "persons"]
    for dataset in datasets:
        [version] = dataset["versions"]
        assert version["scanned_at"] is not None
        assert version["file_count"] >= 1
        assert (root / version["location"]).is_dir()
