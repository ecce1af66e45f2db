"""`kluis catalogue ...`: the dataset catalogue from the shell: list and show datasets, add datasets
and versions, and scan versions' folders under the microdata root. Like the other administration
commands, they act as "system" in the audit trail unless `--as USERNAME` names a data steward.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from datetime import date
from typing import Annotated, Any, NoReturn

import typer
from sqlalchemy.orm import Session

from orchestrator import accounts, catalogue, policy
from orchestrator.config import Settings
from orchestrator.db import make_engine, make_sessionmaker, session_scope
from orchestrator.errors import KluisError
from orchestrator.models import Dataset, DatasetVersion, User, utcnow
from orchestrator.policy import Action

catalogue_app = typer.Typer(
    help="The dataset catalogue: datasets, versions, scans of their folders.",
    no_args_is_help=True,
)

AsOption = Annotated[
    str | None,
    typer.Option("--as", help="Act as this user (their rights apply; audited under their name)."),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]

# --- plumbing -------------------------------------------------------------------------------------


def _settings(ctx: typer.Context) -> Settings:
    settings = ctx.find_root().obj
    assert isinstance(settings, Settings)
    return settings


def _fail(message: str, code: int = 1) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _report(exc: KluisError) -> None:
    typer.echo(f"error: {exc.message}", err=True)
    for problem in exc.details.get("problems", []):
        typer.echo(f"  {problem['path']}: {problem['problem']}", err=True)


@contextlib.contextmanager
def _transaction(settings: Settings) -> Iterator[Session]:
    """One unit of work: committed when the block succeeds; a `KluisError` is reported (with the
    problems a refused scan lists) as exit code 1, and nothing is written."""
    engine = make_engine(settings)
    try:
        with session_scope(make_sessionmaker(engine)) as session:
            yield session
    except KluisError as exc:
        _report(exc)
        raise typer.Exit(1) from None
    finally:
        engine.dispose()


def _actor(session: Session, username: str | None, action: Action) -> User | None:
    """`None` (the system) without `--as`; else that active user, whose rights must allow it."""
    if username is None:
        return None
    actor = accounts.find_user_by_username(session, username)
    if actor is None:
        _fail(f"no user {username!r} (--as)")
    policy.authorize(actor, action)
    return actor


def _day(value: str | None, option: str) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        _fail(f"{option} must be a date like 2026-01-31", 2)


def _print_json(value: Any) -> None:
    typer.echo(json.dumps(value, indent=2, ensure_ascii=False))


def version_json(version: DatasetVersion, *, with_files: bool) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": version.id,
        "label": version.label,
        "location": version.location,
        "size_bytes": version.size_bytes,
        "file_count": len(version.files),
        "scanned_at": version.scanned_at.isoformat() if version.scanned_at else None,
        "available_from": version.available_from.isoformat(),
        "available_until": (
            version.available_until.isoformat() if version.available_until else None
        ),
        "available": catalogue.is_available(version, utcnow().date()),
    }
    if with_files:
        data["files"] = list(version.files)
    return data


def dataset_json(dataset: Dataset, *, with_files: bool) -> dict[str, Any]:
    return {
        "id": dataset.id,
        "code": dataset.code,
        "title": dataset.title,
        "topic": dataset.topic,
        "description": dataset.description,
        "version": dataset.version,
        "versions": [version_json(v, with_files=with_files) for v in dataset.versions],
    }


def _version_line(version: DatasetVersion) -> str:
    scanned = (
        f"{len(version.files)} files, {version.size_bytes} bytes, scanned "
        f"{version.scanned_at:%Y-%m-%d %H:%M}Z"
        if version.scanned_at
        else "not scanned"
    )
    until = version.available_until.isoformat() if version.available_until else "open-ended"
    return (
        f"  {version.label:<12} {version.location:<40} {version.available_from}..{until}  {scanned}"
    )


# --- commands -------------------------------------------------------------------------------------


@catalogue_app.command("list")
def catalogue_list(
    ctx: typer.Context,
    topic: Annotated[str | None, typer.Option(help="Only this topic.")] = None,
    query: Annotated[
        str | None, typer.Option("--query", "-q", help="Part of the code or title.")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000)] = 1000,
    as_json: JsonOption = False,
) -> None:
    """List datasets with their versions: location, availability, scan."""
    with _transaction(_settings(ctx)) as session:
        items, total = catalogue.list_datasets(session, query=query, topic=topic, limit=limit)
        if as_json:
            _print_json([dataset_json(d, with_files=False) for d in items])
            return
        for dataset in items:
            typer.echo(f"{dataset.code:<24} {dataset.topic:<16} {dataset.title}")
            for version in dataset.versions:
                typer.echo(_version_line(version))
        typer.echo(f"{len(items)} of {total} datasets")


@catalogue_app.command("show")
def catalogue_show(ctx: typer.Context, code: str, as_json: JsonOption = False) -> None:
    """One dataset with its versions and their files (path, size, SHA-256)."""
    with _transaction(_settings(ctx)) as session:
        dataset = catalogue.get_dataset(session, code)
        if as_json:
            _print_json(dataset_json(dataset, with_files=True))
            return
        typer.echo(f"{dataset.code}: {dataset.title} (topic {dataset.topic})")
        if dataset.description:
            typer.echo(dataset.description)
        for version in dataset.versions:
            typer.echo(_version_line(version))
            for f in version.files:
                typer.echo(f"    {f['sha256']}  {f['size']:>12}  {f['path']}")


@catalogue_app.command("add-dataset")
def catalogue_add_dataset(
    ctx: typer.Context,
    code: Annotated[str, typer.Argument(help="Upper case, such as GBAPERSOONTAB.")],
    title: Annotated[str, typer.Option(help="Title.")],
    topic: Annotated[str, typer.Option(help="Topic (the unit of pricing), such as persons.")],
    description: Annotated[str, typer.Option(help="Description.")] = "",
    as_user: AsOption = None,
    as_json: JsonOption = False,
) -> None:
    """Add a dataset to the catalogue (its versions come with add-version)."""
    with _transaction(_settings(ctx)) as session:
        actor = _actor(session, as_user, Action.CATALOGUE_MANAGE)
        dataset = catalogue.create_dataset(
            session, code=code, title=title, topic=topic, description=description, actor=actor
        )
        if as_json:
            _print_json(dataset_json(dataset, with_files=False))
        else:
            typer.echo(f"added dataset {dataset.code} (topic {dataset.topic})")


@catalogue_app.command("update-dataset")
def catalogue_update_dataset(
    ctx: typer.Context,
    code: str,
    title: Annotated[str | None, typer.Option(help="New title.")] = None,
    topic: Annotated[str | None, typer.Option(help="New topic.")] = None,
    description: Annotated[str | None, typer.Option(help="New description.")] = None,
    as_user: AsOption = None,
) -> None:
    """Change a dataset's title, topic or description; only the options given change."""
    with _transaction(_settings(ctx)) as session:
        actor = _actor(session, as_user, Action.CATALOGUE_MANAGE)
        dataset = catalogue.get_dataset(session, code)
        catalogue.update_dataset(
            session,
            dataset,
            version=dataset.version,
            actor=actor,
            title=title,
            topic=topic,
            description=description,
        )
        typer.echo(f"dataset {dataset.code} is at version {dataset.version}")


@catalogue_app.command("add-version")
def catalogue_add_version(
    ctx: typer.Context,
    code: str,
    label: Annotated[str, typer.Argument(help="Such as 2024V1.")],
    location: Annotated[
        str, typer.Option(help="Folder relative to the microdata root, such as persons/2024V1.")
    ],
    available_from: Annotated[str, typer.Option("--from", help="First day it may be granted.")],
    available_until: Annotated[
        str | None, typer.Option("--until", help="Last day it may be granted [default: open].")
    ] = None,
    scan: Annotated[bool, typer.Option(help="Scan its folder at once.")] = False,
    as_user: AsOption = None,
    as_json: JsonOption = False,
) -> None:
    """Add a version of a dataset whose files are in a folder below the microdata root."""
    settings = _settings(ctx)
    start = _day(available_from, "--from")
    assert start is not None
    end = _day(available_until, "--until")
    with _transaction(settings) as session:
        actor = _actor(session, as_user, Action.CATALOGUE_MANAGE)
        dataset = catalogue.get_dataset(session, code)
        version = catalogue.add_version(
            session,
            settings,
            dataset,
            label=label,
            location=location,
            available_from=start,
            available_until=end,
            actor=actor,
        )
        if scan:
            catalogue.scan_version(settings, session, version, actor)
        if as_json:
            _print_json(version_json(version, with_files=scan))
        else:
            typer.echo(f"added {dataset.code} {version.label} in {version.location}")
            if scan:
                typer.echo(_scanned_line(version))


def _scanned_line(version: DatasetVersion) -> str:
    return (
        f"scanned {version.dataset.code} {version.label}: {len(version.files)} files, "
        f"{version.size_bytes} bytes"
    )


@catalogue_app.command("scan")
def catalogue_scan(
    ctx: typer.Context,
    code: Annotated[str | None, typer.Argument(help="Dataset code.")] = None,
    label: Annotated[str | None, typer.Argument(help="Version label.")] = None,
    scan_all: Annotated[
        bool, typer.Option("--all", help="Every version not scanned yet, each on its own.")
    ] = False,
    as_user: AsOption = None,
    as_json: JsonOption = False,
) -> None:
    """Record the files of a version's folder: relative path, size and SHA-256 of each.

    Refused (exit 1, nothing recorded) when the folder is missing, leads out of the microdata
    root, or holds symbolic links or special files. With --all, each version is scanned and
    committed on its own; the failures are listed and the exit code is 1 if there were any.
    """
    settings = _settings(ctx)
    if scan_all == (code is not None):
        _fail("give CODE and LABEL, or --all", 2)
    if not scan_all:
        if label is None:
            _fail("give the version's LABEL after the CODE", 2)
        with _transaction(settings) as session:
            actor = _actor(session, as_user, Action.CATALOGUE_MANAGE)
            dataset = catalogue.get_dataset(session, code or "")
            version = catalogue.get_dataset_version(session, dataset, label)
            catalogue.scan_version(settings, session, version, actor)
            if as_json:
                _print_json(version_json(version, with_files=True))
            else:
                typer.echo(_scanned_line(version))
        return
    _scan_all(settings, as_user, as_json)


def _scan_all(settings: Settings, as_user: str | None, as_json: bool) -> None:
    engine = make_engine(settings)
    factory = make_sessionmaker(engine)
    results: list[dict[str, Any]] = []
    try:
        with session_scope(factory) as session:
            _actor(session, as_user, Action.CATALOGUE_MANAGE)
            pending = [
                (v.id, v.dataset.code, v.label)
                for v in catalogue.list_versions(session, unscanned_only=True)
            ]
        for version_id, code, label in pending:
            try:
                with session_scope(factory) as session:
                    actor = _actor(session, as_user, Action.CATALOGUE_MANAGE)
                    version = catalogue.get_dataset_version_by_id(session, version_id)
                    catalogue.scan_version(settings, session, version, actor)
                    results.append({"dataset": code, **version_json(version, with_files=False)})
                    if not as_json:
                        typer.echo(_scanned_line(version))
            except KluisError as exc:  # this version stays unscanned; the others go on
                _report(exc)
                results.append(
                    {
                        "dataset": code,
                        "label": label,
                        "error": exc.message,
                        "problems": exc.details.get("problems", []),
                    }
                )
    finally:
        engine.dispose()
    failed = sum(1 for r in results if "error" in r)
    if as_json:
        _print_json(results)
    else:
        typer.echo(f"{len(pending) - failed} of {len(pending)} unscanned versions scanned")
    if failed:
        raise typer.Exit(1)
