"""The hub <-> server handshake with real processes: the API, JupyterHub with the real proxy, and
the development spawner's real `jupyterhub-singleuser` (JupyterLab). A researcher goes from the
launch URL into their JupyterLab with the project's folders; another researcher cannot reach it
through the hub or the proxy, over HTTP or websocket. On SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import BACKENDS, empty_database
from tornado.httpclient import HTTPClientError, HTTPRequest
from tornado.websocket import WebSocketError, websocket_connect

from orchestrator import hub_sync, sessions
from orchestrator.models import User

from .stack import Researcher, Stack, running_stack

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", params=BACKENDS)
def stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    data_dir = tmp_path_factory.mktemp(f"devhub-{request.param}")
    with (
        empty_database(request.param, data_dir) as backend,
        running_stack(
            backend,
            data_dir,
            spawner="development",
            extra_env={"KLUIS_HUB_AUTH_REFRESH_SECONDS": "1"},
        ) as running,
    ):
        yield running


def open_lab(stack: Stack, who: Researcher, code: str) -> tuple[httpx.Client, httpx.Response]:
    browser = stack.browser(who)
    url = stack.launch(browser, who, code).json()["url"]
    response = browser.get(url, follow_redirects=True, timeout=120)
    # The spawn-pending page waits in the browser (JavaScript); poll like it does.
    server_url = f"{stack.hub.public_url}/user/{who.username}/{code}/lab"
    stack.wait_for(
        lambda: stack.servers(who.username).get(code, {}).get("ready"), 120, "the server ready"
    )
    response = browser.get(server_url, follow_redirects=True, timeout=60)
    return browser, response


def test_hub_dev_launch_reaches_jupyterlab_with_the_project_folders(stack: Stack) -> None:
    who = stack.researcher()
    code = stack.project(who, datasets=1)
    stack.mark_ready(code)

    browser, lab = open_lab(stack, who, code)

    assert lab.status_code == 200
    assert "JupyterLab" in lab.text
    base = f"{stack.hub.public_url}/user/{who.username}/{code}"
    listing = browser.get(f"{base}/api/contents/project", follow_redirects=True)
    assert listing.status_code == 200, listing.text
    names = {item["name"] for item in listing.json()["content"]}
    assert names == {"workspace", "import", "export"}
    data = browser.get(f"{base}/api/contents/data", follow_redirects=True).json()
    assert len(data["content"]) == 1
    created = browser.put(
        f"{base}/api/contents/project/workspace/analysis.txt",
        json={"type": "file", "format": "text", "content": "n=10"},
        headers={"X-XSRFToken": xsrf(browser, f"/user/{who.username}/{code}")},
        follow_redirects=True,
    )
    assert created.status_code in (200, 201), created.text
    folder = Path(stack.settings.effective_project_storage_root) / code / "workspace"
    assert (folder / "analysis.txt").read_text() == "n=10"
    stack.hub_api("DELETE", f"/users/{who.username}/servers/{code}")


def test_hub_dev_other_researcher_cannot_reach_the_server(stack: Stack) -> None:
    owner, intruder = stack.researcher(), stack.researcher()
    code, own = stack.project(owner), stack.project(intruder)
    stack.mark_ready(code)
    stack.mark_ready(own)
    open_lab(stack, owner, code)
    snoop = stack.browser(intruder)
    login = snoop.get(stack.launch(snoop, intruder, own).json()["url"], follow_redirects=False)
    assert login.status_code == 302  # the intruder is logged in to the hub as themselves
    base = f"{stack.hub.public_url}/user/{owner.username}/{code}"

    for path in ("/lab", "/api/status", "/api/contents/project", "/api/kernels"):
        response = snoop.get(base + path, follow_redirects=True)
        assert response.status_code in (403, 404), (path, response.status_code)
        assert "workspace" not in response.text or response.status_code != 200
    assert snoop.get(
        f"{stack.hub.api_url}/users/{owner.username}", follow_redirects=True
    ).status_code in (403, 404)
    stolen = snoop.post(
        f"{stack.hub.api_url}/users/{owner.username}/servers/{code}",
        headers={"X-XSRFToken": xsrf(snoop, "/hub")},
    )
    assert stolen.status_code in (403, 404)
    cookie = "; ".join(f"{c.name}={c.value}" for c in snoop.cookies.jar)
    ws_url = base.replace("http://", "ws://") + "/api/kernels/any/channels"
    assert run_in_own_loop(websocket_refused, ws_url, cookie)
    stack.hub_api("DELETE", f"/users/{owner.username}/servers/{code}")


def xsrf(browser: httpx.Client, path: str) -> str:
    """The `_xsrf` cookie set for `path` (the hub and each server set their own)."""
    for cookie in browser.cookies.jar:
        if cookie.name == "_xsrf" and cookie.path.startswith(path):
            return str(cookie.value)
    return ""


def run_in_own_loop(coroutine: Callable[..., Coroutine[Any, Any, bool]], *args: str) -> bool:
    """Run `coroutine(*args)` on a fresh event loop in a thread of its own: in a full test run
    the main thread may already run a loop (Playwright's sync API leaves one there), where
    asyncio.run refuses to start."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(lambda: asyncio.run(coroutine(*args))).result()


async def websocket_refused(url: str, cookie: str) -> bool:
    try:
        connection = await websocket_connect(HTTPRequest(url, headers={"Cookie": cookie}))
    except (HTTPClientError, WebSocketError, OSError):
        return True
    connection.close()
    return False


def test_hub_dev_revocation_stops_the_server_and_ends_the_hub_login(stack: Stack) -> None:
    who = stack.researcher()
    code = stack.project(who)
    stack.mark_ready(code)
    browser, lab = open_lab(stack, who, code)
    assert lab.status_code == 200
    home_url = f"{stack.hub.public_url}/hub/home"
    assert browser.get(home_url, follow_redirects=False).status_code == 200  # logged in
    stop = threading.Event()
    loop = threading.Thread(
        target=hub_sync.run_sync_loop, args=(stack.factory, stack.settings, stop), daemon=True
    )
    loop.start()
    try:
        with stack.factory() as session, session.begin():
            user = session.get(User, who.user_id)
            assert user is not None
            sessions.end_all_sessions(session, user, "account_suspended")
        revoked = time.monotonic()
        stack.wait_for(lambda: code not in stack.servers(who.username), 30, "the server stopped")
        took = time.monotonic() - revoked
    finally:
        stop.set()
        loop.join(timeout=15)

    # Bound: one sync interval (1 s here) plus the stop itself.
    assert took < stack.settings.hub_sync_interval_seconds + 10, took
    time.sleep(1.5)  # past auth_refresh_age: the hub asks the control plane again
    home = browser.get(home_url, follow_redirects=False)
    assert home.status_code in (302, 303)
    assert "/hub/login" in home.headers["location"] or home.headers["location"].startswith(
        stack.settings.effective_public_url
    )
