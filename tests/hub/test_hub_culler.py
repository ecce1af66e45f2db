"""The idle culler runs as a hub service from Kluis's config: an idle development server is
stopped after the configured timeout (here 5 s, checked every 2 s), with real processes."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from conftest import BACKENDS, empty_database

from .stack import Stack, running_stack
from .test_hub_dev import open_lab

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", params=BACKENDS)
def stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    data_dir = tmp_path_factory.mktemp(f"culler-{request.param}")
    with (
        empty_database(request.param, data_dir) as backend,
        running_stack(
            backend,
            data_dir,
            spawner="development",
            extra_env={"KLUIS_HUB_CULL_TIMEOUT": "5", "KLUIS_HUB_CULL_EVERY": "2"},
        ) as running,
    ):
        yield running


def test_hub_culler_stops_an_idle_server(stack: Stack) -> None:
    who = stack.researcher()
    code = stack.project(who)
    stack.mark_ready(code)
    _browser, lab = open_lab(stack, who, code)
    assert lab.status_code == 200

    stack.wait_for(lambda: code not in stack.servers(who.username), 90, "the culler to stop it")
    log = stack.hub.log_path.read_text()
    assert f"DELETE /hub/api/users/{who.username}/servers/{code} (idle-culler@" in log
