"""A real Kluis served by uvicorn on loopback and real Chromium driven by Playwright: what the
browser tests and `docs/screenshots/make.py` share.

Chromium is Debian's package (`/usr/bin/chromium`, or `KLUIS_CHROMIUM`); Playwright never
downloads a browser here. The server runs in a thread of this process on a port the kernel picks.
"""

from __future__ import annotations

import os
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import uvicorn
from sqlalchemy import create_engine
from sqlalchemy.engine import make_url

from orchestrator.api.app import create_app
from orchestrator.config import Environment, Settings
from orchestrator.db import upgrade_database

CHROMIUM = Path(os.environ.get("KLUIS_CHROMIUM", "/usr/bin/chromium"))
# No sandbox: CI runs as root. No network beyond loopback: nothing for Chromium to fetch.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
START_TIMEOUT_S = 30.0


def bind_loopback() -> socket.socket:
    """A listening socket on 127.0.0.1 with a free port, handed to uvicorn as it is (no race)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    return sock


@contextmanager
def postgres_schema(url: str) -> Iterator[str]:
    """A fresh schema for one server, dropped afterwards; yields `url` pointing into it."""
    schema = f"kluis_browser_{secrets.token_hex(6)}"
    admin = create_engine(url)
    try:
        with admin.begin() as connection:
            connection.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
        scoped = make_url(url).update_query_dict({"options": f"-csearch_path={schema}"})
        yield scoped.render_as_string(hide_password=False)
    finally:
        with admin.begin() as connection:
            connection.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        admin.dispose()


def portal_settings(data_dir: Path, url: str, database_url: str | None = None) -> Settings:
    """Test settings for a server at `url`: plain http on loopback, so no `Secure` cookies."""
    return Settings(
        environment=Environment.TEST,
        data_dir=data_dir,
        database_url=database_url,
        cookie_secure=False,
        public_url=url,
        host="127.0.0.1",
        port=int(url.rsplit(":", 1)[1]),
    )


@contextmanager
def serve(settings: Settings, sock: socket.socket) -> Iterator[str]:
    """Migrate the database, serve the real app on `sock` until the block ends; yields its URL."""
    upgrade_database(settings)
    config = uvicorn.Config(
        create_app(settings), log_level="warning", access_log=False, lifespan="on"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="kluis-portal", daemon=True
    )
    thread.start()
    deadline = time.monotonic() + START_TIMEOUT_S
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the portal server did not start")
        time.sleep(0.02)
    host, port = sock.getsockname()[:2]
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()
