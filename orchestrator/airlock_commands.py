"""`kluis airlock …`: the retention sweep (`sweep`), the control plane's health with clamd
(`scanner`) and the verification of a signed release manifest (`verify MANIFEST`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from orchestrator import airlock, airlock_egress, clamd
from orchestrator.config import Settings
from orchestrator.db import make_engine, make_sessionmaker, session_scope
from orchestrator.models import utcnow

airlock_app = typer.Typer(help="The airlock: retention sweep, scanner check, manifest checks.")


def _settings(ctx: typer.Context) -> Settings:
    settings = ctx.find_root().obj
    assert isinstance(settings, Settings)
    return settings


@airlock_app.command()
def sweep(ctx: typer.Context) -> None:
    """Delete the bytes of blocked and rejected uploads past retention, leftovers of
    interrupted uploads, and the frozen files of output requests that ended without release;
    audited. Safe to run at any time (e.g. daily)."""
    settings = _settings(ctx)
    engine = make_engine(settings)
    try:
        with session_scope(make_sessionmaker(engine)) as session:
            session.info["settings"] = settings
            report = airlock.sweep(session, settings, utcnow())
            outputs = airlock_egress.sweep_outputs(session, settings, utcnow())
    finally:
        engine.dispose()
    typer.echo(
        f"purged {report.purged} uploads, removed {report.orphans} leftover files, "
        f"deleted the frozen files of {outputs} ended output requests"
    )


@airlock_app.command()
def scanner(ctx: typer.Context) -> None:
    """Whether clamd answers on KLUIS_CLAMD_ADDRESS, else on KLUIS_CLAMD_SOCKET (exit 1 if not:
    uploads would be blocked)."""
    settings = _settings(ctx)
    where = clamd.describe(settings.clamd_endpoint)
    if clamd.ping(settings.clamd_endpoint):
        typer.echo(f"clamd answers on {where}")
        return
    typer.echo(f"error: clamd does not answer on {where}", err=True)
    raise typer.Exit(1)


@airlock_app.command()
def verify(
    ctx: typer.Context,
    manifest: Annotated[Path, typer.Argument(help="A release manifest (JSON) to verify.")],
) -> None:
    """Check a release manifest's Ed25519 signature against this control plane's key."""
    settings = _settings(ctx)
    try:
        document = json.loads(manifest.read_text())
    except (OSError, ValueError) as exc:
        typer.echo(f"error: cannot read {manifest}: {exc}", err=True)
        raise typer.Exit(2) from None
    if not isinstance(document, dict) or not airlock_egress.verify_manifest(settings, document):
        typer.echo("INVALID: the signature does not match (edited, or not signed by this key)")
        raise typer.Exit(1)
    body = document["manifest"]
    typer.echo(
        f"valid: request {body.get('request')} of project {body.get('project')}, "
        f"{len(body.get('files', []))} files, policy {body.get('policy_version')}"
    )
