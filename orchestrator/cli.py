"""The `kluis` command line: serve the API, migrate the database, and run a development stack."""

from __future__ import annotations

import gc
from typing import Annotated

import typer
import uvicorn
from pydantic import ValidationError
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from orchestrator import __version__, admin_commands, reconcile_commands, schedule_commands
from orchestrator.airlock_commands import airlock_app
from orchestrator.api.app import DOCS_URL, create_app
from orchestrator.catalogue_commands import catalogue_app
from orchestrator.config import Environment, Settings, load_settings
from orchestrator.db import script_heads, upgrade_database
from orchestrator.devcluster.cluster import ClusterError, LocalCluster
from orchestrator.devcluster.commands import cluster_app
from orchestrator.hub_commands import dev_hub_settings, hub_app, running_dev_hub
from orchestrator.log import configure_logging
from orchestrator.project_commands import projects_app
from orchestrator.workspace_commands import render

app = typer.Typer(help="Kluis: secure remote-access research environment.", no_args_is_help=True)
app.add_typer(cluster_app, name="cluster")
app.add_typer(admin_commands.users_app, name="users")
app.add_typer(admin_commands.tokens_app, name="tokens")
app.add_typer(admin_commands.institutions_app, name="institutions")
app.add_typer(admin_commands.audit_app, name="audit")
app.add_typer(catalogue_app, name="catalogue")
app.add_typer(airlock_app, name="airlock")
app.add_typer(hub_app, name="hub")
app.add_typer(projects_app, name="projects")
app.add_typer(schedule_commands.schedule_app, name="schedule")
app.add_typer(schedule_commands.mail_app, name="mail")
app.add_typer(schedule_commands.invoices_app, name="invoices")
app.add_typer(schedule_commands.tariffs_app, name="tariffs")
app.command("demo-data")(admin_commands.demo_data)
app.command("demo-code")(admin_commands.demo_code)
app.command("reconcile")(reconcile_commands.reconcile)
app.command("render")(render)


@app.callback()
def load(ctx: typer.Context) -> None:
    """Settings come from KLUIS_* variables and the files in KLUIS_SECRETS_DIR."""
    try:
        settings = load_settings()
    except ValidationError as exc:
        for error in exc.errors(include_input=False, include_url=False):
            where = ".".join(str(part) for part in error["loc"])
            field = f"KLUIS_{where.upper()}: " if where else ""
            message = error["msg"].removeprefix("Value error, ")
            typer.echo(f"configuration error: {field}{message}", err=True)
        raise typer.Exit(2) from None
    except FileNotFoundError as exc:
        typer.echo(f"configuration error: {exc}", err=True)
        raise typer.Exit(2) from None
    configure_logging(settings)
    ctx.obj = settings


def _settings(ctx: typer.Context) -> Settings:
    settings: Settings = ctx.obj
    return settings


def _migrate(settings: Settings) -> None:
    where = make_url(settings.effective_database_url).render_as_string(hide_password=True)
    try:
        upgrade_database(settings)
    except SQLAlchemyError as exc:
        typer.echo(f"error: cannot migrate {where}: {type(exc).__name__}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(f"database {where} is at {', '.join(sorted(script_heads()))} (head)")


def _serve(settings: Settings) -> None:
    app = create_app(settings)
    # Move everything allocated at start-up out of the collector's reach: full collections would
    # otherwise walk it on every cycle and pause requests for tens of milliseconds (P6 p99).
    gc.collect()
    gc.freeze()
    # Our own middleware logs each request; uvicorn's loggers go through our handlers.
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        server_header=False,
    )


@app.command()
def serve(
    ctx: typer.Context,
    migrate: Annotated[
        bool | None,
        typer.Option("--migrate/--no-migrate", help="Migrate first [default: only in development]"),
    ] = None,
) -> None:
    """Serve the API."""
    settings = _settings(ctx)
    if migrate is None:
        migrate = settings.environment is Environment.DEVELOPMENT
    if migrate:
        _migrate(settings)
    _serve(settings)


@app.command()
def migrate(ctx: typer.Context) -> None:
    """Upgrade the database schema to the newest migration."""
    _migrate(_settings(ctx))


@app.command()
def version() -> None:
    """Print the version."""
    typer.echo(f"kluis {__version__}")


@app.command()
def dev(ctx: typer.Context) -> None:
    """Development stack: migrate, start the local Kubernetes control plane and the reconciler,
    serve the API."""
    settings = _settings(ctx)
    if settings.environment is not Environment.DEVELOPMENT:
        typer.echo("error: `kluis dev` runs only with KLUIS_ENVIRONMENT=development", err=True)
        raise typer.Exit(2)
    if settings.cookie_secure and settings.effective_public_url.startswith("http://"):
        # Browsers drop Secure cookies on plain http; development on loopback only.
        settings = settings.model_copy(update={"cookie_secure": False})
        ctx.obj = settings
    settings = ctx.obj = dev_hub_settings(settings)  # hub tokens made up for this run if unset
    _migrate(settings)
    admin_commands.demo_data(ctx)
    # Tied to this process: however `kluis dev` ends (Ctrl-C, SIGTERM, a crash), the cluster goes.
    cluster = LocalCluster(settings.effective_cluster_dir, tie_to_parent=True)
    typer.echo(f"starting the local Kubernetes control plane in {cluster.root} ...")
    try:
        cluster.up()
    except ClusterError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    # The reconciler runs beside the API against this cluster: an approved project's workspace
    # appears within seconds. One process, so no leader election; metrics on a free port.
    reconciler_settings = settings.model_copy(
        update={
            "kubeconfig": cluster.kubeconfig,
            "leader_election": False,
            "reconcile_metrics_port": 0,
        }
    )
    try:
        with reconcile_commands.running_reconciler(
            reconciler_settings, reconciler_settings.reconcile_interval_seconds
        ) as reconciler:
            url = settings.effective_public_url
            typer.echo(
                f"Kluis is running: portal {url}/login · API docs {url}{DOCS_URL} · "
                f"kubeconfig {cluster.kubeconfig} · reconciler metrics "
                f"http://{settings.reconcile_metrics_host}:{reconciler.metrics_port}/metrics"
            )
            # JupyterHub + proxy with the development spawner (a local jupyterhub-singleuser
            # per server) and the hub sync, so "Open workspace" leads to a working JupyterLab.
            with running_dev_hub(settings) as hub:
                typer.echo(f"JupyterHub (development spawner) at {hub.public_url}/hub/")
                _serve(settings)
                typer.echo("stopping JupyterHub ...")
            typer.echo("stopping the reconciler ...")
    finally:
        typer.echo("stopping the local Kubernetes control plane ...")
        cluster.down()


def main() -> None:
    app()
