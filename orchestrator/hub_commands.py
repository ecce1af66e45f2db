"""`kluis hub sync`: stop hub servers whose access lapsed, once or every interval; and the hub
that `kluis dev` runs beside the API (JupyterHub + proxy with the development spawner)."""

from __future__ import annotations

import secrets
import signal
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Annotated
from urllib.parse import urlsplit

import httpx
import typer
from pydantic import SecretStr

from orchestrator import hub_sync
from orchestrator.config import Settings
from orchestrator.db import make_engine, make_sessionmaker
from orchestrator.errors import Unavailable
from orchestrator.hub_process import HubProcess, hub_environment, start_hub

hub_app = typer.Typer(help="The JupyterHub integration.", no_args_is_help=True)


@hub_app.command("sync")
def sync(
    ctx: typer.Context,
    once: Annotated[bool, typer.Option("--once", help="One pass, then exit.")] = False,
    interval: Annotated[
        float | None,
        typer.Option(help="Seconds between passes [default: KLUIS_HUB_SYNC_INTERVAL_SECONDS]."),
    ] = None,
) -> None:
    """Stop every hub server whose user may no longer run it (member removed, account disabled or
    sessions revoked, project frozen or expired, grants changed). Exit 1 if the hub is unreachable
    (with --once)."""
    settings: Settings = ctx.obj
    if interval is not None:
        settings = settings.model_copy(update={"hub_sync_interval_seconds": interval})
    engine = make_engine(settings)
    factory = make_sessionmaker(engine, write=True)
    try:
        if once:
            try:
                hub = hub_sync.HubApi(settings)
                try:
                    result = hub_sync.sync_once(factory, settings, hub)
                finally:
                    hub.close()
            except (httpx.HTTPError, Unavailable) as exc:
                typer.echo(f"error: cannot reach the hub: {exc}", err=True)
                raise typer.Exit(1) from exc
            for user, server, reason in result.stopped:
                typer.echo(f"stopped {user}/{server}: {reason}")
            typer.echo(f"{result.kept} kept, {len(result.stopped)} stopped")
            return
        stop = threading.Event()

        def _stop(_signum: int, _frame: FrameType | None) -> None:
            stop.set()

        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
        hub_sync.run_sync_loop(factory, settings, stop)
    finally:
        engine.dispose()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def dev_hub_settings(settings: Settings) -> Settings:
    """Development: tokens made up for this run when none are configured."""
    update: dict[str, object] = {}
    for name in ("hub_service_token", "hub_api_token"):
        if not getattr(settings, name).get_secret_value():
            update[name] = SecretStr(secrets.token_urlsafe(32))
    return settings.model_copy(update=update) if update else settings


@contextmanager
def running_dev_hub(settings: Settings) -> Iterator[HubProcess]:
    """JupyterHub with the development spawner on `hub_public_url`, and the hub sync beside it;
    both stop when the block ends. `settings` must carry the hub tokens (`dev_hub_settings`)."""
    public_port = urlsplit(settings.hub_public_url).port or 8001
    data_dir = settings.data_dir / "hub"
    env = hub_environment(
        settings,
        data_dir=data_dir,
        public_port=public_port,
        hub_port=_free_port(),
        proxy_api_port=_free_port(),
        spawner="development",
    )
    hub = start_hub(env, data_dir)
    engine = make_engine(settings)
    stop = threading.Event()
    syncer = threading.Thread(
        target=hub_sync.run_sync_loop,
        args=(make_sessionmaker(engine, write=True), settings, stop),
        name="kluis-hub-sync",
        daemon=True,
    )
    syncer.start()
    try:
        yield hub
    finally:
        stop.set()
        syncer.join(timeout=15)
        hub.stop()
        engine.dispose()
