"""The airlock in real Chromium against a live server with a real clamd: a researcher uploads a
file with the lawful-obtainment statement, an output checker approves it and it lands read-only
in import/; the researcher asks for an output from export/, submits it, two output checkers
approve it, one releases it, and the researcher downloads it (checksum as frozen); a colleague in
the project, not yet stepped up, is asked for a fresh code from their token and then downloads it
too."""

from __future__ import annotations

import hashlib
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from airlock_helpers import clamd_socket  # noqa: F401
from factories import MadeUser, make_user
from playwright.sync_api import Browser, Page, expect
from project_factories import make_project
from sqlalchemy import select

from orchestrator import airlock
from orchestrator.airlock_models import Upload
from orchestrator.apitokens import create_api_token
from orchestrator.config import Settings
from orchestrator.db import make_engine
from orchestrator.models import ProjectState, Role

from .conftest import BACKENDS, Portal, _postgres_url, sign_in
from .live import bind_loopback, portal_settings, postgres_schema, serve
from .test_browser_accessibility import check_page

pytestmark = pytest.mark.browser
CSV = b"region,count\nNorth,120\nSouth,85\n"


@pytest.fixture(scope="module", params=BACKENDS)
def airlock_portal(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    clamd_socket: Path,  # noqa: F811
) -> Iterator[Portal]:
    data_dir = tmp_path_factory.mktemp(f"airlock-portal-{request.param}")
    sock = bind_loopback()
    host, port = sock.getsockname()[:2]
    url = f"http://{host}:{port}"
    if request.param == "sqlite":
        yield from _run(portal_settings(data_dir, url), sock, clamd_socket)
        return
    with postgres_schema(_postgres_url()) as database_url:
        yield from _run(portal_settings(data_dir, url, database_url), sock, clamd_socket)


def _run(settings: Settings, sock: socket.socket, clamd: Path) -> Iterator[Portal]:
    settings = settings.model_copy(update={"clamd_socket": clamd})
    with serve(settings, sock) as url:
        engine = make_engine(settings)
        try:
            yield Portal(url, settings, engine)
        finally:
            engine.dispose()


def as_user(browser: Browser, portal: Portal, made: MadeUser, stepped_up: bool = True) -> Page:
    context = browser.new_context(base_url=portal.url, locale="en-GB", accept_downloads=True)
    context.set_default_timeout(15_000)
    sign_in(context, portal, made, stepped_up=stepped_up)
    return context.new_page()


def test_browser_airlock_upload_approval_and_output_release(
    browser: Browser, airlock_portal: Portal
) -> None:
    portal = airlock_portal
    with portal.session() as session:
        member = make_user(session, portal.settings)
        colleague = make_user(session, portal.settings)
        checkers = [make_user(session, portal.settings, role=Role.OUTPUT_CHECKER) for _ in "ab"]
        project = make_project(
            session, state=ProjectState.ACTIVE, members=[member.user, colleague.user]
        )
        session.commit()
        code = project.code
    export = portal.settings.effective_project_storage_root / code / "export"
    export.mkdir(parents=True)
    (export / "table.csv").write_bytes(CSV)
    upload_file = portal.settings.data_dir / "regions.csv"
    upload_file.write_bytes(CSV)

    researcher = as_user(browser, portal, member)
    researcher.goto(f"/projects/{code}")
    researcher.click("#airlock-link")
    researcher.set_input_files("#file", str(upload_file))
    researcher.fill("#legal_basis", "Our own survey, with consent")
    researcher.check("#lawful")
    researcher.click("#upload-button")
    expect(researcher.locator("body")).to_contain_text("regions.csv")
    expect(researcher.locator("body")).to_contain_text("pending_review")

    checker = as_user(browser, portal, checkers[0])
    checker.goto("/review/airlock/uploads")
    checker.locator("button[id^=approve-upload-]").first.click()
    expect(checker.locator("body")).to_contain_text("Nothing yet.")
    placed = list((portal.settings.effective_project_storage_root / code / "import").rglob("*.csv"))
    assert [p.read_bytes() for p in placed] == [CSV]

    researcher.goto(f"/projects/{code}/airlock")
    researcher.fill("#title", "Counts by region")
    researcher.check("#file-0")
    researcher.select_option("#kind-0", "table")
    researcher.fill("#description-0", "Number of people per region")
    researcher.fill("#controls-0", "Rounded to base 5")
    researcher.click("#create-output")
    expect(researcher.locator("body")).to_contain_text("Preflight")
    researcher.click("#submit-output")
    expect(researcher.locator(".lead-text")).to_contain_text("checked")
    output_url = researcher.url
    (export / "table.csv").write_bytes(b"region,count\nNorth,3\n")  # later edits change nothing

    for n, made in enumerate(checkers):
        page = checker if n == 0 else as_user(browser, portal, made)
        page.goto(output_url)
        page.select_option("#decision", "approve")
        page.click("#record-review")
    page.click("#release-output")
    expect(page.locator(".lead-text")).to_contain_text("released")

    problems = check_page(researcher, f"/projects/{code}/airlock")
    problems += check_page(researcher, output_url)
    problems += check_page(checker, "/review/airlock/uploads")
    problems += check_page(checker, "/review/airlock/outputs")
    assert problems == []

    researcher.goto(output_url)
    with researcher.expect_download() as info:
        researcher.locator("button[id^=download-]").first.click()
    downloaded = Path(info.value.path()).read_bytes()
    assert hashlib.sha256(downloaded).hexdigest() == hashlib.sha256(CSV).hexdigest()

    other = as_user(browser, portal, colleague, stepped_up=False)
    other.goto(output_url)
    other.locator("button[id^=download-]").first.click()
    expect(other.locator("h1")).to_contain_text("Confirm with your token")
    assert colleague.token is not None
    other.fill("#stepup_code", colleague.token.code())
    with other.expect_download() as info:
        other.click("form button[type=submit] >> text=Confirm")
    assert Path(info.value.path()).read_bytes() == CSV
    for context in {researcher.context, checker.context, page.context, other.context}:
        context.close()
    airlock.remove_tree(portal.settings.effective_project_storage_root / code / "import")


def test_live_upload_cut_off_mid_stream_leaves_nothing(airlock_portal: Portal) -> None:
    """A real client sends half of a declared upload to the live server and hangs up (as when a
    browser or the control plane goes away): the partial quarantine file is removed, no row is
    written, nothing reaches import/, and a whole upload afterwards still works."""
    portal = airlock_portal
    settings = portal.settings
    with portal.session() as session:
        member = make_user(session, settings)
        project = make_project(session, state=ProjectState.ACTIVE, members=[member.user])
        _row, secret = create_api_token(
            session, member.user, "upload", ["read", "projects:write"], 7, settings
        )
        session.commit()
        code = project.code
    quarantine = airlock.quarantine_dir(settings)
    before = set(quarantine.iterdir()) if quarantine.exists() else set()
    host, port = portal.url.removeprefix("http://").rsplit(":", 1)
    path = f"/api/projects/{code}/airlock/uploads?filename=big.csv&legal_basis=Survey&lawful=true"
    body = b"region,count\n" + b"North,120\n" * 100_000  # about 1 MB declared
    with socket.create_connection((host, int(port))) as conn:
        conn.sendall(
            f"POST {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {secret}\r\n"
            f"Content-Type: text/csv\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        )
        conn.sendall(body[: len(body) // 2])
        deadline = time.monotonic() + 10
        while not (set(quarantine.iterdir()) - before) and time.monotonic() < deadline:
            time.sleep(0.02)  # the server is writing the .part file
        assert [p.name.endswith(".part") for p in set(quarantine.iterdir()) - before] == [True]
    deadline = time.monotonic() + 10
    while set(quarantine.iterdir()) - before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert set(quarantine.iterdir()) - before == set()
    with portal.session() as session:
        assert session.scalars(select(Upload).where(Upload.project_id == project.id)).all() == []
    assert not (settings.effective_project_storage_root / code / "import").exists()

    answer = httpx.post(
        portal.url + path,
        content=body,
        headers={"Authorization": f"Bearer {secret}", "Content-Type": "text/csv"},
        timeout=60,
    )
    assert answer.status_code == 201, answer.text
    assert answer.json()["sha256"] == hashlib.sha256(body).hexdigest()
