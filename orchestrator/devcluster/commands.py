"""`kluis cluster up|down|status|kubeconfig|build`: the local control plane on the command line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from orchestrator.config import Settings, load_settings
from orchestrator.devcluster import build
from orchestrator.devcluster.cluster import ClusterError, LocalCluster

cluster_app = typer.Typer(
    help="The local Kubernetes control plane for development and tests.", no_args_is_help=True
)

DirOption = Annotated[
    Path | None,
    typer.Option("--dir", help="Cluster folder [default: KLUIS_CLUSTER_DIR or <data>/cluster]."),
]


def _cluster(ctx: typer.Context, directory: Path | None, nodes: int = 1) -> LocalCluster:
    if directory is None:
        settings = ctx.obj if isinstance(ctx.obj, Settings) else load_settings()
        directory = settings.effective_cluster_dir
    return LocalCluster(directory, nodes=nodes)


@cluster_app.command("build")
def build_command(
    force: Annotated[bool, typer.Option(help="Rebuild even if cached.")] = False,
) -> None:
    """Build (or reuse) the pinned Kubernetes, etcd, kwok and helm binaries."""
    typer.echo(build.ensure_built(force=force))


@cluster_app.command("up")
def up_command(
    ctx: typer.Context,
    directory: DirOption = None,
    nodes: Annotated[int, typer.Option(min=1, max=20)] = 1,
) -> None:
    """Start etcd, kube-apiserver, controller-manager, scheduler and kwok; wait until healthy."""
    cluster = _cluster(ctx, directory, nodes)
    try:
        cluster.up()
    except ClusterError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(f"cluster ready at {cluster.server}")
    typer.echo(f"kubeconfig: {cluster.kubeconfig}")


@cluster_app.command("down")
def down_command(ctx: typer.Context, directory: DirOption = None) -> None:
    """Stop every component of the local control plane."""
    _cluster(ctx, directory).down()
    typer.echo("cluster stopped")


@cluster_app.command("status")
def status_command(
    ctx: typer.Context,
    directory: DirOption = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Health of each component; exit code 1 unless all are healthy."""
    cluster = _cluster(ctx, directory)
    status = cluster.status()
    memory = cluster.memory_kib()
    if as_json:
        typer.echo(json.dumps({"components": status, "rss_kib": memory}, indent=2))
    else:
        for name, state in status.items():
            rss = f"{memory[name] / 1024:.0f} MiB" if name in memory else "-"
            typer.echo(f"{name:<25} {state:<10} {rss:>8}  log: {cluster.log_file(name)}")
    if any(state != "healthy" for state in status.values()):
        raise typer.Exit(1)


@cluster_app.command("kubeconfig")
def kubeconfig_command(ctx: typer.Context, directory: DirOption = None) -> None:
    """Print the admin kubeconfig's path: kubectl --kubeconfig $(kluis cluster kubeconfig)."""
    cluster = _cluster(ctx, directory)
    if not cluster.kubeconfig.exists():
        typer.echo("error: no cluster here; run `kluis cluster up` first", err=True)
        raise typer.Exit(1)
    typer.echo(cluster.kubeconfig)
