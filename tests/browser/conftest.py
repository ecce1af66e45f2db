"""Fixtures for the portal's browser tests: one live server per database backend (its own SQLite
file or PostgreSQL schema, really committed), one Chromium per session, a fresh browser context
(no cookies) per test, and a committed database session for arranging data.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from factories import MadeUser, make_user
from playwright.sync_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Page,
    Playwright,
    sync_playwright,
)
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from orchestrator.api.deps import session_cookie_name
from orchestrator.config import Settings
from orchestrator.db import make_engine
from orchestrator.sessions import open_session

from .live import CHROMIUM, CHROMIUM_ARGS, bind_loopback, portal_settings, postgres_schema, serve

BACKENDS = ["sqlite", "postgresql"]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "browser: drives real Chromium against a live server")


@dataclass
class Portal:
    """The live server: its base URL, its settings, and an engine on its database."""

    url: str
    settings: Settings
    engine: Engine

    def session(self) -> Session:
        """A session whose commits the server sees; objects stay readable after commit."""
        return Session(self.engine, expire_on_commit=False)


def _postgres_url() -> str:
    url = os.environ.get("KLUIS_TEST_POSTGRES_URL")
    if url:
        return url
    if os.environ.get("KLUIS_REQUIRE_POSTGRES") == "1":
        pytest.fail(
            "KLUIS_REQUIRE_POSTGRES=1 but KLUIS_TEST_POSTGRES_URL is not set", pytrace=False
        )
    pytest.skip("PostgreSQL browser tests need KLUIS_TEST_POSTGRES_URL (see .ci/postgres)")


@pytest.fixture(scope="session", params=BACKENDS)
def portal(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Portal]:
    data_dir = tmp_path_factory.mktemp(f"portal-{request.param}")
    sock = bind_loopback()
    host, port = sock.getsockname()[:2]
    url = f"http://{host}:{port}"
    if request.param == "sqlite":
        yield from _run(portal_settings(data_dir, url), sock)
        return
    with postgres_schema(_postgres_url()) as database_url:
        yield from _run(portal_settings(data_dir, url, database_url), sock)


def _run(settings: Settings, sock: socket.socket) -> Iterator[Portal]:
    with serve(settings, sock) as url:
        engine = make_engine(settings)
        try:
            yield Portal(url, settings, engine)
        finally:
            engine.dispose()


@pytest.fixture(scope="session")
def playwright() -> Iterator[Playwright]:
    if not CHROMIUM.exists():
        message = f"{CHROMIUM} is missing: apt-get install chromium (see .ci/system-packages)"
        if os.environ.get("KLUIS_REQUIRE_BROWSER") == "1":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="session")
def browser(playwright: Playwright) -> Iterator[Browser]:
    browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
    yield browser
    browser.close()


@dataclass
class Console:
    """What the page said on its console: a CSP violation or a script error shows up here."""

    errors: list[str] = field(default_factory=list)

    def record(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.errors.append(message.text)


@pytest.fixture
def console() -> Console:
    return Console()


@pytest.fixture
def page(browser: Browser, portal: Portal, console: Console) -> Iterator[Page]:
    """A page in a fresh context (no cookies), English, with a default timeout fit for CI."""
    context = browser.new_context(base_url=portal.url, locale="en-GB")
    context.set_default_timeout(15_000)
    page = context.new_page()
    page.on("console", console.record)
    yield page
    context.close()


# --- arranging ------------------------------------------------------------------------------------


def seed_user(portal: Portal, **options: Any) -> MadeUser:
    """A committed user who can log in (see `factories.make_user` for the options)."""
    with portal.session() as session:
        made = make_user(session, portal.settings, **options)
        session.commit()
    return made


def sign_in(context: BrowserContext, portal: Portal, made: MadeUser, *, stepped_up: bool) -> None:
    """Give the context a live session of `made` without spending a code (each code works once,
    so a test that needs a second code later cannot log in through the form first)."""
    with portal.session() as session:
        row, secret = open_session(session, made.user, "127.0.0.1", "test", portal.settings)
        if stepped_up:
            row.stepped_up_at = row.created_at
        session.commit()
    context.add_cookies(
        [{"name": session_cookie_name(portal.settings), "value": secret, "url": portal.url}]
    )
