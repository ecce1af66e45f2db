"""`kluis reconcile [--once] [--interval N]`: run the workspace reconciler, once or as a loop.

The loop sleeps `--interval` seconds between passes (less when a project asked to be looked at
sooner, e.g. a namespace that is terminating) and stops cleanly on SIGTERM or Ctrl-C.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Annotated

import typer

from orchestrator.config import Settings
from orchestrator.db import make_engine, make_sessionmaker
from orchestrator.kube import KubeClient
from orchestrator.models import utcnow
from orchestrator.reconciler import PassSummary, reconcile_all

MIN_SLEEP_SECONDS = 0.5


def _report(summary: PassSummary) -> None:
    counts: dict[str, int] = {}
    for phase in summary.phases.values():
        counts[phase] = counts.get(phase, 0) + 1
    text = ", ".join(f"{phase}: {n}" for phase, n in sorted(counts.items())) or "no projects"
    typer.echo(f"reconciled {len(summary.phases)} project(s) ({text})")
    for code, error in sorted(summary.errors.items()):
        typer.echo(f"error: project {code}: {error}", err=True)


def reconcile(
    ctx: typer.Context,
    once: Annotated[
        bool, typer.Option("--once", help="One pass over all projects, then exit.")
    ] = False,
    interval: Annotated[
        float, typer.Option(min=0.1, help="Seconds between passes of the loop.")
    ] = 5.0,
) -> None:
    """Converge every project's workspace in the cluster (the only writer to Kubernetes)."""
    settings = ctx.find_root().obj
    assert isinstance(settings, Settings)
    engine = make_engine(settings)
    factory = make_sessionmaker(engine, write=True)
    kube = KubeClient.from_settings(settings)
    stop = threading.Event()

    def _stop(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    if not once:
        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
    try:
        while True:
            summary = reconcile_all(factory, kube, settings, utcnow())
            _report(summary)
            if once:
                if summary.errors:
                    raise typer.Exit(1)
                return
            wait = interval
            if summary.requeue_after is not None:
                wait = max(MIN_SLEEP_SECONDS, min(interval, summary.requeue_after))
            if stop.wait(wait):
                return
    finally:
        kube.close()
        engine.dispose()
