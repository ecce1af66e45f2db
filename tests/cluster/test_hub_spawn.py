"""JupyterHub against the local control plane, with real processes end to end: the API (uvicorn),
JupyterHub with configurable-http-proxy from Kluis's config, KluisSpawner running under the hub's
least-privilege service account, and the reconciler's workspaces. On both database backends.

kwok runs no container, so a server pod becomes Running but never answers HTTP: these tests
follow the spawn up to the pod the apiserver stored (TESTBED.md); the hub <-> server handshake is
tested with the development spawner in tests/hub/test_hub_dev.py.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from conftest import BACKENDS, empty_database
from hub.stack import Researcher, Stack, running_stack
from kubernetes import client
from sqlalchemy import select

from orchestrator import hub_sync, names
from orchestrator.devcluster.cluster import LocalCluster
from orchestrator.hub_models import WorkspaceServer
from orchestrator.kube import KubeClient
from orchestrator.manifests import workspace_service_account_name
from orchestrator.models import Grant, Project, ProjectMember
from orchestrator.names import namespace_name, project_selector
from orchestrator.reconciler import reconcile_project

from .reconciler_support import service_account_token, token_kubeconfig

pytestmark = [pytest.mark.cluster, pytest.mark.slow]
SERVER_SELECTOR = f"{names.KIND_LABEL}=server"
MEASURED: dict[str, list[float]] = {}


@contextmanager
def kubernetes_stack(
    backend: str,
    cluster: LocalCluster,
    kube: client.ApiClient,
    data_dir: Path,
    extra_env: dict[str, str] | None = None,
) -> Iterator[Stack]:
    """The API, JupyterHub and its proxy with KluisSpawner under the hub's own service account (in
    a hub namespace of its own); projects' namespaces and volumes are removed afterwards."""
    hub_namespace = f"t-hub-{uuid.uuid4().hex[:8]}"
    core = client.CoreV1Api(kube)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=hub_namespace)))
    token = service_account_token(kube, "hub", hub_namespace)
    kubeconfig = token_kubeconfig(cluster.kubeconfig, token, data_dir / "hub-kubeconfig")
    env = {"KUBECONFIG": str(kubeconfig), "KLUIS_HUB_HTTP_TIMEOUT": "300", **(extra_env or {})}
    with (
        empty_database(backend, data_dir) as settings,
        running_stack(
            settings,
            data_dir,
            spawner="kubernetes",
            extra_env=env,
            overrides={"hub_namespace": hub_namespace, "hub_service_account": "hub"},
        ) as running,
    ):
        admin = KubeClient.from_kubeconfig(cluster.kubeconfig, running.settings.field_manager)
        running.kube = admin  # type: ignore[attr-defined]
        try:
            yield running
        finally:
            for code in running.codes:
                admin.delete("Namespace", None, namespace_name(code))
                for volume in admin.list_owned("PersistentVolume", project_selector(code)):
                    admin.delete("PersistentVolume", None, volume["metadata"]["name"])
            admin.close()
            core.delete_namespace(hub_namespace)


@pytest.fixture(scope="module", params=BACKENDS)
def stack(
    request: pytest.FixtureRequest,
    cluster: LocalCluster,
    kube: client.ApiClient,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    data_dir = tmp_path_factory.mktemp(f"hub-{request.param}")
    with kubernetes_stack(request.param, cluster, kube, data_dir) as running:
        yield running


def provision(stack: Stack, code: str) -> None:
    """The reconciler's pass until the workspace is ready (as `kluis reconcile` would)."""
    kube: KubeClient = stack.kube  # type: ignore[attr-defined]
    deadline = time.monotonic() + 60
    while True:
        with stack.factory() as session, session.begin():
            project = session.scalars(select(Project).where(Project.code == code)).one()
            result = reconcile_project(session, kube, project, stack.settings, datetime.now(UTC))
        if result.phase.value == "ready":
            return
        assert time.monotonic() < deadline, result
        time.sleep(0.3)


def server_pods(stack: Stack, code: str) -> list[dict[str, Any]]:
    kube: KubeClient = stack.kube  # type: ignore[attr-defined]
    return [
        pod
        for pod in kube.list_owned("Pod", SERVER_SELECTOR, namespace_name(code))
        if not pod["metadata"].get("deletionTimestamp")
    ]


def running_pod(stack: Stack, code: str) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        pods = server_pods(stack, code)
        return pods[0] if pods and pods[0]["status"].get("phase") == "Running" else None

    pod: dict[str, Any] = stack.wait_for(check, 90, f"a Running server pod in {code}")
    return pod


def open_workspace(stack: Stack, who: Researcher, code: str) -> tuple[Any, float]:
    """Portal launch, then the hub's ticket login and spawn as a browser does; returns the
    browser and the moment the ticket was issued."""
    browser = stack.browser(who)
    response = stack.launch(browser, who, code)
    issued = time.monotonic()
    assert response.status_code == 201, response.text
    login = stack.open_hub(browser, response.json()["url"])
    assert login.status_code == 302, login.text
    spawn_path = urlsplit(login.headers["location"]).path
    assert spawn_path == f"/hub/spawn/{who.username}/{code}"
    spawn = browser.get(f"{stack.hub.public_url}{spawn_path}", follow_redirects=False)
    assert spawn.status_code in (200, 302), spawn.text
    return browser, issued


def stop(stack: Stack, who: Researcher, code: str) -> None:
    stack.hub_api("DELETE", f"/users/{who.username}/servers/{code}")
    stack.wait_for(lambda: not server_pods(stack, code), 60, f"the pod of {code} gone")
    stack.wait_for(lambda: code not in stack.servers(who.username), 60, "the hub to forget it")


def test_hub_launch_creates_one_pod_with_exactly_the_granted_mounts(stack: Stack) -> None:
    who = stack.researcher()
    code = stack.project(who, datasets=2)
    began = time.monotonic()
    provision(stack, code)
    MEASURED.setdefault("reconcile_one_workspace_s", []).append(time.monotonic() - began)

    _browser, issued = open_workspace(stack, who, code)
    pod = running_pod(stack, code)
    MEASURED.setdefault("launch_to_running_s", []).append(time.monotonic() - issued)

    assert len(server_pods(stack, code)) == 1
    kube: KubeClient = stack.kube  # type: ignore[attr-defined]
    namespace = kube.get("Namespace", None, namespace_name(code))
    assert namespace is not None
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    meta, spec = pod["metadata"], pod["spec"]
    assert meta["namespace"] == namespace_name(code)
    assert meta["labels"][names.KIND_LABEL] == "server"
    assert meta["labels"][names.PROJECT_LABEL] == code
    assert spec["serviceAccountName"] == workspace_service_account_name()
    assert spec["automountServiceAccountToken"] is False
    with stack.factory() as session:
        project = session.scalars(select(Project).where(Project.code == code)).one()
        granted = {
            names.dataset_claim_name(
                g.dataset_version.dataset.code, g.dataset_version.label, g.dataset_version_id
            )
            for g in project.grants
        }
    claims = {
        v["persistentVolumeClaim"]["claimName"]: v["persistentVolumeClaim"].get("readOnly", False)
        for v in spec["volumes"]
        if "persistentVolumeClaim" in v
    }
    assert set(claims) == granted | {
        names.storage_claim_name("workspace"),
        names.storage_claim_name("import"),
        names.storage_claim_name("export"),
        names.home_claim_name(who.username),
    }
    assert all(v.keys() <= {"name", "persistentVolumeClaim"} for v in spec["volumes"])
    (container,) = spec["containers"]
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    read_only = {path for path, m in mounts.items() if m.get("readOnly")}
    assert read_only == {p for p in mounts if p.startswith("/data/")} | {"/project/import"}
    assert {m.get("recursiveReadOnly") for p, m in mounts.items() if p in read_only} == {
        "IfPossible"
    }
    assert {"/project/workspace", "/project/export", "/home/jovyan"} <= set(mounts)
    assert not any("serviceaccount" in path for path in mounts)
    context = container["securityContext"]
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"]["drop"] == ["ALL"]
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["image"] == stack.settings.workspace_images[0]
    stop(stack, who, code)


def test_hub_second_project_gets_its_own_server_in_its_namespace(stack: Stack) -> None:
    who = stack.researcher()
    first, second = stack.project(who), stack.project(who)
    provision(stack, first)
    provision(stack, second)

    browser, _ = open_workspace(stack, who, first)
    running_pod(stack, first)
    response = stack.launch(browser, who, second)
    login = stack.open_hub(browser, response.json()["url"])
    spawn_path = urlsplit(login.headers["location"]).path
    browser.get(f"{stack.hub.public_url}{spawn_path}", follow_redirects=False)
    pod = running_pod(stack, second)

    assert pod["metadata"]["namespace"] == namespace_name(second)
    assert len(server_pods(stack, first)) == 1
    assert {first, second} <= set(stack.servers(who.username))
    stop(stack, who, first)
    stop(stack, who, second)


def test_hub_ticket_cannot_be_used_twice_or_for_another_project(stack: Stack) -> None:
    who = stack.researcher()
    code, other = stack.project(who), stack.project(who)
    provision(stack, code)
    browser = stack.browser(who)
    url = stack.launch(browser, who, code).json()["url"]
    replayed = url.replace(f"project={code}", f"project={other}")

    wrong_project = stack.open_hub(stack.browser(who), replayed)
    reused = stack.open_hub(stack.browser(who), url)
    no_ticket = stack.open_hub(stack.browser(who), f"{stack.hub.public_url}/hub/login")

    assert wrong_project.status_code == 403
    assert reused.status_code == 403
    assert no_ticket.status_code == 302
    assert no_ticket.headers["location"] == stack.settings.effective_public_url + "/"
    assert not stack.servers(who.username)


def test_hub_refuses_crafted_user_options(stack: Stack) -> None:
    who = stack.researcher()
    code = stack.project(who)
    provision(stack, code)
    browser = stack.browser(who)
    assert (
        stack.open_hub(browser, stack.launch(browser, who, code).json()["url"]).status_code == 302
    )

    crafted = [
        {"namespace": "kube-system"},
        {"image": "docker.io/library/alpine:latest"},
        {"volumes": [{"name": "root", "hostPath": {"path": "/"}}]},
        {"service_account": "hub"},
        {"container_security_context": {"privileged": True}},
    ]
    for options in crafted:
        response = stack.hub_api(
            "POST", f"/users/{who.username}/servers/{code}", content=json.dumps(options)
        )
        assert response.status_code >= 400, (options, response.status_code, response.text)

    assert not server_pods(stack, code)
    kube: KubeClient = stack.kube  # type: ignore[attr-defined]
    assert not kube.list_owned("Pod", SERVER_SELECTOR, "kube-system")


def test_hub_sync_stops_servers_whose_access_lapsed(stack: Stack) -> None:
    who = stack.researcher()
    revoked, removed = stack.project(who, datasets=2), stack.project(who)
    for code in (revoked, removed):
        provision(stack, code)
        open_workspace(stack, who, code)
        running_pod(stack, code)
    hub = hub_sync.HubApi(stack.settings)
    assert hub_sync.sync_once(stack.factory, stack.settings, hub).stopped == []

    with stack.factory() as session, session.begin():
        project = session.scalars(select(Project).where(Project.code == revoked)).one()
        grant = session.scalars(select(Grant).where(Grant.project_id == project.id)).first()
        assert grant is not None
        grant.revoked_at = datetime.now(UTC)
        other = session.scalars(select(Project).where(Project.code == removed)).one()
        member = session.scalars(
            select(ProjectMember).where(
                ProjectMember.project_id == other.id, ProjectMember.user_id == who.user_id
            )
        ).one()
        member.removed_at = datetime.now(UTC)
    changed = time.monotonic()
    result = hub_sync.sync_once(stack.factory, stack.settings, hub)
    for code in (revoked, removed):
        stack.wait_for(lambda c=code: not server_pods(stack, c), 60, f"{code} stopped")
    stopped_after = time.monotonic() - changed
    hub.close()

    assert sorted(server for _, server, _ in result.stopped) == sorted([revoked, removed])
    reasons = {server: reason for _, server, reason in result.stopped}
    assert "grants changed" in reasons[revoked]
    assert "not a member" in reasons[removed]
    MEASURED.setdefault("revocation_stop_s", []).append(stopped_after)
    with stack.factory() as session:
        assert session.scalars(select(WorkspaceServer)).first() is not None


def test_hub_zz_report_measurements(stack: Stack) -> None:
    """Not an assertion on time: prints what was measured (see docs/hub.md)."""
    print(json.dumps({k: [round(v, 2) for v in vs] for k, vs in MEASURED.items()}))
    Path(stack.settings.data_dir / "hub-measurements.json").write_text(json.dumps(MEASURED))
