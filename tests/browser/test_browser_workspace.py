"""From portal login to a running development JupyterLab and back, in real Chromium, against the
real API, a real JupyterHub with the real proxy, and the development spawner's real
`jupyterhub-singleuser`. On SQLite and PostgreSQL; screenshots for docs/ on SQLite."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from factories import make_user
from hub.stack import Stack, running_stack
from playwright.sync_api import Browser, Page, expect
from project_factories import make_project

from orchestrator.models import ProjectState, User

pytestmark = [pytest.mark.browser, pytest.mark.slow]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
BACKENDS = ["sqlite", "postgresql"]


@pytest.fixture(scope="module", params=BACKENDS)
def stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    from conftest import empty_database

    data_dir = tmp_path_factory.mktemp(f"browser-hub-{request.param}")
    with (
        empty_database(request.param, data_dir) as backend,
        running_stack(backend, data_dir, spawner="development") as running,
    ):
        yield running


def shoot(page: Page, name: str, backend: str) -> None:
    if backend == "sqlite" and os.environ.get("KLUIS_SCREENSHOTS", "1") == "1":
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / name), full_page=False)


def test_browser_workspace_login_to_jupyterlab_and_back(
    browser: Browser, stack: Stack, request: pytest.FixtureRequest
) -> None:
    backend = "postgresql" if "postgresql" in request.node.name else "sqlite"
    with stack.factory() as session:
        made = make_user(session, stack.settings)
        user = session.get(User, made.user.id)
        project = make_project(session, state=ProjectState.ACTIVE, members=[user])
        session.commit()
        code = project.code
    stack.mark_ready(code)
    context = browser.new_context(base_url=stack.api_url, locale="en-GB")
    context.set_default_timeout(60_000)
    page = context.new_page()

    page.goto("/login")
    page.get_by_label("Username").fill(made.username)
    page.get_by_label("Password").fill(made.password)
    page.get_by_label("Code").fill(made.code())
    page.get_by_role("button", name="Log in").click()
    page.goto(f"/projects/{code}")
    page.locator("#workspace-link").click()
    expect(page.locator("#workspace-state")).to_have_attribute("data-state", "stopped")
    shoot(page, "workspace-page.png", backend)

    page.locator("#open-workspace").click()
    page.wait_for_url(f"**/user/{made.username}/{code}/lab**", timeout=120_000)
    expect(page).to_have_title("JupyterLab", timeout=120_000)
    page.wait_for_selector("#jp-main-dock-panel", timeout=120_000)
    page.wait_for_timeout(1500)  # let the file browser list the project's folders
    shoot(page, "workspace-jupyterlab.png", backend)

    page.goto(f"{stack.api_url}/projects/{code}/workspace")
    expect(page.locator("#workspace-state")).to_have_attribute("data-state", "running")
    shoot(page, "workspace-running.png", backend)
    page.locator("#stop-workspace").click()
    expect(page.locator("#workspace-notice")).to_be_visible()
    stack.wait_for(lambda: code not in stack.servers(made.username), 60, "the server stopped")
    page.reload()
    expect(page.locator("#workspace-state")).to_have_attribute("data-state", "stopped")
    context.close()
