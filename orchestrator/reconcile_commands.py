"""`kluis reconcile [--once] [--interval N]`: run the workspace reconciler, once or as a loop.

The loop (`reconcile_loop.ReconcileLoop`) reconciles what changed in the database within
`KLUIS_RECONCILE_POLL_SECONDS`, runs a full pass every `--interval` seconds, reconciles only while
it holds the leader Lease (unless `KLUIS_LEADER_ELECTION=false`), serves `/metrics`, `/healthz`
and `/readyz` on `KLUIS_RECONCILE_METRICS_HOST:PORT`, and stops cleanly on SIGTERM or Ctrl-C.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Annotated

import typer

from orchestrator.config import Settings
from orchestrator.db import make_engine, make_sessionmaker
from orchestrator.kube import KubeClient
from orchestrator.leader import LeaderElector
from orchestrator.models import utcnow
from orchestrator.reconcile_loop import HealthServer, ReconcileLoop
from orchestrator.reconciler import PassSummary, reconcile_all


def _report(summary: PassSummary) -> None:
    counts: dict[str, int] = {}
    for phase in summary.phases.values():
        counts[phase] = counts.get(phase, 0) + 1
    text = ", ".join(f"{phase}: {n}" for phase, n in sorted(counts.items())) or "no projects"
    typer.echo(f"reconciled {len(summary.phases)} project(s) ({text})")
    for code, error in sorted(summary.errors.items()):
        typer.echo(f"error: project {code}: {error}", err=True)


def _report_changes(summary: PassSummary) -> None:
    if summary.phases or summary.errors:
        _report(summary)


@contextmanager
def running_reconciler(
    settings: Settings, full_pass_seconds: float, quiet: bool = False
) -> Iterator[ReconcileLoop]:
    """The reconciler loop in a background thread (with its elector and health server) for the
    duration of the block; stopped, its Lease released and its clients closed on the way out."""
    engine = make_engine(settings)
    factory = make_sessionmaker(engine, write=True)
    kube = KubeClient.from_settings(settings)
    # The elector and probes use a client of their own, so `kube.calls` counts reconciling only.
    side = KubeClient.from_settings(settings)
    elector = LeaderElector.from_settings(side, settings) if settings.leader_election else None
    loop = ReconcileLoop(
        settings,
        factory,
        kube,
        elector,
        full_pass_seconds,
        on_pass=None if quiet else _report_changes,
    )
    server = None
    if settings.reconcile_metrics_port is not None:
        server = HealthServer(
            loop, settings.reconcile_metrics_host, settings.reconcile_metrics_port
        ).start()
        loop.metrics_port = server.port
    stop = threading.Event()
    worker = threading.Thread(target=loop.run, args=(stop,), name="kluis-reconciler", daemon=True)
    worker.start()
    try:
        yield loop
    finally:
        stop.set()
        worker.join(timeout=60)
        if server is not None:
            server.stop()
        kube.close()
        side.close()
        engine.dispose()


def reconcile(
    ctx: typer.Context,
    once: Annotated[
        bool, typer.Option("--once", help="One pass over all projects, then exit.")
    ] = False,
    interval: Annotated[
        float,
        typer.Option(min=0.1, help="Seconds between full passes (changes are seen sooner)."),
    ] = 60.0,
) -> None:
    """Converge every project's workspace in the cluster (the only writer to Kubernetes)."""
    settings = ctx.find_root().obj
    assert isinstance(settings, Settings)
    if once:
        engine = make_engine(settings)
        kube = KubeClient.from_settings(settings)
        try:
            summary = reconcile_all(make_sessionmaker(engine, write=True), kube, settings, utcnow())
        finally:
            kube.close()
            engine.dispose()
        _report(summary)
        if summary.errors:
            raise typer.Exit(1)
        return
    stop = threading.Event()

    def _stop(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    with running_reconciler(settings, interval) as loop:
        where = ""
        if settings.reconcile_metrics_port is not None:
            where = f"; metrics on {settings.reconcile_metrics_host}"
        typer.echo(f"reconciler running (leader election: {settings.leader_election}{where})")
        stop.wait()
        typer.echo(f"stopping the reconciler after {loop.passes} pass(es) ...")
