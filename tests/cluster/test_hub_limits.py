"""JupyterHub's concurrent spawn limit, end to end with real processes (the API, JupyterHub with
configurable-http-proxy from Kluis's config, KluisSpawner, the local control plane), on SQLite
and PostgreSQL.

With a limit of 1, one researcher's spawn is kept pending honestly: every node is cordoned, so
the scheduler cannot place the server pod and KubeSpawner waits for it (as on a full cluster).
A second researcher's spawn is then refused with the hub's 429; through the portal's launch the
hub sends them back to the workspace page, which says too many workspaces are starting. Once the
slot is free, the second researcher's spawn goes through.

Cordoning is what keeps the first spawn pending for as long as the test needs, wherever it runs.
Once the pod runs, JupyterHub waits for the server to answer HTTP (up to `http_timeout`); kwok
pods run no container, so whether that ends soon depends on the network (in this sandbox an
egress proxy answers any address with 404, which the hub takes for an old server that is up).
So the first researcher stops the server, as the portal's Stop does, and the slot is free either
way.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
from conftest import BACKENDS
from hub.stack import Stack
from kubernetes import client

from orchestrator import names
from orchestrator.devcluster.cluster import LocalCluster
from orchestrator.names import namespace_name

from .test_hub_spawn import kubernetes_stack, provision, running_pod, server_pods

pytestmark = [pytest.mark.cluster, pytest.mark.slow]
BUSY_EN = "Too many workspaces are starting right now, so yours was not started."


@pytest.fixture(scope="module", params=BACKENDS)
def stack(
    request: pytest.FixtureRequest,
    cluster: LocalCluster,
    kube: client.ApiClient,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    data_dir = tmp_path_factory.mktemp(f"hub-limit-{request.param}")
    limit = {"KLUIS_HUB_CONCURRENT_SPAWN_LIMIT": "1"}
    with kubernetes_stack(request.param, cluster, kube, data_dir, limit) as running:
        yield running


def cordon(kube: client.ApiClient, unschedulable: bool) -> None:
    core = client.CoreV1Api(kube)
    for node in core.list_node().items:
        core.patch_node(node.metadata.name, {"spec": {"unschedulable": unschedulable}})


def hub_login(stack: Stack, browser: Any, who: Any, code: str) -> Any:
    response = stack.launch(browser, who, code)
    assert response.status_code == 201, response.text
    return stack.open_hub(browser, response.json()["url"])


def test_hub_second_spawn_over_the_limit_is_refused_then_goes_through(
    stack: Stack, kube: client.ApiClient
) -> None:
    first, second = stack.researcher(), stack.researcher()
    code_a, code_b = stack.project(first), stack.project(second)
    provision(stack, code_a)
    provision(stack, code_b)
    browser_a, browser_b = stack.browser(first), stack.browser(second)

    cordon(kube, True)
    try:
        login = hub_login(stack, browser_a, first, code_a)
        assert login.status_code == 302, login.text
        spawn_path = urlsplit(login.headers["location"]).path
        assert spawn_path == f"/hub/spawn/{first.username}/{code_a}"
        # The hub waits `slow_spawn_timeout` (10 s) and then shows its pending page.
        browser_a.get(f"{stack.hub.public_url}{spawn_path}", follow_redirects=False, timeout=60)
        pending = stack.wait_for(
            lambda: stack.servers(first.username).get(code_a, {}).get("pending") == "spawn",
            30,
            "the first spawn pending",
        )
        assert pending
        (pod,) = server_pods(stack, code_a)
        assert pod["status"].get("phase") == "Pending"
        assert not pod["spec"].get("nodeName")  # the scheduler could not place it
        page_a = browser_a.get(f"{stack.api_url}/projects/{code_a}/workspace")
        assert 'data-state="starting"' in page_a.text

        # The second researcher, through the portal's launch: back to the portal, told why.
        refused = hub_login(stack, browser_b, second, code_b)
        assert refused.status_code == 302, refused.text
        back = refused.headers["location"]
        assert back == f"{stack.settings.effective_public_url}/projects/{code_b}/workspace?busy=1"
        page_b = browser_b.get(back)
        assert page_b.status_code == 200
        assert 'id="workspace-busy"' in page_b.text
        assert BUSY_EN in page_b.text
        assert 'id="open-workspace"' in page_b.text
        # The hub's own check at the spawn: 429 with Retry-After, and no pod.
        direct = browser_b.get(
            f"{stack.hub.public_url}/hub/spawn/{second.username}/{code_b}",
            follow_redirects=False,
        )
        assert direct.status_code == 429, direct.text
        api = stack.hub_api("POST", f"/users/{second.username}/servers/{code_b}")
        assert api.status_code == 429, api.text
        assert "Retry-After" in api.headers
        assert not server_pods(stack, code_b)
        assert code_b not in stack.servers(second.username)
    finally:
        cordon(kube, False)

    # Placed once the nodes take pods again; the first researcher then stops the server (the
    # portal's Stop), whether the hub still counts it as starting or not: the slot is free.
    assert running_pod(stack, code_a)["spec"]["nodeName"]
    stop = stack.hub_api("DELETE", f"/users/{first.username}/servers/{code_a}")
    assert stop.status_code in (202, 204), stop.text
    stack.wait_for(lambda: not server_pods(stack, code_a), 60, "the first pod gone")
    stack.wait_for(lambda: code_a not in stack.servers(first.username), 60, "the first stopped")

    again = hub_login(stack, browser_b, second, code_b)
    assert again.status_code == 302, again.text
    spawn_b = urlsplit(again.headers["location"]).path
    assert spawn_b == f"/hub/spawn/{second.username}/{code_b}"
    browser_b.get(f"{stack.hub.public_url}{spawn_b}", follow_redirects=False, timeout=60)
    pod_b = running_pod(stack, code_b)
    assert pod_b["metadata"]["namespace"] == namespace_name(code_b)
    assert pod_b["metadata"]["labels"][names.KIND_LABEL] == "server"
    stack.hub_api("DELETE", f"/users/{second.username}/servers/{code_b}")
    stack.wait_for(lambda: not server_pods(stack, code_b), 60, "the second pod gone")
